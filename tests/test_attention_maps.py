"""One return convention for attention weights (issue 13).

Every ``forward`` in course_lib returns one tensor, like PyTorch's layers; the weights come from
``forward_with_weights`` (an ``Attended(output, weights)``) or, for the whole model,
``Transformer.attention_maps`` (an ``AttentionMaps``). These tests prove that the two paths compute
the same output, that the weights are the ones PyTorch's attention forms with the same parameters,
and that no flag can change a return type again.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch
from test_encoder import randomise_norms_and_biases_
from torch import Tensor, nn

import course_lib
from course_lib.attention import causal_mask, padding_mask
from course_lib.decoder import Decoder, DecoderLayer
from course_lib.encoder import Encoder, EncoderLayer
from course_lib.model import AttentionMaps, Transformer, TransformerConfig
from course_lib.multihead import Attended, MultiHeadAttention, required_weights, set_fused

pytestmark = pytest.mark.usefixtures("one_thread")

B, S, T, D, H = 3, 6, 5, 16, 4
LENGTHS = torch.tensor([6, 4, 1])  # source lengths: row 2 keeps one real token


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x (B, T, D), memory (B, S, D), the source padding mask (B, 1, S) and the causal mask (T, T), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    memory = torch.randn(B, S, D, generator=g, dtype=torch.float64)
    src_pad = (torch.arange(S) < LENGTHS[:, None])[:, None, :]  # (B, 1, S) True = real token
    return x, memory, src_pad, causal_mask(T)


def _assert_softmax_rows(w: Tensor, allowed: Tensor) -> None:
    """Rows sum to 1 and every blocked key has weight exactly 0 (``allowed`` broadcasts to w)."""
    allowed = allowed.expand_as(w)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype), atol=1e-12, rtol=0)
    assert w[~allowed].abs().max() == 0, "a masked key got weight"
    assert (w[allowed] > 0).all(), "an allowed key got no weight (softmax is never exactly 0 there)"


# --- forward_with_weights(...).output equals forward(...), bit for bit --------------------------

def _modules(norm_first: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    enc_layer = EncoderLayer(D, H, 32, dropout=0.0, norm_first=norm_first)
    dec_layer = DecoderLayer(D, H, 32, dropout=0.0, norm_first=norm_first)
    modules = {"MultiHeadAttention": MultiHeadAttention(D, H), "EncoderLayer": enc_layer, "Encoder": Encoder(enc_layer, 2),
               "DecoderLayer": dec_layer, "Decoder": Decoder(dec_layer, 2)}
    return {k: randomise_norms_and_biases_(m.double(), seed=i).train() for i, (k, m) in enumerate(modules.items())}


def _call_args(name: str) -> tuple:
    x, memory, src_pad, causal = _inputs()
    if name == "MultiHeadAttention":
        return x, memory, memory, src_pad  # cross-attention shapes: T_q = T, T_k = S
    if name.startswith("Encoder"):
        return memory, src_pad  # an encoder reads the (padded) source
    return x, memory, causal, src_pad


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("name", ["MultiHeadAttention", "EncoderLayer", "Encoder", "DecoderLayer", "Decoder"])
def test_forward_with_weights_output_is_forward_exactly(name, norm_first):
    module = _modules(norm_first)[name]
    args = _call_args(name)
    attended = module.forward_with_weights(*args)
    assert isinstance(attended, Attended) and attended._fields == ("output", "weights")
    assert torch.equal(attended.output, module(*args)), "one private implementation: the very same arithmetic"


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_weights_shapes_rows_and_masks_of_every_module(norm_first):
    m = _modules(norm_first)
    x, memory, src_pad, causal = _inputs()
    w = m["MultiHeadAttention"].forward_with_weights(x, memory, memory, src_pad).weights
    assert w.shape == (B, H, T, S)
    _assert_softmax_rows(w, src_pad[:, None])  # (B, 1, 1, S)
    w = m["EncoderLayer"].forward_with_weights(memory, src_pad).weights
    assert w.shape == (B, H, S, S)
    _assert_softmax_rows(w, src_pad[:, None])
    ws = m["Encoder"].forward_with_weights(memory, src_pad).weights
    assert isinstance(ws, list) and [tuple(w.shape) for w in ws] == [(B, H, S, S)] * 2
    for w in ws:
        _assert_softmax_rows(w, src_pad[:, None])
    self_w, cross_w = m["DecoderLayer"].forward_with_weights(x, memory, causal, src_pad).weights
    assert self_w.shape == (B, H, T, T) and cross_w.shape == (B, H, T, S)
    _assert_softmax_rows(self_w, causal)
    _assert_softmax_rows(cross_w, src_pad[:, None])
    pairs = m["Decoder"].forward_with_weights(x, memory, causal, src_pad).weights
    assert isinstance(pairs, list) and len(pairs) == 2
    for self_w, cross_w in pairs:
        assert self_w.shape == (B, H, T, T) and cross_w.shape == (B, H, T, S)
        _assert_softmax_rows(self_w, causal)
        _assert_softmax_rows(cross_w, src_pad[:, None])
    first, second = (p[1] for p in pairs)
    assert not torch.allclose(first, second), "each layer's own map, not one map repeated"


# --- the weights are PyTorch's, with copied random weights --------------------------------------

def _torch_weights(attn: nn.MultiheadAttention, captured: dict) -> Tensor:
    """Call PyTorch's attention again on the inputs it saw, asking for the per-head weights."""
    (q, k, v), kwargs = captured["args"], captured["kwargs"]
    kwargs = {n: kwargs[n] for n in ("attn_mask", "key_padding_mask") if kwargs.get(n) is not None}
    _, w = attn(q, k, v, **kwargs, need_weights=True, average_attn_weights=False)
    return w  # (B, H, T_q, T_k)


