"""Chapter 06: DecoderLayer and Decoder — equal to PyTorch, causal, reading the final encoder output."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_encoder import (
    TOL,
    assert_same_grads,
    forbid_torch_attention,
    max_diff,
    padding,
    random_case,
    randomise_norms_and_biases_,
    torch_grads_as_ours,
)
from torch import nn

from course_lib.decoder import Decoder, DecoderLayer
from course_lib.encoder import Encoder, EncoderLayer, LayerNorm


def make_pair(case: dict, norm_first: bool, dtype: torch.dtype):
    theirs = nn.TransformerDecoderLayer(case["D"], case["H"], case["d_ff"], dropout=0.0, batch_first=True,
                                        norm_first=norm_first, dtype=dtype)
    randomise_norms_and_biases_(theirs, seed=case["D"])  # so that copying them is really tested
    return DecoderLayer.from_torch(theirs.train()), theirs


def causal(T: int) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool).tril()  # (T, T) True = may attend


def decoder_masks(kind: str, case: dict) -> tuple[torch.Tensor | None, torch.Tensor | None, dict]:
    """Our (tgt_mask, memory_mask) and PyTorch's keyword arguments for one mask scenario."""
    B, S, T, g = case["B"], case["S"], case["T"], case["g"]
    if kind == "none":
        return None, None, {}
    src_pad = padding(B, S, g)  # (B, 1, S)
    if kind == "causal+memory":
        return causal(T), src_pad, {"tgt_mask": ~causal(T), "memory_key_padding_mask": ~src_pad[:, 0, :]}
    tgt_pad = padding(B, T, g)  # (B, 1, T)
    ours_tgt = causal(T) & tgt_pad  # (B, T, T)
    return ours_tgt, src_pad, {"tgt_mask": ~causal(T), "tgt_key_padding_mask": ~tgt_pad[:, 0, :],
                               "memory_key_padding_mask": ~src_pad[:, 0, :]}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_decoder_layer_matches_torch_values_and_grads(seed, norm_first, dtype):
    case = random_case(seed)
    torch.manual_seed(seed)
    ours, theirs = make_pair(case, norm_first, dtype)
    kind = ["none", "causal+memory", "causal+padding+memory"][seed % 3]
    tgt_mask, memory_mask, torch_kwargs = decoder_masks(kind, case)
    x = torch.randn(case["B"], case["T"], case["D"], dtype=dtype, requires_grad=True)
    memory = torch.randn(case["B"], case["S"], case["D"], dtype=dtype, requires_grad=True)
    x2, memory2 = (t.detach().clone().requires_grad_() for t in (x, memory))
    a, b = ours(x, memory, tgt_mask, memory_mask), theirs(x2, memory2, **torch_kwargs)
    assert a.shape == (case["B"], case["T"], case["D"])
    assert max_diff(a, b) < TOL[dtype], f"{kind}: {max_diff(a, b):.2e}"
    g = torch.randn_like(a)
    a.backward(g), b.backward(g)
    assert max_diff(x.grad, x2.grad) < TOL[dtype] * 10
    assert max_diff(memory.grad, memory2.grad) < TOL[dtype] * 10
    assert_same_grads(ours, theirs, TOL[dtype] * 10)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_encoder_decoder_stack_matches_nn_transformer(norm_first, dtype):
    torch.manual_seed(2)
    theirs = nn.Transformer(16, 4, 2, 3, 32, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=dtype).train()
    randomise_norms_and_biases_(theirs, seed=2)  # the final norms too: their defaults survive any rounding
    encoder, decoder = Encoder.from_torch(theirs.encoder), Decoder.from_torch(theirs.decoder)
    assert encoder.norm is not None and decoder.norm is not None, "nn.Transformer always ends with a norm"
    g = torch.Generator().manual_seed(5)
    src, tgt = torch.randn(3, 7, 16, dtype=dtype), torch.randn(3, 5, 16, dtype=dtype)
    src_pad, tgt_pad = padding(3, 7, g), padding(3, 5, g)
    ours = decoder(tgt, encoder(src, src_pad), causal(5) & tgt_pad, src_pad)
    ref = theirs(src, tgt, tgt_mask=~causal(5), src_key_padding_mask=~src_pad[:, 0, :],
                 tgt_key_padding_mask=~tgt_pad[:, 0, :], memory_key_padding_mask=~src_pad[:, 0, :])
    assert max_diff(ours, ref) < TOL[dtype]
    ours.square().sum().backward(), ref.square().sum().backward()
    grads = dict(decoder.named_parameters())
    for i in range(3):
        for name, grad in torch_grads_as_ours(theirs.decoder.layers[i]).items():
            assert max_diff(grads[f"layers.{i}.{name}"].grad, grad) < TOL[dtype] * 10, name
    enc_grads = dict(encoder.named_parameters())
    for name, grad in torch_grads_as_ours(theirs.encoder.layers[0]).items():
        assert max_diff(enc_grads[f"layers.0.{name}"].grad, grad) < TOL[dtype] * 10, name


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [False, True])
def test_float64_stacks_with_random_norms_match_to_1e_12(norm_first):
    """Encoder.from_torch / Decoder.from_torch keep every float64 weight exact, the final norms included.

    (They once built the final LayerNorm in float32 and copied into it before casting: 1e-7 off.)
    """
    torch.manual_seed(4)
    theirs = nn.Transformer(16, 4, 2, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first,
                            dtype=torch.float64).train()
    randomise_norms_and_biases_(theirs, seed=4)
    encoder, decoder = Encoder.from_torch(theirs.encoder), Decoder.from_torch(theirs.decoder)
    for ours, torchs in ((encoder.norm, theirs.encoder.norm), (decoder.norm, theirs.decoder.norm)):
        assert ours.weight.dtype == torch.float64 and torch.equal(ours.weight, torchs.weight)
        assert torch.equal(ours.bias, torchs.bias)
    g = torch.Generator().manual_seed(6)
    src = torch.randn(2, 6, 16, dtype=torch.float64, generator=g).requires_grad_()
    tgt = torch.randn(2, 5, 16, dtype=torch.float64, generator=g).requires_grad_()
    src2, tgt2 = (t.detach().clone().requires_grad_() for t in (src, tgt))
    src_pad = padding(2, 6, g)
    ours = decoder(tgt, encoder(src, src_pad), causal(5), src_pad)
    ref = theirs(src2, tgt2, tgt_mask=~causal(5), src_key_padding_mask=~src_pad[:, 0, :],
                 memory_key_padding_mask=~src_pad[:, 0, :])
    assert max_diff(ours, ref) <= 1e-12
    weights = torch.randn(ours.shape, dtype=torch.float64, generator=g)
    (ours * weights).sum().backward(), (ref * weights).sum().backward()
    assert max_diff(src.grad, src2.grad) <= 1e-12 and max_diff(tgt.grad, tgt2.grad) <= 1e-12
    for stack, torch_stack in ((encoder, theirs.encoder), (decoder, theirs.decoder)):
        for part in ("weight", "bias"):  # the final norm's gradients
            assert max_diff(getattr(stack.norm, part).grad, getattr(torch_stack.norm, part).grad) <= 1e-12
        grads = dict(stack.named_parameters())
        for i, layer in enumerate(torch_stack.layers):
            for name, grad in torch_grads_as_ours(layer).items():
                assert max_diff(grads[f"layers.{i}.{name}"].grad, grad) <= 1e-12, f"layers.{i}.{name}"


