"""Checkers for chapter 06 (the decoder): the decoder layer and the learner's own causality test.

References are the learner's sub-modules put together here in the right order, and small
layers built from ``nn.MultiheadAttention``; no course model module is imported.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from . import call, expect_close, expect_shape, fail, ok

__all__ = ["decoder_layer", "is_causal"]


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()  # (n, n) True = may attend


# --- Exercise 1: decoder layer ----------------------------------------------------------------

def _decoder_variants(layer: nn.Module, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor,
                      memory_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The right post-LN answer and what the classic mistakes return, from the layer's own sub-modules."""
    sa, ca, ff = layer.self_attn, layer.cross_attn, layer.ff
    n1, n2, n3 = layer.norm1, layer.norm2, layer.norm3
    keep = lambda flag, h: h if flag else torch.zeros_like(h)  # noqa: E731  (residual on / off)

    def run(self_mask=tgt_mask, cross_kv="memory", cross_mask=memory_mask, res=(True, True, True), order="self-cross"):
        def self_block(h):
            return n1(keep(res[0], h) + sa(h, h, h, mask=self_mask))

        def cross_block(h):
            if cross_kv == "x":  # keys and values from the decoder itself: a second self-attention
                return n2(keep(res[1], h) + ca(h, h, h, mask=self_mask))
            value = memory if cross_kv == "memory" else h  # "swapped": value from the decoder
            return n2(keep(res[1], h) + ca(h, memory, value, mask=cross_mask))

        h = cross_block(self_block(x)) if order == "self-cross" else self_block(cross_block(x))
        return n3(keep(res[2], h) + ff(h))

    mistakes = {
        "cross-attention takes its keys and values from memory (the encoder output): "
        "cross_attn(x, memory, memory, mask=memory_mask), not cross_attn(x, x, x)": run(cross_kv="x"),
        "the causal mask is missing: the self-attention must get mask=tgt_mask, or every position sees the future": run(self_mask=None),
        "the memory (source padding) mask is missing: pass mask=memory_mask to the cross-attention": run(cross_mask=None),
        "a residual connection is missing around the masked self-attention: norm1(x + self_attn(...))": run(res=(False, True, True)),
        "a residual connection is missing around the cross-attention: norm2(x + cross_attn(...))": run(res=(True, False, True)),
        "a residual connection is missing around the feed-forward network: norm3(x + ff(x))": run(res=(True, True, False)),
        "the order is: masked self-attention first, then cross-attention, then the feed-forward network": run(order="cross-self"),
    }
    if memory.shape[1] == x.shape[1]:  # only then can the value come from x without a shape error
        mistakes["keys and values both come from memory: cross_attn(query=x, key=memory, value=memory)"] = run(cross_kv="swapped")
    return run(), mistakes


def decoder_layer(cls: type) -> None:
    """Check ``DecoderLayer.forward(x, memory, tgt_mask=None, memory_mask=None)`` (post-LN, the paper)."""
    d_model, n_heads, d_ff = 16, 4, 32
    name = f"DecoderLayer({d_model}, {n_heads}, {d_ff}, dropout=0.0)"
    torch.manual_seed(0)
    layer = call(cls, d_model, n_heads, d_ff, dropout=0.0, tried=name).double()
    with torch.no_grad():  # non-trivial norms, so a missing or misplaced norm shows
        for n in ("norm1", "norm2", "norm3"):
            getattr(layer, n).weight.uniform_(0.5, 1.5), getattr(layer, n).bias.uniform_(-0.5, 0.5)
    src_pad = torch.tensor([[True] * 6, [True, True, True, False, False, False]])[:, None, :]  # (2, 1, 6)
    for T, S in ((6, 6), (4, 6)):
        x, memory = _randn(2, T, d_model, seed=T, scale=2.0), _randn(2, S, d_model, seed=10 + S, scale=2.0)
        tried = (f"{name} on x (2, {T}, {d_model}), memory (2, {S}, {d_model}), tgt_mask = causal ({T}, {T}), "
                 f"memory_mask = source padding (2, 1, {S})")
        got = call(layer, x, memory, _causal(T), src_pad, tried=tried)
        expect_shape(got, (2, T, d_model), tried=tried,
                     hint="the output has one vector per TARGET position, (B, T, D): queries come from the decoder (x)")
        right, mistakes = _decoder_variants(layer, x, memory, _causal(T), src_pad)
        expect_close(got, right, tried=tried, atol=1e-8, rtol=1e-6, mistakes=mistakes,
                     hint="x = norm1(x + self_attn(x, x, x, tgt_mask)); x = norm2(x + cross_attn(x, memory, memory, memory_mask)); "
                          "x = norm3(x + ff(x))")
    ok("decoder_layer: masked self-attention, cross-attention to memory, feed-forward, each with its residual")


