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

from . import (
    OVERFLOW_HINT,
    call_untouched,
    checker,
    describe,
    expect_close,
    expect_default,
    expect_shape,
    fail,
    forbidden,
    load_hints,
    naive_softmax,
    ok,
    randn,
)

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
        got = call_untouched(fn, logits, ids, tried=tried, names=("logits", "ids"))
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

def _keep_top(x: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """The k largest (or smallest) of each row and every value tied with the k-th, the others at -inf."""
    if k < 1:
        return torch.full_like(x, float("-inf"))
    kth = x.topk(min(k, x.shape[-1]), dim=-1, largest=largest).values[:, -1:]  # (B, 1)
    return x.masked_fill(x < kth if largest else x > kth, float("-inf"))


def _exactly_k(x: torch.Tensor, k: int) -> torch.Tensor:
    """topk's k indices scattered back: exactly k per row, a tie at the k-th value broken arbitrarily."""
    keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, x.topk(k, dim=-1).indices, True)  # (B, V)
    return x.masked_fill(~keep, float("-inf"))


_TIES_KEPT = ("keep every value tied with the k-th largest too (the statement keeps ties): compare each entry with the k-th "
              "value, scaled.masked_fill(scaled < kth, -inf), instead of keeping exactly the k indices topk returns")
_TOP_K_CASES = [  # (logits, temperature, k); the last has a tie at the k-th value (row 0) and above it (row 1)
    (randn(2, 6, seed=0, scale=2.0), 0.5, 2), (randn(3, 8, seed=1, scale=2.0), 2.0, 3), (randn(1, 5, seed=2, scale=2.0), 0.7, 1),
    (randn(2, 4, seed=3, scale=2.0), 1.3, 4),
    (torch.tensor([[2.0, 1.0, 0.5, 1.0, -1.0, 1.0], [3.0, 3.0, 0.0, -2.0, 1.5, 1.0]], dtype=torch.float64), 0.8, 2),
]


@checker("ch09.temperature_top_k")
def temperature_top_k(fn: Callable[[torch.Tensor, float, int], torch.Tensor]) -> None:
    """``fn(logits (B, V), temperature, k) -> (B, V)``: logits / temperature, all but the k largest (and ties) at -inf."""
    for logits, temperature, k in _TOP_K_CASES:
        b, v = logits.shape
        tried = f"logits {describe(logits)}, temperature {temperature}, k {k}"
        got = call_untouched(fn, logits, temperature, k, tried=tried, names=("logits",))
        expect_shape(got, (b, v), tried=tried, hint="return logits of the same shape (B, V), not the kept ids")
        scaled = logits / temperature
        expected = _keep_top(scaled, k)
        mistakes = [
            ("divide the logits by the temperature; multiplying makes a low temperature flatter instead of sharper",
             _keep_top(logits * temperature, k)),
            ("keep the k LARGEST logits (torch.topk's default), not the smallest", _keep_top(scaled, k, largest=False)),
            ("use the temperature: divide the logits by it before (or after) the top-k cut", _keep_top(logits, k)),
            ("one token too few: the k-th largest logit itself is kept (and any tied with it)", _keep_top(scaled, k - 1)),
            ("one token too many: keep the k largest, not k + 1 (topk(k).values[:, -1:] is the k-th largest, the last one "
             "kept; index k would be the (k + 1)-th)", _keep_top(scaled, k + 1)),
            (_TIES_KEPT, _exactly_k(scaled, k)),
            ("set the dropped logits to float('-inf'), not 0: a logit of 0 still has probability after softmax",
             scaled.masked_fill(scaled < scaled.topk(k, dim=-1).values[:, -1:], 0.0)),
        ]
        expect_close(got, expected, tried=tried, hint=HINTS["temperature_top_k"][0],
                     mistakes=[m for m in mistakes if not torch.equal(m[1], expected)])
    ok("temperature_top_k: logits / temperature, the k largest kept (ties with the k-th too), the others at -inf")


# --- Exercise 3: top-p (nucleus) filtering --------------------------------------------------------

def _top_p_rule(logits: torch.Tensor, p: float, rule: str = "right") -> torch.Tensor:
    """The kept tokens (B, V) bool under the right rule (one valid set; with ties others are valid too) and the
    classic mistakes: ``too_few``, ``forced`` (too_few with the top token forced in), ``unsorted``, ``logit_cumsum``."""
    if rule == "unsorted":  # a running total in vocabulary order
        probs = logits.softmax(-1)
        return probs.cumsum(-1) - probs < p
    values = logits if rule == "logit_cumsum" else logits.softmax(-1)
    probs, order = values.sort(-1, descending=True)  # (B, V) most likely first
    cum = probs.cumsum(-1)
    keep = cum - probs < p  # the tokens ranked above do not reach p yet
    if rule in ("too_few", "forced"):
        keep = cum < p
        keep[:, 0] |= rule == "forced"
    return keep.scatter(-1, order, keep)


