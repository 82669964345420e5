"""Checkers of chapter 06: the solutions pass, stubs propagate NotImplementedError, classic mistakes get their hint."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.course import checks
from course_lib.course.checks import CheckFailed
from course_lib.decoder import DecoderLayer as LibDecoderLayer
from course_lib.encoder import FeedForward, LayerNorm
from course_lib.multihead import MultiHeadAttention

ch06 = checks.ch06


# --- decoder layer ----------------------------------------------------------------------------

class DLScaffold(nn.Module):
    """The exercise's given __init__."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.1):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = LayerNorm(d_model), LayerNorm(d_model), LayerNorm(d_model)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)


class DLSolution(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask=tgt_mask)))
        x = self.norm2(x + self.dropout2(self.cross_attn(x, memory, memory, mask=memory_mask)))
        return self.norm3(x + self.dropout3(self.ff(x)))


class DLOtherStyle(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        steps = [
            (self.norm1, lambda h: self.self_attn(h, h, h, tgt_mask)),
            (self.norm2, lambda h: self.cross_attn(query=h, key=memory, value=memory, mask=memory_mask)),
            (self.norm3, self.ff),
        ]
        for norm, sub, drop in zip(*zip(*steps), (self.dropout1, self.dropout2, self.dropout3)):
            x = norm(x + drop(sub(x)))
        return x


class DLNoDropout(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))
        return self.norm3(x + self.ff(x))


class DLNoCrossDropout(DLSolution):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, mask=tgt_mask)))
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))
        return self.norm3(x + self.dropout3(self.ff(x)))


class DLReseeds(DLSolution):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        torch.manual_seed(0)  # "reproducible" dropout: the same mask on every call
        return super().forward(x, memory, tgt_mask, memory_mask)


class DLCrossOnSelf(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, x, x, mask=tgt_mask))
        return self.norm3(x + self.ff(x))


class DLNoCausal(DLSolution):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        return super().forward(x, memory, None, memory_mask)


class DLNoMemoryMask(DLSolution):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        return super().forward(x, memory, tgt_mask, None)


class DLNoResidualSelf(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))
        return self.norm3(x + self.ff(x))


class DLNoResidualCross(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(self.cross_attn(x, memory, memory, mask=memory_mask))
        return self.norm3(x + self.ff(x))


class DLNoResidualFF(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))
        return self.norm3(self.ff(x))


class DLSwappedOrder(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        return self.norm3(x + self.ff(x))


class DLValueFromDecoder(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, memory, x, mask=memory_mask))
        return self.norm3(x + self.ff(x))


class DLQueriesFromMemory(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(memory + self.cross_attn(memory, x, x))
        return self.norm3(x + self.ff(x))


class DLKeysFromDecoder(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, x, memory, mask=memory_mask))
        return self.norm3(x + self.ff(x))


class DLOwnMask(DLSolution):
    """Ignores tgt_mask and builds its own causal mask, with a classic slip."""

    def make_mask(self, T):
        raise NotImplementedError

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        return super().forward(x, memory, self.make_mask(x.shape[1]), memory_mask)


class DLMaskSeesNext(DLOwnMask):
    def make_mask(self, T):
        return torch.ones(T, T, dtype=torch.bool).tril(1)


class DLMaskHidesSelf(DLOwnMask):
    def make_mask(self, T):
        return torch.ones(T, T, dtype=torch.bool).tril(-1)


class DLMaskInverted(DLOwnMask):
    def make_mask(self, T):
        return torch.ones(T, T, dtype=torch.bool).triu(1)


class DLOwnMaskCorrect(DLOwnMask):
    """Another correct style: builds the causal mask itself (with torch.tril on a square of ones)."""

    def make_mask(self, T):
        return torch.tril(torch.ones(T, T)).bool()


class DLPreLN(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, mask=tgt_mask)
        h = self.norm2(x)
        x = x + self.cross_attn(h, memory, memory, mask=memory_mask)
        return x + self.ff(self.norm3(x))


def test_decoder_layer_solutions_pass(capsys):
    ch06.decoder_layer(DLSolution)
    ch06.decoder_layer(DLOtherStyle)
    ch06.decoder_layer(LibDecoderLayer)
    ch06.decoder_layer(DLOwnMaskCorrect)
    assert capsys.readouterr().out.count("✓ decoder_layer") == 4


