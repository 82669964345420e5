"""Checkers for chapter 07 (training and decoding): label smoothing, the learning-rate schedule,
greedy decoding, and one step of beam search.

References are PyTorch built-ins (``F.cross_entropy(label_smoothing=...)``, ``torch.topk``) and
small formulas written here. Greedy decoding is checked on a scripted stand-in model whose
next-token choice is a known function of the source and of the whole prefix, so the right output
is known exactly. No course model module is imported.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import CheckFailed, call, checker, describe, expect_close, expect_default, expect_shape, fail, load_hints, ok, randn

__all__ = ["label_smoothing_loss", "noam_lr", "greedy_decode", "beam_step", "ScriptedTranslator", "HINTS"]

HINTS = load_hints("ch07")


# --- Exercise 1: label-smoothing loss ---------------------------------------------------------

def _smoothed(logits: torch.Tensor, target: torch.Tensor, eps: float, ignore_index: int, *, spread: str = "V",
              divide_by: str = "valid", mask_pads: bool = True, log_softmax: bool = True, kl: bool = False,
              full_nll: bool = False) -> torch.Tensor:
    """The loss and its classic variants. ``spread``: how eps is shared out; ``divide_by``: the mean's count."""
    V = logits.shape[-1]
    logp = F.log_softmax(logits, -1) if log_softmax else logits  # (B, T, V)
    nll = -logp.gather(-1, target.clamp(0, V - 1)[..., None]).squeeze(-1)  # (B, T)
    total = -logp.sum(-1)  # (B, T) sum over every class of -log p
    if spread == "V":  # PyTorch: q = (1 - eps) * one_hot + eps / V, the target class gets eps / V too
        smooth = total / V
    elif spread == "V-1":  # the target gets exactly 1 - eps, the V - 1 others eps / (V - 1)
        smooth = (total - nll) / (V - 1)
    elif spread == "V-2":  # ... and the pad class gets nothing (the Annotated Transformer's version)
        pad = -logp[..., min(max(ignore_index, 0), V - 1)]  # (B, T)
        smooth = (total - nll - pad) / (V - 2)
    elif spread == "sum":  # eps times the SUM over the classes of -log p: eps on every class, q sums to 1 - eps + V * eps
        smooth = total
    else:  # "no-target": target 1 - eps, every class eps / V, so q sums to 1 - eps / V ... wrong
        smooth = (total - nll) / V
    loss = (1.0 if full_nll else 1 - eps) * nll + eps * smooth  # (B, T); full_nll: the target's weight left at 1
    if kl:  # KL(q || p) = cross-entropy - entropy of q, with q as ``spread`` builds it
        others = {"V": V, "V-2": V - 2}[spread]
        off = eps / others if eps > 0 else 0.0
        on = 1 - eps + (off if spread == "V" else 0.0)
        loss = loss + (on * math.log(on) if on > 0 else 0.0)
        loss = loss + ((others - (spread == "V")) * off * math.log(off) if off > 0 else 0.0)
    keep = (target != ignore_index) if mask_pads else torch.ones_like(target, dtype=torch.bool)  # (B, T)
    summed = (loss * keep).sum()
    return {"valid": summed / keep.sum(), "all": summed / target.numel(), "none": summed}[divide_by]


ANNOTATED = ("this is the Annotated Transformer's label smoothing: eps / (V - 2) on the non-target classes and 0 on the "
             "pad column. PyTorch's F.cross_entropy(label_smoothing=eps), which this exercise matches, spreads eps / V over "
             "ALL V classes, the target and the pad column included: q = (1 - eps) * one_hot + eps / V")


