"""Nothing silent at the edges (issue 24, sections 1 and 2): half precision, stale caches, bad numbers.

Each probe of the issue is a test here. ``PROBES`` has the same form as ``test_inputs.PROBES`` (a bad
input, the exception type it must raise, a pattern its message must match) and is run by the same
``run_probe``; the other tests check values: the half-precision norms against ``transformers`` and
``F.layer_norm``, the warning about unknown words, and that a refused call did no work.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from test_inputs import PAIRS, _tiny, _translator, run_probe

from course_lib import attention, decoding, encoder, gpt, kvcache, llama, model, multihead, sampling, tokens, training

NAN, INF = math.nan, math.inf


def _logits(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows)


def _gpt(d_model: int = 16, n_heads: int = 2, seed: int = 0) -> gpt.GPT:
    torch.manual_seed(seed)
    return gpt.GPT(gpt.GPTConfig(20, d_model=d_model, n_heads=n_heads, n_layers=2, max_len=32)).eval()


def _cached(m: gpt.GPT, batch: int = 2) -> gpt.KVCache:
    cache = gpt.KVCache()
    with torch.no_grad():
        m(torch.zeros(batch, 3, dtype=torch.long), cache)
    return cache


def _reuse(cache_model: gpt.GPT, other: gpt.GPT, batch: int) -> object:
    """A cache filled by ``cache_model`` for 2 rows, fed to ``other`` with ``batch`` rows (a re-run notebook cell)."""
    cache = _cached(cache_model)
    with torch.no_grad():
        return other(torch.zeros(batch, 1, dtype=torch.long), cache)


def _translate(sentence: str = "I go to school.", **changes) -> object:
    m, src_vocab, tgt_vocab = _translator()
    args = {"model": m, "sentence": sentence, "src_vocab": src_vocab, "tgt_vocab": tgt_vocab, **changes}
    return decoding.translate(**args)


def _step(tokens_: object) -> object:
    m = _tiny()
    return kvcache.IncrementalDecoder(m, torch.tensor([[5, 6, 7]])).step(tokens_)


X = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(0))
SRC = torch.tensor([[5, 6, 7]])

# (id, the bad input, the exception type expected, a regular expression its message must match)
PROBES: list[tuple[str, Callable[[], object], type, str]] = [
    # §1 silent wrong results: non-finite logits, a loss with nothing to average
    ("greedy of a NaN logit", lambda: sampling.greedy(_logits([0.0, NAN, 1.0])), sampling.NonFiniteLogitsError,
     r"NaN.*row 0"),
    ("greedy of +inf", lambda: sampling.greedy(_logits([0.0, 1.0], [0.0, INF])), sampling.NonFiniteLogitsError,
     r"\+inf.*row 1"),
    ("greedy of a row of -inf", lambda: sampling.greedy(_logits([-INF, -INF])), sampling.NonFiniteLogitsError,
     r"every logit of row 0 is -inf"),
    ("sample_next of NaN", lambda: sampling.sample_next(_logits([0.0, NAN, 1.0])), sampling.NonFiniteLogitsError, "NaN"),
    ("sample_next of +inf", lambda: sampling.sample_next(_logits([0.0, INF, 1.0])), sampling.NonFiniteLogitsError,
     r"\+inf"),
    ("sample_next of -inf only", lambda: sampling.sample_next(_logits([-INF] * 3)), sampling.NonFiniteLogitsError, "-inf"),
    ("sample_next temperature 1e-45", lambda: sampling.sample_next(_logits([0.0, 2.0, 1.0]), temperature=1e-45),
     sampling.NonFiniteLogitsError, r"temperature = 1e-45 .*overflow.*temperature=0"),
    ("top_k of NaN", lambda: sampling.top_k_filter(_logits([NAN, 1.0]), 1), sampling.NonFiniteLogitsError, "NaN"),
    ("top_p of NaN", lambda: sampling.top_p_filter(_logits([NAN, 1.0]), 0.9), sampling.NonFiniteLogitsError, "NaN"),
    ("loss with every target ignored", lambda: gpt.next_token_loss(torch.randn(1, 3, 5), torch.zeros(1, 3, dtype=torch.long),
                                                                   ignore_index=0), gpt.NoTargetsError,
     r"nothing to average.*ignore_index = 0"),
    ("loss of a 1-token target with its only target ignored", lambda: gpt.next_token_loss(
        torch.randn(2, 2, 5), torch.tensor([[1, 0], [2, 0]]), ignore_index=0), gpt.NoTargetsError, "nothing to average"),
    # §1 accepted without a word
    ("GPTConfig d_ff 0", lambda: gpt.GPTConfig(10, d_ff=0), ValueError, r"GPTConfig.d_ff must be an int >= 1, got 0"),
    ("GPTConfig d_ff float", lambda: gpt.GPTConfig(10, d_ff=64.0), TypeError, r"GPTConfig.d_ff must be an int"),
    ("GPTConfig eps negative", lambda: gpt.GPTConfig(10, eps=-1e-5), ValueError, r"GPTConfig.eps must be >= 0"),
    ("GPTConfig eps NaN", lambda: gpt.GPTConfig(10, eps=NAN), ValueError, r"GPTConfig.eps must be >= 0 \(a finite number"),
    ("LayerNorm eps negative", lambda: encoder.LayerNorm(4, eps=-1.0), ValueError,
     r"eps must be >= 0 \(a finite number\), got -1.0"),
    ("LayerNorm eps str", lambda: encoder.LayerNorm(4, eps="1e-5"), TypeError, r"eps must be >= 0 .*got str"),
    ("RMSNorm eps negative", lambda: llama.RMSNorm(4, eps=-1e-6), ValueError, r"eps must be >= 0"),
    ("RMSNorm d_model 0", lambda: llama.RMSNorm(0), ValueError, r"d_model must be an int >= 1"),
    ("Llama config eps negative", lambda: llama.LlamaStyleConfig(10, eps=-1e-6), ValueError,
     r"LlamaStyleConfig.eps must be >= 0"),
    ("Llama config rope_base 0", lambda: llama.LlamaStyleConfig(10, rope_base=0.0), ValueError,
     r"LlamaStyleConfig.rope_base must be > 0"),
    ("Llama config head_dim 0", lambda: llama.LlamaStyleConfig(10, head_dim=0), ValueError,
     r"LlamaStyleConfig.head_dim must be an int >= 1"),
    ("sdpa scale NaN", lambda: attention.scaled_dot_product_attention(X, X, X, scale=NAN), ValueError,
     r"scale must be > 0 \(a finite number.*got nan"),
    ("sdpa scale inf", lambda: attention.scaled_dot_product_attention(X, X, X, scale=INF), ValueError,
     r"scale must be > 0"),
    ("sdpa scale 0", lambda: attention.scaled_dot_product_attention(X, X, X, scale=0.0), ValueError, r"scale must be > 0"),
    ("sdpa scale negative", lambda: attention.scaled_dot_product_attention(X, X, X, scale=-1.0), ValueError,
     r"scale must be > 0"),
    ("sdpa scale str", lambda: attention.scaled_dot_product_attention(X, X, X, scale="1"), TypeError,
     r"scale must be > 0.*got str"),
    ("cache_bytes batch -1", lambda: kvcache.cache_bytes(_tiny(), -1, 5), ValueError, r"batch must be an int >= 0"),
    ("cache_bytes length -5", lambda: kvcache.cache_bytes(_tiny(), 1, -5), ValueError, r"length must be an int >= 0"),
    ("cache_bytes of a GPT", lambda: kvcache.cache_bytes(_gpt(), 1, 5), TypeError, r"course_lib.model.Transformer"),
    ("rotary positions (1, 8)", lambda: llama.rotary_cos_sin(torch.arange(8)[None], 16), ValueError,
     r"positions must be a 1-D tensor \(T,\).*\(1, 8\)"),
    ("rotary positions list", lambda: llama.rotary_cos_sin([0, 1, 2], 16), TypeError, r"positions must be a 1-D tensor"),
    ("rotary head_dim 0", lambda: llama.rotary_cos_sin(torch.arange(8), 0), ValueError, r"head_dim must be an int >= 2"),
    # §2 errors from deep inside torch, or bare Python errors
    ("KVCache reused with another batch size", lambda: (lambda m: _reuse(m, m, 3))(_gpt()), ValueError,
     r"KVCache holds keys for a batch of 2 rows.*3.*new KVCache\(\)"),
    ("KVCache reused with another model", lambda: _reuse(_gpt(), _gpt(32, 4), 2), ValueError,
     r"KVCache holds another model's keys and values.*new KVCache\(\)"),
    ("KVCache reused with another model of the same shape", lambda: _reuse(_gpt(seed=0), _gpt(seed=1), 2), ValueError,
     r"another model's"),
    ("KVCache.update with another head size", lambda: _update_twice(), ValueError,
     r"layer 0 holds keys of shape \(1, 2, 3, 4\).*\(1, 2, 1, 8\)"),
    ("next_token_loss id out of range", lambda: gpt.next_token_loss(torch.randn(1, 3, 5), torch.tensor([[1, 2, 9]])),
     IndexError, r"token id 9 is out of range for a vocabulary of size 5"),
    ("next_token_loss negative id", lambda: gpt.next_token_loss(torch.randn(1, 3, 5), torch.tensor([[1, -3, 2]])),
     ValueError, r"token id -3 is out of range"),
    ("next_token_loss float ids", lambda: gpt.next_token_loss(torch.randn(1, 3, 5), torch.tensor([[1.0, 2.0, 3.0]])),
     TypeError, r"integer token ids"),
    ("next_token_loss list ids", lambda: gpt.next_token_loss(torch.randn(1, 3, 5), [[1, 2, 3]]), TypeError,
     r"tensor of token ids"),
    ("next_token_loss integer logits", lambda: gpt.next_token_loss(torch.ones(1, 3, 5, dtype=torch.long),
                                                                   torch.tensor([[1, 2, 3]])), TypeError,
     r"logits must be a floating tensor"),
    ("RMSNorm wrong last dimension, long input", lambda: llama.RMSNorm(8)(torch.randn(2, 1000, 4)), ValueError,
     r"RMSNorm expects \(\.\.\., D\) with D = 8, got \(2, 1000, 4\)"),
    ("RMSNorm of integers", lambda: llama.RMSNorm(8)(torch.ones(2, 3, 8, dtype=torch.long)), TypeError, "floating-point"),
    ("RMSNorm of a list", lambda: llama.RMSNorm(2)([[1.0, 2.0]]), TypeError, r"got list"),
    ("greedy of (2, 0)", lambda: sampling.greedy(torch.zeros(2, 0)), ValueError, r"V >= 1.*\(2, 0\)"),
    ("sample_next of (2, 0)", lambda: sampling.sample_next(torch.zeros(2, 0)), ValueError, r"V >= 1"),
    ("Transformer(TransformerConfig(10**12, 10))", lambda: model.Transformer(model.TransformerConfig(10**12, 10)), ValueError,
     r"TransformerConfig would hold about 5.1e\+14 numbers.*src_vocab_size = 1000000000000"),
    ("TransformerConfig max_len 10**11", lambda: model.TransformerConfig(100, 100, max_len=10**11), ValueError,
     r"largest part is max_len = 100000000000 × d_model = 512"),
    ("GPTConfig vocab_size 10**12", lambda: gpt.GPTConfig(10**12), ValueError, r"GPTConfig would hold .*vocab_size"),
    ("LlamaStyleConfig d_ff 10**10", lambda: llama.LlamaStyleConfig(100, d_ff=10**10), ValueError,
     r"LlamaStyleConfig would hold .*d_ff = 10000000000"),
    ("split_heads n_heads 0", lambda: multihead.split_heads(torch.randn(1, 2, 8), 0), ValueError,
     r"n_heads must be an int >= 1, got 0"),
    ("split_heads n_heads -2", lambda: multihead.split_heads(torch.randn(1, 2, 8), -2), ValueError,
     r"n_heads must be an int >= 1"),
    ("split_heads n_heads float", lambda: multihead.split_heads(torch.randn(1, 2, 8), 2.0), TypeError,
     r"n_heads must be an int"),
    ("GroupedQueryAttention(8, 4, 0)", lambda: llama.GroupedQueryAttention(8, 4, 0), ValueError,
     r"n_kv_heads must be an int >= 1, got 0"),
    ("GroupedQueryAttention(8, 0, 0)", lambda: llama.GroupedQueryAttention(8, 0, 0), ValueError,
     r"n_heads must be an int >= 1, got 0"),
    ("GroupedQueryAttention d_model 0", lambda: llama.GroupedQueryAttention(0, 4, 2), ValueError, r"d_model must be an int >= 1"),
    ("padding_mask pad_id None", lambda: attention.padding_mask(SRC, None), TypeError,
     r"pad_id must be an int >= 0, got NoneType"),
    ("padding_mask pad_id -1", lambda: attention.padding_mask(SRC, -1), ValueError, r"pad_id must be an int >= 0"),
    ("generate a list prompt", lambda: sampling.generate(_gpt(), [[1, 2]], 3), TypeError,
     r"prompt must be token ids: an integer tensor of shape \(B, T\), got list"),
    ("generate of None", lambda: sampling.generate(None, torch.tensor([[1, 2]]), 3), TypeError,
     r"model must be a decoder-only language model"),
    ("generate eos_id str", lambda: sampling.generate(_gpt(), torch.tensor([[1, 2]]), 3, eos_id="2"), TypeError,
     r"eos_id must be an int >= 0"),
    ("generate temperature str", lambda: sampling.generate(_gpt(), torch.tensor([[1, 2]]), 3, temperature="1"), TypeError,
     r"temperature must be >= 0 .*got str"),
    ("IncrementalDecoder.step a list", lambda: _step([1, 1]), TypeError,
     r"step expects one token id per row: an integer tensor of shape \(B,\) = \(1,\), got list"),
    ("IncrementalDecoder.step float ids", lambda: _step(torch.tensor([1.0])), TypeError, r"integer tensor"),
    ("sample_next temperature str", lambda: sampling.sample_next(torch.randn(1, 5), temperature="1"), TypeError,
     r"temperature must be >= 0 .*got str"),
    ("sample_next temperature NaN", lambda: sampling.sample_next(torch.randn(1, 5), temperature=NAN), ValueError,
     r"temperature must be >= 0"),
    ("sample_next temperature negative", lambda: sampling.sample_next(torch.randn(1, 5), temperature=-1.0), ValueError,
     r"temperature must be >= 0"),
    ("apply_temperature str", lambda: sampling.apply_temperature(torch.randn(1, 5), "2"), TypeError,
     r"temperature must be > 0"),
    ("sample_next top_p str", lambda: sampling.sample_next(torch.randn(1, 5), top_p="0.9"), TypeError,
     r"top_p must be in \(0, 1\].*got str"),
    ("top_p_filter NaN", lambda: sampling.top_p_filter(torch.randn(1, 5), NAN), ValueError, r"top_p must be in \(0, 1\]"),
    ("top_k_filter k None", lambda: sampling.top_k_filter(torch.randn(1, 5), None), ValueError, r"top_k must be a positive int"),
    ("top_p_filter p None", lambda: sampling.top_p_filter(torch.randn(1, 5), None), TypeError, r"top_p must be in \(0, 1\]"),
    ("GPT with a cache that is not a KVCache", lambda: _gpt()(torch.zeros(1, 1, dtype=torch.long), {}), TypeError,
     r"cache must be a KVCache \(or None\), got dict"),
    ("beam_search alpha str", lambda: decoding.beam_search(_tiny(), SRC, 2, alpha="0.6"), TypeError,
     r"alpha must be >= 0.*got str"),
    ("beam_search alpha NaN", lambda: decoding.beam_search(_tiny(), SRC, 2, alpha=NAN), ValueError, r"alpha must be >= 0"),
    ("length_penalty alpha str", lambda: decoding.length_penalty(3, "0.6"), TypeError, r"alpha must be >= 0"),
    ("translate alpha str, greedy", lambda: _translate(alpha="0.6"), TypeError, r"alpha must be >= 0"),
    ("translate(None, ...)", lambda: _translate(model=None), TypeError,
     r"translate expects model: a course_lib.model.Transformer, got NoneType"),
    ("translate a None source vocabulary", lambda: _translate(src_vocab=None), TypeError,
     r"src_vocab must be a course_lib.tokens.Vocab.*got NoneType"),
    ("translate a None target vocabulary", lambda: _translate(tgt_vocab=None), TypeError,
     r"tgt_vocab must be a course_lib.tokens.Vocab.*got NoneType"),
    ("translate a None tokenizer", lambda: _translate(tokenize=None), TypeError, r"tokenize must be a function.*NoneType"),
    ("translate a None detokenizer", lambda: _translate(detokenize=None), TypeError, r"detokenize must be a function"),
    ("translate a tokenizer that returns a str", lambda: _translate(tokenize=lambda s: s), TypeError,
     r"tokenize must return a list of str tokens, got str 'I go to school.'"),
    ("translate a tokenizer that returns ints", lambda: _translate(tokenize=lambda s: [1, 2]), TypeError,
     r"tokenize must return a list of str tokens, got int 1 at position 0"),
    ("translate_batch(None, ...)", lambda: decoding.translate_batch(None, ["I go."], *training.build_vocabs(PAIRS)),
     TypeError, r"translate_batch expects model: a course_lib.model.Transformer"),
    ("unknown_words with a tokenizer that returns a str", lambda: decoding.unknown_words(
        "I go.", training.build_vocabs(PAIRS)[0], lambda s: s), TypeError, r"tokenize must return a list"),
]


def _update_twice() -> object:
    cache = gpt.KVCache()
    cache.update(0, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    return cache.update(0, torch.zeros(1, 2, 1, 8), torch.zeros(1, 2, 1, 8))


@pytest.mark.parametrize("fn, error, pattern", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gets_a_named_error(fn, error, pattern):
    assert run_probe(fn, error, pattern) == "named"


def test_the_named_errors_are_value_errors():
    assert issubclass(sampling.NonFiniteLogitsError, ValueError) and issubclass(gpt.NoTargetsError, ValueError)
    assert issubclass(decoding.UnknownWordWarning, UserWarning)


# --- §1 half precision: the norms keep their statistic in float32 ---------------------------------

def test_rmsnorm_in_float16_of_300_is_about_one():
    """300² = 90,000 overflows float16 (largest 65,504): squared in float16 the statistic is inf and the output 0."""
    x = torch.full((1, 4), 300.0, dtype=torch.float16)
    out = llama.RMSNorm(4).half()(x)
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), torch.ones(1, 4), atol=1e-3), out
    assert (x.pow(2).mean(-1) == math.inf).all()  # what the float16 statistic would have been


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rmsnorm_in_half_precision_equals_transformers_llama_rmsnorm(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(0)
    ours, theirs = llama.RMSNorm(64, eps=1e-5), LlamaRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(64, generator=g) * 0.5 + 1.0)  # a random gain: an uncopied one would show
        ours.weight.copy_(theirs.weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    for scale in (1.0, 300.0, 3000.0):  # 300 and 3000: squares beyond float16's 65,504
        x = (torch.randn(4, 7, 64, generator=g) * scale).to(dtype)
        out = ours(x)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert torch.equal(out, theirs(x)), scale  # the same operations in the same order: bit for bit
        exact = F.rms_norm(x.double(), (64,), ours.weight.double(), 1e-5)
        assert (out.double() - exact).abs().max() < 0.02 * exact.abs().max(), scale  # half precision's rounding only


def test_rmsnorm_in_float32_and_float64_stays_in_its_own_precision():
    g = torch.Generator().manual_seed(1)
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-14)):
        ours, ref = llama.RMSNorm(16).to(dtype), torch.nn.RMSNorm(16, eps=1e-6).to(dtype)
        with torch.no_grad():
            ref.weight.copy_(torch.randn(16, generator=g))
            ours.weight.copy_(ref.weight)
        x = torch.randn(3, 5, 16, generator=g).to(dtype) * 3 + 1
        assert ours(x).dtype == dtype
        assert (ours(x) - ref(x)).abs().max() < tol


def test_half_precision_llama_equals_transformers_on_large_activations():
    """A whole Llama in float16 with embedding rows near 300 (their squares overflow float16): ours equals
    ``LlamaForCausalLM`` to half precision; with the float16 statistic the norms gave zeros and the logits were 0."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    hf = transformers.LlamaForCausalLM(config).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.dim() == 1 else 0.0))
        hf.model.embed_tokens.weight.mul_(3000.0)  # activations around 300: x² overflows float16
    hf = hf.half()
    ours = llama.Llama.from_hf(hf)
    ids = torch.randint(0, 40, (2, 9), generator=g)
    with torch.no_grad():
        mine, theirs = ours(ids), hf(ids).logits
        reference = llama.Llama.from_hf(hf.float())(ids)  # float32 everywhere
    assert mine.dtype == torch.float16 and torch.isfinite(mine).all()
    assert mine.float().abs().max() > 0.1  # not the zeros of an overflowed statistic
    assert (mine.float() - theirs.float()).abs().max() < 0.02 * theirs.float().abs().max()
    assert (mine.float() - reference).abs().max() < 0.02 * reference.abs().max()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layernorm_in_half_precision_with_large_inputs_equals_float32(dtype):
    """``encoder.LayerNorm`` runs ``F.layer_norm``, whose statistics accumulate in float32 for half inputs:
    inputs of thousands (squares far beyond float16's range) give the float32 answer to half precision."""
    g = torch.Generator().manual_seed(2)
    norm = encoder.LayerNorm(64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64, generator=g) * 0.5 + 1)
        norm.bias.copy_(torch.randn(64, generator=g))
    x = torch.randn(4, 7, 64, generator=g) * 3000 + 500
    exact = F.layer_norm(x.double(), (64,), norm.weight.double(), norm.bias.double(), 1e-5)
    out = norm.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.double() - exact).abs().max() < 0.05 * exact.abs().max()
    assert torch.equal(out, F.layer_norm(x.to(dtype), (64,), norm.weight, norm.bias, 1e-5))


