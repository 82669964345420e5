"""Checkers for chapter 09 (GPT and Llama): the shifted next-token loss, top-p filtering, rotary
embeddings, RMSNorm and grouped-query attention.

References are PyTorch built-ins (``F.cross_entropy``, ``F.rms_norm``,
``F.scaled_dot_product_attention(..., enable_gqa=True)``) or small formulas written here; no course
model module is imported. Each classic mistake is computed here too, so that it gets its own hint.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import call, checker, expect_close, expect_shape, fail, load_hints, ok, randn

__all__ = ["HINTS", "apply_rotary", "grouped_query_attention", "next_token_loss", "rms_norm", "temperature_top_k",
           "top_p_filter"]

HINTS = load_hints("ch09")


# --- Exercise 1: the shifted next-token loss -------------------------------------------------------

@checker("ch09.next_token_loss")
def next_token_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """``fn(logits (B, T, V), ids (B, T)) -> scalar``: mean cross-entropy of position t predicting token t + 1."""
    for seed, (b, t, v) in enumerate([(2, 5, 7), (3, 4, 11), (1, 6, 5)]):
        logits = randn(b, t, v, seed=seed, scale=2.0)
        ids = torch.randint(0, v, (b, t), generator=torch.Generator().manual_seed(100 + seed))
        tried = f"logits {tuple(logits.shape)}, ids {tuple(ids.shape)}"
        got = call(fn, logits, ids, tried=tried)
        expected = F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1))
        mistakes = [
            ("no shift: position t must predict token t + 1, not token t (which it can already see)",
             F.cross_entropy(logits.reshape(-1, v), ids.reshape(-1))),
            ("shifted the wrong way: the logits at position t predict the token AFTER t, so the last position has "
             "nothing to predict and the first token is predicted by nothing",
             F.cross_entropy(logits[:, 1:].reshape(-1, v), ids[:, :-1].reshape(-1))),
            ("return the mean over the B * (T - 1) predictions, not their sum",
             F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1), reduction="sum")),
            ("cross-entropy takes the raw logits (it applies log_softmax itself); you applied softmax first",
             F.cross_entropy(logits[:, :-1].softmax(-1).reshape(-1, v), ids[:, 1:].reshape(-1))),
        ]
        expect_shape(got, (), tried=tried, hint="return one number: the mean over every prediction (a 0-dim tensor)")
        expect_close(got, expected, tried=tried, hint=HINTS["next_token_loss"][0], mistakes=mistakes)
    ok("next_token_loss: position t predicts token t + 1, averaged over B·(T-1) predictions")


# --- Exercise 2: temperature and top-k ------------------------------------------------------------

@checker("ch09.temperature_top_k")
def temperature_top_k(fn: Callable[[torch.Tensor, float, int], torch.Tensor]) -> None:
    """``fn(logits (B, V), temperature, k) -> (B, V)``: logits / temperature, all but the k largest at -inf."""
    for seed, (b, v, temperature, k) in enumerate([(2, 6, 0.5, 2), (3, 8, 2.0, 3), (1, 5, 0.7, 1), (2, 4, 1.3, 4)]):
        logits = randn(b, v, seed=seed, scale=2.0)
        tried = f"logits {tuple(logits.shape)}, temperature {temperature}, k {k}"
        got = call(fn, logits.clone(), temperature, k, tried=tried)
        expect_shape(got, (b, v), tried=tried, hint="return logits of the same shape (B, V), not the kept ids")

        def keep_top(x: torch.Tensor, kk: int, largest: bool = True) -> torch.Tensor:
            kth = x.topk(kk, dim=-1, largest=largest).values[:, -1:]  # (B, 1)
            return x.masked_fill(x < kth if largest else x > kth, float("-inf"))

        scaled = logits / temperature
        mistakes = [
            ("divide the logits by the temperature; multiplying makes a low temperature flatter instead of sharper",
             keep_top(logits * temperature, k)),
            ("keep the k LARGEST logits (torch.topk's default), not the smallest", keep_top(scaled, k, largest=False)),
            ("use the temperature: divide the logits by it before (or after) the top-k cut", keep_top(logits, k)),
            ("one token too few: the k-th largest logit itself is kept (and any tied with it)",
             keep_top(scaled, k - 1) if k > 1 else scaled.masked_fill(torch.ones_like(scaled, dtype=torch.bool), float("-inf"))),
            ("set the dropped logits to float('-inf'), not 0: a logit of 0 still has probability after softmax",
             scaled.masked_fill(scaled < scaled.topk(k, dim=-1).values[:, -1:], 0.0)),
        ]
        expected = keep_top(scaled, k)
        expect_close(got, expected, tried=tried, hint=HINTS["temperature_top_k"][0],
                     mistakes=[m for m in mistakes if not torch.equal(m[1], expected)])
    ok("temperature_top_k: logits / temperature, the k largest kept, the others at -inf")


# --- Exercise 3: top-p (nucleus) filtering --------------------------------------------------------

def _top_p_reference(logits: torch.Tensor, p: float, rule: str = "right") -> torch.Tensor:
    """The right filter, and the classic mistakes: ``too_few``, ``too_many``, ``unsorted``."""
    if rule == "unsorted":  # a running total in vocabulary order
        probs = logits.softmax(-1)
        return logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))
    probs, order = logits.softmax(-1).sort(-1, descending=True)  # (B, V) most likely first
    cum = probs.cumsum(-1)
    drop = cum - probs >= p  # the tokens ranked above already reach p
    if rule == "too_few":
        drop = cum >= p  # drops the crossing token as well
    elif rule == "too_many":
        rank = torch.arange(probs.shape[-1]).expand_as(drop)
        drop = rank > (~drop).sum(-1, keepdim=True)  # keeps one token past the crossing one
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


_TOP_P_CASES = [  # probabilities chosen so that no running total lands exactly on p
    (torch.tensor([[0.42, 0.08, 0.3, 0.15, 0.05], [0.05, 0.12, 0.63, 0.04, 0.16]]), 0.6),
    (torch.tensor([[0.1, 0.2, 0.05, 0.35, 0.3]]), 0.9),
    (torch.tensor([[0.7, 0.1, 0.1, 0.06, 0.04], [0.25, 0.25, 0.2, 0.2, 0.1]]), 0.5),
]


@checker("ch09.top_p_filter")
def top_p_filter(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """``fn(logits (B, V), p) -> (B, V)``: the kept logits unchanged, the dropped ones at -inf."""
    for probs, p in _TOP_P_CASES:
        logits = probs.double().log() + 1.5  # logits are log-probabilities up to a constant
        tried = f"probabilities {probs.tolist()} (as logits), p = {p}"
        got = call(fn, logits.clone(), p, tried=tried)
        expect_shape(got, tuple(logits.shape), tried=tried, hint="return logits of the same shape (B, V), not the kept ids")
        expected = _top_p_reference(logits, p)
        kept = torch.isfinite(got) if isinstance(got, torch.Tensor) else None
        for rule, hint in [
            ("too_few", "one token too few: the token whose probability makes the running total reach p belongs to "
                        "the kept set as well (without it the kept tokens would not reach p)"),
            ("too_many", "one token too many: stop at the first token whose running total reaches p"),
            ("unsorted", "sort the probabilities from large to small before the running sum (sort(descending=True)), "
                         "and put the mask back in vocabulary order"),
        ]:
            wrong = torch.isfinite(_top_p_reference(logits, p, rule))
            if kept is not None and torch.equal(kept, wrong) and not torch.equal(wrong, torch.isfinite(expected)):
                fail(tried, f"kept tokens {torch.isfinite(expected).tolist()}", f"kept tokens {kept.tolist()}", hint)
        expect_close(got, expected, tried=tried, hint=HINTS["top_p_filter"][0]
                     + " Return the kept logits unchanged (not probabilities, not renormalised), the others at float('-inf').")
    ok("top_p_filter: the smallest set of most likely tokens that reaches p, the crossing token included")


# --- Exercise 4: rotary position embeddings -------------------------------------------------------

def _rotary(x: torch.Tensor, positions: torch.Tensor, base: float, pairs: str = "halves", sign: float = 1.0,
            freq_step: int = 2) -> torch.Tensor:
    dh = x.shape[-1]
    freq = base ** (-torch.arange(0, dh, 2, dtype=torch.float64) * (freq_step / 2) / dh)  # (Dh/2,)
    angle = sign * positions.double()[:, None] * freq  # (T, Dh/2)
    c, s = angle.cos(), angle.sin()
    if pairs == "halves":
        x1, x2 = x.chunk(2, -1)
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)
    x1, x2 = x[..., 0::2], x[..., 1::2]  # neighbours (2i, 2i+1)
    return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).flatten(-2)


@checker("ch09.apply_rotary")
def apply_rotary(fn: Callable[..., torch.Tensor]) -> None:
    """``fn(x (B, H, T, Dh), positions (T,), base=10000.0) -> (B, H, T, Dh)``, pairs (i, i + Dh/2)."""
    for seed, (shape, positions, base) in enumerate([((1, 2, 5, 8), torch.arange(5), 10000.0),
                                                     ((2, 3, 4, 6), torch.tensor([3, 4, 5, 6]), 10000.0),
                                                     ((1, 1, 3, 4), torch.tensor([0, 7, 2]), 100.0)]):
        x = randn(*shape, seed=seed)
        tried = f"x {shape}, positions {positions.tolist()}, base {base}"
        got = call(fn, x.clone(), positions, base=base, tried=tried)
        mistakes = [
            ("wrong pairs: this version turns neighbours (2i, 2i+1), Meta's original layout. Here (as in "
             "transformers' Llama) dimension i is paired with i + Dh/2: split x into its two halves",
             _rotary(x, positions, base, pairs="neighbours")),
            ("the rotation goes the wrong way: x1' = x1 cos - x2 sin and x2' = x2 cos + x1 sin "
             "(rotate_half(x) = cat(-x2, x1))", _rotary(x, positions, base, sign=-1.0)),
            ("the frequencies are base^(-2i/Dh) for pair i = 0 .. Dh/2 - 1 (torch.arange(0, Dh, 2) / Dh), "
             "not base^(-i/Dh)", _rotary(x, positions, base, freq_step=1)),
            ("use the positions you are given, not 0 .. T - 1 (with a cache the new token's position is not 0)",
             _rotary(x, torch.arange(shape[2]), base)),
            ("use the base argument, not a fixed 10000", _rotary(x, positions, 10000.0)),
        ]
        expect_close(got, _rotary(x, positions, base), tried=tried, hint=HINTS["apply_rotary"][0],
                     mistakes=[m for m in mistakes if not torch.allclose(m[1], _rotary(x, positions, base))])
    ok("apply_rotary: each pair (i, i + Dh/2) turned by position · base^(-2i/Dh)")


# --- Exercise 5: RMSNorm ---------------------------------------------------------------------------

@checker("ch09.rms_norm")
def rms_norm(fn: Callable[..., torch.Tensor]) -> None:
    """``fn(x (..., D), weight (D,), eps=1e-6) -> (..., D)``, equal to ``F.rms_norm``."""
    for seed, (shape, eps) in enumerate([((2, 3, 8), 1e-6), ((4, 5), 1e-2), ((1, 2, 6), 0.5)]):
        x = randn(*shape, seed=seed, scale=2.0) + 0.7  # a non-zero mean, so subtracting it shows
        w = randn(shape[-1], seed=50 + seed) * 0.5 + 1.0
        tried = f"x {shape} (mean 0.7), random weight, eps {eps}"
        got = call(fn, x.clone(), w.clone(), eps=eps, tried=tried)
        ms = x.pow(2).mean(-1, keepdim=True)
        mistakes = [
            ("RMSNorm does not subtract the mean (that is LayerNorm): divide x itself by its root mean square",
             F.layer_norm(x, (shape[-1],), w, None, eps)),
            ("eps goes inside the square root: sqrt(mean(x²) + eps)", x / (ms.sqrt() + eps) * w),
            ("multiply by the gain (weight) at the end", F.rms_norm(x, (shape[-1],), None, eps)),
            ("divide by the root of the MEAN of x² (over the last dimension), not of the sum",
             x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w),
            ("divide by the root mean square, not multiply by it", x * torch.sqrt(ms + eps) * w),
        ]
        expect_close(got, F.rms_norm(x, (shape[-1],), w, eps), tried=tried, hint=HINTS["rms_norm"][0], mistakes=mistakes)
    ok("rms_norm equals F.rms_norm (no mean subtracted, eps inside the root, the gain applied)")


# --- Exercise 6: grouped-query attention ----------------------------------------------------------

@checker("ch09.grouped_query_attention")
def grouped_query_attention(fn: Callable[..., torch.Tensor]) -> None:
    """``fn(q (B, H, T, Dh), k, v (B, H_kv, T, Dh), mask (T, T) bool) -> (B, H, T, Dh)``."""
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    for seed, (h, h_kv, mask) in enumerate([(4, 2, causal), (6, 3, None), (4, 1, causal), (2, 2, causal)]):
        q, k, v = randn(2, h, 5, 8, seed=seed), randn(2, h_kv, 5, 8, seed=10 + seed), randn(2, h_kv, 5, 8, seed=20 + seed)
        tried = f"q with H = {h} heads, k and v with H_kv = {h_kv}, {'causal mask' if mask is not None else 'no mask'}"
        got = call(fn, q, k, v, mask, tried=tried)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        g = h // h_kv
        tiled = F.scaled_dot_product_attention(q, k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1), attn_mask=mask)
        mistakes = [
            ("key/value heads repeated in the wrong order: [k0, k1, k0, k1] (repeat / tile) gives query head 1 the "
             "key head 1. CONSECUTIVE query heads share one key head: [k0, k0, k1, k1]",
             tiled),
            ("apply the mask (True = may attend): masked_fill(~mask, float('-inf')) before the softmax",
             F.scaled_dot_product_attention(q, k, v, enable_gqa=True)),
            ("scale the scores by 1 / sqrt(Dh)",
             F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True, scale=1.0)),
        ]
        expect_close(got, expected, tried=tried, hint=HINTS["grouped_query_attention"][0],
                     mistakes=[m for m in mistakes if not torch.allclose(m[1], expected)])
    ok("grouped_query_attention equals F.scaled_dot_product_attention(..., enable_gqa=True)")
