"""Checkers for chapter 04 (multi-head attention): split heads, merge heads, the full forward.

The reference below is a few lines of plain tensor code with switches that reproduce the classic
mistakes (heads split or merged in the wrong order, no W_O, no scale, keys and values swapped,
a mask not broadcast per head, ...); no course model module is imported.
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import OVERFLOW_HINT, CheckFailed, call, checker, describe, expect_close, expect_shape, fail, load_hints, ok, randn
from . import naive_softmax as unstable_softmax

__all__ = ["split_heads", "merge_heads", "multi_head_attention"]

HINTS = load_hints("ch04")

SPLIT_HINT = ("heads split in the wrong order: x.view(B, H, T, Dh) cuts the flat memory of a sentence into H blocks "
              "that mix tokens; view as (B, T, H, Dh) first (each token's D features cut into H groups), then .transpose(1, 2)")
INTERLEAVED_HINT = ("head h must get the consecutive features h*Dh .. (h+1)*Dh - 1 of each token, not every H-th feature: "
                    "view as (B, T, H, Dh), not (B, T, Dh, H)")
MERGE_HINT = ("heads merged in the wrong order: x.reshape(B, T, D) on a (B, H, T, Dh) tensor mixes tokens; "
              "first x.transpose(1, 2) -> (B, T, H, Dh) so one token's heads sit side by side, then reshape to (B, T, D)")
MERGE_INTERLEAVED_HINT = ("concatenate the heads: head 0's Dh features, then head 1's, ...; "
                          "x.transpose(1, 2) gives (B, T, H, Dh), and reshape flattens (H, Dh) into D")
VIEW_HINT = ("after .transpose the tensor is not contiguous in memory, so .view fails: "
             "use .reshape(...) (or .contiguous().view(...))")
MASK_HEAD_HINT = ("the mask is not broadcast per head: scores are (B, H, T_q, T_k), so a (B, 1, T_k) or (B, T_q, T_k) "
                  "mask needs a head axis, mask.unsqueeze(1) -> (B, 1, 1 or T_q, T_k); without it sentence b's mask "
                  "lands on head b (or the shapes clash)")
REPEAT_HINT = ("the per-head mask was built with repeat in the wrong order: mask.repeat(H, 1, 1) stacks the B "
               "sentences' masks H times (head-major), so after .view(B, H, ...) head h of sentence b gets another "
               "sentence's mask; give the mask a head axis instead, mask.unsqueeze(1) (it broadcasts over the heads), "
               "or copy it per sentence with mask.repeat_interleave(H, dim=0)")
K_T_HINT = ("k.T reverses ALL the axes of the (B, H, T, Dh) keys ((Dh, T, H, B)), so the product fails or mixes "
            "sentences; transpose only the last two axes: k.transpose(-2, -1) (or k.mT)")
SWAP_HINT = ("keys and values swapped: the scores compare queries with the KEYS, Q Kᵀ with K = w_k(key), "
             "and the weights average the VALUES, V = w_v(value)")


def _call(fn: Callable[..., Any], *args: Any, tried: str, crash_hints: tuple[tuple[str, str], ...] = (), **kwargs: Any) -> Any:
    """Like ``call``, but a crash whose message contains a known phrase gets that phrase's hint."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:  # the learner's code crashed: say where, with a targeted hint when we know one
        hint = next((h for phrase, h in crash_hints if phrase in str(err)),
                    "run your code on this input yourself and read the error")
        fail(tried, "a result", f"{type(err).__name__}: {err}", hint)


