"""Checkers for chapter 06 (the decoder): the decoder layer, the learner's own causality test, and
the encoder-decoder stack.

References are the learner's sub-modules put together here in the right order, and small
layers built from PyTorch's ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` /
``nn.TransformerDecoderLayer``; no course model module is imported. The decoder layer's checker
also watches which arguments reach ``self_attn``, ``cross_attn`` and ``ff`` (forward hooks), so a
wiring mistake gets its own hint even when it crashes or changes the output's shape.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import CheckFailed, call, checker, describe, expect_close, expect_shape, fail, load_hints, ok, randn
from .ch05 import branches_problem, reseeding_problem, watch

__all__ = ["decoder_layer", "is_causal", "encoder_decoder", "HINTS"]

HINTS = load_hints("ch06")


def _causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()  # (n, n) True = may attend


# --- Exercise 1: decoder layer ----------------------------------------------------------------

CAUSAL_ON_CROSS = ("the causal mask belongs to the decoder's SELF-attention only (the concept note labels the wrong one "
                   "\"masked\"): in cross-attention every target position may read every real source token, so pass "
                   "mask=memory_mask (the source padding), not tgt_mask")
QUERIES_FROM_MEMORY = ("cross-attention's QUERIES come from the decoder (x, the self-attention's output); memory gives only "
                       "the keys and values: cross_attn(x, memory, memory, mask=memory_mask). Yours passes memory as the query, "
                       "so the output has one vector per SOURCE position")
ORDER = "the order is: masked self-attention first, then cross-attention, then the feed-forward network"


def _decoder_variants(layer: nn.Module, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor,
                      memory_mask: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The right post-LN answer and what the classic mistakes return, from the layer's own sub-modules."""
    sa, ca, ff = (getattr(layer, name) for name in ("self_attn", "cross_attn", "ff"))
    n1, n2, n3 = (getattr(layer, f"norm{i}") for i in (1, 2, 3))
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
    mistakes = [
        ("cross-attention takes its keys and values from memory (the encoder output): "
         "cross_attn(x, memory, memory, mask=memory_mask), not cross_attn(x, x, x)", run(kv=("x", "x"))),
        ("the causal mask is missing: the self-attention must get mask=tgt_mask, or every position sees the "
         "future", run(self_mask=None)),
        ("causal mask off by one: position t may attend to positions 0..t, the diagonal included "
         "(torch.ones(T, T, dtype=torch.bool).tril()); yours also lets t see t + 1", run(self_mask=ones.tril(1))),
        ("causal mask off by one: position t may attend to positions 0..t, the diagonal INCLUDED "
         "(.tril(), not .tril(-1)); yours hides each position from itself", run(self_mask=ones.tril(-1))),
        ("the causal mask is inverted: in this course True = may attend, so it is the LOWER triangle "
         "(tril); triu(1) is PyTorch's nn.MultiheadAttention convention (True = blocked)", run(self_mask=ones.triu(1))),
        ("the memory (source padding) mask is missing: pass mask=memory_mask to the cross-attention", run(cross_mask=None)),
        ("a residual connection is missing around the masked self-attention: norm1(x + "
         "self_attn(...))", run(res=(False, True, True))),
        ("a residual connection is missing around the cross-attention: norm2(x + cross_attn(...))", run(res=(True, False, True))),
        ("a residual connection is missing around the feed-forward network: norm3(x + ff(x))", run(res=(True, True, False))),
        (ORDER, run(order="cross-self")),
        ("norm in the wrong place: this exercise is the paper's post-LN, x = norm(x + sublayer(x)) after each sum, "
         "not pre-LN x + sublayer(norm(x))", run(pre=True)),
    ]
    if memory.shape[1] == T:  # only then can a key, a value or a mask of the target side fit the memory
        mistakes += [
            (CAUSAL_ON_CROSS, run(cross_mask=tgt_mask)),
            (CAUSAL_ON_CROSS, run(cross_mask=tgt_mask & memory_mask)),
            ("keys and values are swapped or mixed up: both come from memory, cross_attn(query=x, key=memory, value=memory); "
             "yours takes the values from the decoder", run(kv=("memory", "x"))),
            ("keys and values are swapped or mixed up: both come from memory, cross_attn(query=x, key=memory, value=memory); "
             "yours takes the keys from the decoder", run(kv=("x", "memory"))),
        ]
    return run(), mistakes