# --- Exercise 2: the causal property as a test ------------------------------------------------

class _Layer(nn.Module):
    """Self-attention over (B, T, D) with a fixed boolean pattern (True = may attend) and a small MLP."""

    def __init__(self, d_model: int, allowed: Callable[[int], torch.Tensor] | None, leak: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, 2, batch_first=True, dtype=torch.float64)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model)).double()
        self.allowed, self.leak = allowed, leak
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        T = x.shape[1]
        blocked = None if self.allowed is None else ~self.allowed(T)  # PyTorch's convention: True = blocked
        out = x + self.attn(x, x, x, attn_mask=blocked, need_weights=False)[0]  # (B, T, D)
        if self.leak:  # a faint echo of the future: the sum of positions t, t+1, ... scaled down
            out = out + self.leak * x.flip(1).cumsum(1).flip(1)  # (B, T, D)
        return out + self.mlp(out)


def _one_leak(T: int, row: int, col: int) -> torch.Tensor:
    mask = _causal(T)
    if row < T and col < T:
        mask[row, col] = True
    return mask


def is_causal(fn: Callable[..., Any]) -> None:
    """Check ``is_causal(layer_fn, d_model, length=6) -> bool`` against causal and leaky layers."""
    torch.manual_seed(0)
    d = 8
    cases = [
        ("a causal self-attention layer (lower-triangular mask)", _Layer(d, _causal), True,
         "a causal layer must pass: earlier outputs do not change; the perturbed position itself MAY change"),
        ("a layer with no mask at all (everyone sees the future)", _Layer(d, None), False,
         "perturb a later position and compare the outputs at EARLIER positions; here they change"),
        ("a mask off by one (each position also sees the next one)", _Layer(d, lambda T: _causal(T) | torch.ones(T, T, dtype=torch.bool).triu(1).tril(1)), False,
         "position t may depend on positions 0..t only; here t also sees t + 1"),
        ("a causal mask with one hole: position 1 sees position 2", _Layer(d, lambda T: _one_leak(T, 1, 2)), False,
         "perturb EVERY position k (not only the last) and check every position before k"),
        ("a causal layer plus a faint leak of the future (1e-3 of it)", _Layer(d, _causal, leak=1e-3), False,
         "compare with a tight tolerance (e.g. torch.allclose(a, b, atol=1e-7)); a faint leak is still a leak"),
        ("a pure position-wise layer (no attention: each position alone)", lambda x: torch.tanh(x.double()) * 2, True,
         "a layer that never mixes positions is causal too"),
    ]
    for what, layer_fn, expected, hint in cases:
        tried = f"is_causal({what}, d_model={d})"
        got = call(fn, layer_fn, d, tried=tried)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dtype == torch.bool:
            got = bool(got)
        if not isinstance(got, bool):
            fail(tried, "a Python bool (True or False)", f"{type(got).__name__}: {got!r}",
                 "return True or False, e.g. return bool(...) or return False as soon as you find a leak")
        if got != expected:
            fail(tried, expected, got, hint)
    ok("is_causal: accepts causal layers and catches every leak (no mask, off by one, one hole, a faint echo)")