def _bad_top_p_row(kept: torch.Tensor, probs: torch.Tensor, p: float) -> tuple[int, str] | None:
    """The first row whose kept set is not a smallest set of most likely tokens reaching p, and what is wrong with it."""
    for row, (keep, pr) in enumerate(zip(kept, probs)):
        ranked = pr.sort(descending=True).values
        smallest = int((ranked.cumsum(0) - ranked < p).sum())  # the cases keep every running total off p
        n = int(keep.sum())
        top = n == 0 or n == len(pr) or pr[keep].min() >= pr[~keep].max() - 1e-12
        if n == smallest and top:
            continue
        if not top:
            return row, "unsorted"
        return row, "too_few" if n < smallest else "too_many"
    return None


_TOP_P_HINTS = {
    "too_few": "one token too few: the token whose probability makes the running total reach p belongs to the kept set as "
               "well (without it the kept tokens would not reach p): keep a token while the total of those ranked ABOVE it "
               "is below p",
    "forced": "one token too few, hidden whenever the top token alone reaches p: forcing the most likely token in does not "
              "fix the rule. Keep a token while the total of the tokens ranked ABOVE it is below p (cumsum - probs < p); "
              "that rule keeps the top token by itself",
    "too_many": "one token too many: stop at the first token whose running total reaches p",
    "unsorted": "sort the probabilities from large to small before the running sum (sort(descending=True)), and put the mask "
                "back in vocabulary order",
    "logit_cumsum": "the running total adds PROBABILITIES (softmax of the row), not logits: logits can be negative and do "
                    "not sum to 1",
    "sorted_order": "put the result back in vocabulary order: entry i of the result belongs to token i. You returned the "
                    "sorted logits; scatter the mask back with the sort's indices (mask.scatter(-1, order, mask))",
}
_TOP_P_CASES = [  # probabilities chosen so that no running total lands on p; the last two rows tie AT the boundary
    (torch.tensor([[0.42, 0.08, 0.3, 0.15, 0.05], [0.05, 0.12, 0.63, 0.04, 0.16]]), 0.6, torch.float64),
    (torch.tensor([[0.1, 0.2, 0.05, 0.35, 0.3]]), 0.9, torch.float64),
    (torch.tensor([[0.7, 0.1, 0.1, 0.06, 0.04], [0.2, 0.3, 0.2, 0.1, 0.2]]), 0.55, torch.float64),
    (torch.tensor([[0.06, 0.3, 0.14, 0.14, 0.36], [0.25, 0.25, 0.25, 0.15, 0.1]]), 0.45, torch.float32),
]