@pytest.mark.parametrize("norm_first", [False, True])
def test_changing_a_later_target_token_leaves_earlier_outputs_unchanged(norm_first):
    torch.manual_seed(0)
    dec = Decoder(DecoderLayer(16, 4, 32, dropout=0.0, norm_first=norm_first), 2).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    memory = torch.randn(2, 4, 16, dtype=torch.float64)
    before = dec(x, memory, causal(6))
    for k in range(1, 6):
        y = x.clone()
        y[:, k] += torch.randn(16, dtype=torch.float64) * 10
        after = dec(y, memory, causal(6))
        assert max_diff(before[:, :k], after[:, :k]) < 1e-12, f"position < {k} saw the change at {k}"
        assert max_diff(before[:, k], after[:, k]) > 1e-3, "the changed position itself must change"
    leaky = dec(y, memory)  # no mask: the future leaks
    assert max_diff(before[:, 0], leaky[:, 0]) > 1e-3


def test_every_decoder_layer_reads_the_final_encoder_output():
    torch.manual_seed(0)
    dec = Decoder(DecoderLayer(8, 2, 16, dropout=0.0), 3)
    memory = torch.randn(2, 5, 8)
    seen = []
    hooks = [layer.cross_attn.register_forward_pre_hook(lambda m, args: seen.append(args[1:3])) for layer in dec.layers]
    dec(torch.randn(2, 4, 8), memory, causal(4))
    for h in hooks:
        h.remove()
    assert len(seen) == 3 and all(k is memory and v is memory for k, v in seen)