def _ls_mistakes(logits: torch.Tensor, target: torch.Tensor, eps: float, ignore_index: int) -> list[tuple[str, torch.Tensor]]:
    spread = ("PyTorch spreads eps over ALL V classes, the target included: q = (1 - eps) * one_hot + eps / V, "
              "so loss = (1 - eps) * nll + eps * mean over the V classes of -log p")
    run = lambda **kw: _smoothed(logits, target, eps, ignore_index, **kw)  # noqa: E731
    out = [
        ("positions whose target is ignore_index (padding) must not count: leave them out of the sum AND out of the count "
         "(mask = target != ignore_index)", run(mask_pads=False)),
        ("take the mean over the NON-pad positions only: divide the masked sum by mask.sum(), not by every position (B * T)",
         run(divide_by="all")),
        ("return the MEAN over the non-pad positions, not their sum (the loss must not grow with the "
         "batch)", run(divide_by="none")),
        ("the smoothing term is the MEAN of -log p over the V classes (eps / V on each class), not their sum: with the sum "
         "the target distribution q adds up to 1 - eps + V * eps instead of 1", run(spread="sum")),
        (spread + " (not eps / (V - 1) over the other classes)", run(spread="V-1")),
        (ANNOTATED, run(spread="V-2")),
        (ANNOTATED + "; and F.cross_entropy returns the cross-entropy, which exceeds the KL divergence (nn.KLDivLoss) "
         "by the entropy of q", run(spread="V-2", kl=True)),
        (ANNOTATED + "; and F.cross_entropy returns the cross-entropy, which exceeds the KL divergence (nn.KLDivLoss) "
         "by the entropy of q", run(spread="V-2", kl=True, divide_by="none")),
        ("you computed the KL divergence KL(q || p) (nn.KLDivLoss); the loss here is the cross-entropy -sum(q * log p), "
         "which is larger by the entropy of q (a constant, so the gradients agree, but the value differs)", run(kl=True)),
        (spread + " (the target class gets its share eps / V as well)", run(spread="no-target")),
        ("turn the logits into log-probabilities with F.log_softmax(logits, dim=-1) first", run(log_softmax=False)),
        ("weight the target's term by (1 - eps): loss = (1 - eps) * nll + eps * (mean over the V classes of -log p). "
         "With 1 * nll + eps * ... the target distribution q adds up to 1 + eps instead of 1", run(full_nll=True)),
    ]
    if eps > 0:
        out.append(("this is plain cross-entropy: the smoothing term is missing. Mix in eps * (mean over all classes of -log p)",
                    _smoothed(logits, target, 0.0, ignore_index)))
        if eps != 0.1:
            out.append(("use the epsilon argument, not a fixed 0.1", _smoothed(logits, target, 0.1, ignore_index)))
    if ignore_index != 0:
        out.append(("use the ignore_index argument, not a fixed 0", _smoothed(logits, target, eps, 0)))
    return out


def _ls_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, dict]]:
    t1 = torch.tensor([[4, 6, 2, 5, 3], [5, 1, 2, 0, 0]])  # (2, 5), the second row padded with 0
    t2 = torch.tensor([[7, 3, 10, 2], [9, 2, 0, 0], [4, 8, 6, 2]])  # (3, 4)
    t3 = torch.tensor([[0, 5, 8, 2, 3, 3], [6, 0, 1, 2, 3, 3]])  # (2, 6): 3 is the ignored class, 0 a real one
    t4 = torch.tensor([[3, 4, 2, 0], [5, 2, 0, 0]])  # (2, 4)
    return [
        ("logits (2, 5, 7), target (2, 5) with 2 pads, default epsilon and "
         "ignore_index", randn(2, 5, 7, seed=1, scale=2.0), t1, {}),
        ("logits (3, 4, 11), target (3, 4) with 2 pads, epsilon=0.2", randn(3, 4, 11, seed=2, scale=3.0), t2, {"epsilon": 0.2}),
        ("logits (2, 6, 9), target (2, 6), epsilon=0.1, ignore_index=3 (class 0 is a real class here)",
         randn(2, 6, 9, seed=3), t3, {"epsilon": 0.1, "ignore_index": 3}),
        ("logits (2, 4, 6), target (2, 4) with 3 pads, epsilon=0.0 (plain "
         "cross-entropy)", randn(2, 4, 6, seed=4), t4, {"epsilon": 0.0}),
    ]