def _crash_text(fn: Callable[[], Any]) -> str:
    """The error message ``fn`` raises ("" when it runs): a known mistake's crash, to recognise it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except RuntimeError as err:
        return str(err)
    return ""


# --- reference, with switches for the classic mistakes ------------------------------------------

def _split(x: torch.Tensor, n_heads: int, how: str = "right") -> torch.Tensor:
    b, t, d = x.shape
    if how == "view":
        return x.reshape(b, n_heads, t, d // n_heads)  # (B, H, T, Dh) but the wrong numbers
    if how == "interleaved":
        return x.reshape(b, t, d // n_heads, n_heads).permute(0, 3, 1, 2)  # (B, H, T, Dh) every H-th feature
    return x.reshape(b, t, n_heads, d // n_heads).transpose(1, 2)  # (B, H, T, Dh)


def _merge(x: torch.Tensor, how: str = "right") -> torch.Tensor:
    b, h, t, dh = x.shape
    if how == "view":
        return x.reshape(b, t, h * dh)  # (B, T, D) but the wrong numbers
    if how == "interleaved":
        return x.permute(0, 2, 3, 1).reshape(b, t, h * dh)  # (B, T, D) features interleaved
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, T, D)


def _mha(p: dict[str, tuple[torch.Tensor, torch.Tensor | None]], query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
         mask: torch.Tensor | None, n_heads: int, split: str = "right", merge: str = "right", scale: str = "d_k",
         kv: str = "right", w_o: bool = True, mask_mode: str = "right", softmax_dim: int = -1,
         k_t: bool = False, naive_softmax: bool = False) -> torch.Tensor:
    """Multi-head attention from the weights ``p`` (name -> (weight, bias)); switches give the mistakes."""
    d = query.shape[-1]
    k_in, v_in = (value, key) if kv == "inputs" else (key, value)
    wk, wv = (p["v"], p["k"]) if kv == "projections" else (p["k"], p["v"])
    q = _split(F.linear(query, *p["q"]), n_heads, split)  # (B, H, T_q, Dh)
    k = _split(F.linear(k_in, *wk), n_heads, split)  # (B, H, T_k, Dh)
    v = _split(F.linear(v_in, *wv), n_heads, split)  # (B, H, T_k, Dh)
    if kv == "tensors":
        k, v = v, k
    k_t_ = k.permute(3, 2, 1, 0) if k_t else k.transpose(-2, -1)  # k.T reverses ALL axes
    scores = q @ k_t_ / {"d_k": math.sqrt(d // n_heads), "d_model": math.sqrt(d), "none": 1.0}[scale]
    m = None
    if mask is not None and mask_mode == "repeat wrong order":  # (H*B, ., T_k) head-major, viewed as (B, H, ., T_k)
        b = query.shape[0]
        m = mask.repeat(n_heads, 1, 1).view(b, n_heads, *mask.shape[1:])
        scores = scores.masked_fill(~m, float("-inf"))
    elif mask is not None and mask_mode != "ignored":
        m = mask.unsqueeze(1) if mask.dim() == 3 and mask_mode != "not per head" else mask  # (B, 1, ., T_k)
        m = ~m if mask_mode == "inverted" else m
        if mask_mode != "after softmax":
            scores = scores.masked_fill(~m, 0.0 if mask_mode == "zero" else float("-inf"))  # (B, H, T_q, T_k)
    if naive_softmax:  # exp / sum without subtracting the maximum
        weights = unstable_softmax(scores)
    else:
        weights = torch.softmax(scores, dim=softmax_dim)  # (B, H, T_q, T_k)
    if mask_mode == "after softmax" and m is not None:
        weights = weights * m
    out = _merge(weights @ v, merge)  # (B, T_q, D)
    return F.linear(out, *p["o"]) if w_o else out


def _mistakes(p: dict, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
              n_heads: int) -> list[tuple[str, torch.Tensor]]:
    """What each classic mistake returns on this case, keyed by its hint."""
    d_k, d = query.shape[-1] // n_heads, query.shape[-1]
    variants: list[tuple[str, dict]] = [
        (f"the scale is missing: divide the scores Q Kᵀ by sqrt(d_k) = sqrt({d_k}) before the softmax", {"scale": "none"}),
        (f"scale by 1/sqrt(d_k) with d_k = d_model // n_heads = {d_k}, the size of ONE head, not 1/sqrt(d_model) = 1/sqrt({d})",
         {"scale": "d_model"}),
        ("W_O is missing: the concatenated heads (B, T, D) must go through self.w_o, which mixes the heads", {"w_o": False}),
        (SPLIT_HINT, {"split": "view"}),
        (SPLIT_HINT + " (and merge back with transpose(1, 2) then reshape)", {"split": "view", "merge": "view"}),
        (INTERLEAVED_HINT, {"split": "interleaved"}),
        (INTERLEAVED_HINT + " (and merge back the same way) ", {"split": "interleaved", "merge": "interleaved"}),
        (MERGE_HINT, {"merge": "view"}),
        (MERGE_INTERLEAVED_HINT, {"merge": "interleaved"}),
        (SWAP_HINT + " (you swapped the projected K and V)", {"kv": "tensors"}),
        (SWAP_HINT + " (you projected the value input as keys)", {"kv": "inputs"}),
        (SWAP_HINT + " (you used w_v for the keys and w_k for the values)", {"kv": "projections"}),
        ("softmax over the keys, the LAST axis (dim=-1): each query's weights over the keys sum to 1", {"softmax_dim": -2}),
        (K_T_HINT, {"k_t": True}),
        (OVERFLOW_HINT, {"naive_softmax": True}),
    ]
    if mask is not None:
        variants += [
            ("the mask is ignored: fill the scores with -inf where mask is False, before the softmax", {"mask_mode": "ignored"}),
            ("inverted mask: True = may attend, so fill with -inf where the mask is False (~mask), not where it is True",
             {"mask_mode": "inverted"}),
            ("fill masked scores with -inf, not 0: exp(0) = 1 still gives the blocked key a weight", {"mask_mode": "zero"}),
            ("mask the scores BEFORE the softmax (masked_fill with -inf), so each row of weights still sums to 1",
             {"mask_mode": "after softmax"}),
            (MASK_HEAD_HINT, {"mask_mode": "not per head"}),
        ]
        if mask.dim() == 3:
            variants.append((REPEAT_HINT, {"mask_mode": "repeat wrong order"}))
    out = []
    for hint, switches in variants:
        try:
            out.append((hint, _mha(p, query, key, value, mask, n_heads, **switches)))
        except RuntimeError:  # this mistake crashes on this case (e.g. a mask that does not broadcast)
            continue
    return out


# --- Exercise 1: split heads -------------------------------------------------------------------

@checker("ch04.split_heads")
def split_heads(fn: Callable[..., Any]) -> None:
    """Check ``split_heads(x, n_heads)``: (B, T, D) -> (B, H, T, Dh), head h gets features h*Dh .. (h+1)*Dh - 1."""
    for (b, t, d, h), seed in zip([(2, 3, 8, 4), (3, 5, 12, 3), (1, 4, 6, 2), (2, 3, 8, 1), (2, 2, 6, 6)], range(5)):
        x = randn(b, t, d, seed=seed)
        tried = f"split_heads(x of shape (B, T, D) = {(b, t, d)}, n_heads={h})"
        got = call(fn, x.clone(), h, tried=tried)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, t, h, d // h) and t != h:
            fail(tried, f"shape (B, H, T, Dh) = {(b, h, t, d // h)}", f"shape {tuple(got.shape)}",
                 "you return (B, T, H, Dh): move the head axis in front of the positions with .transpose(1, 2)")
        expect_shape(got, (b, h, t, d // h), tried=tried,
                     hint="the result is (B, H, T, Dh) with Dh = D // n_heads: keep the batch axis, then heads, then positions")
        expect_close(got, _split(x, h), tried=tried, atol=0, rtol=0,
                     hint="x.view(B, T, H, Dh).transpose(1, 2): head h gets features h*Dh .. (h+1)*Dh - 1 of every token",
                     mistakes=[(SPLIT_HINT, _split(x, h, "view")), (INTERLEAVED_HINT, _split(x, h, "interleaved"))])
    ok("split_heads: (B, T, D) -> (B, H, T, Dh), each head a consecutive slice of every token's features")


# --- Exercise 2: merge heads -------------------------------------------------------------------

@checker("ch04.merge_heads")
def merge_heads(fn: Callable[..., Any]) -> None:
    """Check ``merge_heads(x)``: (B, H, T, Dh) -> (B, T, H*Dh), the inverse of split_heads."""
    for (b, h, t, dh), seed in zip([(2, 4, 3, 2), (3, 3, 5, 4), (1, 2, 4, 3), (2, 1, 3, 8)], range(10, 14)):
        x = randn(b, h, t, dh, seed=seed)
        tried = f"merge_heads(x of shape (B, H, T, Dh) = {(b, h, t, dh)})"
        got = _call(fn, x.clone(), tried=tried, crash_hints=(("view size is not compatible", VIEW_HINT),))
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, t, h, dh) and h > 1:
            fail(tried, f"shape (B, T, D) = {(b, t, h * dh)}", f"shape {tuple(got.shape)}",
                 "flatten the last two axes (H, Dh) into one of size D = H * Dh with .reshape(B, T, H * Dh)")
        expect_shape(got, (b, t, h * dh), tried=tried, hint="the result is (B, T, D) with D = H * Dh")
        expect_close(got, _merge(x), tried=tried, atol=0, rtol=0,
                     hint="x.transpose(1, 2).reshape(B, T, H * Dh): token t gets head 0's Dh features, then head 1's, ...",
                     mistakes=[(MERGE_HINT, _merge(x, "view")), (MERGE_INTERLEAVED_HINT, _merge(x, "interleaved"))])
    x = randn(2, 3, 12, seed=20)
    tried = "merge_heads(split_heads(x, 4)) for x of shape (2, 3, 12)"
    expect_close(call(fn, _split(x, 4), tried=tried), x, tried=tried, atol=0, rtol=0,
                 hint="merge_heads must undo split_heads exactly")
    ok("merge_heads: (B, H, T, Dh) -> (B, T, D), the exact inverse of split_heads")


# --- Exercise 3: the full forward ----------------------------------------------------------------

def _weights(module: nn.Module, d_model: int, tried: str) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Give the learner's w_q, w_k, w_v, w_o seeded float64 weights and return them."""
    p: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for i, name in enumerate(("q", "k", "v", "o")):
        lin = getattr(module, f"w_{name}", None)
        if not isinstance(lin, nn.Linear) or (lin.in_features, lin.out_features) != (d_model, d_model):
            fail(tried, f"self.w_{name} = nn.Linear({d_model}, {d_model})", describe(lin),
                 "keep the given __init__: self.w_q, self.w_k, self.w_v and self.w_o are nn.Linear(d_model, d_model)")
        with torch.no_grad():
            lin.weight.copy_(randn(d_model, d_model, seed=100 + i, scale=1.5 / math.sqrt(d_model)))
            if lin.bias is not None:
                lin.bias.copy_(randn(d_model, seed=200 + i, scale=0.3))
        p[name] = (lin.weight.detach().clone(), None if lin.bias is None else lin.bias.detach().clone())
    return p


