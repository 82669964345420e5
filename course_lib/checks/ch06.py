"""Checkers for chapter 06 (the decoder): the decoder layer and the learner's own causality test.

References are the learner's sub-modules put together here in the right order, and small
layers built from ``nn.MultiheadAttention``; no course model module is imported.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from . import CheckFailed, call, expect_close, expect_shape, fail, ok

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
    T = x.shape[1]

    def run(self_mask=tgt_mask, kv=("memory", "memory"), cross_mask=memory_mask, res=(True, True, True),
            order="self-cross", pre=False):
        src = {"memory": memory}

        def sub(norm, h, flag, branch):  # one sub-layer, post-LN (the paper) or pre-LN
            return keep(flag, h) + branch(norm(h)) if pre else norm(keep(flag, h) + branch(h))

        def self_block(h):
            return sub(n1, h, res[0], lambda z: sa(z, z, z, mask=self_mask))

        def cross_block(h):
            def branch(z):
                if kv == ("x", "x"):  # keys and values from the decoder itself: a second self-attention
                    return ca(z, z, z, mask=self_mask)
                key, value = (src.get(name, z) for name in kv)
                return ca(z, key, value, mask=cross_mask)
            return sub(n2, h, res[1], branch)

        h = cross_block(self_block(x)) if order == "self-cross" else self_block(cross_block(x))
        return sub(n3, h, res[2], ff)

    ones = torch.ones(T, T, dtype=torch.bool)
    mistakes = {
        "cross-attention takes its keys and values from memory (the encoder output): "
        "cross_attn(x, memory, memory, mask=memory_mask), not cross_attn(x, x, x)": run(kv=("x", "x")),
        "the causal mask is missing: the self-attention must get mask=tgt_mask, or every position sees the future": run(self_mask=None),
        "causal mask off by one: position t may attend to positions 0..t, the diagonal included "
        "(torch.ones(T, T, dtype=torch.bool).tril()); yours also lets t see t + 1": run(self_mask=ones.tril(1)),
        "causal mask off by one: position t may attend to positions 0..t, the diagonal INCLUDED "
        "(.tril(), not .tril(-1)); yours hides each position from itself": run(self_mask=ones.tril(-1)),
        "the causal mask is inverted: in this course True = may attend, so it is the LOWER triangle "
        "(tril); triu(1) is PyTorch's nn.MultiheadAttention convention (True = blocked)": run(self_mask=ones.triu(1)),
        "the memory (source padding) mask is missing: pass mask=memory_mask to the cross-attention": run(cross_mask=None),
        "a residual connection is missing around the masked self-attention: norm1(x + self_attn(...))": run(res=(False, True, True)),
        "a residual connection is missing around the cross-attention: norm2(x + cross_attn(...))": run(res=(True, False, True)),
        "a residual connection is missing around the feed-forward network: norm3(x + ff(x))": run(res=(True, True, False)),
        "the order is: masked self-attention first, then cross-attention, then the feed-forward network": run(order="cross-self"),
        "norm in the wrong place: this exercise is the paper's post-LN, x = norm(x + sublayer(x)) after each sum, "
        "not pre-LN x + sublayer(norm(x))": run(pre=True),
    }
    if memory.shape[1] == T:  # only then can a key or a value come from x without a shape error
        mistakes["keys and values are swapped or mixed up: both come from memory, cross_attn(query=x, key=memory, value=memory); "
                 "yours takes the values from the decoder"] = run(kv=("memory", "x"))
        mistakes["keys and values are swapped or mixed up: both come from memory, cross_attn(query=x, key=memory, value=memory); "
                 "yours takes the keys from the decoder"] = run(kv=("x", "memory"))
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


class _DecoderLayer(nn.Module):
    """PyTorch's own decoder layer reading a fixed memory, with a given target mask pattern (True = may attend)."""

    def __init__(self, d_model: int, allowed: Callable[[int], torch.Tensor] | None) -> None:
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(d_model, 2, 2 * d_model, dropout=0.0, batch_first=True, dtype=torch.float64)
        self.memory = torch.randn(1, 5, d_model, dtype=torch.float64)  # (1, S, D) an encoded source
        self.allowed = allowed
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        blocked = None if self.allowed is None else ~self.allowed(x.shape[1])  # PyTorch's convention: True = blocked
        return self.layer(x, self.memory.expand(x.shape[0], -1, -1), tgt_mask=blocked)  # (B, T, D)


def _one_leak(T: int, row: int, col: int) -> torch.Tensor:
    mask = _causal(T)
    if row < T and col < T:
        mask[row, col] = True
    return mask


def _sees_next(T: int) -> torch.Tensor:
    return _causal(T) | torch.ones(T, T, dtype=torch.bool).triu(1).tril(1)  # (T, T) t also sees t + 1


def _verdict(fn: Callable[..., Any], layer_fn: Callable[..., Any], d: int, tried: str, leaky: bool) -> bool:
    """Run the learner's test: a bool is its answer; None means it passed, an AssertionError that it failed."""
    try:
        got = fn(layer_fn, d)
    except (NotImplementedError, CheckFailed):
        raise
    except AssertionError:  # a pytest-style test that failed
        return False
    except Exception as err:
        fail(tried, "True or False", f"{type(err).__name__}: {err}", "run your function on this layer yourself and read the error")
    if got is None:
        if leaky:
            fail(tried, "False (the layer leaks)", "None", "your function returned nothing: return False (or assert) as soon as "
                 "an earlier output changed, and True at the end")
        return True
    if isinstance(got, torch.Tensor) and got.numel() == 1 and got.dtype == torch.bool:
        got = bool(got)
    if not isinstance(got, bool):
        fail(tried, "a Python bool (True or False)", f"{type(got).__name__}: {got!r}",
             "return True or False, e.g. return bool(...) or return False as soon as you find a leak")
    return got


def is_causal(fn: Callable[..., Any]) -> None:
    """Check ``is_causal(layer_fn, d_model, length=6) -> bool`` against causal and leaky layers.

    A correct answer returns True for every causal layer and False for every leaky one. A
    pytest-style function (``assert``, returns None) is accepted too.
    """
    torch.manual_seed(0)
    d = 8
    cases = [
        ("a decoder layer (nn.TransformerDecoderLayer, with memory) and a causal tgt_mask", _DecoderLayer(d, _causal), True,
         "a correct decoder must pass: with the causal mask, changing position k leaves the outputs before k "
         "exactly as they were; the output at k itself MAY change"),
        ("the same decoder layer without tgt_mask (a leaky decoder)", _DecoderLayer(d, None), False,
         "perturb a later position and compare the outputs at EARLIER positions; here they change"),
        ("the same decoder layer with a causal mask off by one (tril(1): t also sees t + 1)", _DecoderLayer(d, _sees_next), False,
         "position t may depend on positions 0..t only; here t also sees t + 1"),
        ("a causal self-attention layer (lower-triangular mask)", _Layer(d, _causal), True,
         "a causal layer must pass: earlier outputs do not change; the perturbed position itself MAY change"),
        ("a layer with no mask at all (everyone sees the future)", _Layer(d, None), False,
         "perturb a later position and compare the outputs at EARLIER positions; here they change"),
        ("a mask off by one (each position also sees the next one)", _Layer(d, _sees_next), False,
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
        got = _verdict(fn, layer_fn, d, tried, leaky=not expected)
        if got != expected:
            fail(tried, expected, got, hint)
    ok("is_causal: passes a causal decoder and catches every leak (no mask, off by one, one hole, a faint echo)")