@checker("ch09.top_p_filter")
def top_p_filter(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """``fn(logits (B, V), p) -> (B, V)``: the kept logits unchanged, the dropped ones at -inf. Any smallest set of most
    likely tokens that reaches p is accepted (with ties at the boundary there are several)."""
    for probs, p, dtype in _TOP_P_CASES:
        logits = (probs.double().log() + 1.5).to(dtype)  # logits are log-probabilities up to a constant
        tried = f"probabilities {probs.tolist()} (as {dtype} logits), p = {p}"
        got = call_untouched(fn, logits, p, tried=tried, names=("logits",))
        expect_shape(got, tuple(logits.shape), tried=tried, hint="return logits of the same shape (B, V), not the kept ids")
        kept = torch.isfinite(got)
        if not got.is_floating_point() or not torch.equal(got[kept].to(logits.dtype), logits[kept]):
            sorted_logits = logits.sort(-1, descending=True).values
            right_sorted = sorted_logits.masked_fill(~_top_p_rule(sorted_logits, p), float("-inf"))
            hint = (_TOP_P_HINTS["sorted_order"] if got.is_floating_point() and torch.equal(got.to(logits.dtype), right_sorted)
                    else HINTS["top_p_filter"][0] + " Return the kept logits unchanged (not probabilities, not "
                                                    "renormalised), the others at float('-inf').")
            fail(tried, f"{describe(logits)} with the dropped tokens at -inf", got, hint)
        bad = _bad_top_p_row(kept, logits.double().softmax(-1), p)
        if bad is None:
            continue
        row, kind = bad
        for rule in ("forced", "unsorted", "logit_cumsum"):
            if torch.equal(kept, _top_p_rule(logits, p, rule)):
                kind = rule
                break
        fail(f"{tried}: row {row}", f"a smallest set of most likely tokens reaching p, e.g. kept "
             f"{_top_p_rule(logits, p)[row].tolist()}", f"kept {kept[row].tolist()}", _TOP_P_HINTS[kind])
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


_ROTARY_CASES = [((1, 2, 5, 8), torch.arange(5), 10000.0), ((2, 3, 4, 6), torch.tensor([3, 4, 5, 6]), 10000.0),
                 ((1, 1, 3, 4), torch.tensor([0, 7, 2]), 100.0)]


@checker("ch09.apply_rotary")
def apply_rotary(fn: Callable[..., torch.Tensor]) -> None:
    """``fn(x (B, H, T, Dh), positions (T,), base=10000.0) -> (B, H, T, Dh)``, pairs (i, i + Dh/2)."""
    off_by_one = ("positions off by one: the vector at position m turns by m · base^(-2i/Dh), so position 0 is not "
                  "turned at all; use the positions as given (no + 1 or - 1)")
    for seed, (shape, positions, base) in enumerate(_ROTARY_CASES):
        x = randn(*shape, seed=seed)
        tried = f"x {shape}, positions {positions.tolist()}, base {base}"
        got = call_untouched(fn, x, positions, base=base, tried=tried, names=("x", "positions"))
        right = _rotary(x, positions, base)
        mistakes = [
            ("wrong pairs: this version turns neighbours (2i, 2i+1), Meta's original layout. Here (as in "
             "transformers' Llama) dimension i is paired with i + Dh/2: split x into its two halves",
             _rotary(x, positions, base, pairs="neighbours")),
            ("the rotation goes the wrong way: x1' = x1 cos - x2 sin and x2' = x2 cos + x1 sin "
             "(rotate_half(x) = cat(-x2, x1))", _rotary(x, positions, base, sign=-1.0)),
            ("the frequencies are base^(-2i/Dh) for pair i = 0 .. Dh/2 - 1 (torch.arange(0, Dh, 2) / Dh), "
             "not base^(-i/Dh)", _rotary(x, positions, base, freq_step=1)),
            (off_by_one, _rotary(x, positions + 1, base)),
            (off_by_one, _rotary(x, positions - 1, base)),
            ("use the positions you are given, not 0 .. T - 1 (with a cache the new token's position is not 0)",
             _rotary(x, torch.arange(shape[2]), base)),
            ("use the base argument, not a fixed 10000", _rotary(x, positions, 10000.0)),
        ]
        expect_close(got, right, tried=tried, hint=HINTS["apply_rotary"][0],
                     mistakes=[m for m in mistakes if not torch.allclose(m[1], right)])
    x, positions = randn(1, 2, 3, 8, seed=9), torch.tensor([2, 5, 9])
    expect_default(fn, x, positions, tried="apply_rotary(x (1, 2, 3, 8), positions [2, 5, 9])", defaults={"base": 10000.0})
    ok("apply_rotary: each pair (i, i + Dh/2) turned by position · base^(-2i/Dh)")


# --- Exercise 5: RMSNorm ---------------------------------------------------------------------------

_NO_BUILTIN = ("write it from torch.pow, mean and sqrt (or rsqrt): the exercise is to build it, so F.rms_norm, torch.rms_norm "
               "and nn.RMSNorm are not allowed here (the checker compares you with them)")


@checker("ch09.rms_norm")
def rms_norm(fn: Callable[..., torch.Tensor]) -> None:
    """``fn(x (..., D), weight (D,), eps=1e-6) -> (..., D)``, equal to ``F.rms_norm``, which it may not call."""
    for seed, (shape, eps) in enumerate([((2, 3, 8), 1e-6), ((4, 5), 1e-2), ((1, 2, 6), 0.5)]):
        x = randn(*shape, seed=seed, scale=2.0) + 0.7  # a non-zero mean, so subtracting it shows
        w = randn(shape[-1], seed=50 + seed) * 0.5 + 1.0
        tried = f"x {shape} (mean 0.7), random weight, eps {eps}"
        with forbidden({"F.rms_norm": (F, "rms_norm"), "torch.rms_norm": (torch, "rms_norm")}, tried=tried, hint=_NO_BUILTIN):
            got = call_untouched(fn, x, w, eps=eps, tried=tried, names=("x", "weight"))
        ms = x.pow(2).mean(-1, keepdim=True)
        mistakes = [
            ("RMSNorm does not subtract the mean (that is LayerNorm): divide x itself by its root mean square",
             F.layer_norm(x, (shape[-1],), w, None, eps)),
            ("eps goes inside the square root: sqrt(mean(x²) + eps)", x / (ms.sqrt() + eps) * w),
            ("multiply by the gain (weight) at the end", F.rms_norm(x, (shape[-1],), None, eps)),
            ("divide by the root of the MEAN of x² (over the last dimension), not of the sum",
             x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w),
            ("divide by the root mean square, not multiply by it", x * torch.sqrt(ms + eps) * w),
            ("take the square ROOT of the mean square: divide by sqrt(mean(x²) + eps), not by mean(x²) + eps itself",
             x / (ms + eps) * w),
        ]
        expect_close(got, F.rms_norm(x, (shape[-1],), w, eps), tried=tried, hint=HINTS["rms_norm"][0], mistakes=mistakes)
    x, w = randn(2, 4, seed=7, scale=1e-3), torch.ones(4, dtype=torch.float64)  # tiny x: eps matters
    expect_default(fn, x, w, tried="rms_norm(x (2, 4) of size 1e-3, weight ones)", defaults={"eps": 1e-6})
    ok("rms_norm equals F.rms_norm (no mean subtracted, eps inside the root, the gain applied)")


# --- Exercise 6: grouped-query attention ----------------------------------------------------------

def _gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, *, tiled: bool = False,
         invert: bool = False, scale: bool = True, naive: bool = False) -> torch.Tensor:
    """Grouped-query attention written out (no nan clean-up), and its classic mistakes."""
    g = q.shape[1] // k.shape[1]
    k, v = (t.repeat(1, g, 1, 1) if tiled else t.repeat_interleave(g, 1) for t in (k, v))  # (B, H, T, Dh)
    scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5 if scale else 1.0)  # (B, H, T, T)
    if mask is not None:
        scores = scores.masked_fill(mask if invert else ~mask, float("-inf"))
    return (naive_softmax(scores) if naive else scores.softmax(-1)) @ v  # (B, H, T, Dh)


