"""Chapter 11's hook points: names, caches, replacement, clean-up, errors, free when unused, TransformerLens parity."""
from __future__ import annotations

import ast
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from course_lib import hooks
from course_lib.attention import causal_mask
from course_lib.gpt import GPT, GPTConfig
from course_lib.hooks import HookPoint, hook_names, hook_points, run_with_cache, run_with_hooks
from course_lib.lens import AttentionOnly
from course_lib.llama import Llama, LlamaStyleConfig
from course_lib.model import Transformer, TransformerConfig
from course_lib.multihead import MultiHeadAttention, set_fused

BLOCK = ["hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern",
         "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"]
DECODER_BLOCK = BLOCK[:9] + ["cross_attn." + n.split(".")[1] for n in BLOCK[1:7]] + \
    ["hook_cross_attn_out", "hook_resid_mid2", "hook_mlp_out", "hook_resid_post"]
LLAMA_BLOCK = BLOCK[:4] + ["attn.hook_rot_q", "attn.hook_rot_k"] + BLOCK[4:]


def _randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Every weight random, norm gains and biases too (a zero bias or a unit gain hides mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std + (1.0 if p.dim() == 1 else 0.0) * 0.5)
    return model


def _transformer(norm_first: bool = False) -> Transformer:
    torch.manual_seed(0)
    return _randomise(Transformer(TransformerConfig.tiny(30, 40, n_layers=2, norm_first=norm_first))).eval()


def _gpt(dtype: torch.dtype = torch.float32) -> GPT:
    torch.manual_seed(0)
    return _randomise(GPT(GPTConfig(50, d_model=16, n_heads=2, n_layers=2, max_len=16)).to(dtype)).eval()


def _llama() -> Llama:
    torch.manual_seed(0)
    return _randomise(Llama(LlamaStyleConfig(50, d_model=16, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=24)), std=0.2).eval()


def _attention_only() -> AttentionOnly:
    torch.manual_seed(0)
    return _randomise(AttentionOnly(50, d_model=16, n_heads=2, n_layers=2, max_len=16)).eval()


SRC = torch.tensor([[3, 5, 7, 2, 9, 0], [4, 4, 8, 1, 0, 0]])  # 0 = padding
TGT = torch.tensor([[1, 6, 2, 9, 11], [1, 3, 3, 0, 0]])
IDS = torch.tensor([[3, 5, 7, 2, 9, 11, 4], [8, 1, 1, 0, 13, 2, 6]])

MODELS = {
    "transformer": (_transformer, (SRC, TGT)),
    "transformer_pre_ln": (lambda: _transformer(norm_first=True), (SRC, TGT)),
    "gpt": (_gpt, (IDS,)),
    "llama": (_llama, (IDS,)),
    "attention_only": (_attention_only, (IDS,)),
}


# --- names --------------------------------------------------------------------------------------

def test_hooks_imports_only_torch_and_the_standard_library():
    tree = ast.parse(Path(hooks.__file__).read_text(encoding="utf-8"))
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), "hooks.py imports course_lib"
    assert roots <= {"__future__", "difflib", "collections", "typing", "torch"}, roots


def test_names_of_the_encoder_decoder_transformer():
    names = hook_names(_transformer())
    expected = (["encoder.hook_embed"] + [f"encoder.blocks.{i}.{n}" for i in range(2) for n in BLOCK]
                + ["decoder.hook_embed"] + [f"decoder.blocks.{i}.{n}" for i in range(2) for n in DECODER_BLOCK])
    assert names == expected
    pre = hook_names(_transformer(norm_first=True))  # pre-LN stacks end with a norm: it gets a hook point
    assert pre == (expected[:1 + 2 * len(BLOCK)] + ["encoder.ln_final.hook_normalized"] + expected[1 + 2 * len(BLOCK):]
                   + ["decoder.ln_final.hook_normalized"])


def test_names_of_gpt_llama_and_the_attention_only_model():
    assert hook_names(_gpt()) == (["hook_embed", "hook_pos_embed"] + [f"blocks.{i}.{n}" for i in range(2) for n in BLOCK]
                                  + ["ln_final.hook_normalized"])
    assert hook_names(_llama()) == (["hook_embed"] + [f"blocks.{i}.{n}" for i in range(2) for n in LLAMA_BLOCK]
                                    + ["ln_final.hook_normalized"])
    names = hook_names(_attention_only())
    assert names[:2] == ["hook_embed", "hook_pos_embed"] and "blocks.1.attn.hook_pattern" in names
    assert not any("mlp" in n for n in names)


