"""Chapter 09: the GPT-style and Llama-style models and their parts, proven equal to PyTorch and to
Hugging Face ``transformers`` (tiny random configurations, nothing downloaded), float64 within 1e-10,
outputs and gradients, with every weight randomised (norm gains included)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import pytest
import torch
import torch.nn.functional as F

from course_lib.gpt import GPT, GPTBlock, GPTConfig, KVCache, next_token_loss
from course_lib.llama import (
    GroupedQueryAttention,
    Llama,
    LlamaStyleConfig,
    RMSNorm,
    SwiGLU,
    apply_rotary,
    grouped_query_attention,
    repeat_kv,
    rotary_cos_sin,
)

transformers = pytest.importorskip("transformers")
from transformers.models.llama import modeling_llama  # noqa: E402  (after the importorskip above)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest on a shared CPU

TOL = 1e-10


def randomise(*modules: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Every parameter random (norm gains too: a gain left at 1 would hide a missing copy)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale + (1.0 if p.dim() == 1 else 0.0))


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= tol, f"max difference {diff:.3g} > {tol}"


def grads_close(ours: torch.nn.Module, theirs: torch.nn.Module, pairs: list[tuple[str, str, bool]]) -> None:
    """Compare named gradients; ``True`` in a pair means theirs is stored transposed (GPT-2's Conv1D)."""
    mine, ref = dict(ours.named_parameters()), dict(theirs.named_parameters())
    for a, b, transpose in pairs:
        expected = ref[b].grad.T if transpose else ref[b].grad
        close(mine[a].grad, expected)


def gpt2(n_layer: int = 2, **kw) -> torch.nn.Module:
    cfg = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=24, n_layer=n_layer, n_head=3, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
                                  bos_token_id=0, eos_token_id=1, **kw)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    randomise(model)
    return model


def llama(**kw) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   attn_implementation="sdpa", **kw)  # eager runs its softmax in float32
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    randomise(model)
    return model


@pytest.fixture
def exact_hf_rmsnorm(monkeypatch):
    """HF's LlamaRMSNorm computes in float32 whatever the input (made for bf16 weights): in float64 that is
    a rounding to float32. This swaps in PyTorch's own RMSNorm, the reference our RMSNorm equals."""
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward",
                        lambda self, h: F.rms_norm(h, (h.shape[-1],), self.weight, self.variance_epsilon))


IDS = torch.tensor([[3, 17, 5, 9, 0, 39, 12, 7, 7], [1, 2, 38, 20, 11, 4, 30, 25, 6]])


# --- the loss ------------------------------------------------------------------------------------

def test_next_token_loss_is_shifted_cross_entropy():
    logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 0, 1, 0, 0]])
    manual = sum(-logits[b, t].log_softmax(-1)[ids[b, t + 1]] for b in range(2) for t in range(4)) / 8
    close(next_token_loss(logits, ids), manual)
    unshifted = F.cross_entropy(logits.reshape(-1, 7), ids.reshape(-1))
    assert abs(next_token_loss(logits, ids) - unshifted) > 1e-3
    kept = [(b, t) for b in range(2) for t in range(4) if ids[b, t + 1] != 0]
    masked = sum(-logits[b, t].log_softmax(-1)[ids[b, t + 1]] for b, t in kept) / len(kept)
    close(next_token_loss(logits, ids, ignore_index=0), masked)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        next_token_loss(logits, ids[:, :4])


def test_hf_loss_is_the_same_shift():
    hf = gpt2()
    ours = GPT.from_hf(hf)
    # transformers computes its loss in float32 (logits.float()), hence the looser tolerance here only
    close(next_token_loss(ours(IDS), IDS), hf(IDS, labels=IDS).loss.double(), 1e-6)


# --- GPT-2 ----------------------------------------------------------------------------------------

