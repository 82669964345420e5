"""Checkers of chapter 05: the solutions pass, stubs propagate NotImplementedError, classic mistakes get their hint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.course import checks
from course_lib.course.checks import CheckFailed
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


def test_layer_norm_wrong_default_eps_is_named():
    with pytest.raises(CheckFailed, match=r"eps left out(.|\n)*eps=1e-05"):
        ch05.layer_norm(lambda x, weight, bias, eps=1e-6: ln_solution(x, weight, bias, eps))


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


class FFGELU(FFSolution):
    def forward(self, x):
        return self.linear2(self.dropout(F.gelu(self.linear1(x))))


class FFGELUTanh(FFSolution):
    def forward(self, x):
        return self.linear2(self.dropout(F.gelu(self.linear1(x), approximate="tanh")))


class FFRandMaskStyle(FFSolution):
    """Another correct style: dropout written by hand with a mask from torch.rand(...) > p."""

    def forward(self, x):
        h = torch.relu(self.linear1(x))
        if self.training and self.dropout.p > 0:
            h = h * (torch.rand_like(h) > self.dropout.p) / (1 - self.dropout.p)
        return self.linear2(h)


class FFDropoutBeforeReLU(FFSolution):
    """Also correct: dropout before the ReLU gives the same result (ReLU commutes with a positive scale)."""

    def forward(self, x):
        return self.linear2(torch.relu(self.dropout(self.linear1(x))))


class FFUnscaledDropout(FFSolution):
    def forward(self, x):
        h = torch.relu(self.linear1(x))
        if self.training:
            h = h * (torch.rand_like(h) > self.dropout.p)
        return self.linear2(h)


class FFKeepsShareP(FFSolution):
    def forward(self, x):
        h = torch.relu(self.linear1(x))
        if self.training and self.dropout.p > 0:
            h = h * (torch.rand_like(h) < self.dropout.p) / (1 - self.dropout.p)
        return self.linear2(h)


class FFDropoutOnOutput(FFSolution):
    def forward(self, x):
        return self.dropout(self.linear2(torch.relu(self.linear1(x))))


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
    ch05.feed_forward(FFRandMaskStyle)
    ch05.feed_forward(FFDropoutBeforeReLU)
    assert capsys.readouterr().out.count("✓ feed_forward") == 5


class FFNoBias(FFSolution):
    """The statement asks for nn.Linear layers, not for their biases: bias-free layers are accepted."""

    def __init__(self, d_model, d_ff, dropout=0.1):
        super().__init__(d_model, d_ff, dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff, bias=False), nn.Linear(d_ff, d_model, bias=False)


class FFReseeds(FFSolution):
    def forward(self, x):
        torch.manual_seed(0)  # "reproducible" dropout: the same mask on every call, the global RNG reset
        return super().forward(x)


class FFFixedMask(FFSolution):
    def forward(self, x):
        h = torch.relu(self.linear1(x))
        if self.training:
            if not hasattr(self, "mask"):
                self.mask = (torch.rand(h.shape, dtype=h.dtype) >= self.dropout.p) / (1 - self.dropout.p)
            h = h * self.mask
        return self.linear2(h)


class FFNoDropoutByDefault(FFSolution):
    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__(d_model, d_ff, dropout)


def test_feed_forward_wrong_default_dropout_is_named():
    with pytest.raises(CheckFailed, match="dropout left out(.|\\n)*keep the default of the signature: dropout=0.1"):
        ch05.feed_forward(FFNoDropoutByDefault)


def test_feed_forward_accepts_bias_free_layers(capsys):
    ch05.feed_forward(FFNoBias)
    assert "✓ feed_forward" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [(FFReseeds, "resets the global random generator"),
                                         (FFFixedMask, "the same mask on two calls")])
def test_feed_forward_dropout_must_differ_between_calls(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch05.feed_forward(wrong)


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
    (FFNoDropout, "no dropout on the hidden activations"),
    (FFGELU, "not GELU"),
    (FFGELUTanh, "not GELU"),
    (FFUnscaledDropout, r"scale the elements dropout keeps by 1 / \(1 - p\)"),
    (FFKeepsShareP, "expected about p = 0.3"),
    (FFDropoutOnOutput, "dropout in the wrong place"),
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
        blocks = [(self.norm1, lambda h: self.dropout1(self.self_attn(h, h, h, mask))),
                  (self.norm2, lambda h: self.dropout2(self.ff(h)))]
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


class ELNoResidualAttention(ELSolution):
    def forward(self, x, mask=None):
        if self.norm_first:
            x = self.dropout1(self.self_attn(self.norm1(x), self.norm1(x), self.norm1(x), mask=mask))
            return x + self.dropout2(self.ff(self.norm2(x)))
        x = self.norm1(self.dropout1(self.self_attn(x, x, x, mask=mask)))
        return self.norm2(x + self.dropout2(self.ff(x)))


class ELNoResidualFF(ELSolution):
    def forward(self, x, mask=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h, h, h, mask=mask))
            return self.dropout2(self.ff(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask=mask)))
        return self.norm2(self.dropout2(self.ff(x)))


class ELSharedNorm(ELScaffold):
    def forward(self, x, mask=None):
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask=mask)))
        return self.norm1(x + self.dropout2(self.ff(x)))


class ELNoDropoutOnAttention(ELScaffold):
    def forward(self, x, mask=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.self_attn(h, h, h, mask=mask)
            return x + self.dropout2(self.ff(self.norm2(x)))
        x = self.norm1(x + self.self_attn(x, x, x, mask=mask))
        return self.norm2(x + self.dropout2(self.ff(x)))


class ELNoDropoutOnFF(ELScaffold):
    def forward(self, x, mask=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h, h, h, mask=mask))
            return x + self.ff(self.norm2(x))
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask=mask)))
        return self.norm2(x + self.ff(x))


class ELDropoutOnSum(ELScaffold):
    def forward(self, x, mask=None):
        if self.norm_first:
            h = self.norm1(x)
            x = self.dropout1(x + self.self_attn(h, h, h, mask=mask))
            return self.dropout2(x + self.ff(self.norm2(x)))
        x = self.norm1(self.dropout1(x + self.self_attn(x, x, x, mask=mask)))
        return self.norm2(self.dropout2(x + self.ff(x)))


class ELOwnDropout(ELScaffold):
    """The right wiring with a dropout of its own on each branch (subclasses define drop)."""

    def drop(self, h):
        raise NotImplementedError

    def forward(self, x, mask=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.drop(self.self_attn(h, h, h, mask=mask))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.self_attn(x, x, x, mask=mask)))
        return self.norm2(x + self.drop(self.ff(x)))


class ELAlwaysDropout(ELOwnDropout):
    def drop(self, h):
        return F.dropout(h, self.dropout1.p, training=True)


class ELRandMaskStyle(ELOwnDropout):
    """Another correct style: dropout on each branch written by hand with torch.rand(...) > p."""

    def drop(self, h):
        p = self.dropout1.p
        return h * (torch.rand_like(h) > p) / (1 - p) if self.training and p > 0 else h


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
    ch05.encoder_layer(ELRandMaskStyle)
    assert capsys.readouterr().out.count("✓ encoder_layer") == 4


class ELReseeds(ELSolution):
    def forward(self, x, mask=None):
        torch.manual_seed(0)  # "reproducible" dropout: the same mask on every call, the global RNG reset
        return super().forward(x, mask)


class ELPreByDefault(ELSolution):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.1, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, dropout, norm_first)


@pytest.mark.parametrize("wrong, hint", [(ELReseeds, "resets the global random generator"),
                                         (ELPreByDefault, "norm_first=False")])
def test_encoder_layer_reseeding_and_a_wrong_default_are_named(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch05.encoder_layer(wrong)


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
    (ELNoResidualAttention, "residual around the SELF-ATTENTION is missing"),
    (ELNoResidualFF, "residual around the FEED-FORWARD network is missing"),
    (ELSharedNorm, "its OWN LayerNorm"),
    (ELNoDropoutOnAttention, "no dropout on the self-attention's output"),
    (ELNoDropoutOnFF, "no dropout on the feed-forward network's output"),
    (ELDropoutOnSum, "dropout in the wrong place"),
    (ELAlwaysDropout, "in eval mode"),
])
def test_encoder_layer_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch05.encoder_layer(wrong)


# --- no trace, hints ------------------------------------------------------------------------

@pytest.mark.parametrize("check, answer", [
    (ch05.layer_norm, ln_solution), (ch05.feed_forward, FFSolution), (ch05.encoder_layer, ELSolution)])
def test_checkers_leave_the_global_rng_as_they_found_it(check, answer, capsys):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check(answer)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["layer_norm", "feed_forward", "encoder_layer"])
def test_every_exercise_has_three_graded_hints(name, capsys):
    assert len(ch05.HINTS[name]) == 3 and all(len(h) > 40 for h in ch05.HINTS[name])
    with pytest.raises(CheckFailed, match=rf"checks.hint\('ch05.{name}'\)"):
        {"layer_norm": ch05.layer_norm, "feed_forward": ch05.feed_forward, "encoder_layer": ch05.encoder_layer}[name](
            {"layer_norm": ln_unbiased, "feed_forward": FFNoReLU, "encoder_layer": ELNoResidual}[name])


def test_dropout_problem_accepts_a_true_dropout_and_names_each_fault():
    h = torch.rand(1000, dtype=torch.float64) + 0.1
    keep = torch.rand(1000, generator=torch.Generator().manual_seed(0)) > 0.3
    assert ch05.dropout_problem(h * keep / 0.7, h, 0.3, "h", "fix") is None
    assert ch05.dropout_problem(h, h, 0.3, "h", "fix").startswith("no dropout on h")
    assert "1 / (1 - p)" in ch05.dropout_problem(h * keep, h, 0.3, "h", "fix")
    assert "expected about p = 0.3" in ch05.dropout_problem(h * ~keep / 0.7, h, 0.3, "h", "fix")
    assert "wrong place" in ch05.dropout_problem(h + 1, h, 0.3, "h", "fix")


def test_the_exercise_states_the_goal_not_the_code():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "exercises" / "05_encoder.ipynb").read_text(encoding="utf-8")
    for code in ("var + eps", "torch.relu(self.linear1", "Linear → ReLU", "self.norm1(x + self.dropout1", "x + self.dropout2"):
        assert code not in text, f"exercises/05_encoder.ipynb gives away {code!r}"