def test_decoder_layer_stub_propagates():
    class Stub(DLScaffold):
        def forward(self, x, memory, tgt_mask=None, memory_mask=None):
            raise NotImplementedError("write forward")
    with pytest.raises(NotImplementedError):
        ch06.decoder_layer(Stub)


@pytest.mark.parametrize("wrong, hint", [
    (DLCrossOnSelf, "keys and values from memory"),
    (DLNoCausal, "causal mask is missing"),
    (DLNoMemoryMask, "memory .source padding. mask is missing"),
    (DLNoResidualSelf, "missing around the masked self-attention"),
    (DLNoResidualCross, "missing around the cross-attention"),
    (DLNoResidualFF, "missing around the feed-forward"),
    (DLSwappedOrder, "masked self-attention first"),
    (DLValueFromDecoder, "keys and values are swapped.*values from the decoder"),
    (DLKeysFromDecoder, "keys and values are swapped.*keys from the decoder"),
    (DLMaskSeesNext, "causal mask off by one.*also lets t see t \\+ 1"),
    (DLMaskHidesSelf, "causal mask off by one.*hides each position from itself"),
    (DLMaskInverted, "causal mask is inverted"),
    (DLPreLN, "norm in the wrong place: this exercise is the paper's post-LN"),
    (DLQueriesFromMemory, r"cross_attn\(x, memory, memory"),
    (DLNoDropout, "no dropout on the masked self-attention's output"),
    (DLNoCrossDropout, "no dropout on the cross-attention's output"),
    (DLReseeds, "resets the global random generator"),
])
def test_decoder_layer_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch06.decoder_layer(wrong)


# --- is_causal --------------------------------------------------------------------------------

def causal_solution(layer_fn, d_model, length=6):
    torch.manual_seed(0)
    x = torch.randn(2, length, d_model)
    before = layer_fn(x)
    for k in range(1, length):
        y = x.clone()
        y[:, k] += torch.randn(d_model)
        after = layer_fn(y)
        if not torch.allclose(before[:, :k], after[:, :k], atol=1e-7, rtol=0):
            return False
    return True


def causal_other_style(layer_fn, d_model, length=6):
    """With autograd: the Jacobian of output t with respect to input s must vanish for s > t."""
    x = torch.randn(1, length, d_model, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: layer_fn(t.double()).double(), x, vectorize=True)  # (1, T, D, 1, T, D)
    per_pair = jac[0, :, :, 0].abs().sum(dim=(1, 3))  # (T_out, T_in)
    return bool((per_pair.triu(1) == 0).all())


def causal_only_last(layer_fn, d_model, length=6):
    x = torch.randn(1, length, d_model)
    y = x.clone()
    y[:, -1] += 1.0
    return torch.allclose(layer_fn(x)[:, :-1], layer_fn(y)[:, :-1])


def causal_includes_self(layer_fn, d_model, length=6):
    x = torch.randn(1, length, d_model)
    for k in range(length):
        y = x.clone()
        y[:, k] += 1.0
        if not torch.allclose(layer_fn(x)[:, : k + 1], layer_fn(y)[:, : k + 1]):
            return False
    return True


def causal_loose(layer_fn, d_model, length=6):
    x = torch.randn(1, length, d_model)
    for k in range(1, length):
        y = x.clone()
        y[:, k] += 1.0
        if not torch.allclose(layer_fn(x)[:, :k], layer_fn(y)[:, :k], atol=0.1):
            return False
    return True


def causal_first_only(layer_fn, d_model, length=6):
    x = torch.randn(1, length, d_model)
    y = x.clone()
    y[:, 1:] += 1.0
    return torch.allclose(layer_fn(x)[:, 0], layer_fn(y)[:, 0])


def causal_last_vs_first(layer_fn, d_model, length=6):
    x = torch.randn(1, length, d_model)
    y = x.clone()
    y[:, -1] += 1.0
    return torch.allclose(layer_fn(x)[:, 0], layer_fn(y)[:, 0])


def causal_returns_tensor(layer_fn, d_model, length=6):
    x = torch.randn(1, length, d_model)
    y = x.clone()
    y[:, -1] += 1.0
    return (layer_fn(x)[:, :-1] - layer_fn(y)[:, :-1]).abs().max()


def causal_pytest_style(layer_fn, d_model, length=6):
    """Another correct style: a pytest-like test that asserts instead of returning a bool."""
    x = torch.randn(3, length, d_model, dtype=torch.float64)
    before = layer_fn(x)
    for k in range(length):
        y = x.clone()
        y[:, k] = torch.randn(3, d_model, dtype=torch.float64)
        assert torch.equal(layer_fn(y)[:, :k], before[:, :k]), f"an output before {k} changed"


