"""Checkers for chapter 05 (the encoder): layer norm, feed-forward network, encoder layer.

References are PyTorch built-ins (``F.layer_norm``, ``F.linear``) or the learner's own
sub-modules put together here in the right order; no course model module is imported.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import call, expect_close, expect_shape, fail, ok

__all__ = ["layer_norm", "feed_forward", "encoder_layer"]


def _randn(*shape: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift


# --- Exercise 1: layer norm ------------------------------------------------------------------

def _ln_variants(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """What the classic mistakes return, each mapped to its hint."""
    def over(dim: int, unbiased: bool = False, eps_outside: bool = False, affine: bool = True) -> torch.Tensor:
        mean = x.mean(dim, keepdim=True)
        var = x.var(dim, keepdim=True, unbiased=unbiased)
        y = (x - mean) / (var.sqrt() + eps if eps_outside else (var + eps).sqrt())
        return y * w + b if affine else y

    out = {
        "use the biased variance (divide by D, as unbiased=False or correction=0 does), not x.var()'s default D - 1": over(-1, unbiased=True),
        "eps goes INSIDE the square root: (x - mean) / sqrt(var + eps), not / (sqrt(var) + eps)": over(-1, eps_outside=True),
        "after normalising, multiply by weight and add bias (the learned gain and shift)": over(-1, affine=False),
        "eps is missing: divide by sqrt(var + eps); without it a vector with variance 0 divides by zero":
            (x - x.mean(-1, keepdim=True)) / x.var(-1, keepdim=True, unbiased=False).sqrt() * w + b,
        "normalise each token vector over its features, the LAST dimension (dim=-1), and keep that dimension (keepdim=True)": over(0),
    }
    if x.dim() == 3:
        out["you normalised over dim=1 (the positions of a sentence); layer norm works on each token vector alone, over dim=-1"] = over(1)
    return out


def layer_norm(fn: Callable[..., Any]) -> None:
    """Check ``layer_norm(x, weight, bias, eps=1e-5)``: normalise over the last dimension."""
    cases = [
        ("x of shape (2, 3, 4), random weight and bias, eps=0.5", _randn(2, 3, 4, seed=1, scale=2, shift=1), 0.5),
        ("x of shape (5, 8), eps=1e-5", _randn(5, 8, seed=2, scale=3, shift=-2), 1e-5),
        ("x of shape (4, 6, 16) with large values, eps=1e-5", _randn(4, 6, 16, seed=3, scale=50, shift=100), 1e-5),
    ]
    for tried, x, eps in cases:
        D = x.shape[-1]
        w, b = _randn(D, seed=10, scale=0.5, shift=1.0), _randn(D, seed=11, scale=0.5)
        got = call(fn, x.clone(), w.clone(), b.clone(), eps, tried=f"layer_norm({tried})")
        expected = F.layer_norm(x, (D,), w, b, eps)
        expect_close(got, expected, tried=f"layer_norm({tried})", atol=1e-6, rtol=1e-5,
                     hint="y = (x - mean) / sqrt(var + eps) * weight + bias, mean and biased var over the last dimension",
                     mistakes=_ln_variants(x, w, b, eps))
    # a constant vector has variance 0: eps keeps the division finite and the output is the bias
    x = torch.full((1, 2, 4), 3.0, dtype=torch.float64)
    w, b = torch.ones(4, dtype=torch.float64), torch.arange(4, dtype=torch.float64)
    got = call(fn, x, w, b, 1e-5, tried="layer_norm(a constant vector [3, 3, 3, 3])")
    expect_close(got, b.expand(1, 2, 4), tried="layer_norm(a constant vector [3, 3, 3, 3]), weight 1, bias [0, 1, 2, 3]",
                 hint="a constant vector has variance 0: add eps inside the square root so you never divide by 0 (the output is then just the bias)")
    # float32 stays float32
    x32 = _randn(2, 5, 8, seed=4).float()
    got = call(fn, x32, torch.ones(8), torch.zeros(8), 1e-5, tried="layer_norm(float32 x)")
    expect_close(got, F.layer_norm(x32, (8,)), tried="layer_norm(float32 x of shape (2, 5, 8))",
                 hint="keep the input's dtype: compute with torch operations on x itself")
    ok("layer_norm: equal to F.layer_norm (biased variance, eps inside the square root, last dimension)")


# --- Exercise 2: feed-forward network ---------------------------------------------------------

def _linears(module: nn.Module, d_model: int, d_ff: int, tried: str) -> tuple[nn.Linear, nn.Linear]:
    l1, l2 = getattr(module, "linear1", None), getattr(module, "linear2", None)
    if not isinstance(l1, nn.Linear) or not isinstance(l2, nn.Linear):
        fail(tried, "attributes linear1 and linear2 that are nn.Linear", f"linear1={type(l1).__name__}, linear2={type(l2).__name__}",
             "in __init__ create self.linear1 = nn.Linear(d_model, d_ff) and self.linear2 = nn.Linear(d_ff, d_model)")
    if (l1.in_features, l1.out_features, l2.in_features, l2.out_features) != (d_model, d_ff, d_ff, d_model):
        fail(tried, f"linear1: {d_model} -> {d_ff}, linear2: {d_ff} -> {d_model}",
             f"linear1: {l1.in_features} -> {l1.out_features}, linear2: {l2.in_features} -> {l2.out_features}",
             "the hidden layer is wider (d_ff, 4 x d_model in the paper) and the output is back to d_model")
    return l1, l2


def feed_forward(cls: type) -> None:
    """Check ``FeedForward(d_model, d_ff, dropout)``: Linear -> ReLU -> dropout -> Linear."""
    d_model, d_ff = 8, 32
    tried = f"FeedForward({d_model}, {d_ff}, dropout=0.0)"
    torch.manual_seed(0)
    module = call(cls, d_model, d_ff, 0.0, tried=tried)
    l1, l2 = _linears(module, d_model, d_ff, tried)
    module = module.double()
    x = _randn(2, 5, d_model, seed=5)
    got = call(module, x, tried=f"{tried} on x of shape (2, 5, {d_model})")
    h = F.linear(x, l1.weight, l1.bias)  # (B, T, d_ff)
    expected = F.linear(F.relu(h), l2.weight, l2.bias)
    no_relu = F.linear(h, l2.weight, l2.bias)
    expect_close(got, expected, tried=f"{tried} on x of shape (2, 5, {d_model})",
                 hint="linear2(relu(linear1(x))): the ReLU sits between the two linear layers", mistakes={
                     "you left out the ReLU: without it the two linear layers collapse into one linear map": no_relu,
                     "the ReLU goes after the FIRST linear layer only, not after the second": F.relu(no_relu),
                     "apply the ReLU once, between the layers; not also on the output": F.relu(expected),
                 })
    # dropout: active in training, on the hidden activations (after the ReLU), off in eval
    tried = f"FeedForward({d_model}, {d_ff}, dropout=0.5) in train mode, seeded"
    module = call(cls, d_model, d_ff, 0.5, tried=tried).double().train()
    l1, l2 = _linears(module, d_model, d_ff, tried)
    torch.manual_seed(1)
    got = call(module, x, tried=tried)
    torch.manual_seed(1)
    expected = F.linear(F.dropout(F.relu(F.linear(x, l1.weight, l1.bias)), 0.5, True), l2.weight, l2.bias)
    eval_out = F.linear(F.relu(F.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias)
    expect_close(got, expected, tried=tried, mistakes={
        "dropout must be used: create nn.Dropout(dropout) in __init__ and apply it in forward": eval_out},
        hint="apply dropout to the hidden activations, right after the ReLU and before linear2 (and nowhere else)")
    module.eval()
    got = call(module, x, tried=f"{tried.replace('train', 'eval')}")
    expect_close(got, eval_out, tried="the same module in eval mode",
                 hint="use nn.Dropout (or F.dropout with training=self.training) so dropout switches off in eval mode")
    ok("feed_forward: linear1 -> ReLU -> dropout -> linear2, dropout only in training")


# --- Exercise 3: encoder layer ----------------------------------------------------------------

def _encoder_variants(layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The right answer for both norm orders and the classic mistakes, from the layer's own sub-modules."""
    sa = lambda h, m=mask: layer.self_attn(h, h, h, mask=m)  # noqa: E731
    ff, n1, n2 = layer.ff, layer.norm1, layer.norm2
    post = n1(x + sa(x))
    post = n2(post + ff(post))
    pre = x + sa(n1(x))
    pre = pre + ff(n2(pre))
    no_res = n2(ff(n1(sa(x)))) if not layer.norm_first else ff(n2(sa(n1(x))))
    h = n1(x) + sa(n1(x))  # pre-LN with the residual taken from the normalised x
    pre_normed = "in pre-LN the residual adds the UN-normalised x: x = x + sublayer(norm(x)), not norm(x) + sublayer(norm(x))"
    on_output = x + n1(sa(x))  # the norm on the branch's output: neither post- nor pre-LN
    on_output = on_output + n2(ff(on_output))
    out = {
        "post": post, "pre": pre,
        "norm in the wrong place: it goes on the residual SUM (post-LN, norm(x + sublayer(x))) or on the branch's "
        "INPUT (pre-LN, x + sublayer(norm(x))), never on the branch's output x + norm(sublayer(x))": on_output,
        "the residual connection is missing: add the sub-layer's input back to its output (x + sublayer(...))": no_res,
        pre_normed: n2(h) + ff(n2(h)),
        pre_normed + " ": h + ff(n2(h)),  # the same mistake in the first sub-layer only
    }
    if mask is not None:
        post_nm = n1(x + sa(x, None))
        pre_nm = x + sa(n1(x), None)
        out["the mask is ignored: pass mask=mask to self.self_attn"] = (
            pre_nm + ff(n2(pre_nm)) if layer.norm_first else n2(post_nm + ff(post_nm)))
    return out