def _capture(attn: nn.MultiheadAttention) -> dict:
    seen: dict = {}

    def hook(module, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    attn.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_encoder_layer_weights_equal_pytorchs(norm_first):
    torch.manual_seed(1)
    theirs = nn.TransformerEncoderLayer(D, H, 32, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=torch.float64)
    randomise_norms_and_biases_(theirs, seed=1).train()  # train mode: no fused fast path
    ours = EncoderLayer.from_torch(theirs)
    _, memory, src_pad, _ = _inputs(1)
    seen = _capture(theirs.self_attn)
    ref = theirs(memory, src_key_padding_mask=~src_pad[:, 0])  # True = padding in PyTorch
    out, w = ours.forward_with_weights(memory, src_pad)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(w, _torch_weights(theirs.self_attn, seen), atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_decoder_layer_self_and_cross_weights_equal_pytorchs(norm_first):
    torch.manual_seed(2)
    theirs = nn.TransformerDecoderLayer(D, H, 32, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=torch.float64)
    randomise_norms_and_biases_(theirs, seed=2).train()
    ours = DecoderLayer.from_torch(theirs)
    x, memory, src_pad, causal = _inputs(2)
    seen_self, seen_cross = _capture(theirs.self_attn), _capture(theirs.multihead_attn)
    ref = theirs(x, memory, tgt_mask=~causal, memory_key_padding_mask=~src_pad[:, 0])
    out, (self_w, cross_w) = ours.forward_with_weights(x, memory, causal, src_pad)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(self_w, _torch_weights(theirs.self_attn, seen_self), atol=1e-12, rtol=0)
    torch.testing.assert_close(cross_w, _torch_weights(theirs.multihead_attn, seen_cross), atol=1e-12, rtol=0)


def test_a_wrong_map_would_be_caught():
    """The comparison above can fail: the self-attention map is not the cross-attention map, nor another layer's."""
    torch.manual_seed(3)
    theirs = nn.TransformerDecoderLayer(D, H, 32, dropout=0.0, batch_first=True, dtype=torch.float64).train()
    x, memory, src_pad, causal = _inputs(3)
    seen_cross = _capture(theirs.multihead_attn)
    theirs(x, memory, tgt_mask=~causal, memory_key_padding_mask=~src_pad[:, 0])
    other = DecoderLayer.from_torch(nn.TransformerDecoderLayer(D, H, 32, dropout=0.0, batch_first=True,
                                                               dtype=torch.float64).train())
    _, (_, cross_w) = other.forward_with_weights(x, memory, causal, src_pad)
    assert (cross_w - _torch_weights(theirs.multihead_attn, seen_cross)).abs().max() > 1e-3


# --- the whole model: one call returns every map --------------------------------------------------

def _model_and_batch(norm_first: bool) -> tuple[Transformer, Tensor, Tensor]:
    torch.manual_seed(4)
    model = Transformer(TransformerConfig.tiny(23, 19, n_layers=3, norm_first=norm_first)).double()
    randomise_norms_and_biases_(model, seed=4).eval()
    g = torch.Generator().manual_seed(4)
    src = torch.randint(3, 23, (B, S), generator=g).masked_fill(torch.arange(S) >= LENGTHS[:, None], 0)  # (B, S)
    tgt = torch.randint(3, 19, (B, T), generator=g)  # (B, T)
    return model, src, tgt


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_attention_maps_logits_equal_the_forward_and_every_map_is_there(norm_first):
    model, src, tgt = _model_and_batch(norm_first)
    maps = model.attention_maps(src, tgt)
    assert isinstance(maps, AttentionMaps) and maps._fields == ("logits", "encoder", "decoder_self", "cross")
    assert torch.equal(maps.logits, model(src, tgt))
    assert maps.logits.shape == (B, T, 19)
    real = padding_mask(src, 0)  # (B, 1, S)
    assert [len(maps.encoder), len(maps.decoder_self), len(maps.cross)] == [3, 3, 3]
    for enc, dec, cross in zip(maps.encoder, maps.decoder_self, maps.cross):
        assert enc.shape == (B, H, S, S) and dec.shape == (B, H, T, T) and cross.shape == (B, H, T, S)
        _assert_softmax_rows(enc, real[:, None])
        _assert_softmax_rows(dec, causal_mask(T))
        _assert_softmax_rows(cross, real[:, None])
    memory, enc_ref = model.encoder.forward_with_weights(model.pos(model.src_embed(src)), real)
    assert all(torch.equal(a, b) for a, b in zip(maps.encoder, enc_ref))
    assert torch.equal(memory, model.encode(src))


def test_attention_maps_takes_the_masks_it_is_given():
    model, src, tgt = _model_and_batch(False)
    full_src = torch.ones(B, 1, S, dtype=torch.bool)  # attend to the padding too
    full_tgt = torch.ones(T, T, dtype=torch.bool)  # and to the future
    maps = model.attention_maps(src, tgt, full_src, full_tgt)
    assert torch.equal(maps.logits, model(src, tgt, full_src, full_tgt))
    future = ~causal_mask(T)  # (T, T) True above the diagonal
    assert (maps.cross[0][2, :, :, 1:] > 0).all() and (maps.decoder_self[0][..., future] > 0).all()


# --- no flag changes a return type, and every forward says what it returns ------------------------

def _course_modules():
    for info in pkgutil.walk_packages(course_lib.__path__, "course_lib."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def _public_callables():
    """(qualified name, function) for every public function and method defined in course_lib."""
    for module in _course_modules():
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                    if inspect.isfunction(func) and (not attr.startswith("_") or attr == "__init__"):
                        yield f"{module.__name__}.{name}.{attr}", func


def test_no_public_signature_has_a_return_attention_flag():
    found = [name for name, func in _public_callables() if "return_attention" in inspect.signature(func).parameters]
    assert len(dict(_public_callables())) > 100, "the walk must see the whole package"
    assert found == [], f"a flag that changes the return type is back: {found}; add a forward_with_weights instead"


def test_every_module_forward_returns_one_tensor_and_forward_with_weights_an_attended():
    forwards, with_weights = {}, {}
    for module in _course_modules():
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and cls.__module__ == module.__name__ and issubclass(cls, nn.Module):
                if "forward" in vars(cls):
                    forwards[f"{module.__name__}.{name}"] = inspect.signature(cls.forward, eval_str=True).return_annotation
                if "forward_with_weights" in vars(cls):
                    annotation = inspect.signature(cls.forward_with_weights, eval_str=True).return_annotation
                    with_weights[f"{module.__name__}.{name}"] = getattr(annotation, "__origin__", annotation)
    assert len(forwards) >= 15 and "course_lib.multihead.MultiHeadAttention" in forwards
    assert {k: v for k, v in forwards.items() if v is not Tensor} == {}, "every forward returns exactly one Tensor"
    assert set(with_weights) == {"course_lib.multihead.MultiHeadAttention", "course_lib.encoder.EncoderLayer",
                                 "course_lib.encoder.Encoder", "course_lib.decoder.DecoderLayer",
                                 "course_lib.decoder.Decoder"}
    assert set(with_weights.values()) == {Attended}
    assert inspect.signature(Transformer.attention_maps, eval_str=True).return_annotation is AttentionMaps
    for method in (Transformer.encode, Transformer.decode):
        assert inspect.signature(method, eval_str=True).return_annotation is Tensor


def test_forward_with_weights_never_takes_the_fused_kernel(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = {k: set_fused(v, True) for k, v in _modules(False).items()}
    for name, module in m.items():
        args = _call_args(name)
        attended = module.forward_with_weights(*args)
        assert calls == [], f"{name}.forward_with_weights called the fused kernel"
        torch.testing.assert_close(attended.output, module(*args), atol=1e-10, rtol=0)  # forward: fused, same numbers
        assert calls, f"{name}.forward must still use the fused kernel"
        calls.clear()


def test_required_weights_refuses_a_run_that_formed_none():
    w = torch.rand(1, 2, 3, 3)
    assert required_weights(w) is w
    with pytest.raises(RuntimeError, match="requested but not formed: only forward\\(\\) may take the fused path"):
        required_weights(None)