_SDPA = {"F.scaled_dot_product_attention": (F, "scaled_dot_product_attention")}


@checker("ch09.grouped_query_attention")
def grouped_query_attention(fn: Callable[..., torch.Tensor]) -> None:
    """``fn(q (B, H, T, Dh), k, v (B, H_kv, T, Dh), mask=None (T, T) bool) -> (B, H, T, Dh)``."""
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    cases = [(4, 2, causal, 1.0), (6, 3, None, 1.0), (4, 1, causal, 1.0), (2, 2, causal, 1.0), (4, 2, causal, 30.0)]
    for seed, (h, h_kv, mask, size) in enumerate(cases):
        q, k = randn(2, h, 5, 8, seed=seed, scale=size), randn(2, h_kv, 5, 8, seed=10 + seed, scale=size)
        v = randn(2, h_kv, 5, 8, seed=20 + seed)
        tried = (f"q with H = {h} heads, k and v with H_kv = {h_kv}, {'causal mask' if mask is not None else 'no mask'}"
                 + (f", LARGE q and k (size {size:g}, scores in the thousands)" if size > 1 else ""))
        with forbidden(_SDPA, tried=tried, hint="write the attention yourself (scores, mask, softmax, @ v): "
                                                "F.scaled_dot_product_attention is what the checker compares you with"):
            if mask is None:
                got = expect_default(fn, q, k, v, tried=tried, defaults={"mask": None})
            got = call_untouched(fn, q, k, v, mask, tried=tried, names=("q", "k", "v", "mask"))
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        mistakes = [
            ("key/value heads repeated in the wrong order: [k0, k1, k0, k1] (repeat / tile) gives query head 1 the "
             "key head 1. CONSECUTIVE query heads share one key head: [k0, k0, k1, k1]", _gqa(q, k, v, mask, tiled=True)),
            ("apply the mask (True = may attend): masked_fill(~mask, float('-inf')) before the softmax", _gqa(q, k, v, None)),
            ("the mask is inverted: True = may attend, so fill -inf where mask is FALSE (masked_fill(~mask, ...)); "
             "PyTorch's nn.MultiheadAttention masks mean the opposite", _gqa(q, k, v, mask, invert=True)),
            ("scale the scores by 1 / sqrt(Dh)", _gqa(q, k, v, mask, scale=False)),
            (OVERFLOW_HINT, _gqa(q, k, v, mask, naive=True)),
        ]
        expect_close(got, expected, tried=tried, hint=HINTS["grouped_query_attention"][0],
                     mistakes=[m for m in mistakes if not torch.allclose(m[1], expected, equal_nan=True)])
    ok("grouped_query_attention equals F.scaled_dot_product_attention(..., enable_gqa=True), stable on large scores")
