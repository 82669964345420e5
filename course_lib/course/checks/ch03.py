"""Checkers for chapter 03 (attention): a stable softmax, scaled dot-product attention, the masks.

References are small formulas written here with PyTorch built-ins; no course model module is
imported. Each classic mistake is computed too: when the learner's answer equals a mistake's
answer, the checker names that mistake (no scaling, softmax over the wrong axis, inverted mask,
causal mask off by one, keys and values swapped, ...).
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from . import (
    OVERFLOW_HINT,
    CheckFailed,
    call,
    call_untouched,
    checker,
    describe,
    expect_close,
    expect_default,
    expect_shape,
    fail,
    first_difference,
    load_hints,
    naive_softmax,
    ok,
    randn,
)
from .i18n import label

__all__ = ["softmax", "scaled_dot_product_attention", "causal_mask", "padding_mask"]

HINTS = load_hints("ch03")


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    """A mistake's result, or None where the mistake would not even run on this input."""
    try:
        return fn(*args)
    except RuntimeError:
        return None


class _TorchCalls(TorchFunctionMode):
    """Records the names of the torch functions a piece of code calls (torch.softmax, x.softmax, F.softmax, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


# --- Exercise 1: a numerically stable softmax -------------------------------------------------

def _softmax_mistakes(x: torch.Tensor, dim: int) -> list[tuple[str, torch.Tensor]]:
    d = dim % x.dim()
    e = torch.exp(x)
    out: list[tuple[str, torch.Tensor | None]] = [
        ("exp overflows (exp(1000) = inf) or underflows to 0, giving inf / inf or 0 / 0 = nan: subtract each "
         "slice's maximum before exp, softmax(x) = softmax(x - max(x)), which changes nothing mathematically",
         e / e.sum(dim, keepdim=True)),
        ("subtract each slice's OWN maximum, x.max(dim, keepdim=True).values, not the maximum of the whole tensor: "
         "a slice far below the global maximum underflows to 0 / 0",
         _try(lambda: torch.exp(x - x.max()) / torch.exp(x - x.max()).sum(dim, keepdim=True))),
        ("divide by the sum over `dim` only (.sum(dim, keepdim=True)); you divided by the sum of the whole tensor",
         torch.exp(x - x.max()) / torch.exp(x - x.max()).sum()),
        ("keep the reduced dimension (keepdim=True) so the sum lines up with the slice it belongs to; "
         "without it the division broadcasts along the wrong axis",
         _try(lambda: torch.exp(x) / torch.exp(x).sum(dim))),
    ]
    for other in range(x.dim()):
        if other != d and x.shape[other] > 1:
            out.append((f"each slice along dim={dim} must sum to 1, but yours sum to 1 along dim={other - x.dim()}: "
                        f"use the `dim` argument in max and sum", torch.softmax(x, other)))
    return [(hint, value) for hint, value in out if value is not None]


def _call_softmax(fn: Callable[..., torch.Tensor], x: torch.Tensor, dim: int, tried: str) -> Any:
    """Call the learner's softmax; the two classic crashes get their own hint."""
    try:
        return fn(x, dim)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:
        text = f"{type(err).__name__}: {err}"
        hint = "run your function on this input yourself and read the error"
        if "must match the size" in text:
            hint = ("keep the reduced dimension: x.max(dim, keepdim=True) and .sum(dim, keepdim=True), so the max "
                    "and the sum line up with the slice they belong to")
        elif "return_types" in text or "unsupported operand" in text:
            hint = "x.max(dim, keepdim=True) returns (values, indices): take .values"
        fail(tried, "a result", text, hint)


