"""Chapter 05: LayerNorm, FeedForward, EncoderLayer, Encoder — equal to PyTorch, with clear errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.encoder import Encoder, EncoderLayer, FeedForward, LayerNorm

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


# --- helpers (test_decoder.py imports them) --------------------------------------------------

def random_case(seed: int) -> dict:
    """A random configuration: batch, lengths, heads, head size (small, so the tests stay fast)."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda *xs: xs[int(torch.randint(len(xs), (1,), generator=g))]  # noqa: E731
    heads = pick(1, 2, 4, 8)
    return dict(B=pick(1, 2, 3), S=pick(1, 3, 5, 7), T=pick(1, 2, 4, 6), H=heads, D=heads * pick(2, 4, 8),
                d_ff=pick(8, 16, 32), g=g)


def padding(B: int, L: int, g: torch.Generator) -> torch.Tensor:
    """(B, 1, L) True = real token; every sentence keeps at least its first token."""
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    return (torch.arange(L) < lengths[:, None])[:, None, :]  # (B, 1, L)


def torch_grads_as_ours(module: nn.Module) -> dict[str, torch.Tensor]:
    """PyTorch's parameter gradients under our names (in_proj split into w_q, w_k, w_v)."""
    out = {}
    for name, p in module.named_parameters():
        if p.grad is None:
            continue
        prefix, _, leaf = name.rpartition(".")  # e.g. "self_attn", "in_proj_weight"
        prefix = {"multihead_attn": "cross_attn", "linear1": "ff.linear1", "linear2": "ff.linear2",
                  "self_attn.out_proj": "self_attn.w_o", "multihead_attn.out_proj": "cross_attn.w_o"}.get(prefix, prefix)
        if leaf in ("in_proj_weight", "in_proj_bias"):
            for part, chunk in zip(("w_q", "w_k", "w_v"), p.grad.chunk(3, dim=0)):
                out[f"{prefix}.{part}.{leaf[8:]}"] = chunk
        else:
            out[f"{prefix}.{leaf}"] = p.grad
    return out