def encoder_layer(cls: type) -> None:
    """Check ``EncoderLayer.forward(x, mask=None)`` for post-LN (the paper) and pre-LN, with masks."""
    d_model, n_heads, d_ff = 16, 4, 32
    for norm_first in (False, True):
        torch.manual_seed(0)
        name = f"EncoderLayer({d_model}, {n_heads}, {d_ff}, dropout=0.0, norm_first={norm_first})"
        layer = call(cls, d_model, n_heads, d_ff, dropout=0.0, norm_first=norm_first, tried=name).double()
        with torch.no_grad():  # non-trivial norms, so a misplaced norm shows
            for n in ("norm1", "norm2"):
                getattr(layer, n).weight.uniform_(0.5, 1.5), getattr(layer, n).bias.uniform_(-0.5, 0.5)
        x = _randn(2, 5, d_model, seed=6, scale=2.0)
        pad = torch.tensor([[True] * 5, [True, True, False, False, False]])[:, None, :]  # (2, 1, 5)
        for mask, what in ((None, "no mask"), (pad, "padding mask (B, 1, S), the second sentence has 2 real tokens")):
            tried = f"{name} on x of shape (2, 5, {d_model}), {what}"
            got = call(layer, x, mask, tried=tried)
            expect_shape(got, (2, 5, d_model), tried=tried, hint="return the new token vectors, shape (B, S, D)")
            variants = _encoder_variants(layer, x, mask)
            right, wrong = (variants.pop("pre"), variants.pop("post")) if norm_first else (variants.pop("post"), variants.pop("pre"))
            swapped = ("norm in the wrong place: norm_first=True is pre-LN, x + sublayer(norm(x)), with the norm on the way in"
                       if norm_first else "norm in the wrong place: norm_first=False is the paper's post-LN, norm(x + sublayer(x))")
            variants = {swapped: wrong, **variants}
            expect_close(got, right, tried=tried, atol=1e-8, rtol=1e-6, mistakes=variants,
                         hint="post-LN: x = norm1(x + self_attn(x, x, x, mask)); x = norm2(x + ff(x)). "
                              "pre-LN: x = x + self_attn(h, h, h, mask) with h = norm1(x); x = x + ff(norm2(x))")
    ok("encoder_layer: residuals, both norm orders, and the mask are right")