# --- §1 sampling and the loss: what still works ------------------------------------------------------

def test_minus_inf_logits_are_still_allowed_and_never_chosen():
    logits = _logits([-INF, 1.0, 0.5, -INF], [2.0, -INF, -INF, -INF])
    assert sampling.greedy(logits).tolist() == [1, 0]
    g = torch.Generator().manual_seed(0)
    drawn = torch.stack([sampling.sample_next(logits, 1.0, generator=g) for _ in range(50)])  # (50, 2)
    assert set(drawn[:, 0].tolist()) == {1, 2} and set(drawn[:, 1].tolist()) == {0}


def test_a_tiny_temperature_that_does_not_overflow_is_still_sampled():
    logits = _logits([0.0, 2.0, 1.0])
    assert sampling.sample_next(logits, temperature=1e-3).tolist() == [1]  # 2000 vs 1000: as good as greedy


def test_next_token_loss_still_ignores_what_it_should():
    logits = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[1, 2, 0, 0], [3, 4, 5, 0]])
    kept = [(b, t) for b in range(2) for t in range(3) if ids[b, t + 1] != 0]
    manual = sum(-logits[b, t].log_softmax(-1)[ids[b, t + 1]] for b, t in kept) / len(kept)
    assert torch.allclose(gpt.next_token_loss(logits, ids, ignore_index=0), manual)
    labels = ids.masked_fill(ids == 0, -100)  # torch's own default ignore_index stays ignored when none is given
    assert torch.allclose(gpt.next_token_loss(logits, labels), manual)
    labels = ids.masked_fill(ids == 0, 99)  # an ignore_index outside the vocabulary is not an id to range-check
    assert torch.allclose(gpt.next_token_loss(logits, labels, ignore_index=99), manual)