def assert_same_grads(ours: nn.Module, theirs: nn.Module, tol: float) -> None:
    expected = torch_grads_as_ours(theirs)
    got = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert set(got) == set(expected), f"parameter names differ: {sorted(set(got) ^ set(expected))}"
    for name, grad in got.items():
        diff = (grad - expected[name]).abs().max().item()
        assert diff <= tol * max(1.0, expected[name].abs().max().item()), f"{name}: max |grad diff| {diff:.2e}"


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def randomise_norms_and_biases_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every LayerNorm (PyTorch's or ours) a random gain and bias, and every bias a random value.

    Parity tests need this: the defaults (gain 1, bias 0) survive any dtype round trip or a
    forgotten copy exactly, which is how a float32 final norm once hid in ``from_torch``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
            is_norm = isinstance(owner, (nn.LayerNorm, LayerNorm))
            if is_norm or name.endswith("bias"):
                mean = 1.0 if is_norm and name.endswith("weight") else 0.0
                p.copy_(mean + 0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module


# --- LayerNorm and FeedForward ---------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 16), (2, 5, 16), (2, 3, 4, 16)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_norm_equals_torch_values_and_grads(shape, dtype):
    torch.manual_seed(0)
    theirs = nn.LayerNorm(16, eps=1e-3, dtype=dtype)
    with torch.no_grad():
        theirs.weight.normal_(), theirs.bias.normal_()
    ours = LayerNorm(16, eps=1e-3).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    x = (torch.randn(shape, dtype=dtype) * 3 + 1).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(shape, dtype=dtype)
    a, b = ours(x), theirs(x2)
    assert max_diff(a, b) < TOL[dtype]
    a.backward(g), b.backward(g)
    assert max_diff(x.grad, x2.grad) < TOL[dtype] * 10
    assert max_diff(ours.weight.grad, theirs.weight.grad) < TOL[dtype] * 10
    assert max_diff(ours.bias.grad, theirs.bias.grad) < TOL[dtype] * 10


def test_layer_norm_golden_values_and_statistics():
    ln = LayerNorm(4).double()
    y = ln(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64))
    # mean 2.5, biased variance 1.25: (x - 2.5) / sqrt(1.25 + 1e-5)
    expected = (torch.tensor([-1.5, -0.5, 0.5, 1.5], dtype=torch.float64) / (1.25 + 1e-5) ** 0.5)[None]
    assert max_diff(y, expected) < 1e-12
    z = ln(torch.randn(3, 7, 4, dtype=torch.float64) * 10 + 5)
    assert torch.allclose(z.mean(-1), torch.zeros(3, 7, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.var(-1, unbiased=False), torch.ones(3, 7, dtype=torch.float64), atol=1e-5)


def hand_layer_norm(x, weight, bias, eps):
    """The chapter's formula, step by step: biased variance, eps inside the square root."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def test_layer_norm_is_the_hand_written_formula_values_and_grads():
    torch.manual_seed(3)
    ln = LayerNorm(12, eps=1e-2).double()
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_()
    x = (torch.randn(3, 5, 12, dtype=torch.float64) * 4 - 2).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    w2, b2 = (p.detach().clone().requires_grad_() for p in (ln.weight, ln.bias))
    a, b = ln(x), hand_layer_norm(x2, w2, b2, 1e-2)
    assert max_diff(a, b) < 1e-12
    g = torch.randn_like(a)
    a.backward(g), b.backward(g)
    for ours, theirs in ((x.grad, x2.grad), (ln.weight.grad, w2.grad), (ln.bias.grad, b2.grad)):
        assert max_diff(ours, theirs) < 1e-12
    unbiased = (x2 - x2.mean(-1, keepdim=True)) / torch.sqrt(x2.var(-1, keepdim=True) + 1e-2) * w2 + b2
    assert max_diff(a, unbiased) > 1e-3, "the test can tell the biased variance from the unbiased one"


def test_layer_norm_without_bias_and_bad_width():
    ln = LayerNorm(8, bias=False)
    assert ln.bias is None and [n for n, _ in ln.named_parameters()] == ["weight"]
    with pytest.raises(ValueError, match=r"\(\.\.\., D\) with D = 8"):
        ln(torch.randn(2, 3, 7))


def test_feed_forward_is_linear_relu_linear_per_position():
    torch.manual_seed(0)
    ff = FeedForward(8, 32, dropout=0.0).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    expected = F.linear(F.relu(F.linear(x, ff.linear1.weight, ff.linear1.bias)), ff.linear2.weight, ff.linear2.bias)
    assert max_diff(ff(x), expected) < 1e-12
    # position-wise: each position alone gives the same answer
    assert max_diff(ff(x[:, 2:3]), ff(x)[:, 2:3]) < 1e-12
    assert ff.linear1.weight.shape == (32, 8) and ff.linear2.weight.shape == (8, 32)


def test_feed_forward_dropout_only_in_training():
    ff = FeedForward(8, 64, dropout=0.5)
    x = torch.randn(4, 6, 8)
    ff.eval()
    assert torch.equal(ff(x), ff(x))
    ff.train()
    assert not torch.equal(ff(x), ff(x))


# --- EncoderLayer: parity with nn.TransformerEncoderLayer --------------------------------------

def make_pair(case: dict, norm_first: bool, dtype: torch.dtype):
    theirs = nn.TransformerEncoderLayer(case["D"], case["H"], case["d_ff"], dropout=0.0, batch_first=True,
                                        norm_first=norm_first, dtype=dtype)
    randomise_norms_and_biases_(theirs, seed=case["D"])  # so that copying them is really tested
    theirs.train()  # train mode: PyTorch's plain path (no fused eval fast path); dropout is 0
    return EncoderLayer.from_torch(theirs), theirs


def encoder_masks(kind: str, B: int, S: int, g: torch.Generator) -> tuple[torch.Tensor | None, dict]:
    """Our mask (True = may attend) and PyTorch's keyword arguments (True = blocked / padding)."""
    if kind == "none":
        return None, {}
    if kind == "padding":
        pad = padding(B, S, g)  # (B, 1, S)
        return pad, {"src_key_padding_mask": ~pad[:, 0, :]}
    if kind == "causal":
        causal = torch.ones(S, S, dtype=torch.bool).tril()  # (S, S)
        return causal, {"src_mask": ~causal}
    full = torch.rand(S, S, generator=g) < 0.6  # (S, S) a random pattern, the diagonal kept
    full |= torch.eye(S, dtype=torch.bool)
    return full, {"src_mask": ~full}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_encoder_layer_matches_torch_values_and_grads(seed, norm_first, dtype):
    case = random_case(seed)
    torch.manual_seed(seed)
    ours, theirs = make_pair(case, norm_first, dtype)
    kind = ["none", "padding", "causal", "random"][seed % 4]
    mask, torch_kwargs = encoder_masks(kind, case["B"], case["S"], case["g"])
    x = torch.randn(case["B"], case["S"], case["D"], dtype=dtype, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    a, b = ours(x, mask), theirs(x2, **torch_kwargs)
    assert a.shape == (case["B"], case["S"], case["D"])
    assert max_diff(a, b) < TOL[dtype], f"{kind} mask: {max_diff(a, b):.2e}"
    g = torch.randn_like(a)
    a.backward(g), b.backward(g)
    assert max_diff(x.grad, x2.grad) < TOL[dtype] * 10
    assert_same_grads(ours, theirs, TOL[dtype] * 10)


def test_encoder_layer_forward_with_weights():
    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, 32, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, :]  # (2, 1, 5)
    out, w = layer.forward_with_weights(x, pad)
    assert torch.equal(out, layer(x, pad))
    assert w.shape == (2, 4, 5, 5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 5))
    assert torch.all(w[1, :, :, 3:] == 0), "padded keys get zero weight"


def test_padding_content_does_not_leak_into_real_positions():
    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, 32, dropout=0.0, norm_first=True).double()
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    pad = torch.tensor([[True] * 4 + [False] * 2])[:, None, :]  # (1, 1, 6)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16, dtype=torch.float64) * 100
    assert max_diff(layer(x, pad)[:, :4], layer(y, pad)[:, :4]) < 1e-12


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_eval_matches_torch_fast_path_at_real_positions():
    """In eval mode under no_grad PyTorch takes a fused 'fast path'; real tokens still agree."""
    torch.manual_seed(0)
    theirs = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2).eval()
    ours = Encoder.from_torch(randomise_norms_and_biases_(theirs))
    assert not ours.training
    x = torch.randn(3, 5, 16)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        a, b = ours(x, pad[:, None, :]), theirs(x, src_key_padding_mask=~pad)
    assert max_diff(a[pad], b[pad]) < 1e-5


