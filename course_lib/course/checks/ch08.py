"""Checkers for chapter 08 (beyond the paper): one step of attention with a key/value cache, the
FLOPs of a multi-head self-attention layer, and a pre-LN encoder layer from PyTorch's weights.

References are PyTorch's own: full causal attention recomputed over the whole sequence,
``torch.utils.flop_counter.FlopCounterMode`` counting a layer run on shape-only ("meta") tensors,
and ``nn.TransformerEncoderLayer(norm_first=True)`` itself. No course model module is imported.
"""
from __future__ import annotations

import copy
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import (
    OVERFLOW_HINT,
    CheckFailed,
    call,
    call_untouched,
    checker,
    describe,
    expect_close,
    expect_shape,
    fail,
    forbidden,
    load_hints,
    naive_softmax,
    ok,
    randn,
)

__all__ = ["attention_step", "attention_flops", "pre_ln_encoder_layer", "HINTS"]

HINTS = load_hints("ch08")


# --- Exercise 1: one step of attention with a key/value cache -----------------------------------

def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None, scale: bool = True,
            naive: bool = False, clean: bool = True) -> torch.Tensor:
    """Attention; ``naive``: a softmax without the max subtracted; ``clean``: a row with no allowed key gives 0, not nan."""
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)  # (B, H, Tq, Tk)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = naive_softmax(scores) if naive else torch.softmax(scores, dim=-1)  # (B, H, Tq, Tk)
    return (weights.nan_to_num(0.0) if clean else weights) @ v  # (B, H, Tq, Dh)


def _step_references(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """Full causal attention (the truth) and what the classic cached-step mistakes produce, all positions stacked."""
    T = q.shape[2]
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T) True = may attend
    past_only = torch.ones(T, T, dtype=torch.bool).tril(-1)  # the cache read before the new key was appended
    first_only = torch.zeros(T, T, dtype=torch.bool)
    first_only[:, 0] = True
    per_step = lambda f: torch.cat([f(t) for t in range(T)], dim=2)  # noqa: E731  (B, H, T, Dh)
    itself = ("append the new key and value to the caches BEFORE attending: the new position attends to itself as well "
              "(keys 0..t, t + 1 of them), not only to the earlier ones")
    return _attend(q, k, v, causal), [
        (itself, _attend(q, k, v, past_only)),
        (itself, _attend(q, k, v, past_only, clean=False)),  # position 0 then has no key at all: nan
        (OVERFLOW_HINT, _attend(q, k, v, causal, naive=True, clean=False)),
        ("no mask in a cached step: the one new query is the LAST position and every cached key is in its past. A causal "
         "mask built for one query (the first row of tril) lets it see key 0 only", _attend(q, k, v, first_only)),
        ("divide the scores by sqrt(Dh), the size of one head's query and key vectors", _attend(q, k, v, causal, scale=False)),
        ("the softmax runs over the KEYS (the last dimension, t + 1 of them); over the single query (dim=-2) every "
         "weight becomes 1 and the output is the sum of the values",
         per_step(lambda t: v[:, :, : t + 1].sum(2, keepdim=True))),
    ]


_GROW_HINT = ("grow the caches by one position along the positions dimension (dim=2): (B, H, t, Dh) -> (B, H, t + 1, Dh), "
              "e.g. torch.cat([k_cache, k], dim=2)")


def _call_step(fn: Callable[..., Any], *args: Any, tried: str) -> Any:
    """Call the learner's step; a crash from caches grown along the wrong dimension gets its own hint."""
    try:
        return fn(*args)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:  # noqa: BLE001 - the learner's code crashed: say where, not a deep traceback
        fail(tried, "a result", f"{type(err).__name__}: {err}", _GROW_HINT if "Sizes of tensors must match" in str(err)
             else "run your function on this input yourself and read the error")