@checker("ch07.label_smoothing_loss")
def label_smoothing_loss(fn: Callable[..., Any]) -> None:
    """Check ``label_smoothing_loss(logits, target, epsilon=0.1, ignore_index=0)`` against F.cross_entropy."""
    for what, logits, target, kwargs in _ls_cases():
        tried = f"label_smoothing_loss({what})"
        eps, ignore = kwargs.get("epsilon", 0.1), kwargs.get("ignore_index", 0)
        got = call(fn, logits.clone(), target.clone(), tried=tried, **kwargs)
        if not isinstance(got, torch.Tensor):
            fail(tried, "a 0-dim tensor (a scalar you can call .backward() on)", f"{type(got).__name__}: {got!r}",
                 "return the tensor itself; .item() or float(...) would cut it off from autograd")
        expect_shape(got, (), tried=tried, hint="average over the non-pad positions to get ONE number: a 0-dim tensor, shape ()")
        V = logits.shape[-1]
        expected = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), label_smoothing=eps, ignore_index=ignore)
        expect_close(got, expected, tried=tried, atol=1e-6, rtol=1e-5, mistakes=_ls_mistakes(logits, target, eps, ignore),
                     hint="the cross-entropy against q = (1 - eps) * one_hot + eps / V, averaged over the positions "
                          "whose target != ignore_index")
    # gradients flow, and equal PyTorch's (float32)
    logits = randn(2, 5, 7, seed=1, scale=2.0).float().requires_grad_(True)
    target = _ls_cases()[0][2]
    tried = "label_smoothing_loss(float32 logits (2, 5, 7) with requires_grad=True).backward()"
    got = call(fn, logits, target, tried=tried)
    if not isinstance(got, torch.Tensor) or not got.requires_grad:
        fail(tried, "a loss connected to the logits by autograd", describe(got),
             "compute with torch operations on logits (no .item(), .detach(), numpy or torch.no_grad)")
    call(got.backward, tried=tried)
    ref = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(ref.reshape(-1, 7), target.reshape(-1), label_smoothing=0.1, ignore_index=0).backward()
    expect_close(logits.grad, torch.zeros_like(logits) if ref.grad is None else ref.grad, tried=tried + ": the gradient with "
                                                                                                        "respect to the logits",
                 hint="the gradient differs from F.cross_entropy's although the value matched: compute the loss from the logits "
                      "directly")
    ok("label_smoothing_loss: equal to F.cross_entropy(label_smoothing=eps, ignore_index=...), gradients included")


# --- Exercise 2: the learning-rate schedule ----------------------------------------------------

def _noam(step: int, d_model: int, warmup: int, factor: float) -> float:
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


_NOAM_CASES = [(512, 4000, 1.0, (1, 2, 100, 1000, 3999, 4000, 4001, 8000, 20000, 100000)),
               (32, 10, 2.0, tuple(range(1, 31))),
               (256, 400, 0.5, (1, 50, 399, 400, 401, 1600, 5000))]
FROM_ZERO = ("steps count from 1 (the first update is step 1, and it needs a small POSITIVE rate): your rate is 0 at "
             "step 1, so you count from 0. Use step itself; if you feed the schedule to LambdaLR, which counts from 0, "
             "shift there: lambda i: noam_lr(i + 1, ...)")
_NOAM_MISTAKES: list[tuple[str, Callable[[int, int, int, float], float]]] = [
    ("steps count from 1 (the first update is step 1): you return the rate of step + 1. "
     "If you feed it to LambdaLR, which counts from 0, shift there: lambda s: noam_lr(s + 1, ...)",
     lambda s, d, w, f: _noam(s + 1, d, w, f)),
    (FROM_ZERO, lambda s, d, w, f: 0.0 if s == 1 else _noam(s - 1, d, w, f)),
    ("steps count from 1: you return the rate of step - 1", lambda s, d, w, f: _noam(max(s - 1, 1), d, w, f)),
    ("the factor d_model ** -0.5 is missing (it makes wider models take smaller steps)",
     lambda s, d, w, f: f * min(s ** -0.5, s * w ** -1.5)),
    ("it is d_model ** -0.5 (one over the square root), not d_model ** 0.5",
     lambda s, d, w, f: f * d ** 0.5 * min(s ** -0.5, s * w ** -1.5)),
    ("take the MIN of the two phases (rise during warmup, then decay), not the max",
     lambda s, d, w, f: f * d ** -0.5 * max(s ** -0.5, s * w ** -1.5)),
    ("the warmup phase must meet the decay exactly at step = warmup: there step ** -0.5 = step * warmup ** -1.5",
     lambda s, d, w, f: f * d ** -0.5 * min(s ** -0.5, s * w ** -0.5)),
    ("multiply by the factor argument", lambda s, d, w, f: d ** -0.5 * min(s ** -0.5, s * w ** -1.5)),
]


