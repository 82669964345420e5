"""Chapter 11 · Inside the trained model: induction heads, the logit lens, alignment, activation patching.

Everything here reads activations through ``hooks`` (``run_with_cache``, ``run_with_hooks``) and turns
them into a few numbers a learner can check by hand: how much a head attends to the previous token or
to the token after the previous occurrence of the current one, what each layer would predict, how well
a cross-attention head follows the word alignment, and how much of a behaviour a patched activation
restores. ``AttentionOnly`` is the small model the chapter trains to grow induction heads.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import causal_mask
from .corpus import NOUNS, Pair, referent, words_of
from .encoder import LayerNorm
from .hooks import HookPoint, run_with_cache, run_with_hooks
from .multihead import MultiHeadAttention
from .validate import check_int

__all__ = ["AttentionOnly", "AttentionOnlyBlock", "FinalNorm", "RepeatedTokens", "TrainingLog", "repeated_tokens",
           "repeated_twice", "train_induction", "masked_losses", "previous_token_scores", "induction_scores",
           "logit_lens", "head_contributions", "direct_logit_attribution", "alignment_accuracy", "logit_difference",
           "recovery", "patch_sweep", "ItCase", "it_cases", "it_attention", "referent_scores", "AdjectivePair",
           "adjective_minimal_pairs"]


# --- the attention-only model -----------------------------------------------------------------

class FinalNorm(nn.Module):
    """The last LayerNorm of a pre-LN stack, with its output exposed as ``ln_final.hook_normalized``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = LayerNorm(d_model)
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_normalized(self.norm(x))  # (B, T, D)


