"""Chapter 04 · Multi-head attention: project, split into heads, attend, merge, project back.

``MultiHeadAttention`` is written by hand on top of chapter 03's attention. Its forward never
calls ``nn.MultiheadAttention``; ``from_torch`` only copies that module's weights so the two can
be compared. A fused path through ``F.scaled_dot_product_attention`` exists for chapter 08, but
only when switched on explicitly (``fused=True`` or ``set_fused(model, True)``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import NamedTuple  # a generic NamedTuple on Python 3.10 too

from .attention import check_mask, scaled_dot_product_attention
from .hooks import HookPoint
from .validate import check_dropout, check_int, check_same_dtype

__all__ = ["Attended", "MultiHeadAttention", "required_weights", "split_heads", "merge_heads", "set_fused"]

W = TypeVar("W")


class Attended(NamedTuple, Generic[W]):
    """What every ``forward_with_weights`` returns: the module's output and the attention weights it used.

    ``output`` equals what ``forward`` returns for the same inputs; ``weights`` holds softmax rows
    (each sums to 1, a masked key gets 0). Their type and shape are in each method's docstring:
    one (B, H, T_q, T_k) tensor for one attention, a list with one entry per layer for a stack.
    """

    output: Tensor
    weights: W


def required_weights(weights: Tensor | None) -> Tensor:
    """The weights of a run that asked for them (``need_weights=True`` always forms them)."""
    if weights is None:
        raise RuntimeError("attention weights were requested but not formed: only forward() may take the fused path")
    return weights


def split_heads(x: Tensor, n_heads: int, hook: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """(B, T, D) -> (B, H, T, Dh): head h gets features h*Dh .. (h+1)*Dh - 1 of every token.

    ``hook`` (chapter 11's hook point) sees the heads as (B, T, H, Dh), before the transpose.
    """
    _check_dims(x, 3, "split_heads", "x (B, T, D)")
    check_int(n_heads, "n_heads")
    b, t, d = x.shape
    if d % n_heads != 0:
        raise ValueError(f"split_heads: the last dimension D = {d} of x (B, T, D) must be divisible by n_heads = {n_heads}")
    heads = x.view(b, t, n_heads, d // n_heads)  # (B, T, H, Dh)
    if hook is not None:
        heads = hook(heads)
    return heads.transpose(1, 2)  # (B, H, T, Dh)


def merge_heads(x: Tensor, hook: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """(B, H, T, Dh) -> (B, T, D): concatenate the heads' outputs back into one vector per token.

    ``hook`` (chapter 11's hook point) sees the heads' outputs as (B, T, H, Dh), before they are joined.
    """
    _check_dims(x, 4, "merge_heads", "x (B, H, T, Dh)")
    b, h, t, dh = x.shape
    heads = x.transpose(1, 2)  # (B, T, H, Dh)
    if hook is not None:
        heads = hook(heads)
    return heads.reshape(b, t, h * dh)  # (B, T, D)


def _check_dims(x: object, dims: int, where: str, expected: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{where} expects a tensor {expected}, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"{where} expects {expected}, {dims} dimensions, got shape {tuple(x.shape)}")


class MultiHeadAttention(nn.Module):
    """``n_heads`` attentions side by side, each on its own ``d_model / n_heads`` slice.

    Args:
        d_model: width D of every token vector; n_heads: H, which must divide D (Dh = d_k = D / H).
        dropout: on the attention weights, in training only. bias: for all four projections.
        fused: use ``F.scaled_dot_product_attention`` for the attention step (off by default). That kernel
            never forms the scores or the weights, so the hook points ``hook_attn_scores`` and ``hook_pattern``
            (chapter 11, ``hooks.py``) do not run on it; ``hook_q/k/v`` and ``hook_z`` do.
        mask (forward): bool, True = may attend, broadcastable to (B, T_q, T_k), e.g. (B, 1, T_k)
            for padding or (T_q, T_k) for causal; the same mask is used by every head. (The
            opposite of ``nn.MultiheadAttention``, where True = blocked.)
    Shape:
        query (B, T_q, D), key and value (B, T_k, D) -> (B, T_q, D);
        ``forward_with_weights`` -> Attended(output (B, T_q, D), weights (B, H, T_q, T_k))
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True, fused: bool = False) -> None:
        super().__init__()
        check_int(d_model, "d_model")
        if isinstance(n_heads, bool) or not isinstance(n_heads, int):
            raise TypeError(f"n_heads must be an int that divides d_model, got {type(n_heads).__name__} {n_heads!r}")
        check_dropout(dropout)
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads}): "
                             f"each head gets d_model / n_heads features")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.dropout, self.fused = dropout, fused
        self.w_q = nn.Linear(d_model, d_model, bias=bias)  # all heads' W^Q side by side
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)  # mixes the concatenated heads
        # chapter 11's hook points (identities unless a hook is registered; the fused kernel skips scores and pattern)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()  # (B, T, H, Dh)
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()  # (B, H, T_q, T_k)
        self.hook_z = HookPoint()  # (B, T_q, H, Dh): each head's output before W_O

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """Shape: query (B, T_q, D), key and value (B, T_k, D) -> (B, T_q, D); the fused kernel if ``fused``."""
        return self._forward(query, key, value, mask, need_weights=False)[0]  # (B, T_q, D)

    def forward_with_weights(self, query: Tensor, key: Tensor, value: Tensor,
                             mask: Tensor | None = None) -> Attended[Tensor]:
        """``forward``'s output and every head's weights; always the hand-written path (a fused kernel never forms them).

        Shape:
            query (B, T_q, D), key and value (B, T_k, D) -> Attended(output (B, T_q, D), weights (B, H, T_q, T_k))
        """
        out, weights = self._forward(query, key, value, mask, need_weights=True)
        return Attended(out, required_weights(weights))

    def _forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None,
                 need_weights: bool) -> tuple[Tensor, Tensor | None]:
        self._check_inputs(query, key, value, mask)
        q = split_heads(self.w_q(query), self.n_heads, self.hook_q)  # (B, H, T_q, Dh)
        k = split_heads(self.w_k(key), self.n_heads, self.hook_k)  # (B, H, T_k, Dh)
        v = split_heads(self.w_v(value), self.n_heads, self.hook_v)  # (B, H, T_k, Dh)
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, 1, T_q or 1, T_k): the same mask for every head
        return self._attend(q, k, v, mask, need_weights)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend with heads already split, then merge them and apply W_O (the KV cache calls this too).

        Shape:
            q (B, H, T_q, Dh), k and v (B, H, T_k, Dh), mask bool broadcastable to (B, H, T_q, T_k) -> (B, T_q, D)
        """
        return self._attend(q, k, v, mask, need_weights=False)[0]  # (B, T_q, D)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """(B, T_q, D) and the weights (B, H, T_q, T_k); None only from the fused kernel, used when not ``need_weights``."""
        p = self.dropout if self.training else 0.0
        weights: Tensor | None = None
        if self.fused and not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, T_q, Dh)
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p, on_scores=self.hook_attn_scores,
                                                        on_weights=self.hook_pattern)  # (B, H, T_q, Dh), (B, H, T_q, T_k)
        return self.w_o(merge_heads(out, self.hook_z)), weights  # (B, T_q, D)

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> None:
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"{name} must be a floating tensor of shape (B, T, D) with D = d_model = {self.d_model} "
                                f"(token vectors, not ids), got {got}")
            if t.dim() != 3 or t.shape[-1] != self.d_model:
                raise ValueError(f"{name} must be a floating tensor of shape (B, T, D) with D = d_model = {self.d_model}, "
                                 f"got {tuple(t.shape)} {t.dtype}")
            check_same_dtype(t, self.w_q.weight.dtype, name, "the module's weights' dtype")
        if key.shape[:2] != value.shape[:2] or query.shape[0] != key.shape[0]:
            raise ValueError(f"query (B, T_q, D), key and value (B, T_k, D) must agree on B and T_k: "
                             f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}")
        if mask is not None:
            shape = (query.shape[0], query.shape[1], key.shape[1])
            if isinstance(mask, Tensor) and mask.dim() > 3:
                raise ValueError(f"mask must have at most 3 dims, broadcastable to (B, T_q, T_k) = {shape}; got "
                                 f"{tuple(mask.shape)}: every head uses the same mask, so give it no head axis")
            check_mask(mask, shape, "(B, T_q, T_k)")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}, fused={self.fused}"

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """Ours with the same weights as ``module``: ``in_proj_weight`` is [W_q; W_k; W_v] stacked."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"from_torch expects nn.MultiheadAttention, got {type(module).__name__}")
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            raise ValueError("from_torch supports nn.MultiheadAttention with kdim = vdim = embed_dim, "
                             "add_bias_kv=False and add_zero_attn=False")
        ref = module.in_proj_weight
        ours = cls(module.embed_dim, module.num_heads, dropout=module.dropout,
                   bias=module.in_proj_bias is not None).to(dtype=ref.dtype, device=ref.device)
        with torch.no_grad():
            for i, lin in enumerate((ours.w_q, ours.w_k, ours.w_v)):
                lin.weight.copy_(ref.chunk(3)[i])  # rows i*D .. (i+1)*D - 1
                if lin.bias is not None:
                    lin.bias.copy_(module.in_proj_bias.chunk(3)[i])
            ours.w_o.weight.copy_(module.out_proj.weight)
            if ours.w_o.bias is not None:
                ours.w_o.bias.copy_(module.out_proj.bias)
        return ours.train(module.training)


def set_fused(model: nn.Module, fused: bool = True) -> nn.Module:
    """Switch every ``MultiHeadAttention`` inside ``model`` to (or away from) the fused kernel."""
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.fused = fused
    return model