def _full_mask(b: int, t_q: int, t_k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, t_q, t_k, generator=g) < 0.5  # (B, T_q, T_k), different for every sentence
    m[..., 0] = True  # every query keeps at least one key
    return m


def _cases() -> list[tuple[str, int, int, tuple[torch.Tensor, ...], torch.Tensor | None]]:
    x = randn(2, 5, 16, seed=30)
    src = randn(3, 5, 16, seed=31)
    lengths = torch.tensor([5, 3, 1])
    pad = (torch.arange(5) < lengths[:, None]).unsqueeze(1)  # (B, 1, S)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()  # (T, T)
    y = randn(2, 6, 16, seed=32)
    return [
        ("self-attention, x of shape (2, 5, 16), no mask", 16, 4, (x, x, x), None),
        ("cross-attention, query (2, 3, 16), key (2, 6, 16), a different value (2, 6, 16), no mask", 16, 4,
         (randn(2, 3, 16, seed=33), randn(2, 6, 16, seed=34), randn(2, 6, 16, seed=35)), None),
        ("self-attention on (3, 5, 16) with a padding mask (B, 1, S), lengths 5, 3, 1", 16, 4, (src, src, src), pad),
        ("cross-attention, query (2, 4, 12), key = value (2, 5, 12), 2 heads, a full mask (B, T_q, T_k)", 12, 2,
         (randn(2, 4, 12, seed=36), randn(2, 5, 12, seed=37), randn(2, 5, 12, seed=37)), _full_mask(2, 4, 5, seed=38)),
        ("self-attention on (2, 6, 16), 8 heads as in the paper, a causal mask (T, T)", 16, 8, (y, y, y), causal),
        ("LARGE inputs (x of size 40, scores in the thousands), self-attention on (3, 5, 16) with the padding mask",
         16, 4, (src * 40, src * 40, src * 40), pad),
    ]