@pytest.mark.parametrize("which", list(MODELS))
def test_hook_names_are_in_the_order_the_forward_pass_reaches_them(which):
    build, inputs = MODELS[which]
    model = build()
    fired: list[str] = []
    run_with_hooks(model, *inputs, hooks=[(n, lambda t, n: fired.append(n)) for n in hook_names(model)])
    assert fired == hook_names(model)


def test_the_shipped_translator_loads_and_the_hook_points_add_no_state():
    from course_lib.checkpoint import PRETRAINED_PATH, load_pretrained, verified_load  # noqa: PLC0415
    model = load_pretrained().model
    state = verified_load(PRETRAINED_PATH)["state_dict"]
    assert set(model.state_dict()) == set(state), "hook points must add no parameters or buffers"
    assert len(hook_names(model)) == 2 + model.config.n_layers * (len(BLOCK) + len(DECODER_BLOCK))


# --- free when unused ---------------------------------------------------------------------------

def test_a_hook_point_returns_its_input_object():
    x = torch.randn(2, 3)
    assert HookPoint()(x) is x


@pytest.mark.parametrize("which", list(MODELS))
def test_outputs_are_bit_identical_with_hooks_returning_none(which):
    build, inputs = MODELS[which]
    model = build()
    plain = model(*inputs)
    seen: list[str] = []
    hooked = run_with_hooks(model, *inputs, hooks=[(n, lambda t, n: seen.append(n)) for n in hook_names(model)])
    assert torch.equal(plain, hooked) and len(seen) == len(hook_names(model))
    assert torch.equal(plain, model(*inputs))  # and nothing is left registered
    assert all(not p._forward_hooks for p in hook_points(model).values())


def test_gradients_are_bit_identical_with_hooks_returning_none():
    model = _gpt().train()
    grads = []
    for names in ([], hook_names(model)):
        model.zero_grad()
        out = run_with_hooks(model, IDS, hooks=[(n, lambda t, n: None) for n in names])
        out.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


# --- the cache ----------------------------------------------------------------------------------