# --- §2 a refused call does no work ------------------------------------------------------------------

def test_a_refused_cache_is_left_as_it_was_and_the_right_call_continues():
    m = _gpt()
    cache = _cached(m)
    keys = [k.clone() for k in cache.keys]
    with pytest.raises(ValueError, match="batch of 2 rows"):
        m(torch.zeros(3, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="another model's"):
        _gpt(seed=1)(torch.zeros(2, 1, dtype=torch.long), cache)
    assert cache.length == 3 and all(torch.equal(a, b) for a, b in zip(keys, cache.keys))
    with torch.no_grad():
        step = m(torch.ones(2, 1, dtype=torch.long), cache)
        full = m(torch.tensor([[0, 0, 0, 1]] * 2))
    assert cache.length == 4 and torch.allclose(step[:, -1], full[:, -1], atol=1e-6)


def test_a_refused_llama_cache_is_left_as_it_was():
    torch.manual_seed(0)
    config = llama.LlamaStyleConfig(20, d_model=16, n_heads=4, n_kv_heads=2, n_layers=1, d_ff=24, max_len=16)
    a, b = llama.Llama(config).eval(), llama.Llama(config).eval()
    cache = gpt.KVCache()
    with torch.no_grad():
        a(torch.zeros(1, 4, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="another model's"):
            b(torch.zeros(1, 1, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="batch of 1 row"):
            a(torch.zeros(2, 1, dtype=torch.long), cache)
    assert cache.length == 4


def test_absurd_sizes_are_refused_before_anything_is_allocated():
    start = time.perf_counter()
    for build in (lambda: model.Transformer(model.TransformerConfig(10**12, 10)), lambda: gpt.GPT(gpt.GPTConfig(10**12))):
        with pytest.raises(ValueError, match=r"validate.MAX_PARAMETERS"):
            build()
    assert time.perf_counter() - start < 1.0
    paper = model.TransformerConfig.paper_base()  # the paper's base model is far below the limit
    assert model.count_parameters(model.Transformer(model.TransformerConfig.tiny())) > 0 and paper.d_model == 512


# --- §1 the translator says when it reads unknown words ------------------------------------------------

def test_translate_warns_naming_the_unknown_words():
    m, src_vocab, tgt_vocab = _translator()
    with pytest.warns(decoding.UnknownWordWarning, match=r"1 of 1 sentence.*sentence 0 'I go to xyzzy.' \(xyzzy\)"):
        out = decoding.translate(m, "I go to xyzzy.", src_vocab, tgt_vocab)
    assert isinstance(out, str)
    both = r"2 of 3 sentences.*sentence 0 .*\(plugh\).*sentence 2 .*\(xyzzy, plugh\)"
    with pytest.warns(decoding.UnknownWordWarning, match=both):
        decoding.translate_batch(m, ["I like plugh.", "I go to school.", "xyzzy closed the plugh."], src_vocab, tgt_vocab)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every word known: no warning at all
        decoding.translate_batch(m, ["I go to school.", "She closed the drawer."], src_vocab, tgt_vocab)


def test_the_unknown_word_warning_can_be_silenced_and_changes_no_translation():
    m, src_vocab, tgt_vocab = _translator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warned = decoding.translate(m, "I go to xyzzy.", src_vocab, tgt_vocab)
    assert [w.category for w in caught] == [decoding.UnknownWordWarning]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", decoding.UnknownWordWarning)
        assert decoding.translate(m, "I go to xyzzy.", src_vocab, tgt_vocab) == warned
        assert decoding.translate(m, "I go to plugh.", src_vocab, tgt_vocab) == warned  # both read as <unk>


def test_a_tokenizer_returning_a_tuple_is_accepted():
    m, src_vocab, tgt_vocab = _translator()
    as_list = decoding.translate(m, "I go to school.", src_vocab, tgt_vocab)
    assert decoding.translate(m, "I go to school.", src_vocab, tgt_vocab,
                              tokenize=lambda s: tuple(tokens.word_tokenize(s))) == as_list


def test_translate_lm_names_a_wrong_model_vocabulary_or_sentences():
    from course_lib import gpt_translate

    vocab = gpt_translate.lm_vocab(PAIRS)
    lm = gpt.GPT(gpt.GPTConfig(len(vocab), d_model=16, n_heads=2, n_layers=1, max_len=32)).eval()
    for args, pattern in (((None, ["I go."], vocab), "expects model: a course_lib GPT or Llama, got NoneType"),
                          ((lm, ["I go."], None), "vocab must be a course_lib.tokens.Vocab"),
                          ((lm, "I go.", vocab), "list of English sentences"), ((lm, [None], vocab), "list of English")):
        with pytest.raises(TypeError, match=pattern):
            gpt_translate.translate_lm(*args)
    assert isinstance(gpt_translate.translate_lm(lm, ["I go to school."], vocab, max_new_tokens=3)[0], str)