@checker("ch07.noam_lr")
def noam_lr(fn: Callable[..., Any]) -> None:
    """Check ``noam_lr(step, d_model, warmup=4000, factor=1.0) -> float`` (steps from 1)."""
    for d_model, warmup, factor, steps in _NOAM_CASES:
        got = []
        for s in steps:
            tried = f"noam_lr({s}, d_model={d_model}, warmup={warmup}, factor={factor})"
            try:
                value = fn(s, d_model, warmup=warmup, factor=factor)
            except ZeroDivisionError as err:  # 0 ** -0.5: the step was shifted to count from 0
                fail(tried, f"{_noam(s, d_model, warmup, factor):.6g}", f"ZeroDivisionError: {err}", FROM_ZERO)
            except (NotImplementedError, CheckFailed):
                raise
            except Exception:  # noqa: BLE001 - call() turns it into the usual message
                value = call(fn, s, d_model, warmup=warmup, factor=factor, tried=tried)
            try:
                got.append(float(value))
            except (TypeError, ValueError):
                fail(tried, "a number (a Python "
                            "float)", f"{type(value).__name__}: {describe(value)}", "return a float, e.g. float(...)")
        expected = [_noam(s, d_model, warmup, factor) for s in steps]
        close = lambda a, b: all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b))  # noqa: E731
        if close(got, expected):
            continue
        k = next(i for i, (x, y) in enumerate(zip(got, expected)) if not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12))
        tried = f"noam_lr({steps[k]}, d_model={d_model}, warmup={warmup}, factor={factor})"
        hint = ("a linear rise until step = warmup, then a decay like 1 / sqrt(step), scaled by d_model ** -0.5 and factor; "
                "steps count from 1")
        for mistake, wrong in _NOAM_MISTAKES:
            if close(got, [wrong(s, d_model, warmup, factor) for s in steps]):
                hint = mistake
                break
        fail(tried, f"{expected[k]:.6g}", f"{got[k]:.6g}", hint)
    expect_default(fn, 100, 512, tried="noam_lr(100, d_model=512)", defaults={"warmup": 4000, "factor": 1.0})
    # the peak: the largest rate of steps 1 .. 3 * warmup is at step = warmup
    rates = [float(call(fn, s, 64, warmup=20, factor=1.0, tried=f"noam_lr({s}, d_model=64, warmup=20)")) for s in range(1, 61)]
    peak = max(range(60), key=rates.__getitem__) + 1
    if peak != 20:
        fail("noam_lr(step, d_model=64, warmup=20) for steps 1..60", "the largest rate at step 20 (= warmup)",
             f"the largest rate at step {peak}", "linear warmup up to step = warmup, then decay like step ** -0.5")
    ok(f"noam_lr: rises linearly for `warmup` steps, peaks at step = warmup ({_noam(4000, 512, 4000, 1.0):.4g} "
       "for the paper's d_model=512, warmup=4000), then decays like 1/sqrt(step)")


# --- Exercise 3: greedy decoding ---------------------------------------------------------------