_ARGS = ("query", "key", "value", "mask")


def _watch(layer: nn.Module) -> tuple[list[tuple[str, dict[str, Any]]], list[Any]]:
    """Record every call of the layer's self_attn, cross_attn and ff (in order, with named arguments)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def watcher(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:  # returns None: the call goes on unchanged
            calls.append((name, {**dict(zip(_ARGS, args)), **kwargs}))
        return hook

    handles = [getattr(layer, n).register_forward_pre_hook(watcher(n), with_kwargs=True)
               for n in ("self_attn", "cross_attn", "ff") if isinstance(getattr(layer, n, None), nn.Module)]
    return calls, handles


def _same(a: Any, b: torch.Tensor) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def _wiring_hint(calls: list[tuple[str, dict[str, Any]]], memory: torch.Tensor, memory_mask: torch.Tensor) -> str | None:
    """The hint for a wiring mistake that the recorded calls show, or None."""
    order = [name for name, _ in calls]
    if order and order != ["self_attn", "cross_attn", "ff"][: len(order)]:
        return ORDER + f"; yours calls {' -> '.join(order)}"
    cross = [kw for name, kw in calls if name == "cross_attn"]
    if not cross:
        return None
    kw = cross[0]
    if _same(kw.get("query"), memory):
        return QUERIES_FROM_MEMORY
    mask = kw.get("mask")
    if isinstance(mask, torch.Tensor):
        B, S = memory.shape[0], memory.shape[1]
        T = kw["query"].shape[1] if isinstance(kw.get("query"), torch.Tensor) else S
        try:
            seen = mask.bool().expand(B, T, S)  # (B, T, S) what each target position may read
        except RuntimeError:  # a (T, T) mask that cannot cover S source positions
            return CAUSAL_ON_CROSS
        if (memory_mask.expand(B, T, S) & ~seen).any():  # a real source token hidden from some position
            return CAUSAL_ON_CROSS
    return None


def _decoder_dropout(cls: type, d_model: int, n_heads: int, d_ff: int) -> None:
    """Dropout by its properties, as chapter 05's checker does: on each residual branch in train mode, a fresh mask each call."""
    p = 0.3
    name = f"DecoderLayer({d_model}, {n_heads}, {d_ff}, dropout={p})"
    torch.manual_seed(0)  # inside the checker's forked RNG: the learner's own RNG state is untouched
    layer = call(cls, d_model, n_heads, d_ff, dropout=p, tried=name).double().train()
    x, memory = randn(4, 6, d_model, seed=30), randn(4, 7, d_model, seed=31)
    tried = f"{name} in train mode on x (4, 6, {d_model}), memory (4, 7, {d_model}), no masks"
    run = lambda: call(layer, x, memory, tried=tried)  # noqa: E731
    values, got = watch(layer, run, ("self_attn", "cross_attn", "ff", "norm1", "norm2", "norm3"))
    if values is not None and isinstance(got, torch.Tensor):
        found = branches_problem([
            (values["norm1.in"] - x, values["self_attn.out"], "the masked self-attention's output (its residual branch)",
             "norm1(x + dropout1(self_attn(...)))"),
            (values["norm2.in"] - values["norm1.out"], values["cross_attn.out"],
             "the cross-attention's output (its residual branch)", "norm2(x + dropout2(cross_attn(...)))"),
            (values["norm3.in"] - values["norm2.out"], values["ff.out"],
             "the feed-forward network's output (its residual branch)", "norm3(x + dropout3(ff(x)))"),
        ], p)
        if found:
            fail(tried, f"each sub-layer's output with dropout (p = {p}): about {p} of it zeroed, the rest times 1 / (1 - p)",
                 f"what your layer added to the residual sum: {describe(found[1])}", found[0])
    problem = reseeding_problem(run)
    if problem:
        fail(f"{tried}, twice", "two calls that drop different elements, the global RNG advancing as usual",
             "the same dropout on both calls, or the RNG reset", problem)