def test_dropout_is_used_in_training_and_off_in_eval():
    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, 32, dropout=0.3)
    x = torch.randn(2, 5, 16)
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))


# --- Encoder (the stack) ---------------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_encoder_stack_matches_torch(norm_first, dtype):
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(16, 2, 24, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=dtype)
    theirs = nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(16, dtype=dtype) if norm_first else None,
                                   enable_nested_tensor=False)
    ours = Encoder.from_torch(randomise_norms_and_biases_(theirs, seed=1))
    assert (ours.norm is not None) == norm_first and len(ours.layers) == 3
    x = torch.randn(2, 6, 16, dtype=dtype, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    pad = padding(2, 6, torch.Generator().manual_seed(3))
    a, b = ours(x, pad), theirs(x2, src_key_padding_mask=~pad[:, 0, :])
    assert max_diff(a, b) < TOL[dtype]
    a.sum().backward(), b.sum().backward()
    assert max_diff(x.grad, x2.grad) < TOL[dtype] * 10
    ours_grads = {n: p.grad for n, p in ours.named_parameters()}
    for i in range(3):
        expected = torch_grads_as_ours(theirs.layers[i])
        for name, grad in expected.items():
            assert max_diff(ours_grads[f"layers.{i}.{name}"], grad) < TOL[dtype] * 10, name


def test_encoder_copies_layers_and_final_norm_default():
    post = Encoder(EncoderLayer(8, 2, 16), 3)
    pre = Encoder(EncoderLayer(8, 2, 16, norm_first=True), 2)
    assert post.norm is None and isinstance(pre.norm, LayerNorm)
    assert Encoder(EncoderLayer(8, 2, 16), 1, final_norm=True).norm is not None
    assert Encoder(EncoderLayer(8, 2, 16, norm_first=True), 1, final_norm=False).norm is None
    a, b = post.layers[0].ff.linear1.weight, post.layers[1].ff.linear1.weight
    assert a is not b and torch.equal(a, b), "deep copies: same start, separate parameters"
    with torch.no_grad():
        a.add_(1.0)
    assert not torch.equal(a, b)
    assert sum(p.numel() for p in post.parameters()) == 3 * sum(p.numel() for p in EncoderLayer(8, 2, 16).parameters())


def test_encoder_forward_with_weights_gives_one_map_per_layer():
    enc = Encoder(EncoderLayer(8, 2, 16, dropout=0.0), 3).eval()
    x = torch.randn(2, 4, 8)
    out, weights = enc.forward_with_weights(x)
    assert torch.equal(out, enc(x)) and len(weights) == 3 and weights[0].shape == (2, 2, 4, 4)


def forbid_torch_attention(monkeypatch, torch_layer: type) -> None:
    """Make fused attention, nn.MultiheadAttention, nn.LayerNorm and ``torch_layer`` raise when called."""
    def forbidden(*args, **kwargs):
        raise AssertionError("our forward called fused attention or a PyTorch layer")
    for name in ("scaled_dot_product_attention", "multi_head_attention_forward"):
        monkeypatch.setattr(F, name, forbidden)
    for module in (nn.MultiheadAttention, torch_layer, nn.LayerNorm):
        monkeypatch.setattr(module, "forward", forbidden)


def test_no_fused_attention_or_torch_layers_in_our_forward(monkeypatch):
    forbid_torch_attention(monkeypatch, nn.TransformerEncoderLayer)
    enc = Encoder(EncoderLayer(8, 2, 16, norm_first=True), 2)
    out = enc(torch.randn(2, 3, 8), torch.ones(2, 1, 3, dtype=torch.bool))
    out.sum().backward()
    assert out.shape == (2, 3, 8)


# --- bad input --------------------------------------------------------------------------------

def test_bad_inputs_get_clear_errors():
    layer = EncoderLayer(8, 2, 16)
    with pytest.raises(ValueError, match=r"\(B, S, D\) with D = d_model = 8, got \(2, 3, 6\)"):
        layer(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"\(B, S, D\)"):
        layer(torch.randn(3, 8))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([[0.0] * 8])
    with pytest.raises(TypeError, match=r"mask must have dtype torch.bool .*broadcastable to \(B, T_q, T_k\)"):
        layer(torch.randn(2, 3, 8), torch.ones(2, 1, 3))  # a float mask
    with pytest.raises(ValueError, match=r"mask of shape \(2, 1, 4\) does not broadcast to \(B, T_q, T_k\) = \(2, 3, 3\)"):
        layer(torch.randn(2, 3, 8), torch.ones(2, 1, 4, dtype=torch.bool))  # wrong length
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by n_heads \(4\)"):
        EncoderLayer(10, 4, 16)  # d_model not divisible by n_heads
    with pytest.raises(TypeError, match="EncoderLayer"):
        Encoder(nn.Linear(8, 8), 2)
    with pytest.raises(ValueError, match="positive"):
        Encoder(layer, 0)


def test_from_torch_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="batch_first=True"):
        EncoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, 16))
    with pytest.raises(ValueError, match="relu"):
        EncoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, 16, activation="gelu", batch_first=True))
    with pytest.raises(TypeError, match="TransformerEncoderLayer"):
        EncoderLayer.from_torch(nn.TransformerDecoderLayer(8, 2, 16, batch_first=True))
    with pytest.raises(TypeError, match="TransformerEncoder"):
        Encoder.from_torch(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True))


def test_from_torch_copies_eps_bias_free_and_mode():
    theirs = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, layer_norm_eps=1e-3, batch_first=True, bias=False).eval()
    ours = EncoderLayer.from_torch(theirs)
    assert ours.norm1.eps == 1e-3 and ours.norm2.eps == 1e-3 and ours.norm1.bias is None
    assert ours.ff.linear1.bias is None and not ours.training
    theirs.train()
    x = torch.randn(2, 3, 8)
    assert max_diff(ours.train()(x), theirs(x)) < 1e-5


def test_each_stack_names_the_layer_it_copies():
    from course_lib.decoder import Decoder, DecoderLayer
    with pytest.raises(TypeError, match=r"^Encoder\(layer, n_layers\) copies one EncoderLayer; got DecoderLayer$"):
        Encoder(DecoderLayer(8, 2, 16), 2)
    with pytest.raises(TypeError, match=r"^Decoder\(layer, n_layers\) copies one DecoderLayer; got EncoderLayer$"):
        Decoder(EncoderLayer(8, 2, 16), 2)
    with pytest.raises(TypeError, match=r"^Decoder.from_torch expects nn.TransformerDecoder, got TransformerEncoder$"):
        Decoder.from_torch(nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1))