@checker("ch08.attention_step")
def attention_step(fn: Callable[..., Any]) -> None:
    """Check ``attention_step(q, k, v, k_cache, v_cache) -> (out, k_cache, v_cache)`` against full causal attention."""
    for B, H, T, Dh, seed, size in ((2, 3, 6, 4, 1, 1.0), (1, 2, 9, 8, 2, 1.0), (1, 2, 5, 8, 3, 30.0)):
        q, k = (randn(B, H, T, Dh, seed=seed + 10 * i, scale=size) for i in range(2))  # size 30: scores in the thousands
        v = randn(B, H, T, Dh, seed=seed + 20)
        k_cache = v_cache = torch.zeros(B, H, 0, Dh, dtype=torch.float64)  # (B, H, 0, Dh): nothing cached yet
        outs = []
        for t in range(T):
            held = f"holding positions 0..{t - 1}" if t else "(empty: nothing cached yet)"
            large = f", LARGE q and k (size {size:g})" if size > 1 else ""
            tried = (f"attention_step at position {t}: q, k, v of shape ({B}, {H}, 1, {Dh}){large}, caches of shape "
                     f"({B}, {H}, {t}, {Dh}) {held}")
            given = (q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], k_cache, v_cache)
            got = call_untouched(fn, *given, tried=tried, names=("q", "k", "v", "k_cache", "v_cache"),
                                 caller=functools.partial(_call_step, tried=tried))
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                fail(tried, "a tuple (out, k_cache, v_cache)", describe(got), "return the output and both grown caches")
            out, k_cache, v_cache = got
            expect_shape(out, (B, H, 1, Dh), tried=f"{tried}: out", hint="one output vector per head for the one new position")
            for name, cache, full in (("k_cache", k_cache, k), ("v_cache", v_cache, v)):
                expect_shape(cache, (B, H, t + 1, Dh), tried=f"{tried}: the returned {name}",
                             hint=_GROW_HINT)
                expect_close(cache, full[:, :, : t + 1], tried=f"{tried}: the returned {name}",
                             hint="the cache holds the keys (values) of positions 0..t in order: append the new one at the END")
            outs.append(out)
        tried = f"attention_step fed positions 0..{T - 1} one at a time (B={B}, H={H}, Dh={Dh}{large}), outputs stacked"
        right, mistakes = _step_references(q, k, v)
        expect_close(torch.cat(outs, dim=2), right, tried=tried, mistakes=mistakes,
                     hint="each step's output must equal full causal attention recomputed over the whole sequence")
    ok("attention_step: each cached step equals full causal attention recomputed from scratch")


# --- Exercise 2: the FLOPs of a multi-head self-attention layer --------------------------------

def measured_attention_flops(n: int, d_model: int, n_heads: int) -> int:
    """FlopCounterMode's count for one multi-head self-attention layer on n positions (batch 1), meta tensors only."""
    x = torch.empty(1, n, d_model, device="meta")
    w = torch.empty(d_model, d_model, device="meta")
    dh = d_model // n_heads
    with FlopCounterMode(display=False) as counter:
        q, k, v = (F.linear(x, w).view(1, n, n_heads, dh).transpose(1, 2) for _ in range(3))  # (1, H, n, Dh)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1)  # (1, H, n, n)
        F.linear((weights @ v).transpose(1, 2).reshape(1, n, d_model), w)  # (1, n, D)
    return int(counter.get_total_flops())


def _flop_mistakes(n: int, d: int, h: int) -> list[tuple[str, float]]:
    proj, att = 8 * n * d * d, 4 * n * n * d
    return [
        ("count FLOPs, not multiply-adds: a product of (m, k) and (k, p) matrices is m * k * p multiply-adds = "
         "2 * m * k * p FLOPs (FlopCounterMode's convention)", (proj + att) / 2),
        ("the output projection W_O is a fourth product of the same size as W_Q, W_K and W_V", 6 * n * d * d + att),
        ("there are TWO products between positions: the scores Q K^T and the weighted sum of the values weights @ V",
         proj + att / 2),
        ("the heads split d_model: each head works on Dh = d_model / n_heads, so the n² part is 4 * n² * d_model for ANY "
         "number of heads (you multiplied by n_heads)", proj + att * h),
        ("each head's two products are 2 * n² * Dh FLOPs each and there are n_heads of them: together 4 * n² * d_model "
         "(you counted one head only)", proj + att / h),
        ("include the four projections (queries, keys, values, output): 4 products of (n, d) by (d, d)", att),
        ("include the products between positions, Q K^T and weights @ V: their n² part is what grows with length", proj),
    ]


@checker("ch08.attention_flops")
def attention_flops(fn: Callable[..., Any]) -> None:
    """Check ``attention_flops(n, d_model, n_heads) -> int`` against FlopCounterMode."""
    for n, d, h in ((10, 16, 1), (128, 64, 4), (7, 48, 8), (1000, 512, 8), (2048, 512, 16)):
        tried = f"attention_flops(n={n}, d_model={d}, n_heads={h})"
        got = call(fn, n, d, h, tried=tried)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = got.item()
        if isinstance(got, float) or (isinstance(got, torch.Tensor) and got.is_floating_point()):
            fail(tried, "an int (a count of FLOPs is a whole number)", f"{type(got).__name__}: {describe(got)}",
                 "return an int: `/` always gives a float (even 8 / 2 = 4.0); use `//`, or only * and +, or int(...) at the end")
        if not isinstance(got, numbers.Integral) or isinstance(got, bool):
            fail(tried, "a number (an int)", f"{type(got).__name__}: {describe(got)}", "return an int, e.g. int(...)")
        got = int(got)
        expected = measured_attention_flops(n, d, h)
        if abs(got - expected) <= 0.5:
            continue
        hint = next((text for text, wrong in _flop_mistakes(n, d, h) if abs(got - wrong) <= 0.5),
                    "list every matrix product of the layer with its shapes; each costs 2 * m * k * p FLOPs")
        fail(tried, f"{expected:,} (FlopCounterMode's count)", f"{got:,}", hint)
    ok("attention_flops: equal to FlopCounterMode's count in every case, whatever the number of heads")


