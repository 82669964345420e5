"""Checkers of chapter 05: the solutions pass, stubs propagate NotImplementedError, classic mistakes get their hint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib import checks
from course_lib.checks import CheckFailed
from course_lib.encoder import FeedForward as LibFeedForward
from course_lib.encoder import LayerNorm
from course_lib.multihead import MultiHeadAttention

ch05 = checks.ch05


# --- layer norm -------------------------------------------------------------------------------

def ln_solution(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_other_style(x, weight, bias, eps=1e-5):
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)
    return torch.addcmul(bias, (x - mean) * torch.rsqrt(var + eps), weight)


def ln_unbiased(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias


def ln_eps_outside(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True, unbiased=False) + eps) * weight + bias


def ln_wrong_dim(x, weight, bias, eps=1e-5):
    mean, var = x.mean(0, keepdim=True), x.var(0, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_over_positions(x, weight, bias, eps=1e-5):
    dim = 1 if x.dim() == 3 else -1
    mean, var = x.mean(dim, keepdim=True), x.var(dim, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_no_affine(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def ln_no_eps(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / x.std(-1, keepdim=True, unbiased=False) * weight + bias


def test_layer_norm_solutions_pass(capsys):
    ch05.layer_norm(ln_solution)
    ch05.layer_norm(ln_other_style)
    ch05.layer_norm(lambda x, w, b, eps=1e-5: LayerNorm(x.shape[-1], eps).to(x.dtype).requires_grad_(False)(x) * w + b)
    assert capsys.readouterr().out.count("✓ layer_norm") == 3


def test_layer_norm_stub_propagates():
    def stub(x, weight, bias, eps=1e-5):
        raise NotImplementedError("write layer norm")
    with pytest.raises(NotImplementedError):
        ch05.layer_norm(stub)


@pytest.mark.parametrize("wrong, hint", [
    (ln_unbiased, "biased variance"),
    (ln_eps_outside, "eps goes INSIDE the square root"),
    (ln_wrong_dim, "LAST dimension"),
    (ln_over_positions, "over dim=1"),
    (ln_no_affine, "multiply by weight and add bias"),
    (ln_no_eps, "variance 0"),
])
def test_layer_norm_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch05.layer_norm(wrong)


# --- feed-forward -----------------------------------------------------------------------------

class FFSolution(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.1):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class FFOtherStyle(FFSolution):
    def forward(self, x):
        h = F.linear(x, self.linear1.weight, self.linear1.bias).clamp_min(0)
        return F.linear(F.dropout(h, self.dropout.p, self.training), self.linear2.weight, self.linear2.bias)


class FFNoReLU(FFSolution):
    def forward(self, x):
        return self.linear2(self.dropout(self.linear1(x)))


class FFReLUAfterSecond(FFSolution):
    def forward(self, x):
        return torch.relu(self.linear2(self.dropout(self.linear1(x))))


class FFReLUTwice(FFSolution):
    def forward(self, x):
        return torch.relu(super().forward(x))


class FFDropoutOnInput(FFSolution):
    def forward(self, x):
        return self.linear2(torch.relu(self.linear1(self.dropout(x))))


class FFNoDropout(FFSolution):
    def forward(self, x):
        return self.linear2(torch.relu(self.linear1(x)))


class FFAlwaysDropout(FFSolution):
    def forward(self, x):
        return self.linear2(F.dropout(torch.relu(self.linear1(x)), self.dropout.p, training=True))


class FFBadNames(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x):
        return self.net(x)


class FFNarrow(FFSolution):
    def __init__(self, d_model, d_ff, dropout=0.1):
        super().__init__(d_model, d_model, dropout)


def test_feed_forward_solutions_pass(capsys):
    ch05.feed_forward(FFSolution)
    ch05.feed_forward(FFOtherStyle)
    ch05.feed_forward(LibFeedForward)
    assert capsys.readouterr().out.count("✓ feed_forward") == 3


def test_feed_forward_stub_propagates():
    class Stub(FFSolution):
        def forward(self, x):
            raise NotImplementedError("write forward")
    with pytest.raises(NotImplementedError):
        ch05.feed_forward(Stub)


@pytest.mark.parametrize("wrong, hint", [
    (FFNoReLU, "left out the ReLU"),
    (FFReLUAfterSecond, "after the FIRST linear layer only"),
    (FFReLUTwice, "apply the ReLU once"),
    (FFDropoutOnInput, "right after the ReLU"),
    (FFNoDropout, "dropout must be used"),
    (FFAlwaysDropout, "switches off in eval mode"),
    (FFBadNames, "self.linear1 = nn.Linear"),
    (FFNarrow, "the hidden layer is wider"),
])
def test_feed_forward_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch05.feed_forward(wrong)


# --- encoder layer ----------------------------------------------------------------------------

class ELScaffold(nn.Module):
    """The exercise's given __init__."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.1, norm_first=False):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ff = LibFeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm_first = norm_first