def causal_too_strict(layer_fn, d_model, length=6):
    """Wrong: also demands that the perturbed position itself stays put, so a correct decoder fails."""
    x = torch.randn(2, length, d_model)
    y = x.clone()
    y[:, 2] += 1.0
    return torch.allclose(layer_fn(x)[:, :3], layer_fn(y)[:, :3], atol=1e-7)


def causal_forgets_return(layer_fn, d_model, length=6):
    x = torch.randn(2, length, d_model)
    y = x.clone()
    y[:, -1] += 1.0
    torch.allclose(layer_fn(x)[:, :-1], layer_fn(y)[:, :-1], atol=1e-7)


def test_is_causal_solutions_pass(capsys):
    ch06.is_causal(causal_solution)
    ch06.is_causal(causal_other_style)
    ch06.is_causal(causal_pytest_style)
    assert capsys.readouterr().out.count("✓ is_causal") == 3


def test_is_causal_runs_the_learners_test_on_a_correct_and_a_leaky_decoder():
    """The first cases are real decoder layers: a too-strict test fails on the correct one, a lax one on the leaky one."""
    with pytest.raises(CheckFailed, match=r"(?s)tried:.*decoder layer.*causal tgt_mask.*a correct decoder must pass"):
        ch06.is_causal(causal_too_strict)
    with pytest.raises(CheckFailed, match=r"(?s)tried:.*decoder layer without tgt_mask.*expected: False"):
        ch06.is_causal(lambda layer_fn, d_model, length=6: True)


def test_is_causal_stub_propagates():
    def stub(layer_fn, d_model, length=6):
        raise NotImplementedError("write is_causal")
    with pytest.raises(NotImplementedError):
        ch06.is_causal(stub)


@pytest.mark.parametrize("wrong, hint", [
    (causal_only_last, "perturb EVERY position"),
    (causal_includes_self, "itself MAY change"),
    (causal_forgets_return, "returned nothing"),
    (causal_loose, "tight tolerance"),
    (causal_first_only, "perturb EVERY position"),
    (causal_last_vs_first, "positions 0..t only"),
    (causal_returns_tensor, "a Python bool"),
    (lambda layer_fn, d_model, length=6: True, "compare the outputs at EARLIER positions"),
])
def test_is_causal_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch06.is_causal(wrong)


def test_the_course_decoder_passes_the_learners_test():
    torch.manual_seed(0)
    layer = LibDecoderLayer(8, 2, 16, dropout=0.0).eval()
    memory = torch.randn(2, 5, 8)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    assert causal_solution(lambda x: layer(x, memory, causal), 8) is True
    assert causal_solution(lambda x: layer(x, memory), 8) is False


# --- the decoder layer: each wiring mistake of the concept note and of learners ------------------

class DLCausalOnCross(DLScaffold):
    """The concept note's own error: the encoder-decoder attention masked like the self-attention."""

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=tgt_mask))
        return self.norm3(x + self.ff(x))


class DLBothMasksOnCross(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(x, memory, memory, mask=tgt_mask & memory_mask))
        return self.norm3(x + self.ff(x))