@checker("ch04.multi_head_attention")
def multi_head_attention(cls: type) -> None:
    """Check ``MultiHeadAttention(d_model, n_heads).forward(query, key, value, mask=None)`` on weights set here."""
    for what, d_model, n_heads, (q, k, v), mask in _cases():
        name = f"MultiHeadAttention({d_model}, {n_heads})"
        module = call(cls, d_model, n_heads, tried=name)
        module = module.double().eval()
        p = _weights(module, d_model, name)
        tried = f"{name} with weights set by the checker: {what}"
        kwargs = {} if mask is None else {"mask": mask}
        crash_hints = [("view size is not compatible", VIEW_HINT)]
        k_t_crash = _crash_text(functools.partial(_mha, p, q, k, v, mask, n_heads, k_t=True))
        if k_t_crash:
            crash_hints.insert(0, (k_t_crash, K_T_HINT))
        if mask is not None and mask.dim() == 3:
            crash_hints.append(("must match the size of tensor", MASK_HEAD_HINT))
        got = _call(module, q.clone(), k.clone(), v.clone(), tried=tried, **kwargs, crash_hints=tuple(crash_hints))
        if isinstance(got, tuple):
            fail(tried, "one tensor, the output (B, T_q, D)", f"a tuple of {len(got)}", "return only the output")
        expect_shape(got, tuple(q.shape), tried=tried, hint="the output has the query's shape (B, T_q, D)")
        expect_close(got, _mha(p, q, k, v, mask, n_heads), tried=tried, atol=1e-8, rtol=1e-6,
                     mistakes=_mistakes(p, q, k, v, mask, n_heads),
                     hint="project (w_q, w_k, w_v), split into heads, softmax(Q Kᵀ / sqrt(d_k)) with masked scores "
                          "set to -inf, times V, merge the heads, then w_o")
    module = call(cls, 16, 4, tried="MultiHeadAttention(16, 4)").float().eval()
    p = _weights(module, 16, "MultiHeadAttention(16, 4)")  # float32 copies of the weights
    x = randn(2, 5, 16, seed=39).float()
    tried = "MultiHeadAttention(16, 4) in float32 on x of shape (2, 5, 16)"
    expect_close(call(module, x, x, x, tried=tried), _mha(p, x, x, x, None, 4), tried=tried, atol=1e-5, rtol=1e-5,
                 hint="keep the input's dtype: use torch operations on the tensors themselves")
    ok("multi_head_attention: projections, heads, scale, mask per head, merge and W_O all right")