# --- Exercise 3: a pre-LN encoder layer from PyTorch's weights ---------------------------------

def _pre_ln(x: torch.Tensor, layer: nn.TransformerEncoderLayer, mask: torch.Tensor | None, *, post: bool = False,
            final_norm: bool = False, order: tuple[int, int, int] = (0, 1, 2), scale: bool = True, heads_ok: bool = True,
            act: Callable[[torch.Tensor], torch.Tensor] = F.relu, swap_norms: bool = False, invert_mask: bool = False,
            bias: bool = True, use_mask: bool = True, clean: bool = True, naive: bool = False) -> torch.Tensor:
    """``nn.TransformerEncoderLayer``'s forward written out (norm_first or not), and its classic slips."""
    sa, (B, S, D) = layer.self_attn, x.shape
    H = sa.num_heads
    Dh = D // H
    n1, n2 = (layer.norm2, layer.norm1) if swap_norms else (layer.norm1, layer.norm2)
    norm = lambda m, h: F.layer_norm(h, (D,), m.weight, m.bias, m.eps)  # noqa: E731

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(B, S, H, Dh).transpose(1, 2) if heads_ok else t.reshape(B, H, S, Dh)  # (B, H, S, Dh)

    def attention(h: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(h, sa.in_proj_weight, sa.in_proj_bias if bias else None).chunk(3, dim=-1)  # 3 x (B, S, D)
        q, k, v = (heads(qkv[i]) for i in order)
        allowed = None if mask is None or not use_mask else (~mask if invert_mask else mask)[:, None]  # (B, 1, 1, S)
        out = _attend(q, k, v, allowed, scale=scale, naive=naive, clean=clean)  # (B, H, S, Dh)
        out = out.transpose(1, 2).reshape(B, S, D) if heads_ok else out.reshape(B, S, D)
        return F.linear(out, sa.out_proj.weight, sa.out_proj.bias)  # (B, S, D)

    def ff(h: torch.Tensor) -> torch.Tensor:
        l1, l2 = layer.linear1, layer.linear2
        return F.linear(act(F.linear(h, l1.weight, l1.bias)), l2.weight, l2.bias)  # (B, S, D)

    if post:
        x = norm(n1, x + attention(x))
        x = norm(n2, x + ff(x))
    else:
        x = x + attention(norm(n1, x))
        x = x + ff(norm(n2, x))
    return norm(layer.norm2, x) if final_norm else x


def _pre_ln_mistakes(
    x: torch.Tensor, layer: nn.TransformerEncoderLayer, mask: torch.Tensor | None
) -> list[tuple[str, torch.Tensor]]:
    run = lambda **kw: _pre_ln(x, layer, mask, **kw)  # noqa: E731
    out = [
        ("this is post-LN (the paper's norm(x + sublayer(x))); norm_first=True is pre-LN: x + sublayer(norm(x)), the norm "
         "on each sub-layer's input", run(post=True)),
        ("nn.TransformerEncoderLayer(norm_first=True) ends with the feed-forward's residual sum, no norm after it (the "
         "STACK, nn.TransformerEncoder(norm=...), adds one final norm)", run(final_norm=True)),
        ("in_proj_weight stacks W_q, W_k, W_v in that order: in_proj_weight.chunk(3) (and in_proj_bias.chunk(3)) gives "
         "queries, keys, values", run(order=(1, 0, 2))),
        ("in_proj_weight stacks W_q, W_k, W_v in that order: in_proj_weight.chunk(3) (and in_proj_bias.chunk(3)) gives "
         "queries, keys, values", run(order=(0, 2, 1))),
        ("divide the scores by sqrt(Dh), the head size (d_model / nhead)", run(scale=False)),
        ("split heads as view(B, S, H, Dh).transpose(1, 2): a plain view(B, H, S, Dh) mixes positions into the heads",
         run(heads_ok=False)),
        ("nn.TransformerEncoderLayer's default activation is ReLU, not GELU", run(act=F.gelu)),
        ("norm1 goes before the self-attention and norm2 before the feed-forward (you swapped them)", run(swap_norms=True)),
        ("add the projections' biases: in_proj_bias (3 * D,) for q, k, v and out_proj.bias", run(bias=False)),
    ]
    out.append((OVERFLOW_HINT, run(naive=True, clean=False)))
    if mask is not None:
        inverted = ("the mask is inverted: here it is the course's, True = may attend (a real token). PyTorch's "
                    "src_key_padding_mask is the opposite (True = padding): hide the keys where mask is FALSE, "
                    "scores.masked_fill(~mask[:, None], -inf)")
        out += [
            (inverted, run(invert_mask=True)),
            (inverted, run(invert_mask=True, clean=False)),  # a sentence with no padding then has no key at all: nan
            ("the padding mask is ignored: hide the padded keys (scores.masked_fill(~mask[:, None], -inf))", run(use_mask=False)),
        ]
    return out


_NO_FORWARD = ("do not call the layer or its sub-modules (layer(x), layer.norm1(x), layer.linear1(h), layer.self_attn(...)): "
               "the statement asks for the forward pass written out. Read their parameters (layer.norm1.weight, "
               "layer.linear1.weight, ...) and use F.layer_norm, F.linear and your own attention")


def _forbidden_calls(layer: nn.TransformerEncoderLayer) -> dict[str, tuple[Any, str]]:
    """The forwards the statement forbids: the layer's own, its sub-modules', and PyTorch's fused attention."""
    calls: dict[str, tuple[Any, str]] = {"the layer itself, layer(...)": (layer, "forward")}
    for name, module in layer.named_modules():
        if name:
            calls[f"layer.{name}(...)"] = (module, "forward")
    calls["F.multi_head_attention_forward"] = (F, "multi_head_attention_forward")
    return calls


@checker("ch08.pre_ln_encoder_layer")
def pre_ln_encoder_layer(fn: Callable[..., Any]) -> None:
    """Check ``pre_ln_encoder_layer(x, layer, mask=None)`` against ``nn.TransformerEncoderLayer(norm_first=True)``."""
    d, h, d_ff = 16, 4, 32
    torch.manual_seed(0)  # inside the checker's forked RNG: the learner's own RNG state is untouched
    layer = nn.TransformerEncoderLayer(d, h, d_ff, dropout=0.0, batch_first=True, norm_first=True, dtype=torch.float64)
    with torch.no_grad():  # every weight random, the norms' gains and biases and the projections' biases too
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else p.shape[-1] ** -0.5))
        layer.norm1.weight.add_(1.0), layer.norm2.weight.add_(1.0)
    layer.eval()
    big = copy.deepcopy(layer)
    with torch.no_grad():
        big.norm1.weight.mul_(40.0)  # large normalised inputs: attention scores in the thousands
    x = randn(2, 5, d, seed=3)
    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, :]  # (2, 1, 5) True = real token
    cases = ((layer, None, "mask left out (None)"), (layer, pad, "mask (2, 1, 5), True = real token; the second sentence has 3"),
             (big, pad, "the same mask, norm1's gain times 40 (LARGE attention scores)"))
    for net, mask, what in cases:
        layer_text = f"nn.TransformerEncoderLayer({d}, nhead={h}, dim_feedforward={d_ff}, norm_first=True)"
        tried = f"pre_ln_encoder_layer(x of shape (2, 5, {d}), {layer_text}, {what})"
        with torch.no_grad(), forbidden(_forbidden_calls(net), tried=tried, hint=_NO_FORWARD):
            if mask is None:
                got = call_untouched(fn, x, net, tried=tried, names=("x",))
            else:
                got = call_untouched(fn, x, net, mask, tried=tried, names=("x", "layer", "mask"))
        # the reference, with autograd on so that PyTorch takes its ordinary (not its inference fast) path
        expected = net(x, src_key_padding_mask=None if mask is None else ~mask[:, 0]).detach()
        expect_shape(got, (2, 5, d), tried=tried, hint="return one vector per position, (B, S, D)")
        with torch.no_grad():
            expect_close(got, expected, tried=tried, atol=1e-8, rtol=1e-6, mistakes=_pre_ln_mistakes(x, net, mask),
                         hint="x + self-attention(norm1(x)), then x + feed-forward(norm2(x)), with PyTorch's weights")
    ok("pre_ln_encoder_layer: equal to nn.TransformerEncoderLayer(norm_first=True), weights read from PyTorch's layout")