class DLQueriesFromMemoryMasked(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm2(x + self.cross_attn(memory, x, x, mask=memory_mask.transpose(1, 2)))
        return self.norm3(x + self.ff(x))


class DLFeedForwardBeforeCross(DLScaffold):
    def forward(self, x, memory, tgt_mask=None, memory_mask=None):
        x = self.norm1(x + self.self_attn(x, x, x, mask=tgt_mask))
        x = self.norm3(x + self.ff(x))
        return self.norm2(x + self.cross_attn(x, memory, memory, mask=memory_mask))


@pytest.mark.parametrize("wrong, hint", [
    (DLCausalOnCross, "causal mask belongs to the decoder's SELF-attention only"),
    (DLBothMasksOnCross, "causal mask belongs to the decoder's SELF-attention only"),
    (DLQueriesFromMemory, "QUERIES come from the decoder"),
    (DLQueriesFromMemoryMasked, "QUERIES come from the decoder"),
    (DLSwappedOrder, "masked self-attention first, then cross-attention"),
    (DLFeedForwardBeforeCross, "self_attn -> ff -> cross_attn"),
])
def test_decoder_layer_wiring_mistakes_get_their_own_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch06.decoder_layer(wrong)


# --- encoder_decoder ------------------------------------------------------------------------------

def ed_solution(encoder_layers, decoder_layers, src, tgt, src_mask, tgt_mask):
    memory = src
    for layer in encoder_layers:
        memory = layer(memory, src_mask)
    y = tgt
    for layer in decoder_layers:
        y = layer(y, memory, tgt_mask, src_mask)
    return y


def ed_keyword_style(encoder_layers, decoder_layers, src, tgt, src_mask, tgt_mask):
    import functools
    memory = functools.reduce(lambda h, layer: layer(h, mask=src_mask), encoder_layers, src)
    return functools.reduce(lambda y, layer: layer(y, memory, tgt_mask=tgt_mask, memory_mask=src_mask), decoder_layers, tgt)


def ed_layer_i_reads_encoder_i(encoder_layers, decoder_layers, src, tgt, src_mask, tgt_mask):
    h, y = src, tgt
    for enc, dec in zip(encoder_layers, decoder_layers):
        h = enc(h, src_mask)
        y = dec(y, h, tgt_mask, src_mask)
    return y


def _ed_wrong(**kw):
    def fn(encoder_layers, decoder_layers, src, tgt, src_mask, tgt_mask):
        return ch06._stack(encoder_layers, decoder_layers, src, tgt, src_mask, tgt_mask, **kw)
    return fn


def test_encoder_decoder_solutions_pass(capsys):
    ch06.encoder_decoder(ed_solution)
    ch06.encoder_decoder(ed_keyword_style)
    assert capsys.readouterr().out.count("✓ encoder_decoder") == 2


def test_encoder_decoder_stub_propagates():
    def stub(*args):
        raise NotImplementedError("write it")
    with pytest.raises(NotImplementedError):
        ch06.encoder_decoder(stub)


@pytest.mark.parametrize("wrong, hint", [
    (ed_layer_i_reads_encoder_i, "concept note's figure pairs encoder layer i with decoder layer i"),
    (_ed_wrong(memory_from="first"), "not the first one's"),
    (_ed_wrong(memory_from="src"), "the encoder is skipped"),
    (_ed_wrong(chain_dec=False), "chain the decoder layers"),
    (_ed_wrong(chain_enc=False), "chain the encoder layers"),
    (_ed_wrong(enc_mask=False), "pass src_mask to every encoder layer"),
    (_ed_wrong(mem_mask=False), "as memory_mask"),
    (_ed_wrong(causal=False), "pass tgt_mask"),
    (lambda *a: ed_solution(*a)[:, :-1], r"\(B, T, D\)"),
])
def test_encoder_decoder_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch06.encoder_decoder(wrong)


def test_the_course_encoder_and_decoder_pass_the_stack_checker(capsys):
    """The course's own Encoder and Decoder loops are the same wiring as the exercise's answer."""
    from course_lib.decoder import Decoder
    from course_lib.encoder import Encoder, EncoderLayer

    def course_style(encoder_layers, decoder_layers, src, tgt, src_mask, tgt_mask):
        enc, dec = Encoder(EncoderLayer(8, 2, 16), 1, final_norm=False), Decoder(LibDecoderLayer(8, 2, 16), 1, final_norm=False)
        enc.layers, dec.layers = encoder_layers, decoder_layers
        return dec(tgt, enc(src, src_mask), tgt_mask, src_mask)
    ch06.encoder_decoder(course_style)
    assert "✓ encoder_decoder" in capsys.readouterr().out


@pytest.mark.parametrize("check, answer", [
    (ch06.decoder_layer, DLSolution), (ch06.is_causal, causal_solution), (ch06.encoder_decoder, ed_solution)])
def test_checkers_leave_the_global_rng_as_they_found_it(check, answer, capsys):
    torch.manual_seed(321)
    before = torch.get_rng_state()
    check(answer)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["decoder_layer", "is_causal", "encoder_decoder"])
def test_every_exercise_has_three_graded_hints(name):
    assert len(ch06.HINTS[name]) == 3 and all(len(h) > 40 for h in ch06.HINTS[name])


def test_the_exercise_states_the_goal_not_the_code():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "exercises" / "06_decoder.ipynb").read_text(encoding="utf-8")
    for code in ("cross_attn(x, memory, memory", "self_attn(x, x, x, mask=tgt_mask", "before[:, :k]", "memory = layer(memory"):
        assert code not in text, f"exercises/06_decoder.ipynb gives away {code!r}"