class ELSolution(ELScaffold):
    def forward(self, x, mask=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h, h, h, mask=mask))
            x = x + self.dropout2(self.ff(self.norm2(x)))
        else:
            x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask=mask)))
            x = self.norm2(x + self.dropout2(self.ff(x)))
        return x


class ELOtherStyle(ELScaffold):
    def forward(self, x, mask=None):
        blocks = [(self.norm1, lambda h: self.self_attn(h, h, h, mask)), (self.norm2, self.ff)]
        for norm, sub in blocks:
            x = x + sub(norm(x)) if self.norm_first else norm(x + sub(x))
        return x


class ELNoResidual(ELScaffold):
    def forward(self, x, mask=None):
        if self.norm_first:
            x = self.self_attn(self.norm1(x), self.norm1(x), self.norm1(x), mask=mask)
            return self.ff(self.norm2(x))
        x = self.norm1(self.self_attn(x, x, x, mask=mask))
        return self.norm2(self.ff(x))


class ELAlwaysPost(ELScaffold):
    def forward(self, x, mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=mask))
        return self.norm2(x + self.ff(x))


class ELAlwaysPre(ELScaffold):
    def forward(self, x, mask=None):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, mask=mask)
        return x + self.ff(self.norm2(x))


class ELMaskIgnored(ELSolution):
    def forward(self, x, mask=None):
        return super().forward(x, None)


class ELPreNormedResidual(ELSolution):
    def forward(self, x, mask=None):
        if not self.norm_first:
            return super().forward(x, mask)
        h = self.norm1(x)
        x = h + self.self_attn(h, h, h, mask=mask)
        h = self.norm2(x)
        return h + self.ff(h)


class ELNormOnBranchOutput(ELScaffold):
    def forward(self, x, mask=None):
        x = x + self.norm1(self.self_attn(x, x, x, mask=mask))
        return x + self.norm2(self.ff(x))


class ELEinsumStyle(ELScaffold):
    """Another correct style: the norms computed inline from their parameters, sub-layers as a loop."""

    def forward(self, x, mask=None):
        def norm(n, h):
            var, mean = torch.var_mean(h, dim=-1, keepdim=True, correction=0)
            return torch.einsum("btd,d->btd", (h - mean) / torch.sqrt(var + n.eps), n.weight) + n.bias
        for n, sub in ((self.norm1, lambda h: self.self_attn(h, h, h, mask=mask)), (self.norm2, self.ff)):
            x = x + sub(norm(n, x)) if self.norm_first else norm(n, x + sub(x))
        return x


def test_encoder_layer_solutions_pass(capsys):
    ch05.encoder_layer(ELSolution)
    ch05.encoder_layer(ELOtherStyle)
    ch05.encoder_layer(ELEinsumStyle)
    assert capsys.readouterr().out.count("✓ encoder_layer") == 3


def test_encoder_layer_stub_propagates():
    class Stub(ELScaffold):
        def forward(self, x, mask=None):
            raise NotImplementedError("write forward")
    with pytest.raises(NotImplementedError):
        ch05.encoder_layer(Stub)


@pytest.mark.parametrize("wrong, hint", [
    (ELNoResidual, "residual connection is missing"),
    (ELAlwaysPost, "norm_first=True is pre-LN"),
    (ELAlwaysPre, "norm_first=False is the paper's post-LN"),
    (ELMaskIgnored, "the mask is ignored"),
    (ELPreNormedResidual, "adds the UN-normalised x"),
    (ELNormOnBranchOutput, "never on the branch's output"),
])
def test_encoder_layer_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch05.encoder_layer(wrong)