@checker("ch03.softmax")
def softmax(fn: Callable[..., torch.Tensor]) -> None:
    """Check ``softmax(x, dim=-1)``: exp(x - max) / sum, stable for very large and very small x."""
    big = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1003.0]])
    cases = [
        ("x = [[1, 2, 3], [0, 0, 0]], dim=-1", torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64), -1),
        ("x of shape (3, 4, 5), dim=-1", randn(3, 4, 5, seed=1, scale=2), -1),
        ("x of shape (4, 4), dim=-1", randn(4, 4, seed=2, scale=3), -1),
        ("x of shape (3, 4, 5), dim=0", randn(3, 4, 5, seed=3), 0),
        ("x of shape (3, 4, 5), dim=1", randn(3, 4, 5, seed=4), 1),
        ("x = [[1000, 1001, 1002], [-1000, -1001, -1003]] in float32, dim=-1", big, -1),
        ("x = [[0, 1, 2], [1000, 1001, 1003]] (rows far apart), dim=-1",
         torch.tensor([[0.0, 1.0, 2.0], [1000.0, 1001.0, 1003.0]], dtype=torch.float64), -1),
        ("x = [[0, -inf, 1], [-inf, 2, -inf]] (masked entries), dim=-1",
         torch.tensor([[0.0, -math.inf, 1.0], [-math.inf, 2.0, -math.inf]], dtype=torch.float64), -1),
    ]
    for tried, x, dim in cases:
        tried = f"softmax({tried})"
        with _TorchCalls() as calls:
            got = _call_softmax(fn, x.clone(), dim, tried)
        if calls.names & {"softmax", "_softmax", "_safe_softmax", "special_softmax", "log_softmax"}:
            fail(tried, "a softmax built from exp, max and sum", "a call to torch's own softmax",
                 "write it yourself from torch.exp, max and sum: the point is to make it stable")
        expect_shape(got, tuple(x.shape), tried=tried, hint="softmax keeps the input's shape")
        if got.dtype != x.dtype:
            fail(tried, f"dtype {x.dtype}", f"dtype {got.dtype}", "compute with torch operations on x itself to keep its dtype")
        tol = 1e-6 if x.dtype == torch.float64 else 2e-4  # float32 keeps ~7 digits of 1000: x - max loses some
        expect_close(got, torch.softmax(x, dim), tried=tried, mistakes=_softmax_mistakes(x, dim), atol=tol, rtol=10 * tol,
                     hint=f"exp(x - max) / sum(exp(x - max)), the max and the sum taken along dim={dim} with keepdim=True")
    expect_default(fn, randn(3, 4, 5, seed=5), tried="softmax(x of shape (3, 4, 5))", defaults={"dim": -1})
    ok("softmax: sums to 1 along dim, stable for x = 1000 and x = -1000, -inf entries get weight 0")


# --- Exercise 2: scaled dot-product attention ---------------------------------------------------