def test_cache_shapes_for_every_kind_of_hook():
    model = _transformer()
    out, cache = run_with_cache(model, SRC, TGT)
    assert torch.equal(out, model(SRC, TGT))
    b, s, t, d, h = 2, SRC.shape[1], TGT.shape[1], 32, 4
    assert cache["encoder.hook_embed"].shape == (b, s, d)
    assert cache["encoder.blocks.0.attn.hook_q"].shape == (b, s, h, d // h)
    assert cache["encoder.blocks.1.attn.hook_pattern"].shape == (b, h, s, s)
    assert cache["decoder.blocks.0.cross_attn.hook_q"].shape == (b, t, h, d // h)
    assert cache["decoder.blocks.0.cross_attn.hook_k"].shape == (b, s, h, d // h)
    assert cache["decoder.blocks.1.cross_attn.hook_attn_scores"].shape == (b, h, t, s)
    assert cache["decoder.blocks.1.cross_attn.hook_z"].shape == (b, t, h, d // h)
    assert cache["decoder.blocks.1.hook_resid_mid2"].shape == (b, t, d)
    assert all(not v.requires_grad for v in cache.values())
    llama = run_with_cache(_llama(), IDS).cache  # grouped-query attention: k and v have H_kv heads
    assert llama["blocks.0.attn.hook_k"].shape == (2, 7, 2, 4) and llama["blocks.0.attn.hook_rot_q"].shape == (2, 7, 4, 4)
    assert llama["blocks.0.attn.hook_pattern"].shape == (2, 4, 7, 7)


def test_the_cache_agrees_with_attention_maps_and_the_post_ln_streams():
    model = _transformer()
    maps = model.attention_maps(SRC, TGT)
    cache = run_with_cache(model, SRC, TGT).cache
    for i in range(2):
        assert torch.equal(cache[f"encoder.blocks.{i}.attn.hook_pattern"], maps.encoder[i])
        assert torch.equal(cache[f"decoder.blocks.{i}.attn.hook_pattern"], maps.decoder_self[i])
        assert torch.equal(cache[f"decoder.blocks.{i}.cross_attn.hook_pattern"], maps.cross[i])
    layer = model.decoder.layers[1]  # post-LN: resid_mid is norm1(resid_pre + attn_out), resid_post the block's output
    pre, attn_out = cache["decoder.blocks.1.hook_resid_pre"], cache["decoder.blocks.1.hook_attn_out"]
    torch.testing.assert_close(cache["decoder.blocks.1.hook_resid_mid"], layer.norm1(pre + attn_out), rtol=0, atol=1e-6)
    memory = model.encode(SRC)
    assert torch.equal(cache["encoder.blocks.1.hook_resid_post"], memory)
    assert torch.equal(run_with_cache(model, SRC, forward=model.encode).output, memory)


def test_the_cache_equals_plain_forward_hooks_and_recomputation_from_the_weights():
    """Independent of the hook points: torch's own forward hooks on the linear maps, and the formulas by hand."""
    model = _gpt(torch.float64)
    attn, block = model.blocks[0].attn, model.blocks[0]
    plain: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda m, a, out, k=k: plain.__setitem__(k, out.detach()))
               for k, m in (("q", attn.w_q), ("k", attn.w_k), ("v", attn.w_v), ("o", attn.w_o), ("ln_1", block.ln_1))]
    try:
        cache = run_with_cache(model, IDS).cache
    finally:
        for h in handles:
            h.remove()
    b, t, n, dh = 2, 7, 2, 8
    for k in "qkv":
        assert torch.equal(cache[f"blocks.0.attn.hook_{k}"], plain[k].view(b, t, n, dh))
    x = model.tok.weight[IDS] + model.pos.weight[:t]  # (B, T, D) by hand
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], x, rtol=0, atol=1e-12)
    q = (plain["ln_1"] @ attn.w_q.weight.T + attn.w_q.bias).view(b, t, n, dh)
    k = (plain["ln_1"] @ attn.w_k.weight.T + attn.w_k.bias).view(b, t, n, dh)
    v = (plain["ln_1"] @ attn.w_v.weight.T + attn.w_v.bias).view(b, t, n, dh)
    torch.testing.assert_close(cache["blocks.0.attn.hook_q"], q, rtol=0, atol=1e-12)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    scores = scores.masked_fill(~causal_mask(t), float("-inf"))
    assert torch.equal(torch.isinf(cache["blocks.0.attn.hook_attn_scores"]), torch.isinf(scores))
    torch.testing.assert_close(cache["blocks.0.attn.hook_attn_scores"], scores, rtol=0, atol=1e-12)
    pattern = scores.softmax(-1)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], pattern, rtol=0, atol=1e-12)
    z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"], z, rtol=0, atol=1e-12)
    assert torch.equal(cache["blocks.0.hook_attn_out"], plain["o"])
    torch.testing.assert_close(plain["o"], z.reshape(b, t, n * dh) @ attn.w_o.weight.T + attn.w_o.bias, rtol=0, atol=1e-12)
    final = F.layer_norm(cache["blocks.1.hook_resid_post"], (16,), model.ln_f.weight, model.ln_f.bias, model.ln_f.eps)
    torch.testing.assert_close(cache["ln_final.hook_normalized"], final, rtol=0, atol=1e-12)


def test_names_select_by_list_or_predicate():
    model = _gpt()
    assert list(run_with_cache(model, IDS, names=["blocks.1.hook_resid_post", "hook_embed"]).cache) == [
        "blocks.1.hook_resid_post", "hook_embed"]
    assert list(run_with_cache(model, IDS, names=lambda n: n.endswith("hook_pattern")).cache) == [
        "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]


def test_a_name_that_does_not_run_or_runs_twice_is_reported():
    model = _transformer()
    with pytest.raises(RuntimeError, match=r"decoder\.blocks\.0\.hook_resid_pre did not run.*model\.encode"):
        run_with_cache(model, SRC, names=["decoder.blocks.0.hook_resid_pre"], forward=model.encode)
    assert all(n.startswith("encoder.") for n in run_with_cache(model, SRC, forward=model.encode).cache)
    from course_lib.kvcache import greedy_decode_cached  # noqa: PLC0415  (a decoding loop)
    with pytest.raises(RuntimeError, match="ran twice in one call"):
        run_with_cache(model, SRC, names=["decoder.blocks.0.attn.hook_pattern"], forward=lambda s: greedy_decode_cached(
            model, s, bos_id=1, eos_id=2, max_len=4))


# --- replacing activations ----------------------------------------------------------------------

def test_ablating_a_head_changes_the_output_as_computed_by_hand():
    torch.manual_seed(0)
    mha = _randomise(MultiHeadAttention(8, 2)).eval()
    mha.hook_z.name = None
    x = torch.randn(1, 4, 8)

    def zero_head_1(z: torch.Tensor, name: str) -> torch.Tensor:
        z = z.clone()
        z[:, :, 1] = 0.0  # (B, T, H, Dh): head 1 silenced
        return z

    out = run_with_hooks(mha, x, x, x, hooks=[("hook_z", zero_head_1)])
    _, weights = mha.forward_with_weights(x, x, x)
    v = mha.w_v(x).view(1, 4, 2, 4)
    head0 = weights[:, 0] @ v[:, :, 0]  # (B, T, Dh)
    by_hand = head0 @ mha.w_o.weight[:, :4].T + mha.w_o.bias  # only head 0's columns of W_O remain
    torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-6)
    assert not torch.allclose(out, mha(x, x, x), atol=1e-3)