class ScriptedTranslator(nn.Module):
    """A stand-in for the Transformer whose greedy translation is known: the source reversed, each
    word shifted to the next word of the vocabulary, then <eos>.

    ``encode(src, src_mask=None)`` returns the source ids as the memory (B, S, 1); ``decode(tgt,
    memory, src_mask=None, tgt_mask=None)`` returns logits (B, T, V) where position t scores the
    next token after the prefix ``tgt[:, :t+1]``. The script is followed only when the prefix
    starts with <bos> and agrees with the script so far; any other prefix gets a word that is
    never <eos>, so a decoder that does not feed its whole growing prefix goes astray. Like the
    real decoder, ``decode`` sees the source padding unless ``src_mask`` (B, 1, S) hides it.
    """

    def __init__(self, vocab_size: int = 12, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0) -> None:
        super().__init__()
        self.bos_id, self.eos_id, self.pad_id, self.vocab_size = bos_id, eos_id, pad_id, vocab_size
        self.words = [i for i in range(vocab_size) if i not in (bos_id, eos_id, pad_id)]
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # so next(model.parameters()) gives a device
        self.config = SimpleNamespace(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, pad_id=pad_id, max_len=64)

    def script(self, src_row: list[int]) -> list[int]:
        """The translation of one source row: its words reversed and shifted, then <eos>."""
        shift = {w: self.words[(i + 1) % len(self.words)] for i, w in enumerate(self.words)}
        return [shift[t] for t in reversed(src_row) if t != self.pad_id] + [self.eos_id]

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(src, torch.Tensor) or src.dim() != 2 or src.is_floating_point():
            raise TypeError(f"encode expects src as integer ids of shape (B, S), got {describe(src)}")
        return src.to(torch.float32)[..., None]  # (B, S, 1) the memory simply remembers the source

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None = None,
               tgt_mask: torch.Tensor | None = None, src: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if not isinstance(tgt, torch.Tensor) or tgt.dim() != 2 or tgt.is_floating_point() or tgt.shape[1] == 0:
            raise TypeError(f"decode expects tgt as integer ids of shape (B, T) with T >= 1, got {describe(tgt)}")
        if not isinstance(memory, torch.Tensor) or memory.dim() != 3 or memory.shape[0] != tgt.shape[0]:
            raise TypeError("decode expects the memory returned by encode, (B, S, 1) with the same B as tgt, got "
                            f"{describe(memory)}")
        B, T = tgt.shape
        S = memory.shape[1]
        if src_mask is None and src is not None:  # like the Transformer: the mask built from src
            src_mask = (src != self.pad_id)[:, None, :]
        visible = torch.ones(B, S, dtype=torch.bool) if src_mask is None else src_mask.reshape(B, -1)[:, -S:].bool().cpu()
        logits = -0.01 * torch.arange(self.vocab_size, dtype=torch.float32).repeat(B, T, 1)  # (B, T, V)
        for b in range(B):
            ids = memory[b, :, 0].round().long().tolist()
            # padding that no mask hides is read as a word, as a real decoder would mix it in
            script = self.script([self.words[0] if t == self.pad_id else t for t, v in zip(ids, visible[b].tolist()) if v])
            for t in range(T):
                logits[b, t, self._next(tgt[b, : t + 1].tolist(), script)] = 5.0
        return logits.to(self.anchor.device)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None) -> torch.Tensor:
        src_mask = (src != self.pad_id)[:, None, :] if src_mask is None else src_mask  # (B, 1, S), as the Transformer does
        return self.decode(tgt, self.encode(src, src_mask), src_mask, tgt_mask)

    def _next(self, prefix: list[int], script: list[int]) -> int:
        t = len(prefix) - 1
        if prefix[0] == self.bos_id and t < len(script) and prefix[1:] == script[:t]:
            return script[t]
        return self.words[(7 * sum(prefix) + t) % len(self.words)]  # astray: never <eos>


def _greedy_reference(model: ScriptedTranslator, src: torch.Tensor, max_len: int, feed: str = "prefix",
                      stop: str = "all", keep_bos: bool = False, keep_eos: bool = True, pos: int = -1,
                      masked: bool = True, pad: bool = True) -> torch.Tensor:
    """Greedy decoding, and the classic mistakes (what gets fed, when it stops, what it returns)."""
    B, bos, eos = src.shape[0], model.bos_id, model.eos_id
    src_mask = (src != model.pad_id)[:, None, :] if masked else None  # (B, 1, S)
    memory = model.encode(src, src_mask)
    ys = torch.full((B, 1), bos, dtype=torch.long)  # (B, 1)
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len):
        inp = {"prefix": ys, "last": ys[:, -1:], "bos": ys[:, :1]}[feed]
        nxt = model.decode(inp, memory, src_mask)[:, pos].argmax(-1)  # (B,)
        if stop != "never" and pad:
            nxt = nxt.masked_fill(done, model.pad_id)  # finished rows get padding
        ys = torch.cat([ys, nxt[:, None]], dim=1)  # (B, t + 2)
        done = done | (nxt == eos)
        if (stop == "all" and done.all()) or (stop == "any" and done.any()):
            break
    out = ys if keep_bos else ys[:, 1:]  # (B, L)
    return out if keep_eos else out.masked_fill(out == eos, model.pad_id)