def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float | None,
            how: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The reference (``how=""``) and, for each ``how``, what a classic mistake computes."""
    d_k = q.shape[-1]
    s = 1 / math.sqrt(d_k) if scale is None else scale
    s = {"no_scale": 1.0 if scale is None else s, "by_dk": 1 / d_k if scale is None else s,
         "ignore_scale": 1 / math.sqrt(d_k)}.get(how, s)
    if how == "swap":
        k, v = v, k
    k_t = k.permute(*reversed(range(k.dim()))) if how == "k.T" else k.transpose(-2, -1)  # k.T reverses ALL axes
    scores = k @ q.transpose(-2, -1) if how == "qk" else q @ k_t  # (..., T_q, T_k); "qk": its transpose
    scores = scores / s if how == "divide_by_scale" else scores * s
    if mask is not None and how != "ignore_mask":
        blocked = mask if how.startswith("invert") else ~mask
        fill = {"fill0": 0.0, "invert_big": -1e9}.get(how, -math.inf)
        scores = scores.masked_fill(blocked, fill)
    if how == "naive_softmax":  # exp without subtracting the row's maximum: inf / inf = nan on large scores
        weights = naive_softmax(scores)
    else:
        weights = torch.softmax(scores, dim=-2 if how == "wrong_axis" else -1)
    if how == "invert_zero":  # inverted, with fully blocked rows set to zero as the course's library does
        weights = weights.nan_to_num(0.0)
    if how == "after" and mask is not None:
        weights = torch.softmax(q @ k.transpose(-2, -1) * s, -1) * mask
    return weights @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


_INVERTED = ("the mask is inverted: True means MAY attend, so fill -inf where mask is False (masked_fill(~mask, ...)); "
             "nn.MultiheadAttention's masks use the opposite convention")
_MASK_ONLY = ("invert", "invert_big", "invert_zero", "ignore_mask", "fill0", "after")
QK_HINT = ("query and key are swapped in the scores: scores = query @ key.transpose(-2, -1), one ROW per query and one "
           "column per key (T_q, T_k); key @ query.transpose(-2, -1) is its transpose, so each row's softmax runs over the "
           "queries (and the shapes clash when T_q != T_k)")
K_T_HINT = ("key.T reverses ALL the axes of a batched tensor ((B, T_k, d_k) -> (d_k, T_k, B)), so the product "
            "fails or mixes sentences; transpose only the last two axes: key.transpose(-2, -1) (or key.mT)")
_SDPA_HINTS = [
    ("no_scale", "divide the scores by sqrt(d_k) (scale=None means 1/sqrt(d_k)); the note's example leaves the "
                 "scale out, the paper does not"),
    ("by_dk", "the scale is 1/sqrt(d_k), not 1/d_k: divide by the SQUARE ROOT of the key width"),
    ("ignore_scale", "when `scale` is given, multiply the scores by it instead of 1/sqrt(d_k)"),
    ("divide_by_scale", "`scale` MULTIPLIES the scores (scores * scale; the default is 1/sqrt(d_k)); you divided by it"),
    ("wrong_axis", "softmax over the KEYS, the last dimension (dim=-1), so each query's row of weights sums to 1; "
                   "you normalised over the queries (dim=-2)"),
    ("swap", "keys and values are swapped: the weights come from query . KEY, and they average the VALUE vectors"),
    ("naive_softmax", OVERFLOW_HINT),
    ("qk", QK_HINT),
    ("k.T", K_T_HINT),
    ("invert", _INVERTED),
    ("invert_big", _INVERTED),
    ("invert_zero", _INVERTED),
    ("ignore_mask", "the mask is ignored: before the softmax, fill the scores with -inf where mask is False"),
    ("fill0", "fill the blocked scores with -inf (float('-inf')), not 0: exp(0) = 1 still gives a blocked key a weight"),
    ("after", "apply the mask to the SCORES, before the softmax (fill -inf); zeroing weights after it leaves "
              "rows that no longer sum to 1"),
]


def _split_result(got: Any, out_shape: tuple[int, ...], w_shape: tuple[int, ...], tried: str) -> tuple[Any, Any]:
    if not isinstance(got, tuple) or len(got) != 2:
        fail(tried, f"a tuple (output {out_shape}, weights {w_shape})", describe(got),
             "return both: `return output, weights`")
    out, weights = got
    if (isinstance(out, torch.Tensor) and isinstance(weights, torch.Tensor) and out_shape != w_shape
            and tuple(out.shape) == w_shape and tuple(weights.shape) == out_shape):
        fail(tried, f"(output {out_shape}, weights {w_shape})", f"shapes ({tuple(out.shape)}, {tuple(weights.shape)})",
             "return (output, weights) in this order: the output first")
    return out, weights


def _sdpa_cases() -> list[tuple[str, tuple[torch.Tensor, ...], torch.Tensor | None, float | None]]:
    note_q = torch.tensor([[0.11, 0.21], [0.31, 0.41], [0.51, 0.61]], dtype=torch.float64)
    note_k = torch.tensor([[7.77, 0.22], [17.19, 0.42], [10.47, 0.62]], dtype=torch.float64)
    note_v = torch.tensor([[0.13, 0.23], [0.33, 0.43], [0.53, 0.63]], dtype=torch.float64)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()  # (T, T)
    pad = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])[:, None, :]  # (3, 1, 6)
    return [
        ("the note's example Q, K, V (3, 2) with scale=1.0 (row 1 should be [0.3444, 0.4444])",
         (note_q, note_k, note_v), None, 1.0),
        ("query (2, 4, 8), key (2, 6, 8), value (2, 6, 8), scale=None",
         (randn(2, 4, 8, seed=10), randn(2, 6, 8, seed=11), randn(2, 6, 8, seed=12)), None, None),
        ("query (2, 3, 5, 4), key (2, 3, 7, 4), value (2, 3, 7, 6), scale=0.5",
         (randn(2, 3, 5, 4, seed=13), randn(2, 3, 7, 4, seed=14), randn(2, 3, 7, 6, seed=15)), None, 0.5),
        ("self-attention x (2, 5, 4) with the causal mask (5, 5), scale=None",
         (randn(2, 5, 4, seed=16),) * 3, causal, None),
        ("query (3, 4, 8), key (3, 6, 8), value (3, 6, 8), padding mask (3, 1, 6), scale=None",
         (randn(3, 4, 8, seed=17, scale=2), randn(3, 6, 8, seed=18), randn(3, 6, 8, seed=19)), pad, None),
        ("float32 query (1, 2, 3), key (1, 5, 3), value (1, 5, 2), mask (1, 2, 5), scale=None",
         tuple(t.float() for t in (randn(1, 2, 3, seed=20), randn(1, 5, 3, seed=21), randn(1, 5, 2, seed=22))),
         torch.tensor([[[True, False, True, True, False], [False, True, False, False, False]]]), None),
        ("LARGE scores (about ±1000): query (2, 3, 8) and key (2, 4, 8) of size 30, value (2, 4, 8), scale=None",
         (randn(2, 3, 8, seed=23, scale=30), randn(2, 4, 8, seed=24, scale=30), randn(2, 4, 8, seed=25)), None, None),
        ("LARGE scores in float32 (about ±200): query (2, 3, 4), key (2, 5, 4), value (2, 5, 4), causal-style mask (3, 5)",
         tuple(t.float() for t in (randn(2, 3, 4, seed=26, scale=10), randn(2, 5, 4, seed=27, scale=10),
                                   randn(2, 5, 4, seed=28))),
         torch.ones(3, 5, dtype=torch.bool).tril(2), None),
    ]


def _call_attention(fn: Callable[..., Any], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: torch.Tensor | None, scale: float | None, tried: str) -> Any:
    """Call the learner's attention; a crash that ``key.T`` would cause gets the ``key.T`` hint."""
    try:
        return fn(q, k, v, mask=mask, scale=scale)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:
        hint = "run your function on this input yourself and read the error"
        for how, known in (("k.T", K_T_HINT), ("qk", QK_HINT)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _attend(q, k, v, mask, scale, how)
            except Exception as known_err:  # noqa: BLE001 - the crash this mistake causes on this input
                if str(known_err) == str(err):
                    hint = known
                    break
        fail(tried, "a result", f"{type(err).__name__}: {err}", hint)


@checker("ch03.scaled_dot_product_attention")
def scaled_dot_product_attention(fn: Callable[..., Any]) -> None:
    """Check ``scaled_dot_product_attention(query, key, value, mask=None, scale=None) -> (output, weights)``."""
    for what, (q, k, v), mask, scale in _sdpa_cases():
        tried = f"scaled_dot_product_attention({what})"
        got = call_untouched(fn, q, k, v, tried=tried, names=("query", "key", "value"),
                             caller=functools.partial(_call_attention, mask=mask, scale=scale, tried=tried))
        expected_out, expected_w = _attend(q, k, v, mask, scale)
        out, weights = _split_result(got, tuple(expected_out.shape), tuple(expected_w.shape), tried)
        variants = []
        for how, hint in _SDPA_HINTS:
            if (mask is None and how in _MASK_ONLY) or (how == "swap" and k.shape != v.shape):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = _try(_attend, q, k, v, mask, scale, how)
            if result is not None:
                variants.append((hint, result))
        tol = 1e-6 if q.dtype == torch.float64 else 1e-4
        expect_close(weights, expected_w, tried=f"{tried}: the weights", atol=tol, rtol=10 * tol,
                     mistakes=[(hint, w) for hint, (_, w) in variants],
                     hint="weights = softmax(scores) over the keys, the scores scaled and set to -inf where mask is False")
        expect_close(out, expected_out, tried=f"{tried}: the output", atol=tol, rtol=10 * tol,
                     mistakes=[(hint, o) for hint, (o, _) in variants],
                     hint="output = weights @ value: each query's weighted average of the value vectors")
        if out.dtype != q.dtype or weights.dtype != q.dtype:
            fail(tried, f"dtype {q.dtype}", f"dtypes {out.dtype}, {weights.dtype}", "keep the inputs' dtype")
    q, k, v = randn(2, 3, 4, seed=30), randn(2, 5, 4, seed=31), randn(2, 5, 4, seed=32)
    expect_default(fn, q, k, v, tried="scaled_dot_product_attention(query (2, 3, 4), key (2, 5, 4), value (2, 5, 4))",
                   defaults={"mask": None, "scale": None})
    ok("scaled_dot_product_attention: softmax(QKᵀ · scale) V, rows over the keys, True = may attend, any batch shape, "
       "stable on large scores")


# --- Exercises 3 and 4: the masks ------------------------------------------------------------------

def _expect_mask(got: Any, expected: torch.Tensor, mistakes: list[tuple[str, torch.Tensor]], tried: str, hint: str) -> None:
    """Exact comparison for bool masks, naming the mistake a wrong mask matches."""
    expect_shape(got, tuple(expected.shape), tried=tried, hint=hint)
    if got.dtype != torch.bool:
        if got.is_floating_point() and torch.isinf(got).any():
            hint = ("this is an additive mask (0 where allowed, -inf where blocked); the course's masks are "
                    "boolean, True = may attend")
        else:
            hint = "return a bool tensor (dtype=torch.bool), True = may attend: e.g. compare, or pass dtype=torch.bool"
        fail(tried, f"dtype torch.bool: {describe(expected)}", describe(got), hint)
    if torch.equal(got, expected):
        return
    where = first_difference(got.long(), expected.long())
    shown = f"{describe(expected)}\n  {label('first difference')} {where}"
    for mistake_hint, wrong in mistakes:
        if wrong.shape == got.shape and torch.equal(got, wrong):
            fail(tried, shown, got, mistake_hint)
    fail(tried, shown, got, hint)


@checker("ch03.causal_mask")
def causal_mask(fn: Callable[[int], torch.Tensor]) -> None:
    """Check ``causal_mask(n) -> (n, n)`` bool, True where key j <= query i."""
    for n in (5, 1, 2, 8):
        tried = f"causal_mask({n})"
        got = call(fn, n, tried=tried)
        ones = torch.ones(n, n, dtype=torch.bool)
        mistakes = [
            ("inverted: True must mean MAY attend, so True on and BELOW the diagonal; you built nn.MultiheadAttention's "
             "attn_mask, where True means blocked", ones.triu(1)),
            ("off by one: a position may attend to ITSELF, so keep the diagonal (tril with diagonal=0)", ones.tril(-1)),
            ("off by one: position i may see i + 1, one step into the future; use tril() with diagonal=0", ones.tril(1)),
            ("that is the upper triangle: it lets each position see the future and hides the past; keep the LOWER "
             "triangle (row i = query, column j = key, allowed when j <= i)", ones.triu()),
            ("every position sees the whole sequence: hide the future (False where j > i)", ones),
        ]
        _expect_mask(got, ones.tril(), mistakes, tried,
                     hint="row i (the query) may attend to columns j <= i: torch.ones(n, n, dtype=torch.bool).tril()")
    ok("causal_mask: True on and below the diagonal, each position sees itself and the past")


@checker("ch03.padding_mask")
def padding_mask(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``padding_mask(ids (B, S), pad_id) -> (B, 1, S)`` bool, True at real tokens."""
    cases = [
        (torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]]), 0, "ids [[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]], pad_id=0"),
        (torch.tensor([[0, 4, 1, 1], [2, 0, 3, 1]]), 1, "ids [[0, 4, 1, 1], [2, 0, 3, 1]] (0 is a real token), pad_id=1"),
        (torch.tensor([[1, 1, 5, 6], [1, 7, 8, 9]]), 1, "ids padded on the LEFT [[1, 1, 5, 6], [1, 7, 8, 9]], pad_id=1"),
        (torch.tensor([[4, 4, 9]]), 0, "one sentence without padding [[4, 4, 9]], pad_id=0"),
    ]
    for ids, pad_id, what in cases:
        tried = f"padding_mask({what})"
        got = call(fn, ids.clone(), pad_id, tried=tried)
        real = ids != pad_id  # (B, S)
        lengths = real.sum(-1, keepdim=True)
        hint = "True where ids != pad_id, with a middle axis of size 1: (ids != pad_id).unsqueeze(1) has shape (B, 1, S)"
        if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(ids.shape):
            fail(tried, f"shape {(ids.shape[0], 1, ids.shape[1])}", f"shape {tuple(got.shape)}",
                 "add the middle axis: (B, 1, S) broadcasts over the queries, (B, S) would not line up with (B, T, S)")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (*ids.shape, 1) and ids.shape[1] != 1:
            fail(tried, f"shape {(ids.shape[0], 1, ids.shape[1])}", f"shape {tuple(got.shape)}",
                 "the 1 goes in the MIDDLE: (B, 1, S) masks keys; (B, S, 1) would mask queries instead")
        _expect_mask(got, real[:, None, :], [
            ("inverted: True must mean a REAL token (may attend), False at padding; use ids != pad_id", ~real[:, None, :]),
            ("use the pad_id argument: here pad_id is 1 and 0 is a real token", (ids != 0)[:, None, :]),
            ("compare every id to pad_id: padding is not always at the end (this batch is padded on the left)",
             (torch.arange(ids.shape[1]) < lengths)[:, None, :]),
        ], tried, hint)
    ok("padding_mask: (B, 1, S), True at real tokens, False at pad_id wherever it sits")