def test_replacing_the_pattern_reaches_the_output():
    torch.manual_seed(0)
    mha = _randomise(MultiHeadAttention(8, 2)).eval()
    x = torch.randn(1, 3, 8)
    uniform = run_with_hooks(mha, x, x, x, hooks=[("hook_pattern", lambda p, n: torch.full_like(p, 1 / 3))])
    by_hand = mha.w_o(mha.w_v(x).mean(dim=1, keepdim=True).expand(1, 3, 8))  # every query averages every value
    torch.testing.assert_close(uniform, by_hand, rtol=0, atol=1e-6)


def test_patching_the_final_stream_of_gpt_gives_the_norm_bias_logits():
    model = _gpt()
    out = run_with_hooks(model, IDS, hooks=[("blocks.1.hook_resid_post", lambda x, n: torch.ones_like(x))])
    # a constant vector has zero variance: LayerNorm returns its bias, and the tied head maps that to logits
    torch.testing.assert_close(out, (model.ln_f.bias @ model.tok.weight.T).expand_as(out), rtol=0, atol=1e-5)


def test_hooks_are_removed_even_when_the_hook_raises():
    model = _gpt()
    plain = model(IDS)

    def boom(x: torch.Tensor, name: str) -> None:
        raise ZeroDivisionError("the learner's hook failed")

    with pytest.raises(ZeroDivisionError):
        run_with_hooks(model, IDS, hooks=[("blocks.0.hook_resid_pre", lambda x, n: x * 0), ("blocks.1.attn.hook_q", boom)])
    assert all(not p._forward_hooks for p in hook_points(model).values())
    assert torch.equal(model(IDS), plain)


# --- bad input ----------------------------------------------------------------------------------

def test_a_replacement_of_the_wrong_shape_names_the_hook_and_both_shapes():
    model = _gpt()
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.hook_pattern returned shape \(2, 7, 7\), expected \(2, 2, 7, 7\)"):
        run_with_hooks(model, IDS, hooks=[("blocks.0.attn.hook_pattern", lambda p, n: p[:, 0])])
    with pytest.raises(TypeError, match=r"hook on hook_embed returned float"):
        run_with_hooks(model, IDS, hooks=[("hook_embed", lambda x, n: 0.0)])


def test_an_unknown_name_lists_the_valid_names_closest_first():
    model = _gpt()
    with pytest.raises(KeyError) as err:
        run_with_cache(model, IDS, names=["blocks.0.attn.hook_patern"])
    message = str(err.value)
    assert message.startswith("unknown hook point 'blocks.0.attn.hook_patern'; valid names, closest first: "
                              "blocks.0.attn.hook_pattern, ")
    assert all(n in message for n in hook_names(model))
    with pytest.raises(KeyError, match="closest first: blocks.1.hook_resid_post"):
        run_with_hooks(model, IDS, hooks=[("blocks.1.resid_post", lambda x, n: None)])  # TL's spelling lacks "hook_"
    with pytest.raises(TypeError, match="list of hook names"):
        run_with_cache(model, IDS, names="hook_embed")
    with pytest.raises(TypeError, match=r"\(name, fn\) pairs"):
        run_with_hooks(model, IDS, hooks=[("hook_embed",)])
    with pytest.raises(TypeError, match="a hook name must be a str, got int"):
        run_with_cache(model, IDS, names=[3])
    with pytest.raises(TypeError, match="forward must be a callable such as model.encode, got str"):
        run_with_cache(model, IDS, forward="encode")
    with pytest.raises(TypeError, match="hook_points expects a torch.nn.Module"):
        hook_names("gpt")  # type: ignore[arg-type]
    zeroed = run_with_hooks(model, IDS, hooks=("hook_pos_embed", lambda x, n: torch.zeros_like(x)))  # one bare pair
    assert torch.equal(zeroed, run_with_hooks(model, IDS, hooks=[("hook_pos_embed", lambda x, n: x * 0)]))