def _greedy_mistakes(model: ScriptedTranslator, src: torch.Tensor, max_len: int) -> list[tuple[str, torch.Tensor]]:
    run = lambda **kw: _greedy_reference(model, src, max_len, **kw)  # noqa: E731
    return [
        ("feed the WHOLE growing prefix (<bos> and every token chosen so far) to decode at each step, not only the last "
         "token", run(feed="last")),
        ("you repeat the first word: append each chosen token to the prefix, decode the grown prefix again, and read the "
        "logits of its LAST position, logits[:, -1] (position 0 always scores the word after <bos>)", run(pos=0)),
        ("return the generated tokens only: drop the <bos> you started from (ys[:, 1:])", run(keep_bos=True)),
        ("stop at <eos>: a row that has produced <eos> gets pad_id from then on, and the loop ends when every row is "
         "done", run(stop="never")),
        ("a row that has written <eos> is finished: from then on it gets pad_id, not the model's next words (yours goes on "
        "writing after <eos> while the other rows finish); keep a `done` flag per row and masked_fill(done, "
        "pad_id)", run(pad=False)),
        ("stop only when EVERY row has produced <eos>, not as soon as one has", run(stop="any")),
        ("keep the <eos> token in the output (it tells where the translation ends)", run(keep_eos=False)),
        ("pass the source padding mask to decode as well: src_mask = (src != pad_id).unsqueeze(1), "
        "model.decode(ys, memory, src_mask); without it the decoder reads the padding of the shorter "
        "sentences", run(masked=False)),
    ]


@checker("ch07.greedy_decode")
def greedy_decode(fn: Callable[..., Any]) -> None:
    """Check ``greedy_decode(model, src, max_len, bos_id=1, eos_id=2, pad_id=0) -> (B, L)`` on a scripted model."""
    cases = [  # (what, src, max_len, ids)
        ("one sentence: src [[5, 7, 4]], max_len=10", torch.tensor([[5, 7, 4]]), 10, {}),
        ("a padded batch of 3: src [[5, 6, 7, 8], [9, 4, 0, 0], [3, 10, 11, 0]], max_len=10",
         torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0], [3, 10, 11, 0]]), 10, {}),
        ("max_len shorter than the first translation: src [[3, 4, 5, 6, 7, 8], [9, 0, 0, 0, 0, 0]], max_len=4",
         torch.tensor([[3, 4, 5, 6, 7, 8], [9, 0, 0, 0, 0, 0]]), 4, {}),
        ("other special ids: bos_id=4, eos_id=9, src [[5, 6, 7], [8, 3, 0]], max_len=8",
         torch.tensor([[5, 6, 7], [8, 3, 0]]), 8, {"bos_id": 4, "eos_id": 9}),
    ]
    for what, src, max_len, ids in cases:
        model = ScriptedTranslator(12, ids.get("bos_id", 1), ids.get("eos_id", 2), 0)
        tried = f"greedy_decode(model, {what}) on a scripted model that translates by reversing the words"
        got = call(fn, model, src.clone(), max_len=max_len, tried=tried, **ids)
        expected = _greedy_reference(model, src, max_len)
        _compare_ids(got, expected, tried, _greedy_mistakes(model, src, max_len), model.pad_id)
    ok("greedy_decode: feeds the growing prefix, takes the argmax of the last position, stops when every row has <eos>")


def _compare_ids(got: Any, expected: torch.Tensor, tried: str, mistakes: list[tuple[str, torch.Tensor]], pad_id: int) -> None:
    if not isinstance(got, torch.Tensor):
        fail(tried, f"a tensor of token ids, shape {tuple(expected.shape)}", f"{type(got).__name__}: {got!r}"[:200],
             "return a LongTensor (B, L), e.g. the concatenated prefix without <bos>")
    if got.dtype != torch.long:
        fail(tried, "dtype torch.int64 (token ids)", f"dtype {got.dtype}", "keep ids as torch.long: argmax already returns long")
    if got.shape == expected.shape and torch.equal(got, expected):
        return
    for hint, wrong in mistakes:
        if got.shape == wrong.shape and torch.equal(got, wrong):
            fail(tried, expected, got, hint)
    L = expected.shape[1]
    if got.dim() == 2 and got.shape[1] > L and torch.equal(got[:, :L], expected) and (got[:, L:] == pad_id).all():
        fail(tried, expected, got, "right tokens, but the loop went on after every row had produced <eos>: "
                                   "break as soon as all rows are done, so the output has no all-padding columns at the end")
    fail(tried, expected, got, "start from <bos>; each step decode the whole prefix, take the argmax of the last position, "
                               "append it; finished rows get pad_id; stop when every row has <eos> or after max_len tokens")