def test_forward_with_weights_shapes_and_masks():
    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32, dropout=0.0).eval()
    x, memory = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    src_pad = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])[:, None, :]  # (2, 1, 6)
    out, (self_w, cross_w) = layer.forward_with_weights(x, memory, causal(4), src_pad)
    assert torch.equal(out, layer(x, memory, causal(4), src_pad))
    assert self_w.shape == (2, 4, 4, 4) and cross_w.shape == (2, 4, 4, 6)
    assert torch.all(self_w.triu(1) == 0), "no weight on future positions"
    assert torch.all(cross_w[1, ..., 3:] == 0), "no weight on source padding"
    dec = Decoder(layer, 2)
    _, weights = dec.forward_with_weights(x, memory, causal(4), src_pad)
    assert len(weights) == 2 and weights[1][1].shape == (2, 4, 4, 6)


def test_decoder_final_norm_default_and_copies():
    assert Decoder(DecoderLayer(8, 2, 16), 2).norm is None
    assert isinstance(Decoder(DecoderLayer(8, 2, 16, norm_first=True), 2).norm, LayerNorm)
    assert Decoder(DecoderLayer(8, 2, 16), 2, final_norm=True).norm is not None
    dec = Decoder(DecoderLayer(8, 2, 16), 2)
    assert dec.layers[0].cross_attn.w_q.weight is not dec.layers[1].cross_attn.w_q.weight


def test_no_fused_attention_or_torch_layers_in_our_forward(monkeypatch):
    forbid_torch_attention(monkeypatch, nn.TransformerDecoderLayer)
    dec = Decoder(DecoderLayer(8, 2, 16, norm_first=True), 2)
    out = dec(torch.randn(2, 3, 8), torch.randn(2, 5, 8), causal(3), torch.ones(2, 1, 5, dtype=torch.bool))
    out.sum().backward()
    assert out.shape == (2, 3, 8)


def test_bad_inputs_get_clear_errors():
    layer = DecoderLayer(8, 2, 16)
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, D\) with D = d_model = 8"):
        layer(torch.randn(2, 3, 6), memory)
    with pytest.raises(ValueError, match=r"memory must have shape \(B, S, D\)"):
        layer(x, torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="memory has batch size 3 but x has 2"):
        layer(x, torch.randn(3, 5, 8))
    with pytest.raises(TypeError, match="memory must be a torch.Tensor"):
        layer(x, None)
    with pytest.raises(TypeError, match=r"mask must have dtype torch.bool"):
        layer(x, memory, tgt_mask=torch.ones(3, 3))  # float mask
    with pytest.raises(ValueError, match=r"does not broadcast to \(B, T_q, T_k\) = \(2, 3, 3\)"):
        layer(x, memory, tgt_mask=torch.ones(4, 4, dtype=torch.bool))  # a causal mask for T = 4, not 3
    with pytest.raises(ValueError, match=r"does not broadcast to \(B, T_q, T_k\) = \(2, 3, 5\)"):
        layer(x, memory, memory_mask=torch.ones(2, 1, 4, dtype=torch.bool))  # source length 4, not 5
    with pytest.raises(ValueError, match=r"d_model \(12\) must be divisible by n_heads \(5\)"):
        DecoderLayer(12, 5, 16)
    with pytest.raises(TypeError, match="DecoderLayer"):
        Decoder(EncoderLayer(8, 2, 16), 2)
    with pytest.raises(ValueError, match="positive"):
        Decoder(layer, 0)


def test_from_torch_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="batch_first=True"):
        DecoderLayer.from_torch(nn.TransformerDecoderLayer(8, 2, 16))
    with pytest.raises(ValueError, match="relu"):
        DecoderLayer.from_torch(nn.TransformerDecoderLayer(8, 2, 16, activation=F.gelu, batch_first=True))
    with pytest.raises(TypeError, match="TransformerDecoderLayer"):
        DecoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True))
    with pytest.raises(TypeError, match="TransformerDecoder"):
        Decoder.from_torch(nn.TransformerDecoderLayer(8, 2, 16, batch_first=True))