def test_gpt2_block_equals_transformers():
    hf = gpt2(n_layer=1)
    theirs = hf.transformer.h[0]
    ours = GPT.from_hf(hf).blocks[0]
    x = torch.randn(2, 6, 24, dtype=torch.float64, requires_grad=True)
    blocked = torch.full((6, 6), torch.finfo(torch.float64).min, dtype=torch.float64).triu(1)[None, None]
    ref = theirs(x, attention_mask=blocked)
    ref = ref[0] if isinstance(ref, tuple) else ref
    out = ours(x)
    close(out, ref)
    (g_ours,) = torch.autograd.grad((out * out.detach().cos()).sum(), x)
    (g_ref,) = torch.autograd.grad((ref * ref.detach().cos()).sum(), x)
    close(g_ours, g_ref)


def test_gpt2_model_logits_and_gradients_equal_transformers():
    hf = gpt2()
    ours = GPT.from_hf(hf)
    assert isinstance(ours.blocks[0], GPTBlock) and ours.lm_head.weight is ours.tok.weight  # tied
    close(ours(IDS), hf(IDS).logits)
    next_token_loss(ours(IDS), IDS).backward()
    next_token_loss(hf(IDS).logits, IDS).backward()  # HF's own loss would run in float32
    pairs = [("tok.weight", "transformer.wte.weight", False), ("pos.weight", "transformer.wpe.weight", False),
             ("ln_f.weight", "transformer.ln_f.weight", False), ("ln_f.bias", "transformer.ln_f.bias", False)]
    for i in range(2):
        h = f"transformer.h.{i}"
        pairs += [(f"blocks.{i}.ln_1.weight", f"{h}.ln_1.weight", False), (f"blocks.{i}.ln_2.bias", f"{h}.ln_2.bias", False),
                  (f"blocks.{i}.attn.w_o.weight", f"{h}.attn.c_proj.weight", True),
                  (f"blocks.{i}.mlp.linear1.weight", f"{h}.mlp.c_fc.weight", True),
                  (f"blocks.{i}.mlp.linear2.bias", f"{h}.mlp.c_proj.bias", False)]
    grads_close(ours, hf, pairs)
    c_attn = dict(hf.named_parameters())["transformer.h.0.attn.c_attn.weight"].grad  # (D, 3D)
    close(ours.blocks[0].attn.w_k.weight.grad, c_attn[:, 24:48].T)


def test_gpt2_untied_output_and_other_inner_width():
    hf = gpt2(tie_word_embeddings=False, n_inner=40)
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    ours = GPT.from_hf(hf)
    assert ours.lm_head.weight is not ours.tok.weight and ours.config.d_ff == 40
    close(ours(IDS), hf(IDS).logits)


def test_gpt_from_hf_rejects_other_models_and_activations():
    with pytest.raises(TypeError, match="GPT2LMHeadModel"):
        GPT.from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="tanh GELU"):
        GPT.from_hf(gpt2(activation_function="relu"))


def test_configs_name_a_bad_size():
    with pytest.raises(ValueError, match="GPTConfig.n_layers must be an int >= 1, got 0"):
        GPTConfig(vocab_size=10, n_layers=0)
    with pytest.raises(TypeError, match="LlamaStyleConfig.d_ff must be an int >= 1, got float 2.5"):
        LlamaStyleConfig(vocab_size=10, d_ff=2.5)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaStyleConfig(vocab_size=10, n_heads=4, n_kv_heads=3)


def test_gpt_checks_its_input():
    model = GPT(GPTConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1, max_len=4))
    with pytest.raises(TypeError, match=r"\(B, T\)"):
        model(torch.zeros(2, 3))
    with pytest.raises(IndexError, match="0..9"):
        model(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="max_len = 4"):
        model(torch.zeros(1, 5, dtype=torch.long))


# --- today's parts ---------------------------------------------------------------------------------

