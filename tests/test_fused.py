"""Chapter 08's fused path: ``set_fused(model, True)`` computes what the hand-written attention computes.

The fused path hands the heads to ``F.scaled_dot_product_attention``; everything else (the
projections, the masks, the residuals) stays ours. These tests compare a whole Transformer both ways:
logits and every parameter's gradient, on padded batches, in float64 and float32.
"""
from __future__ import annotations

import pytest
import torch
from test_encoder import randomise_norms_and_biases_

from course_lib.model import Transformer, TransformerConfig
from course_lib.multihead import MultiHeadAttention, set_fused

PAD = 0


pytestmark = pytest.mark.usefixtures("one_thread")


def model_and_batch(norm_first: bool, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    config = TransformerConfig.tiny(23, 19, norm_first=norm_first, dropout=0.0, n_layers=2)
    model = randomise_norms_and_biases_(Transformer(config).to(dtype), seed).train()  # no default 1/0 to hide behind
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 23, (4, 11), generator=g)  # (B, S)
    src = src.masked_fill(torch.arange(11) >= torch.tensor([11, 7, 4, 1])[:, None], PAD)  # padded rows
    tgt = torch.randint(3, 19, (4, 8), generator=g)  # (B, T)
    tgt = tgt.masked_fill(torch.arange(8) >= torch.tensor([8, 5, 8, 2])[:, None], PAD)
    return model, src, tgt


def logits_and_grads(model: Transformer, src: torch.Tensor, tgt: torch.Tensor):
    model.zero_grad(set_to_none=True)
    logits = model(src, tgt)  # (B, T, V)
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)
    (logits * weights).sum().backward()  # a loss that touches every logit differently
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def attention_modules(model: torch.nn.Module) -> list[MultiHeadAttention]:
    return [m for m in model.modules() if isinstance(m, MultiHeadAttention)]


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
def test_fused_logits_and_gradients_equal_the_hand_written_path(norm_first, dtype, tol):
    model, src, tgt = model_and_batch(norm_first, dtype)
    assert not any(m.fused for m in attention_modules(model))  # hand-written unless switched on
    ref_logits, ref_grads = logits_and_grads(model, src, tgt)
    assert set_fused(model, True) is model
    assert all(m.fused for m in attention_modules(model)) and len(attention_modules(model)) == 6  # 2 enc + 2x2 dec
    logits, grads = logits_and_grads(model, src, tgt)
    assert (logits - ref_logits).abs().max().item() < tol
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        scale = max(1.0, ref_grads[name].abs().max().item())
        assert (grad - ref_grads[name]).abs().max().item() < tol * scale, name


def test_the_fused_path_really_calls_the_fused_kernel(monkeypatch):
    model, src, tgt = model_and_batch(False, torch.float32)
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(tuple(args[0].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    model(src, tgt)
    assert calls == []  # off by default
    set_fused(model, True)(src, tgt)
    assert len(calls) == 6 and calls[0] == (4, 4, 11, 8)  # (B, H, S, Dh) for the first encoder layer


def test_set_fused_false_goes_back():
    model, src, tgt = model_and_batch(False, torch.float64)
    ref, _ = logits_and_grads(model, src, tgt)
    set_fused(model, True)
    set_fused(model, False)
    assert not any(m.fused for m in attention_modules(model))
    logits, _ = logits_and_grads(model, src, tgt)
    assert torch.equal(logits, ref)  # bit for bit: the very same hand-written computation


def test_attention_maps_with_fused_on_take_the_hand_written_path(monkeypatch):
    model, src, tgt = model_and_batch(True, torch.float64)
    model.eval()
    with torch.no_grad():
        ref = model.attention_maps(src, tgt)
        set_fused(model, True)
        calls = []
        real = torch.nn.functional.scaled_dot_product_attention
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                            lambda *a, **k: calls.append(1) or real(*a, **k))
        maps = model.attention_maps(src, tgt)
        assert calls == [], "weights were asked for: the fused kernel, which never forms them, must not run"
        fused_logits = model(src, tgt)
        assert len(calls) == 6, "forward keeps the fused kernel: 2 encoder + 2 x 2 decoder attentions"
    assert len(maps.encoder) == 2 and all(w.shape == (4, 4, 11, 11) for w in maps.encoder)
    assert all(torch.equal(a, b) for a, b in zip(maps.encoder, ref.encoder))
    for self_w, cross_w, self_ref, cross_ref in zip(maps.decoder_self, maps.cross, ref.decoder_self, ref.cross):
        assert self_w.shape == (4, 4, 8, 8) and cross_w.shape == (4, 4, 8, 11)
        assert torch.equal(self_w, self_ref) and torch.equal(cross_w, cross_ref)
        assert cross_w[3, :, :, 1:].abs().max() == 0  # row 3 has one real source token: padding gets 0
    assert torch.equal(maps.logits, ref.logits)
    assert (fused_logits - maps.logits).abs().max() < 1e-10


def test_fused_flag_on_construction_and_in_repr():
    attn = MultiHeadAttention(16, 4, fused=True)
    assert attn.fused and "fused=True" in repr(attn)
    assert not MultiHeadAttention(16, 4).fused