@checker("ch06.decoder_layer")
def decoder_layer(cls: type) -> None:
    """Check ``DecoderLayer.forward(x, memory, tgt_mask=None, memory_mask=None)`` (post-LN, the paper)."""
    d_model, n_heads, d_ff = 16, 4, 32
    name = f"DecoderLayer({d_model}, {n_heads}, {d_ff}, dropout=0.0)"
    torch.manual_seed(0)  # inside the checker's forked RNG: the learner's own RNG state is untouched
    layer = call(cls, d_model, n_heads, d_ff, dropout=0.0, tried=name).double()
    with torch.no_grad():  # non-trivial norms, so a missing or misplaced norm shows
        for n in ("norm1", "norm2", "norm3"):
            getattr(layer, n).weight.uniform_(0.5, 1.5), getattr(layer, n).bias.uniform_(-0.5, 0.5)
    src_pad = torch.tensor([[True] * 6, [True, True, True, False, False, False]])[:, None, :]  # (2, 1, 6)
    generic = ("x = norm1(x + self_attn(x, x, x, tgt_mask)); x = norm2(x + cross_attn(x, memory, memory, memory_mask)); "
               "x = norm3(x + ff(x))")
    for T, S in ((6, 6), (4, 6)):
        x, memory = randn(2, T, d_model, seed=T, scale=2.0), randn(2, S, d_model, seed=10 + S, scale=2.0)
        tried = (f"{name} on x (2, {T}, {d_model}), memory (2, {S}, {d_model}), tgt_mask = causal ({T}, {T}), "
                 f"memory_mask = source padding (2, 1, {S})")
        calls, handles = _watch(layer)
        try:
            got = layer(x, memory, _causal(T), src_pad)
        except (NotImplementedError, CheckFailed):
            raise
        except Exception as err:  # a crash: the recorded calls often say why
            fail(tried, "a result", f"{type(err).__name__}: {err}",
                 _wiring_hint(calls, memory, src_pad) or "run your layer on this input yourself and read the error")
        finally:
            for handle in handles:
                handle.remove()
        wiring = _wiring_hint(calls, memory, src_pad)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (2, T, d_model):
            expect_shape(got, (2, T, d_model), tried=tried, hint=wiring or
                         "the output has one vector per TARGET position, (B, T, D): queries come from the decoder (x)")
        right, mistakes = _decoder_variants(layer, x, memory, _causal(T), src_pad)
        expect_close(got, right, tried=tried, atol=1e-8, rtol=1e-6, mistakes=mistakes, hint=wiring or generic)
    _decoder_dropout(cls, d_model, n_heads, d_ff)
    ok("decoder_layer: masked self-attention, cross-attention to memory, feed-forward, each with its residual, and dropout "
       "on each sub-layer's output in training only")


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
        fail(tried, "True or "
                    "False", f"{type(err).__name__}: {err}", "run your function on this layer yourself and read the error")
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