def test_rmsnorm_equals_torch():
    ours, ref = RMSNorm(12, eps=1e-6).double(), torch.nn.RMSNorm(12, eps=1e-6).double()
    randomise(ref)
    ours.weight.data.copy_(ref.weight)
    x = torch.randn(3, 5, 12, dtype=torch.float64, requires_grad=True) * 3 + 1
    out, expected = ours(x), ref(x)
    close(out, expected)
    close(torch.autograd.grad(out.pow(2).sum(), x)[0], torch.autograd.grad(expected.pow(2).sum(), x)[0])
    layer_norm = F.layer_norm(x, (12,), ours.weight, None, 1e-6)
    assert (out - layer_norm).abs().max() > 0.1  # the mean is not subtracted: a different function


def test_rotary_equals_transformers_and_is_relative():
    cfg = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, max_position_embeddings=64)
    rope = modeling_llama.LlamaRotaryEmbedding(cfg)
    positions = torch.arange(3, 11)
    q, k = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    cos_hf, sin_hf = rope(q, positions[None])
    cos, sin = rotary_cos_sin(positions, 8, 10000.0, torch.float64)
    close(cos, cos_hf[0], 0.0)
    close(sin, sin_hf[0], 0.0)
    q_hf, k_hf = modeling_llama.apply_rotary_pos_emb(q, k, cos_hf, sin_hf)
    close(apply_rotary(q, cos, sin), q_hf)
    close(apply_rotary(k, cos, sin), k_hf)
    # the score of q at position m and k at position n depends on m - n only
    one_q, one_k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        cm, sm = rotary_cos_sin(torch.tensor([m]), 8, dtype=torch.float64)
        cn, sn = rotary_cos_sin(torch.tensor([n]), 8, dtype=torch.float64)
        return float(apply_rotary(one_q, cm[0], sm[0]) @ apply_rotary(one_k, cn[0], sn[0]))

    assert abs(score(5, 2) - score(13, 10)) < 1e-5 and abs(score(5, 2) - score(5, 3)) > 1e-3