class AttentionOnlyBlock(nn.Module):
    """``x + attn(ln(x))`` with causal self-attention: a GPT block without its feed-forward network."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads)
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)  # (B, T, D)
        h = self.ln(x)
        out = self.hook_attn_out(self.attn(h, h, h, mask))  # (B, T, D)
        return self.hook_resid_post(x + out)  # (B, T, D)


class AttentionOnly(nn.Module):
    """Token + learned position embeddings, ``n_layers`` attention-only blocks, an optional final norm, unembedding.

    Hook points (``hooks.hook_names``): ``hook_embed``, ``hook_pos_embed``, ``blocks.{i}.hook_resid_pre``,
    ``blocks.{i}.attn.hook_q`` ... ``hook_z``, ``blocks.{i}.hook_attn_out``, ``blocks.{i}.hook_resid_post``,
    ``ln_final.hook_normalized`` (when ``final_norm``).
    Shape:
        ids (B, T) -> logits (B, T, V)
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, max_len: int = 64,
                 final_norm: bool = True) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layers", n_layers), ("max_len", max_len)):
            check_int(value, name)
        self.vocab_size, self.max_len = vocab_size, max_len
        self.embed = nn.Embedding(vocab_size, d_model)  # (V, D)
        self.pos_embed = nn.Embedding(max_len, d_model)  # (max_len, D)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.blocks = nn.ModuleList(AttentionOnlyBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln_final = FinalNorm(d_model) if final_norm else None
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)  # (V, D)

    def forward(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
            raise TypeError(f"AttentionOnly expects token ids (B, T) of an integer dtype, got {_describe(ids)}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"AttentionOnly: ids have T = {ids.shape[1]} positions but max_len is {self.max_len}")
        T = ids.shape[1]
        x = self.hook_embed(self.embed(ids)) + self.hook_pos_embed(self.pos_embed(torch.arange(T, device=ids.device)))
        mask = causal_mask(T, ids.device)  # (T, T)
        for block in self.blocks:
            x = block(x, mask)  # (B, T, D)
        return self.unembed(self.normalise(x))  # (B, T, V)

    def normalise(self, resid: Tensor) -> Tensor:
        """The final norm (identity without one): what the unembedding reads."""
        return resid if self.ln_final is None else self.ln_final(resid)  # (..., D)


def _describe(x: object) -> str:
    return f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


# --- data: random tokens with a repeated segment --------------------------------------------------

class RepeatedTokens(NamedTuple):
    """Token ids and, per position, whether its token repeats the segment AND can be predicted from it.

    ``repeated[b, t]`` is True for the second to last token of the repeat: the first repeated token
    cannot be foreseen (nothing says the repeat starts there), the following ones can, by copying.
    Shape:
        ids (B, T) long, repeated (B, T) bool
    """

    ids: Tensor
    repeated: Tensor


def repeated_tokens(batch_size: int, seq_len: int, vocab_size: int, generator: torch.Generator,
                    min_len: int = 4, max_len: int = 16) -> RepeatedTokens:
    """Uniform random tokens in which a segment of random length (``min_len``..``max_len``) starting at a random
    position is repeated later at a random position. Offsets and lengths vary from row to row, so position
    alone never says where the copy is: only an induction circuit can predict it."""
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("vocab_size", vocab_size), ("min_len", min_len)):
        check_int(value, name)
    if not min_len <= max_len or 2 * max_len > seq_len:
        raise ValueError(f"repeated_tokens needs min_len <= max_len and 2 * max_len <= seq_len, got min_len={min_len}, "
                         f"max_len={max_len}, seq_len={seq_len}")
    ids = torch.randint(vocab_size, (batch_size, seq_len), generator=generator)  # (B, T)
    repeated = torch.zeros(batch_size, seq_len, dtype=torch.bool)  # (B, T)
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    for b, n in enumerate(lengths.tolist()):
        start = int(torch.randint(seq_len - 2 * n + 1, (1,), generator=generator))  # the segment: start .. start+n-1
        copy = start + n + int(torch.randint(seq_len - start - 2 * n + 1, (1,), generator=generator))  # after it
        ids[b, copy:copy + n] = ids[b, start:start + n]
        repeated[b, copy + 1:copy + n] = True
    return RepeatedTokens(ids, repeated)


def repeated_twice(batch_size: int, half: int, vocab_size: int, generator: torch.Generator) -> Tensor:
    """Random sequences of ``half`` tokens followed by the same tokens again: the standard induction test.

    Shape:
        returns (B, 2 * half) long
    """
    first = torch.randint(vocab_size, (check_int(batch_size, "batch_size"), check_int(half, "half")), generator=generator)
    return torch.cat([first, first], dim=1)  # (B, 2 * half)


def masked_losses(logits: Tensor, ids: Tensor, repeated: Tensor) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy averaged over the repeated (predictable) tokens and over all other tokens.

    Position t's logits predict token t + 1, so the masks are read one position ahead.
    Shape:
        logits (B, T, V), ids and repeated (B, T) -> two scalars
    """
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none")  # (B*(T-1),)
    target_repeated = repeated[:, 1:].flatten()
    return loss[target_repeated].mean(), loss[~target_repeated].mean()


class TrainingLog(NamedTuple):
    """Losses every ``log_every`` steps (the step counts them after the update)."""

    steps: list[int]
    loss_repeated: list[float]
    loss_other: list[float]


def train_induction(model: AttentionOnly, steps: int, *, batch_size: int = 64, seq_len: int = 48, lr: float = 1e-3,
                    min_len: int = 4, max_len: int = 16, seed: int = 0, log_every: int = 25,
                    progress: Callable[[int], None] | None = None) -> TrainingLog:
    """Train ``model`` in place on ``repeated_tokens`` batches (segments of ``min_len``..``max_len`` tokens) with AdamW.

    Deterministic for a given seed and model. The loss is the mean next-token cross-entropy over every position.
    ``progress`` is called with each step.
    """
    check_int(steps, "steps")
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    log = TrainingLog([], [], [])
    model.train()
    for step in range(1, steps + 1):
        ids, repeated = repeated_tokens(batch_size, seq_len, model.vocab_size, g, min_len, max_len)
        logits = model(ids)  # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == 1:
            with torch.no_grad():
                rep, other = masked_losses(logits, ids, repeated)
            log.steps.append(step)
            log.loss_repeated.append(float(rep))
            log.loss_other.append(float(other))
        if progress is not None:
            progress(step)
    model.eval()
    return log


# --- attention-pattern scores ---------------------------------------------------------------------

def _check_pattern(pattern: object, where: str) -> Tensor:
    if not isinstance(pattern, Tensor) or pattern.dim() != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"{where} expects a self-attention pattern (B, H, T, T), got {_describe(pattern)}")
    return pattern


def previous_token_scores(pattern: Tensor) -> Tensor:
    """Each head's mean weight from position t to position t - 1 (over t >= 1 and the batch).

    Shape:
        pattern (B, H, T, T) -> (H,)
    """
    _check_pattern(pattern, "previous_token_scores")
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))  # (B, H, T-1) -> (H,)


def induction_scores(pattern: Tensor, period: int) -> Tensor:
    """Each head's mean weight from position t to t - period + 1, over the second copy (t >= period) and the batch.

    On a sequence repeated with period ``period``, position t - period + 1 holds the token that FOLLOWED the
    previous occurrence of token t: where an induction head looks to copy the next token.
    Shape:
        pattern (B, H, T, T) -> (H,)
    """
    _check_pattern(pattern, "induction_scores")
    T = pattern.shape[-1]
    if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period < T:
        raise ValueError(f"induction_scores: period must be an int in 1..{T - 1} (the pattern has T = {T}), got {period!r}")
    diag = pattern.diagonal(offset=-(period - 1), dim1=-2, dim2=-1)  # (B, H, T - period + 1): queries period-1 .. T-1
    return diag[..., 1:].mean(dim=(0, 2))  # queries period .. T-1 -> (H,)


# --- the logit lens and direct logit attribution ---------------------------------------------------

def logit_lens(resid: Tensor, unembed: nn.Module, norm: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """What the model would predict if it stopped at this residual stream: ``unembed(norm(resid))``.

    A pre-LN model's unembedding reads the FINAL norm's output, so ``norm`` must be that norm (skipping it gives
    logits at the wrong scale and, with a learned gain, in the wrong directions). In a post-LN model every
    layer already ends with a norm: pass ``norm=None``.
    Shape:
        resid (..., D) -> (..., V)
    """
    return unembed(resid if norm is None else norm(resid))


def head_contributions(z: Tensor, w_o: nn.Linear) -> Tensor:
    """Each head's share of the attention output: head h's z times its own columns of W_O (the bias is no head's).

    Summed over heads and plus ``w_o.bias`` it equals the attention output.
    Shape:
        z (B, T, H, Dh), w_o.weight (D, H*Dh) -> (B, T, H, D)
    """
    B, T, H, Dh = z.shape
    w = w_o.weight.view(w_o.weight.shape[0], H, Dh)  # (D, H, Dh)
    return torch.einsum("bthk,dhk->bthd", z, w)  # (B, T, H, D)


def direct_logit_attribution(components: Tensor, resid_final: Tensor, norm: LayerNorm, unembed: nn.Linear,
                             targets: Tensor) -> Tensor:
    """Each component's direct push on the target token's logit, through the final norm taken as linear.

    The final LayerNorm is linear once its scale (the standard deviation of the full residual ``resid_final``)
    is frozen: a component c contributes ``((c - mean c) / scale * gain) · W_U[target]``. The contributions of
    all components of the residual stream, plus the norm's bias term, sum to the target's logit.
    Shape:
        components (B, T, C, D), resid_final (B, T, D), targets (B, T) -> (B, T, C)
    """
    scale = (resid_final.var(dim=-1, unbiased=False, keepdim=True) + norm.eps).sqrt()  # (B, T, 1)
    centred = components - components.mean(dim=-1, keepdim=True)  # (B, T, C, D)
    direction = unembed.weight[targets] * norm.weight  # (B, T, D)
    return torch.einsum("btcd,btd->btc", centred, direction) / scale  # (B, T, C)


# --- the translator's alignment ---------------------------------------------------------------------

def alignment_accuracy(pattern: Tensor, links: Sequence[tuple[int, int]]) -> Tensor:
    """The share of aligned query positions whose most-attended key is one they are aligned with.

    ``links`` are (key position, query position) pairs, e.g. (English word, Korean word) of one sentence pair,
    in the positions the model reads. A query position with several links counts as right when its argmax
    is any of them; query positions without a link are not scored.
    Shape:
        pattern (..., T_q, T_k) -> (...)
    """
    if not links:
        raise ValueError("alignment_accuracy needs at least one (key position, query position) link")
    T_q, T_k = pattern.shape[-2:]
    allowed = torch.zeros(T_q, T_k, dtype=torch.bool, device=pattern.device)  # (T_q, T_k)
    for k, q in links:
        if not (0 <= k < T_k and 0 <= q < T_q):
            raise ValueError(f"alignment_accuracy: link (key {k}, query {q}) is outside the pattern's "
                             f"(T_q, T_k) = ({T_q}, {T_k})")
        allowed[q, k] = True
    queries = allowed.any(dim=1).nonzero().squeeze(1)  # the scored query positions
    best = pattern[..., queries, :].argmax(dim=-1)  # (..., Q)
    hits = allowed[queries, best]  # (..., Q): row q of the links, column the argmax
    return hits.float().mean(dim=-1)


# --- activation patching ----------------------------------------------------------------------------

def logit_difference(logits: Tensor, position: int, right: int, wrong: int) -> Tensor:
    """``logit[right] - logit[wrong]`` at one position, for each batch row.

    Shape:
        logits (B, T, V) -> (B,)
    """
    return logits[:, position, right] - logits[:, position, wrong]


def recovery(patched: Tensor | float, clean: Tensor | float, corrupted: Tensor | float) -> Tensor:
    """The normalised logit-difference recovery: 0 = as corrupted, 1 = as clean.

    ``(patched - corrupted) / (clean - corrupted)``; a patch can overshoot (above 1) or hurt (below 0).
    """
    patched, clean, corrupted = (torch.as_tensor(v, dtype=torch.float64) for v in (patched, clean, corrupted))
    gap = clean - corrupted
    if bool((gap.abs() < 1e-9).any()):
        raise ValueError("recovery: the clean and corrupted runs have the same metric, so nothing can be recovered")
    return (patched - corrupted) / gap


def patch_sweep(model: nn.Module, clean: Sequence[Tensor], corrupted: Sequence[Tensor], names: Sequence[str],
                metric: Callable[[Tensor], Tensor], positions: Sequence[int] | None = None, dim: int = 1) -> Tensor:
    """Patch each hook point of ``names`` at each position from the clean run into the corrupted one.

    ``metric(output) -> (B,)`` (e.g. a logit difference); the result is its ``recovery`` averaged over the batch.
    Position ``p`` of an activation is index ``p`` along ``dim`` (1 for (B, T, ...) activations).
    Shape:
        -> (len(names), len(positions))
    """
    cache = run_with_cache(model, *clean, names=list(names)).cache
    clean_m, corrupted_m = metric(model(*clean)), metric(model(*corrupted))
    if positions is None:
        positions = range(cache[names[0]].shape[dim])
    out = torch.zeros(len(names), len(positions), dtype=torch.float64)
    for i, name in enumerate(names):
        for j, p in enumerate(positions):
            def patch(act: Tensor, hook: str, name: str = name, p: int = p) -> Tensor:
                act = act.clone()
                act.select(dim, p).copy_(cache[name].select(dim, p))
                return act
            patched = metric(run_with_hooks(model, *corrupted, hooks=[(name, patch)]))
            out[i, j] = recovery(patched, clean_m, corrupted_m).mean()
    return out


# --- the note's "it": which noun does "it" refer to? -----------------------------------------------

class ItCase(NamedTuple):
    """A "... because it was ADJ." pair as the translator reads it: its word tokens and four positions in ``en``.

    ``subject`` and ``object`` are the positions of the two nouns (the last word of "police officer"), ``referent``
    says which of them "it" refers to ("subject": ... because it was hungry; "object": ... because it was sweet).
    """

    en: list[str]
    ko: list[str]
    it: int
    subject: int
    object: int
    adjective: int
    referent: str


def it_cases(pairs: Sequence[Pair]) -> list[ItCase]:
    """The pairs of the corpus's "it" construction (subject, verb, object, "because it was ADJ"), with the positions
    of "it", the two nouns and the adjective, and the noun "it" refers to (``Pair.it``, ``corpus.referent``); other
    pairs are skipped. The only function of this module that reads ``Pair``'s fields."""
    cases = []
    for pair in pairs:
        kind = referent(pair)
        if pair.construction != "it" or not kind:
            continue
        en = words_of(pair.en)
        lowered = [w.lower() for w in en]
        subject = _noun_position(lowered, NOUNS[pair.key[0]].en, 0, pair.en)
        obj = _noun_position(lowered, NOUNS[pair.key[2]].en, subject + 1, pair.en)
        it = lowered.index("because") + 1  # "because it was ADJ ."
        cases.append(ItCase(en, words_of(pair.ko), it, subject, obj, len(en) - 2, kind))
    return cases


def _noun_position(lowered: list[str], noun: str, start: int, sentence: str) -> int:
    """The position of the last word of ``noun`` ("officer" of "police officer") at or after ``start``."""
    tokens = noun.lower().split()
    for i in range(start, len(lowered) - len(tokens) + 1):
        if lowered[i:i + len(tokens)] == tokens:
            return i + len(tokens) - 1
    raise ValueError(f"it_cases: the noun {noun!r} is not in {sentence!r} after word {start}")


def it_attention(pattern: Tensor, case: ItCase) -> Tensor:
    """The weight from "it" to the noun it refers to, to the other noun, and to the adjective (in that order).

    Shape:
        pattern (..., S, S) for the sentence of ``case`` -> (..., 3)
    """
    if not isinstance(pattern, Tensor) or pattern.dim() < 2 or pattern.shape[-2] != pattern.shape[-1] \
            or pattern.shape[-1] <= max(case.it, case.subject, case.object, case.adjective):
        raise ValueError(f"it_attention expects a self-attention pattern (..., S, S) with S >= {len(case.en)} for "
                         f"{' '.join(case.en)!r}, got {_describe(pattern)}")
    right, other = (case.subject, case.object) if case.referent == "subject" else (case.object, case.subject)
    return pattern[..., case.it, [right, other, case.adjective]]  # (..., 3)


def referent_scores(to_referent: Tensor, to_other: Tensor) -> Tensor:
    """The share of cases in which the weight on the noun "it" refers to exceeds the weight on the other noun.

    Ties count half, so a head that cannot tell the nouns apart scores 0.5 (chance); 1 = always the right noun.
    Shape:
        to_referent, to_other (N, ...) -> (...)
    """
    if not isinstance(to_referent, Tensor) or not isinstance(to_other, Tensor) or to_referent.shape != to_other.shape \
            or to_referent.dim() == 0 or to_referent.shape[0] == 0:
        raise ValueError(f"referent_scores expects two tensors of the same shape (N, ...) with N >= 1 cases, got "
                         f"to_referent {_describe(to_referent)} and to_other {_describe(to_other)}")
    wins = (to_referent > to_other).double() + 0.5 * (to_referent == to_other).double()  # (N, ...)
    return wins.mean(dim=0)


class AdjectivePair(NamedTuple):
    """Two "it" sentences equal but for the adjective: "it" is the subject in one, the object in the other.

    ``k`` is the first Korean word where their translations differ (배가 / 우유가 in 고양이는 배가 고파서 ... /
    고양이는 우유가 달아서 ...): the word whose choice names the referent.
    """

    subject: ItCase
    object: ItCase
    k: int


def adjective_minimal_pairs(cases: Sequence[ItCase]) -> list[AdjectivePair]:
    """Every (subject-referent, object-referent) couple of ``cases`` whose English differs only in the adjective,
    sorted by the English; a sentence with two partners (hot, cold) is in two couples."""
    groups: dict[tuple[str, ...], list[ItCase]] = {}
    for case in cases:
        frame = case.en[:case.adjective] + ["_"] + case.en[case.adjective + 1:]
        groups.setdefault(tuple(frame), []).append(case)
    out = []
    for group in groups.values():
        for a in (c for c in group if c.referent == "subject"):
            for b in (c for c in group if c.referent == "object"):
                k = next((j for j, (x, y) in enumerate(zip(a.ko, b.ko)) if x != y), min(len(a.ko), len(b.ko)))
                out.append(AdjectivePair(a, b, k))
    return sorted(out, key=lambda p: (" ".join(p.subject.en), " ".join(p.object.en)))