@checker("ch06.is_causal")
def is_causal(fn: Callable[..., Any]) -> None:
    """Check ``is_causal(layer_fn, d_model, length=6) -> bool`` against causal and leaky layers.

    A correct answer returns True for every causal layer and False for every leaky one. A
    pytest-style function (``assert``, returns None) is accepted too.
    """
    torch.manual_seed(0)  # inside the checker's forked RNG: the learner's own RNG state is untouched
    d = 8
    cases: list[tuple[str, Callable[..., Any], bool, str]] = [
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


# --- Exercise 3: the encoder-decoder stack ------------------------------------------------------

class _TorchEncoderLayer(nn.Module):
    """PyTorch's encoder layer behind the course's interface: ``forward(x, mask)``, mask (B, 1, S) True = may attend."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True, dtype=torch.float64)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = None if mask is None else ~mask[:, 0, :]  # (B, S) PyTorch's convention: True = padding
        return self.layer(x, src_key_padding_mask=pad)  # (B, S, D)


class _TorchDecoderLayer(nn.Module):
    """PyTorch's decoder layer behind the course's interface: ``forward(x, memory, tgt_mask, memory_mask)``."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True, dtype=torch.float64)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        blocked = None if tgt_mask is None else ~tgt_mask  # (T, T) PyTorch's convention: True = blocked
        pad = None if memory_mask is None else ~memory_mask[:, 0, :]  # (B, S)
        return self.layer(x, memory, tgt_mask=blocked, memory_key_padding_mask=pad)  # (B, T, D)


def _stack(enc: nn.ModuleList, dec: nn.ModuleList, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor,
           tgt_mask: torch.Tensor, *, pairs: bool = False, memory_from: str = "last", chain_enc: bool = True,
           chain_dec: bool = True, enc_mask: bool = True, mem_mask: bool = True, causal: bool = True) -> torch.Tensor:
    """The encoder-decoder stack, and its classic mistakes."""
    states, h = [], src
    for layer in enc:
        h = layer(h if chain_enc else src, src_mask if enc_mask else None)  # (B, S, D)
        states.append(h)
    memory = {"last": states[-1], "first": states[0], "src": src}[memory_from]
    y = tgt
    for i, layer in enumerate(dec):
        y = layer(y if chain_dec else tgt, states[i] if pairs else memory, tgt_mask if causal else None,
                  src_mask if mem_mask else None)  # (B, T, D)
    return y


def _stack_mistakes(*args: Any) -> list[tuple[str, torch.Tensor]]:
    run = lambda **kw: _stack(*args, **kw)  # noqa: E731
    pairs = [] if len(args[0]) < len(args[1]) else [  # layer i reading encoder state i needs as many encoder layers
        ("every decoder layer reads the encoder's FINAL output (the memory). The concept note's figure pairs encoder "
         "layer i with decoder layer i, but in the Transformer decoder layer i never sees encoder layer i's output",
         run(pairs=True))]
    return pairs + [
        ("run the source through ALL the encoder layers first: the memory is the LAST encoder layer's output, "
         "not the first one's", run(memory_from="first")),
        ("the encoder is skipped: the memory is the source after every encoder layer, not the source "
         "itself", run(memory_from="src")),
        ("chain the decoder layers: each one reads the PREVIOUS decoder layer's output, not tgt again", run(chain_dec=False)),
        ("chain the encoder layers: each one reads the PREVIOUS encoder layer's output, not src again", run(chain_enc=False)),
        ("the encoder ignores the source padding: pass src_mask to every encoder layer", run(enc_mask=False)),
        ("the decoder reads the source padding: pass src_mask as memory_mask to every decoder layer", run(mem_mask=False)),
        ("the causal mask is missing: pass tgt_mask to every decoder layer", run(causal=False)),
    ]


@checker("ch06.encoder_decoder")
def encoder_decoder(fn: Callable[..., Any]) -> None:
    """Check ``encoder_decoder(encoder_layers, decoder_layers, src, tgt, src_mask, tgt_mask) -> (B, T, D)``."""
    d, h, d_ff = 8, 2, 16
    torch.manual_seed(0)  # inside the checker's forked RNG: the learner's own RNG state is untouched
    src_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, :]  # (2, 1, 5)
    for n_enc, n_dec in ((3, 3), (2, 3)):
        enc = nn.ModuleList(_TorchEncoderLayer(d, h, d_ff) for _ in range(n_enc))
        dec = nn.ModuleList(_TorchDecoderLayer(d, h, d_ff) for _ in range(n_dec))
        src, tgt, tgt_mask = randn(2, 5, d, seed=n_enc), randn(2, 4, d, seed=10 + n_enc), _causal(4)
        tried = (f"encoder_decoder({n_enc} encoder layers, {n_dec} decoder layers, src (2, 5, {d}) whose second sentence has "
                 f"3 real tokens, tgt (2, 4, {d}), src_mask (2, 1, 5), tgt_mask causal (4, 4))")
        with torch.no_grad():
            got = call(fn, enc, dec, src.clone(), tgt.clone(), src_mask.clone(), tgt_mask.clone(), tried=tried)
            args = (enc, dec, src, tgt, src_mask, tgt_mask)
            expect_shape(got, (2, 4, d), tried=tried, hint="return the decoder's output: one vector per TARGET position, (B, T, "
                                                           "D)")
            expect_close(got, _stack(*args), tried=tried, atol=1e-8, rtol=1e-6,
                         mistakes=_stack_mistakes(*args),
                         hint="memory = the source after all encoder layers (with src_mask); then each decoder layer in turn "
                              "reads the previous decoder output, that same memory, tgt_mask and src_mask")
    ok("encoder_decoder: the encoder runs to the end, and every decoder layer reads its final output")
