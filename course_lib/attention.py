"""Chapter 03 · Scaled dot-product attention and its masks.

``softmax(Q Kᵀ / sqrt(d_k)) V``, written by hand. Masks are boolean with **True = may attend**,
the same meaning as ``torch.nn.functional.scaled_dot_product_attention`` and the opposite of
``nn.MultiheadAttention``'s ``attn_mask`` / ``key_padding_mask`` (where True means "blocked").

A query whose every key is masked has nothing to look at. Softmax over an all ``-inf`` row is
NaN, and a large negative number instead of ``-inf`` would silently give a uniform average of
padding. Here such a row gets weights of zero and an output of zero, on purpose and tested
(``F.scaled_dot_product_attention`` of torch 2.13 returns zeros for such a row too).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .validate import check_int, check_number

__all__ = ["scaled_dot_product_attention", "causal_mask", "padding_mask", "check_mask"]


def check_mask(mask: Tensor, shape: tuple[int, ...], expected: str) -> None:
    """Raise a clear error unless ``mask`` is a bool tensor that broadcasts to ``shape``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool torch.Tensor broadcastable to {expected}, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = may attend) broadcastable to {expected}, "
                        f"got dtype {mask.dtype}; build it with causal_mask / padding_mask or compare, e.g. ids != pad_id")
    try:
        broadcast = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != torch.Size(shape):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to {expected} = {tuple(shape)}")


def _check_qkv(query: Tensor, key: Tensor, value: Tensor) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.dim() < 2:
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{name} must be a floating tensor of shape (..., T, d), got {got}")
    if not query.dtype == key.dtype == value.dtype and not torch.is_autocast_enabled(query.device.type):
        raise TypeError(f"query, key and value must have one dtype, got {query.dtype}, {key.dtype} and {value.dtype}: "
                        "convert them, e.g. key.to(query.dtype)")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must have the same width d_k to be compared: "
                         f"query (..., T_q, d_k) is {tuple(query.shape)}, key (..., T_k, d_k) is {tuple(key.shape)}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value must have one row per position (same T_k): "
                         f"key is {tuple(key.shape)}, value is {tuple(value.shape)}")
    if query.shape[-1] == 0:
        raise ValueError(f"query and key need a width d_k >= 1 (the scale is 1/sqrt(d_k)), got d_k = 0: "
                         f"query {tuple(query.shape)}, key {tuple(key.shape)}")
    try:
        if not query.shape[:-2] == key.shape[:-2] == value.shape[:-2]:  # equal (the usual case) needs no broadcast
            torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except RuntimeError:
        raise ValueError(f"query, key and value must agree on their leading (batch, head) dimensions: query (..., T_q, d_k) "
                         f"is {tuple(query.shape)}, key (..., T_k, d_k) {tuple(key.shape)}, value (..., T_k, d_v) "
                         f"{tuple(value.shape)}") from None


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
                                 scale: float | None = None, dropout_p: float = 0.0, *,
                                 on_scores: Callable[[Tensor], Tensor] | None = None,
                                 on_weights: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Attend from every query to every key and average the values by the attention weights.

    Args:
        mask: bool, True = may attend, broadcastable to (..., T_q, T_k).
        scale: multiplies the scores; None means 1/sqrt(d_k), 1.0 means unscaled.
        dropout_p: dropout on the weights before they average the values (training only).
        on_scores, on_weights: called with the masked scores and with the weights, their result used
            instead (chapter 11's hook points pass through here; None = leave them as they are).
    Shape:
        query (..., T_q, d_k), key (..., T_k, d_k), value (..., T_k, d_v)
        -> output (..., T_q, d_v), weights (..., T_q, T_k) (before dropout)
    """
    _check_qkv(query, key, value)
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p is a probability in [0, 1], got {dropout_p!r}")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else check_number(scale, "scale", 0.0, above=True,
                                                                               hint="None means 1/sqrt(d_k)")
    scores = (query @ key.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if mask is not None:
        check_mask(mask, scores.shape, "(..., T_q, T_k)")
        scores = scores.masked_fill(~mask, float("-inf"))  # (..., T_q, T_k)
    if on_scores is not None:
        scores = on_scores(scores)
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k) each row sums to 1
    if mask is not None:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # fully masked rows: 0, not NaN
    if on_weights is not None:
        weights = on_weights(weights)
    attend = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return attend @ value, weights  # (..., T_q, d_v), (..., T_q, T_k)


def causal_mask(n: int, device: torch.device | str | None = None) -> Tensor:
    """(n, n) bool: position i may attend to positions 0..i (True on and below the diagonal)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"causal_mask needs a positive length n, got {n!r}")
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()  # (n, n)


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """(B, 1, S) bool: True where ``ids`` is a real token, False at padding.

    The middle axis of size 1 broadcasts over the queries: every query may attend to every
    real key and to no padding key.
    """
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
        got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
        raise TypeError(f"padding_mask expects integer token ids of shape (B, S), got {got}")
    check_int(pad_id, "pad_id", minimum=0)
    return (ids != pad_id).unsqueeze(1)  # (B, 1, S)