def test_swiglu_equals_transformers_mlp():
    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=24, num_attention_heads=4)
    theirs = modeling_llama.LlamaMLP(cfg).double()
    randomise(theirs)
    ours = SwiGLU(16, 24).double()
    for mine, ref in ((ours.gate, theirs.gate_proj), (ours.up, theirs.up_proj), (ours.down, theirs.down_proj)):
        mine.weight.data.copy_(ref.weight)
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    close(ours(x), theirs(x))
    close(torch.autograd.grad(ours(x).sum(), x)[0], torch.autograd.grad(theirs(x).sum(), x)[0])


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_grouped_query_attention_equals_sdpa_enable_gqa(n_kv):
    g = torch.Generator().manual_seed(n_kv)
    q = torch.randn(2, 4, 6, 8, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(2, n_kv, 6, 8, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(2, n_kv, 6, 8, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    out, _ = grouped_query_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    close(out, ref)
    for a, b in zip(torch.autograd.grad(out.sin().sum(), (q, k, v)), torch.autograd.grad(ref.sin().sum(), (q, k, v))):
        close(a, b)
    if n_kv == 2:  # head order: query heads 0, 1 share key head 0
        kv = torch.arange(2.0).view(1, 2, 1, 1)
        assert repeat_kv(kv, 2).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_grouped_query_attention_rejects_uneven_heads():
    with pytest.raises(ValueError, match="multiple"):
        GroupedQueryAttention(16, 4, 3)
    with pytest.raises(ValueError, match="multiple of H_kv"):
        grouped_query_attention(torch.randn(1, 4, 2, 4), torch.randn(1, 3, 2, 4), torch.randn(1, 3, 2, 4))


def test_llama_decoder_layer_equals_transformers(exact_hf_rmsnorm):
    hf = llama()
    ours = Llama.from_hf(hf)
    theirs, mine = hf.model.layers[0], ours.layers[0]
    x = torch.randn(2, 7, 32, dtype=torch.float64, requires_grad=True)
    positions = torch.arange(7)
    cos_sin = hf.model.rotary_emb(x, positions[None])
    blocked = torch.full((7, 7), torch.finfo(torch.float64).min, dtype=torch.float64).triu(1)[None, None]
    ref = theirs(x, attention_mask=blocked, position_ids=positions[None], position_embeddings=cos_sin)
    ref = ref[0] if isinstance(ref, tuple) else ref
    out = mine(x, *rotary_cos_sin(positions, 8, dtype=torch.float64))
    close(out, ref)
    close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(ref.sum(), x)[0])


def test_llama_model_logits_and_gradients_equal_transformers(exact_hf_rmsnorm):
    hf = llama()
    ours = Llama.from_hf(hf)
    close(ours(IDS), hf(IDS).logits)
    next_token_loss(ours(IDS), IDS).backward()
    next_token_loss(hf(IDS).logits, IDS).backward()  # HF's own loss would run in float32
    pairs = [("tok.weight", "model.embed_tokens.weight", False), ("norm.weight", "model.norm.weight", False),
             ("lm_head.weight", "lm_head.weight", False)]
    for i in range(2):
        a, b = f"layers.{i}", f"model.layers.{i}"
        pairs += [(f"{a}.attn_norm.weight", f"{b}.input_layernorm.weight", False),
                  (f"{a}.mlp_norm.weight", f"{b}.post_attention_layernorm.weight", False),
                  (f"{a}.attn.w_q.weight", f"{b}.self_attn.q_proj.weight", False),
                  (f"{a}.attn.w_k.weight", f"{b}.self_attn.k_proj.weight", False),
                  (f"{a}.attn.w_v.weight", f"{b}.self_attn.v_proj.weight", False),
                  (f"{a}.attn.w_o.weight", f"{b}.self_attn.o_proj.weight", False),
                  (f"{a}.mlp.gate.weight", f"{b}.mlp.gate_proj.weight", False),
                  (f"{a}.mlp.down.weight", f"{b}.mlp.down_proj.weight", False)]
    grads_close(ours, hf, pairs)


def test_llama_against_unpatched_transformers_differs_by_float32_rounding_only():
    hf = llama()
    diff = (Llama.from_hf(hf)(IDS) - hf(IDS).logits).abs().max().item()
    assert 1e-12 < diff < 1e-5, diff  # HF's RMSNorm rounds to float32; nothing else differs


def test_llama_from_hf_tied_embeddings_and_rejections():
    hf = llama(tie_word_embeddings=True)
    ours = Llama.from_hf(hf)
    assert ours.lm_head.weight is ours.tok.weight
    with pytest.raises(TypeError, match="LlamaForCausalLM"):
        Llama.from_hf(gpt2())
    with pytest.raises(ValueError, match="no biases"):
        Llama.from_hf(llama(attention_bias=True))
    scaled = llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(ValueError, match="no scaling"):  # long-context rope scaling (e.g. Llama 3.1) is refused
        Llama.from_hf(scaled)


# --- the cache ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_cached_steps_equal_full_recomputation(kind):
    torch.manual_seed(0)
    if kind == "gpt":
        model = GPT(GPTConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=2, max_len=16)).double().eval()
    else:
        model = Llama(LlamaStyleConfig(vocab_size=30, d_model=16, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=24,
                                       max_len=16)).double().eval()
    randomise(model)
    ids = torch.randint(0, 30, (2, 10))
    full = model(ids)  # (B, T, V)
    cache = KVCache()
    steps = [model(ids[:, :4], cache)]  # a prompt of 4, then one token at a time
    steps += [model(ids[:, t:t + 1], cache) for t in range(4, 10)]
    close(torch.cat(steps, dim=1), full)
    # GPT: 2 heads of 8; Llama: 4 query heads of 4 share 2 key/value heads, and only those are cached
    head_dim = 8 if kind == "gpt" else 4
    assert cache.length == 10 and cache.keys[0].shape == (2, 2, 10, head_dim)
    assert cache.nbytes() == 2 * 2 * 2 * 2 * 10 * head_dim * 8  # keys+values, layers, B, H_kv, T, Dh, float64