def test_a_fused_model_refuses_scores_and_pattern_but_gives_the_rest():
    model = set_fused(_gpt(), True)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.hook_attn_scores is never formed.*set_fused\(model, False\)"):
        run_with_cache(model, IDS)
    cache = run_with_cache(model, IDS, names=lambda n: "hook_attn_scores" not in n and "hook_pattern" not in n).cache
    reference = run_with_cache(set_fused(_gpt(), False), IDS).cache
    torch.testing.assert_close(cache["blocks.1.attn.hook_z"], reference["blocks.1.attn.hook_z"], rtol=0, atol=1e-5)


# --- TransformerLens ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lens_bridge():
    """TransformerLens 4's bridge around a tiny random Hugging Face GPT-2 in float64, and ours with the same weights.

    TransformerLens 4 removed ``HookedTransformer``; its bridge wraps a ``transformers`` model, here one built
    from a config in the test (no download, no hub: a tokenizer is handed in so that none is fetched). The
    bridge is used as booted, without ``enable_compatibility_mode`` (which folds layer norms into weights).
    """
    from tokenizers import Tokenizer, models  # noqa: PLC0415
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: PLC0415
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    hf = _randomise(GPT2LMHeadModel(config).double()).eval()
    vocab = Tokenizer(models.WordLevel({f"t{i}": i for i in range(50)}, unk_token="t0"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=vocab, unk_token="t0", eos_token="t2", pad_token="t0")

    def no_network(*args: object) -> None:
        raise OSError("this test must not reach the network")

    with pytest.MonkeyPatch.context() as patch:  # no download, no hub: any connection attempt fails the test
        patch.setattr(socket.socket, "connect", no_network)
        from transformer_lens.model_bridge import TransformerBridge  # noqa: PLC0415
        bridge = TransformerBridge.boot_transformers("tiny-random-gpt2", hf_model=hf, dtype=torch.float64,
                                                     tokenizer=tokenizer)
    return bridge, GPT.from_hf(hf).eval()


def test_the_cache_equals_transformer_lens_in_float64(lens_bridge):
    bridge, ours = lens_bridge
    with torch.no_grad():
        theirs_out, theirs = bridge.run_with_cache(IDS)
        out, cache = run_with_cache(ours, IDS)
    torch.testing.assert_close(out, theirs_out, rtol=0, atol=1e-10)
    assert set(cache) <= set(theirs.keys()), f"names TransformerLens lacks: {sorted(set(cache) - set(theirs.keys()))}"
    for name, mine in cache.items():
        if name == "ln_final.hook_normalized":
            continue  # compared below: TransformerLens 4 places it before the norm's gain and bias
        tl = theirs[name]
        assert tl.shape == mine.shape, name
        if name.endswith("hook_attn_scores"):  # masked scores: ours -inf, theirs the most negative finite float
            masked = ~causal_mask(IDS.shape[1])
            assert bool(torch.isneginf(mine[..., masked]).all()) and bool((tl[..., masked] <= -1e300).all())
            mine, tl = mine.masked_fill(masked, 0.0), tl.masked_fill(masked, 0.0)
        torch.testing.assert_close(mine, tl, rtol=0, atol=1e-10, msg=name)
    # ours: the norm's output, what the unembedding reads (TL's ln_final.hook_out); TL 4: (x - mean) / scale
    ln = ours.ln_f
    torch.testing.assert_close(cache["ln_final.hook_normalized"], theirs["ln_final.hook_out"], rtol=0, atol=1e-10)
    torch.testing.assert_close(cache["ln_final.hook_normalized"], theirs["ln_final.hook_normalized"] * ln.weight + ln.bias,
                               rtol=0, atol=1e-10)


def test_patching_agrees_with_transformer_lens(lens_bridge):
    bridge, ours = lens_bridge

    def zero_head(z: torch.Tensor, name: str | None = None, hook=None) -> torch.Tensor:
        z = z.clone()
        z[:, 3:, 1] = 0.0  # head 1 of layer 0 silenced from position 3 on
        return z

    with torch.no_grad():
        theirs = bridge.run_with_hooks(IDS, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: zero_head(z))])
        mine = run_with_hooks(ours, IDS, hooks=[("blocks.0.attn.hook_z", zero_head)])
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)
    assert not torch.allclose(mine, ours(IDS), atol=1e-3)


def test_the_overhead_benchmark_bypasses_every_hook_point_and_computes_the_same():
    import importlib.util  # noqa: PLC0415
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hooks_overhead.py"
    spec = importlib.util.spec_from_file_location("hooks_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = _transformer()
    bypassed = _transformer()
    assert bench.bypass_hook_points(bypassed) == len(hook_names(model)) and hook_names(bypassed) == []
    assert torch.equal(bypassed(SRC, TGT), model(SRC, TGT))