# --- Exercise 4: one step of beam search ------------------------------------------------------

def _beam_reference(log_probs: torch.Tensor, scores: torch.Tensor, k: int, *, add: bool = True, flat: bool = True,
                    index: str = "V", largest: bool = True, new: str = "total", transposed: bool = False,
                    top1: str = "") -> tuple[torch.Tensor, ...]:
    K, V = log_probs.shape
    total = scores[:, None] + log_probs if add else log_probs  # (K, V)
    if top1:  # each beam keeps only its own best token: K survivors, one per beam
        values, token = total.max(-1)  # (K,)
        beam = torch.arange(K)
        order = values.argsort(descending=True) if top1 == "sorted" else beam
        return values[order], beam[order], token[order]
    if transposed:  # the (V, K) transpose flattened: entry i is token i // K of beam i % K
        values, idx = total.T.reshape(-1).topk(k, largest=largest)
    elif flat:
        values, idx = total.reshape(-1).topk(k, largest=largest)  # (k,) over all K * V candidates
    else:  # top-k of each beam's row, then the first k of those in row order
        values, idx = total.topk(k, dim=-1, largest=largest)  # (K, k)
        idx = (idx + V * torch.arange(K)[:, None]).reshape(-1)[:k]
        values = values.reshape(-1)[:k]
    beam, token = {"V": (idx // V, idx % V), "swapped": (idx % V, idx // V), "K": (idx // K, idx % K),
                   "beam_size": (idx // k, idx % k), "beam by K": (idx // K, idx % V), "token by K": (idx // V, idx % K),
                   "beam by beam_size": (idx // k, idx % V)}[index]
    if new == "log_probs":
        values = log_probs[beam.clamp(0, K - 1), token.clamp(0, V - 1)]
    elif new == "total" and not add:  # chosen by the log-probs alone, but reported as running totals
        values = scores[beam.clamp(0, K - 1)] + values
    return values, beam, token


def _beam_mistakes(log_probs: torch.Tensor, scores: torch.Tensor, k: int) -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    run = lambda **kw: _beam_reference(log_probs, scores, k, **kw)  # noqa: E731
    idx_hint = "in the flattened K * V candidates each beam owns V consecutive entries: beam = idx // V, token = idx % V"
    no_scores = ("add the running scores first: candidate score = scores[beam] + log_probs[beam, token] "
                 "(scores[:, None] + log_probs), then choose")
    return [
        ("choose over all K * V candidates at once (flatten the (K, V) totals and take topk once), "
         "not the top-k of each beam's row: one beam may supply several survivors", run(flat=False)),
        (no_scores, run(add=False, new="raw")),
        (no_scores, run(add=False)),
        (idx_hint + " (you swapped them)", run(index="swapped")),
        (idx_hint + " (divide by V, the vocabulary size, not by K" + (", nor by beam_size, equal to K here)" if
                                                                       log_probs.shape[0] == k else ")"), run(index="K")),
        (idx_hint + " (divide by V, the vocabulary size, not by beam_size)", run(index="beam_size")),
        (idx_hint + " (beam = idx // V, the vocabulary size, not idx // K)", run(index="beam by K")),
        (idx_hint + " (token = idx % V, the vocabulary size, not idx % K)", run(index="token by K")),
        (idx_hint + " (beam = idx // V, the vocabulary size, not idx // beam_size)", run(index="beam by beam_size")),
        ("keep the LARGEST scores (log-probabilities: higher is better)", run(largest=False)),
        ("new_scores are running totals: scores[beam] + log_probs[beam, token], not the step's log-prob "
         "alone", run(new="log_probs")),
        ("you flattened the TRANSPOSED totals (V, K), so an index no longer splits as beam = idx // V, token = idx % V: "
         "flatten the (K, V) totals as they are, total.reshape(-1) (row k holds beam k's V candidates)", run(transposed=True)),
        ("each beam kept only its own best token (top-1 per beam): that is K greedy searches side by side, not beam "
         "search. Take the best beam_size of ALL K * V candidates: one beam may supply several survivors, another none",
         run(top1="sorted")),
        ("each beam kept only its own best token (top-1 per beam): that is K greedy searches side by side, not beam "
         "search. Take the best beam_size of ALL K * V candidates: one beam may supply several survivors, another none",
         run(top1="beam order")),
    ]


def _beam_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, int]]:
    probs = torch.tensor([[0.05, 0.45, 0.40, 0.05, 0.05],  # beam 0: two good words
                          [0.10, 0.10, 0.10, 0.60, 0.10],
                          [0.90, 0.025, 0.025, 0.025, 0.025]], dtype=torch.float64)  # beam 2: sure, but far behind
    g = torch.Generator().manual_seed(7)
    rand = torch.log_softmax(torch.randn(4, 12, generator=g, dtype=torch.float64) * 2, -1)  # (4, 12)
    return [
        ("K=3 beams, V=5, scores [-1.0, -1.5, -2.0], beam_size=3 (beam 0 holds the two best words)",
         probs.log(), torch.tensor([-1.0, -1.5, -2.0], dtype=torch.float64), 3),
        ("the first step: K=1 beam (just <bos>), V=12, scores [0.0], "
         "beam_size=4", rand[:1], torch.zeros(1, dtype=torch.float64), 4),
        ("K=4, V=12, scores [-0.3, -0.4, -2.5, -3.0], "
         "beam_size=4", rand, torch.tensor([-0.3, -0.4, -2.5, -3.0], dtype=torch.float64), 4),
        ("K=4, V=12, scores [-3.0, -0.2, -0.9, -0.5], "
         "beam_size=2", rand.flip(1), torch.tensor([-3.0, -0.2, -0.9, -0.5], dtype=torch.float64), 2),
    ]


@checker("ch07.beam_step")
def beam_step(fn: Callable[..., Any]) -> None:
    """Check ``beam_step(log_probs, scores, beam_size) -> (new_scores, beam_idx, token_idx)``, best first."""
    for what, log_probs, scores, k in _beam_cases():
        tried = f"beam_step({what})"
        got = call(fn, log_probs.clone(), scores.clone(), k, tried=tried)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            fail(tried, "a tuple (new_scores, beam_idx, token_idx)", describe(got), "return three tensors of shape (beam_size,)")
        right = _beam_reference(log_probs, scores, k)
        names = ("new_scores", "beam_idx", "token_idx")
        for name, g, r in zip(names, got, right):
            expect_shape(g, tuple(r.shape), tried=f"{tried}: {name}", hint=f"{name} has one entry per survivor: shape "
                                                                           f"(beam_size,) = ({k},)")
        for name, g in zip(names[1:], got[1:]):
            if g.dtype.is_floating_point:
                fail(f"{tried}: {name}", "integer indices (torch.long)", f"dtype {g.dtype}",
                     "use integer division: idx // V (or torch.div(idx, V, rounding_mode='floor')) and idx % V")
        same = lambda a, b: torch.allclose(a[0].double(), b[0].double(), atol=1e-9) and all(  # noqa: E731
            torch.equal(x.long(), y.long()) for x, y in zip(a[1:], b[1:]))
        if same(got, right):
            continue
        shown = lambda t: f"new_scores {describe(t[0])}, beam_idx {t[1].tolist()}, token_idx {t[2].tolist()}"  # noqa: E731
        for hint, wrong in _beam_mistakes(log_probs, scores, k):
            if same(got, wrong):
                fail(tried, shown(right), shown(got), hint)
        order = torch.argsort(got[0].double(), descending=True)
        if same(tuple(t[order] for t in got), right):
            fail(tried, shown(right), shown(got), "return the survivors best first (descending scores), as topk does")
        fail(tried, shown(right), shown(got), "total = scores[:, None] + log_probs (K, V); take topk(beam_size) of "
                                              "total.view(-1); "
                                              "beam = idx // V, token = idx % V")
    ok("beam_step: adds the running scores, picks the best beam_size of all K * V continuations, splits idx into (beam, token)")
