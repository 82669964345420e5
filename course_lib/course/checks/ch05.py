"""Checkers for chapter 05 (the encoder): layer norm, feed-forward network, encoder layer.

References are PyTorch built-ins (``F.layer_norm``, ``F.linear``) or the learner's own
sub-modules put together here in the right order; no course model module is imported.
Dropout is checked by its properties (the share of zeros is near p, the survivors are scaled
by 1/(1 - p), eval mode is the identity), never by matching one random stream, so any correct
dropout passes, ``nn.Dropout``, ``F.dropout`` or a mask from ``torch.rand(...) > p``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import call, checker, describe, expect_close, expect_default, expect_shape, fail, load_hints, ok, randn

__all__ = ["layer_norm", "feed_forward", "encoder_layer", "HINTS"]

HINTS = load_hints("ch05")


def dropout_problem(dropped: torch.Tensor, before: torch.Tensor, p: float, where: str, fix: str) -> str | None:
    """None when ``dropped`` is a dropout of ``before`` with rate ``p``, else the hint for what is wrong.

    Dropout's properties: every element is either 0 or ``before / (1 - p)``, and the share of zeros is
    near ``p``. Elements where ``before`` is 0 (a ReLU's zeros) tell nothing and are left out.
    """
    live = before.abs() > 1e-6 * before.abs().max()  # (N,) elements dropout can visibly act on
    b, d = before[live], dropped[live]
    ratio = d / b  # 0 for a dropped element, 1 / (1 - p) for a kept one
    zero = d.abs() <= 1e-7 * b.abs()
    kept = (ratio - 1 / (1 - p)).abs() < 1e-6
    plain = (ratio - 1).abs() < 1e-6
    if plain.all():
        return f"no dropout on {where}: {fix}"
    if not (zero | kept).all():
        if (zero | plain).all():
            return ("scale the elements dropout keeps by 1 / (1 - p) (inverted dropout, as nn.Dropout does), so that "
                    f"eval mode needs no rescaling: {fix}")
        return f"dropout in the wrong place: it acts on {where} and on nothing else: {fix}"
    share = zero.double().mean().item()
    if abs(share - p) > 0.12:
        return (f"a share {share:.2f} of {where} was zeroed, expected about p = {p}: zero an element when "
                "torch.rand(...) < p and keep it (scaled by 1 / (1 - p)) otherwise, or use nn.Dropout(p)")
    return None


# --- Exercise 1: layer norm ------------------------------------------------------------------

def _ln_mistakes(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> list[tuple[str, torch.Tensor]]:
    """What the classic mistakes return, each with its hint."""
    def over(dim: int, unbiased: bool = False, eps_outside: bool = False, affine: bool = True) -> torch.Tensor:
        mean = x.mean(dim, keepdim=True)
        var = x.var(dim, keepdim=True, unbiased=unbiased)
        y = (x - mean) / (var.sqrt() + eps if eps_outside else (var + eps).sqrt())
        return y * w + b if affine else y

    out = [
        ("use the biased variance (divide by D, as unbiased=False or correction=0 does), not x.var()'s default D - "
         "1", over(-1, unbiased=True)),
        ("eps goes INSIDE the square root: (x - mean) / sqrt(var + eps), not / (sqrt(var) + eps)", over(-1, eps_outside=True)),
        ("after normalising, multiply by weight and add bias (the learned gain and shift)", over(-1, affine=False)),
        ("eps is missing: divide by sqrt(var + eps); without it a vector with variance 0 divides by zero",
         (x - x.mean(-1, keepdim=True)) / x.var(-1, keepdim=True, unbiased=False).sqrt() * w + b),
        ("normalise each token vector over its features, the LAST dimension (dim=-1), and keep that dimension "
         "(keepdim=True)", over(0)),
    ]
    if x.dim() == 3:
        out.append(("you normalised over dim=1 (the positions of a sentence); layer norm works on each token vector alone, over "
                    "dim=-1", over(1)))
    return out


@checker("ch05.layer_norm")
def layer_norm(fn: Callable[..., Any]) -> None:
    """Check ``layer_norm(x, weight, bias, eps=1e-5)``: normalise over the last dimension."""
    cases = [
        ("x of shape (2, 3, 4), random weight and bias, eps=0.5", randn(2, 3, 4, seed=1, scale=2) + 1, 0.5),
        ("x of shape (5, 8), eps=1e-5", randn(5, 8, seed=2, scale=3) - 2, 1e-5),
        ("x of shape (4, 6, 16) with large values, eps=1e-5", randn(4, 6, 16, seed=3, scale=50) + 100, 1e-5),
    ]
    for tried, x, eps in cases:
        D = x.shape[-1]
        w, b = randn(D, seed=10, scale=0.5) + 1, randn(D, seed=11, scale=0.5)
        got = call(fn, x.clone(), w.clone(), b.clone(), eps, tried=f"layer_norm({tried})")
        expected = F.layer_norm(x, (D,), w, b, eps)
        expect_close(got, expected, tried=f"layer_norm({tried})", atol=1e-6, rtol=1e-5,
                     hint="normalise each vector over the last dimension (mean 0, biased variance 1, eps inside the "
                          "square root), then apply weight and bias",
                     mistakes=_ln_mistakes(x, w, b, eps))
    # a constant vector has variance 0: eps keeps the division finite and the output is the bias
    x = torch.full((1, 2, 4), 3.0, dtype=torch.float64)
    w, b = torch.ones(4, dtype=torch.float64), torch.arange(4, dtype=torch.float64)
    got = call(fn, x, w, b, 1e-5, tried="layer_norm(a constant vector [3, 3, 3, 3])")
    expect_close(got, b.expand(1, 2, 4), tried="layer_norm(a constant vector [3, 3, 3, 3]), weight 1, bias [0, 1, 2, 3]",
                 hint="a constant vector has variance 0: add eps inside the square root so you never divide by 0 (the output is "
                      "then just the bias)")
    x, w, b = randn(2, 4, seed=8, scale=3e-3), torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    expect_default(fn, x, w, b, tried="layer_norm(x (2, 4) of size 3e-3, weight 1, bias 0)", defaults={"eps": 1e-5})
    # float32 stays float32
    x32 = randn(2, 5, 8, seed=4).float()
    got = call(fn, x32, torch.ones(8), torch.zeros(8), 1e-5, tried="layer_norm(float32 x)")
    expect_close(got, F.layer_norm(x32, (8,)), tried="layer_norm(float32 x of shape (2, 5, 8))",
                 hint="keep the input's dtype: compute with torch operations on x itself")
    ok("layer_norm: equal to F.layer_norm (biased variance, eps inside the square root, last dimension)")


# --- Exercise 2: feed-forward network ---------------------------------------------------------

def _linears(module: nn.Module, d_model: int, d_ff: int, tried: str) -> tuple[nn.Linear, nn.Linear]:
    l1, l2 = getattr(module, "linear1", None), getattr(module, "linear2", None)
    if not isinstance(l1, nn.Linear) or not isinstance(l2, nn.Linear):
        fail(tried, "attributes linear1 and linear2 that are "
                    "nn.Linear", f"linear1={type(l1).__name__}, linear2={type(l2).__name__}",
             "in __init__ create self.linear1 = nn.Linear(d_model, d_ff) and self.linear2 = nn.Linear(d_ff, d_model)")
    if (l1.in_features, l1.out_features, l2.in_features, l2.out_features) != (d_model, d_ff, d_ff, d_model):
        fail(tried, f"linear1: {d_model} -> {d_ff}, linear2: {d_ff} -> {d_model}",
             f"linear1: {l1.in_features} -> {l1.out_features}, linear2: {l2.in_features} -> {l2.out_features}",
             "the hidden layer is wider (d_ff, 4 x d_model in the paper) and the output is back to d_model")
    return l1, l2


_FF_DROPOUT_FIX = ("apply dropout to the hidden activations, right after the ReLU and before linear2: "
                   "linear2(dropout(relu(linear1(x))))")


def _hidden_after_dropout(cls: type, args: tuple, x: torch.Tensor, tried: str) -> tuple[nn.Module, nn.Linear, nn.Linear,
                                                                                     torch.Tensor, torch.Tensor]:
    """Build ``cls(*args)`` (d_ff = d_model), run it in train mode on x and read its hidden layer before and after dropout
    (linear2 inverted): (module, linear1, linear2, hidden, dropped)."""
    D = x.shape[-1]
    module = call(cls, *args, tried=tried)
    l1, l2 = _linears(module, D, D, tried)
    module = module.double().train()
    got = call(module, x, tried=tried)
    expect_shape(got, tuple(x.shape), tried=tried, hint="return one vector of size d_model per position")
    hidden = F.relu(F.linear(x, l1.weight, l1.bias)).detach()  # (B, T, D) before dropout
    b2 = 0.0 if l2.bias is None else l2.bias.detach()  # bias-free layers are allowed: the statement only asks for nn.Linear
    dropped = torch.linalg.solve(l2.weight.detach(), (got.detach() - b2).reshape(-1, D).T).T.reshape(hidden.shape)
    return module, l1, l2, hidden, dropped


@checker("ch05.feed_forward")
def feed_forward(cls: type) -> None:
    """Check ``FeedForward(d_model, d_ff, dropout)``: Linear -> ReLU -> dropout -> Linear."""
    d_model, d_ff = 8, 32
    tried = f"FeedForward({d_model}, {d_ff}, dropout=0.0)"
    torch.manual_seed(0)  # inside the checker's forked RNG: the learner's own RNG state is untouched
    module = call(cls, d_model, d_ff, 0.0, tried=tried)
    l1, l2 = _linears(module, d_model, d_ff, tried)
    module = module.double()
    x = randn(2, 5, d_model, seed=5)
    got = call(module, x, tried=f"{tried} on x of shape (2, 5, {d_model})")
    h = F.linear(x, l1.weight, l1.bias)  # (B, T, d_ff)
    second = lambda a: F.linear(a, l2.weight, l2.bias)  # noqa: E731
    expected, no_relu = second(F.relu(h)), second(h)
    gelu = "the paper's feed-forward uses ReLU, max(0, x), not GELU (GELU came later, with BERT and GPT)"
    expect_close(got, expected, tried=f"{tried} on x of shape (2, 5, {d_model})",
                 hint="linear2(relu(linear1(x))): the ReLU sits between the two linear layers", mistakes=[
                     ("you left out the ReLU: without it the two linear layers collapse into one linear map", no_relu),
                     ("the ReLU goes after the FIRST linear layer only, not after the second", F.relu(no_relu)),
                     ("apply the ReLU once, between the layers; not also on the output", F.relu(expected)),
                     (gelu, second(F.gelu(h))),
                     (gelu, second(F.gelu(h, approximate="tanh"))),
                 ])
    # dropout, by its properties: with d_ff = d_model, linear2 can be inverted to read the hidden layer
    D, p = 16, 0.3
    x = randn(4, 10, D, seed=6)
    tried = f"FeedForward({D}, {D}, dropout={p}) in train mode on x of shape (4, 10, {D})"
    module, l1, l2, hidden, dropped = _hidden_after_dropout(cls, (D, D, p), x, tried)
    problem = dropout_problem(dropped, hidden, p, "the hidden activations", _FF_DROPOUT_FIX)
    if problem:
        fail(tried, f"the hidden activations after dropout: a share of about p = {p} zeroed, the rest times 1 / (1 - p)",
             dropped, problem)
    reseeded = reseeding_problem(functools.partial(call, module, x, tried=tried))
    if reseeded:
        fail(f"{tried}, twice", "two calls that drop different elements, the global RNG advancing as usual",
             "the same dropout on both calls, or the RNG reset", reseeded)
    default = f"FeedForward({D}, {D}) with dropout left out, in train mode"
    _, _, _, before, after = _hidden_after_dropout(cls, (D, D), x, default)
    if dropout_problem(after, before, 0.1, "the hidden activations", _FF_DROPOUT_FIX):
        fail(default, "dropout with the statement's default rate 0.1", after, "keep the default of the signature: dropout=0.1")
    module.eval()
    got = call(module, x, tried=tried.replace("train", "eval"))
    expect_close(got, F.linear(hidden, l2.weight, l2.bias), tried=tried.replace("train", "eval"),
                 hint="use nn.Dropout (or F.dropout with training=self.training) so dropout switches off in eval mode")
    ok("feed_forward: linear1 -> ReLU -> dropout -> linear2, dropout only in training (a share p zeroed, the rest scaled by "
       "1/(1-p))")


# --- Exercise 3: encoder layer ----------------------------------------------------------------

def _encoder_mistakes(
    layer: Any, x: torch.Tensor, mask: torch.Tensor | None, pre: bool | None = None
) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """The right answer for the layer's norm order and the classic mistakes, from the layer's own sub-modules."""
    sa = lambda h, m=mask: layer.self_attn(h, h, h, mask=m)  # noqa: E731
    ff, n1, n2 = layer.ff, layer.norm1, layer.norm2

    def run(pre: bool, res: tuple[bool, bool] = (True, True), norms: tuple = (n1, n2), m: Any = mask) -> torch.Tensor:
        keep = lambda flag, h: h if flag else torch.zeros_like(h)  # noqa: E731  (residual on / off)
        if pre:
            h = keep(res[0], x) + layer.self_attn(norms[0](x), norms[0](x), norms[0](x), mask=m)
            return keep(res[1], h) + ff(norms[1](h))
        h = norms[0](keep(res[0], x) + layer.self_attn(x, x, x, mask=m))
        return norms[1](keep(res[1], h) + ff(h))

    pre = bool(layer.norm_first) if pre is None else pre
    h = n1(x) + sa(n1(x))  # pre-LN with the residual taken from the normalised x
    pre_normed = "in pre-LN the residual adds the UN-normalised x: x = x + sublayer(norm(x)), not norm(x) + sublayer(norm(x))"
    on_output = x + n1(sa(x))  # the norm on the branch's output: neither post- nor pre-LN
    on_output = on_output + n2(ff(on_output))
    swapped = ("norm in the wrong place: norm_first=True is pre-LN, x + sublayer(norm(x)), with the norm on the way in"
               if pre else "norm in the wrong place: norm_first=False is the paper's post-LN, norm(x + sublayer(x))")
    shared = ("each sub-layer has its OWN LayerNorm, norm1 for the attention and norm2 for the feed-forward "
              "(they learn different gains and biases); you used one of them for both")
    mistakes = [
        (swapped, run(not pre)),
        ("norm in the wrong place: it goes on the residual SUM (post-LN, norm(x + sublayer(x))) or on the branch's "
         "INPUT (pre-LN, x + sublayer(norm(x))), never on the branch's output x + norm(sublayer(x))", on_output),
        ("the residual connection is missing: add the sub-layer's input back to its output (x + "
         "sublayer(...))", run(pre, (False, False))),
        ("the residual around the SELF-ATTENTION is missing (the feed-forward has its own): add the attention's input "
         "back, x + dropout1(self_attn(...))", run(pre, (False, True))),
        ("the residual around the FEED-FORWARD network is missing (the attention has its own): add its input back, "
         "x + dropout2(ff(...))", run(pre, (True, False))),
        (shared, run(pre, norms=(n1, n1))),
        (shared, run(pre, norms=(n2, n2))),
        (pre_normed, n2(h) + ff(n2(h))),
        (pre_normed, h + ff(n2(h))),  # the same mistake in the first sub-layer only
    ]
    if mask is not None:
        mistakes.append(("the mask is ignored: pass mask=mask to self.self_attn", run(pre, m=None)))
    return run(pre), mistakes


def _randomise_norms(layer: nn.Module) -> None:
    with torch.no_grad():  # non-trivial norms, so a missing, shared or misplaced norm shows
        for n in ("norm1", "norm2"):
            getattr(layer, n).weight.uniform_(0.5, 1.5), getattr(layer, n).bias.uniform_(-0.5, 0.5)


def _check_values(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, tried: str) -> None:
    got = call(layer, x, mask, tried=tried)
    expect_shape(got, tuple(x.shape), tried=tried, hint="return the new token vectors, shape (B, S, D)")
    right, mistakes = _encoder_mistakes(layer, x, mask)
    expect_close(got, right, tried=tried, atol=1e-8, rtol=1e-6, mistakes=mistakes,
                 hint="two sub-layers (self-attention, then feed-forward), each with its residual and its own norm: "
                      "post-LN norm(x + sublayer(x)), pre-LN x + sublayer(norm(x))")


def watch(layer: nn.Module, run: Callable[[], Any], names: tuple[str, ...]) -> tuple[dict[str, torch.Tensor] | None, Any]:
    """Run ``run()`` with hooks on the named sub-modules: ``({"name.in": ..., "name.out": ...}, output)``; the dict is
    None when a sub-module ran twice or not at all, or a norm got no positional input (the wiring cannot be read then)."""
    seen: dict[str, list[Any]] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:  # returns None: the output is left as it is
            seen.setdefault(f"{name}.in", []).append(inputs[0] if inputs else None)
            seen.setdefault(f"{name}.out", []).append(output)
        return hook

    handles = [getattr(layer, n).register_forward_hook(recorder(n)) for n in names]
    try:
        got = run()
    finally:
        for handle in handles:
            handle.remove()
    values = {k: v[0] for k, v in seen.items() if len(v) == 1 and isinstance(v[0], torch.Tensor)}
    needed = [f"{n}.out" for n in names] + [f"{n}.in" for n in names if n.startswith("norm")]  # norms get x positionally
    return (values if all(k in values for k in needed) else None), got


def branches_problem(branches: list[tuple[torch.Tensor, torch.Tensor, str, str]], p: float) -> tuple[str, torch.Tensor] | None:
    """The first residual branch ``(added, sub-layer output, where, fix)`` whose dropout is wrong: (hint, what was added)."""
    for dropped, before, where, fix in branches:
        problem = dropout_problem(dropped.detach(), before.detach(), p, where, fix)
        if problem:
            return problem, dropped.detach()
    return None


RESEED_HINT = ("your forward resets the global random generator (torch.manual_seed inside forward?): dropout then drops the "
               "same elements on every call, and every later random draw of the notebook repeats. Seed once, outside the "
               "model (course_lib.set_seed at the top of the notebook), and let nn.Dropout draw a fresh mask on each call")


def reseeding_problem(run: Callable[[], Any]) -> str | None:
    """None when train-mode calls draw their dropout from the global RNG, a fresh mask each call; else the hint."""
    starts, states, outs = [], [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        starts.append(torch.random.get_rng_state())
        outs.append(run())
        states.append(torch.random.get_rng_state())
    if torch.equal(states[0], states[1]):
        return RESEED_HINT
    if all(isinstance(o, torch.Tensor) for o in outs) and torch.equal(outs[0], outs[1]):
        return ("dropout drew the same mask on two calls: draw a new one on every call (nn.Dropout, or F.dropout(..., "
                "training=self.training) in forward), not a mask made once in __init__")
    if any(torch.equal(a, b) for a, b in zip(starts, states)):
        return ("dropout must draw from the global random generator (nn.Dropout, F.dropout or torch.rand), so that one "
                "seed at the top of a notebook makes a run repeatable; yours never drew from it")
    return None


def _train_mode_problem(layer: nn.Module, x: torch.Tensor, p: float, tried: str) -> tuple[str, torch.Tensor] | None:
    """Watch one train-mode forward through hooks: (the dropout hint, the branch as added to the residual sum),
    or None (also when the wiring cannot be seen)."""
    values, got = watch(layer, lambda: call(layer, x, None, tried=tried), ("self_attn", "ff", "norm1", "norm2"))
    if values is None or not isinstance(got, torch.Tensor):
        return None  # norms computed inline or sub-layers called twice: the value checks have judged the wiring
    if layer.norm_first:
        branch1, branch2 = values["norm2.in"] - x, got - values["norm2.in"]
    else:
        branch1, branch2 = values["norm1.in"] - x, values["norm2.in"] - values["norm1.out"]
    return branches_problem([
        (branch1, values["self_attn.out"], "the self-attention's output (its residual branch)",
         "x + dropout1(self_attn(...)), in post-LN and pre-LN alike"),
        (branch2, values["ff.out"], "the feed-forward network's output (its residual branch)",
         "x + dropout2(ff(...)), in post-LN and pre-LN alike"),
    ], p)


@checker("ch05.encoder_layer")
def encoder_layer(cls: type) -> None:
    """Check ``EncoderLayer.forward(x, mask=None)`` for post-LN (the paper) and pre-LN, with masks, in eval and train mode."""
    d_model, n_heads, d_ff = 16, 4, 32
    x = randn(2, 5, d_model, seed=6, scale=2.0)
    pad = torch.tensor([[True] * 5, [True, True, False, False, False]])[:, None, :]  # (2, 1, 5)
    for norm_first in (False, True):
        torch.manual_seed(0)  # inside the checker's forked RNG: the learner's own RNG state is untouched
        name = f"EncoderLayer({d_model}, {n_heads}, {d_ff}, dropout=0.0, norm_first={norm_first})"
        layer = call(cls, d_model, n_heads, d_ff, dropout=0.0, norm_first=norm_first, tried=name).double()
        _randomise_norms(layer)
        for mask, what in ((None, "no mask"), (pad, "padding mask (B, 1, S), the second sentence has 2 real tokens")):
            _check_values(layer, x, mask, f"{name} on x of shape (2, 5, {d_model}), {what}")
    p = 0.3  # dropout on both residual branches in train mode, and none in eval mode
    for norm_first in (False, True):
        name = f"EncoderLayer({d_model}, {n_heads}, {d_ff}, dropout={p}, norm_first={norm_first})"
        layer = call(cls, d_model, n_heads, d_ff, dropout=p, norm_first=norm_first, tried=name).double().train()
        _randomise_norms(layer)
        tried = f"{name} in train mode on x of shape (4, 10, {d_model})"
        found = _train_mode_problem(layer, randn(4, 10, d_model, seed=7), p, tried)
        if found:
            problem, branch = found
            fail(tried, f"each sub-layer's output with dropout (p = {p}): a share of about {p} zeroed, the rest times 1 / (1 - "
                        "p)",
                 f"what your layer added to the residual sum: {describe(branch)}", problem)
        reseeded = reseeding_problem(functools.partial(call, layer, x, None, tried=tried))
        if reseeded:
            fail(f"{tried}, twice", "two calls that drop different elements, the global RNG advancing as usual",
                 "the same dropout on both calls, or the RNG reset", reseeded)
        layer.eval()
        _check_values(layer, x, pad, f"{name} in eval mode (dropout off) on x of shape (2, 5, {d_model}), padding mask")
    name = f"EncoderLayer({d_model}, {n_heads}, {d_ff}) with dropout and norm_first left out"
    torch.manual_seed(0)
    layer = call(cls, d_model, n_heads, d_ff, tried=name).double().eval()
    _randomise_norms(layer)
    tried = f"{name}, in eval mode"
    got = call(layer, x, pad, tried=tried)
    right, _ = _encoder_mistakes(layer, x, pad, pre=False)
    expect_close(got, right, tried=tried, atol=1e-8, rtol=1e-6,
                 hint="keep the defaults of the statement's signature: dropout=0.1, norm_first=False (the paper's post-LN)")
    ok("encoder_layer: residuals, both norm orders, the mask, and dropout on each residual branch in training only")
