"""Chapter 08's key/value cache: exactly the tokens and logits of recomputation, with less work."""
from __future__ import annotations

import pytest
import torch
from test_encoder import randomise_norms_and_biases_

from course_lib.decoding import greedy_decode
from course_lib.kvcache import IncrementalDecoder, cache_bytes, greedy_decode_cached
from course_lib.model import Transformer, TransformerConfig
from course_lib.multihead import set_fused

PAD, BOS, EOS = 0, 1, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(norm_first: bool, seed: int = 0, dtype=torch.float32, tgt_vocab: int = 12, **changes) -> Transformer:
    torch.manual_seed(seed)
    config = TransformerConfig.tiny(17, tgt_vocab, norm_first=norm_first, dropout=0.1, **changes)
    return randomise_norms_and_biases_(Transformer(config).to(dtype), seed).eval()  # no default 1/0 to hide behind


def padded_src(seed: int = 0, vocab: int = 17) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (5, 9), generator=g)  # (B, S)
    lengths = torch.tensor([9, 6, 3, 1, 8])
    return src.masked_fill(torch.arange(9) >= lengths[:, None], PAD)  # right-padded rows


def naive_greedy(model: Transformer, src: torch.Tensor, max_len: int) -> torch.Tensor:
    """Recompute the whole prefix with model.encode / model.decode at every step (written independently)."""
    with torch.no_grad():
        memory = model.encode(src)
        ys = torch.full((src.shape[0], 1), BOS)
        finished = torch.zeros(src.shape[0], dtype=torch.bool)
        out = []
        for _ in range(max_len):
            nxt = model.decode(ys, memory, src=src)[:, -1].argmax(-1)
            nxt = torch.where(finished, torch.full_like(nxt, PAD), nxt)
            finished = finished | (nxt == EOS)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            out.append(nxt)
            if finished.all():
                break
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cached_tokens_equal_recomputation(norm_first, seed):
    model = tiny_model(norm_first, seed)
    src = padded_src(seed)
    cached = greedy_decode_cached(model, src, max_len=20)
    assert torch.equal(cached, naive_greedy(model, src, 20))
    assert torch.equal(cached, greedy_decode(model, src, max_len=20))  # chapter 07's recomputing loop


def test_the_comparison_covers_rows_that_end_early_and_rows_that_do_not():
    """With a 12-token vocabulary the random models emit <eos> now and then: both cases are exercised."""
    ended = running = 0
    for norm_first in (False, True):
        for seed in range(4):
            out = greedy_decode_cached(tiny_model(norm_first, seed), padded_src(seed), max_len=20)
            has_eos = (out == EOS).any(dim=1)
            ended, running = ended + int(has_eos.sum()), running + int((~has_eos).sum())
            for row in out[has_eos]:  # everything after a row's first <eos> is <pad>
                first = int((row == EOS).nonzero()[0])
                assert (row[first + 1:] == PAD).all()
    assert ended > 0 and running > 0


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_step_logits_equal_the_full_decoder_at_every_step(norm_first, dtype, tol):
    model = tiny_model(norm_first, 7, dtype=dtype)
    src = padded_src(7)
    g = torch.Generator().manual_seed(7)
    prefix = torch.cat([torch.full((5, 1), BOS), torch.randint(3, 12, (5, 15), generator=g)], dim=1)  # (B, 16)
    with torch.no_grad():
        state = IncrementalDecoder(model, src)
        memory = model.encode(src)
        for t in range(prefix.shape[1]):
            step = state.step(prefix[:, t])  # (B, V)
            full = model.decode(prefix[:, :t + 1], memory, src=src)[:, -1]  # (B, V)
            assert step.dtype == dtype and step.shape == (5, 12)
            assert (step - full).abs().max().item() < tol, f"step {t}"
    assert state.length == prefix.shape[1]


def test_paper_style_shared_and_tied_embeddings_and_an_explicit_src_mask():
    torch.manual_seed(3)
    model = Transformer(TransformerConfig.tiny(12, 12, share_embeddings=True, tie_output=True, n_layers=3)).eval()
    src = padded_src(3, vocab=12)
    mask = src != PAD  # (B, S)
    cached = greedy_decode_cached(model, src, max_len=15, src_mask=mask[:, None, :])
    assert torch.equal(cached, naive_greedy(model, src, 15))
    assert torch.equal(cached, greedy_decode_cached(model, src, max_len=15))


def test_the_fused_path_decodes_the_same_tokens():
    model = tiny_model(False, 4)
    src = padded_src(4)
    plain = greedy_decode_cached(model, src, max_len=20)
    assert torch.equal(greedy_decode_cached(set_fused(model, True), src, max_len=20), plain)


def test_an_eos_id_no_token_has_always_gives_max_len_tokens():
    model = tiny_model(True, 5, tgt_vocab=4)  # a 4-token vocabulary: <eos> comes quickly
    src = padded_src(5)
    stopped = greedy_decode_cached(model, src, max_len=30)
    forced = greedy_decode_cached(model, src, max_len=30, eos_id=-1)
    assert stopped.shape[1] < 30 and forced.shape == (5, 30)
    assert torch.equal(forced, greedy_decode(model, src, max_len=30, eos_id=-1))
    ended = (stopped == EOS).any(dim=1)
    assert ended.all()  # so stopping early was right
    first = (stopped == EOS).int().argmax(dim=1)
    for b in range(5):  # up to each row's first <eos>, forcing changes nothing
        assert torch.equal(forced[b, :first[b] + 1], stopped[b, :first[b] + 1])


def test_encoder_and_cross_projections_run_once_and_self_projections_see_one_token():
    model = tiny_model(False, 0)
    src = padded_src(0)
    calls = {"encode": 0, "cross_k": [], "self_k": []}
    encode = model.encode

    def counting_encode(*args, **kwargs):
        calls["encode"] += 1
        return encode(*args, **kwargs)

    model.encode = counting_encode
    hooks = [layer.cross_attn.w_k.register_forward_hook(lambda m, i, o: calls["cross_k"].append(tuple(i[0].shape)))
             for layer in model.decoder.layers]
    hooks += [layer.self_attn.w_k.register_forward_hook(lambda m, i, o: calls["self_k"].append(tuple(i[0].shape)))
              for layer in model.decoder.layers]
    out = greedy_decode_cached(model, src, max_len=12, eos_id=-1)
    for h in hooks:
        h.remove()
    n_layers = model.config.n_layers
    assert calls["encode"] == 1
    assert calls["cross_k"] == [(5, 9, 32)] * n_layers  # the memory's keys: once per layer, not per step
    assert calls["self_k"] == [(5, 1, 32)] * (n_layers * out.shape[1])  # one new token per step and layer


def test_decoding_restores_train_mode_and_needs_no_grad():
    model = tiny_model(False, 0).train()
    out = greedy_decode_cached(model, padded_src(0), max_len=5)
    assert model.training and not out.requires_grad


def test_cache_bytes():
    model = tiny_model(False, 0)  # 2 layers, d_model 32, float32
    assert cache_bytes(model, batch=3, length=10) == 2 * 2 * 3 * 10 * 32 * 4


def test_clear_errors():
    model = tiny_model(False, 0)
    src = padded_src(0)
    with pytest.raises(TypeError, match=r"src must be integer token ids of shape \(B, S\)"):
        greedy_decode_cached(model, src.float())
    with pytest.raises(ValueError, match="capacity must be an int in 1..64"):
        IncrementalDecoder(model, src, capacity=65)
    with pytest.raises(TypeError, match="Transformer"):
        IncrementalDecoder(torch.nn.Linear(2, 2), src)
    state = IncrementalDecoder(model, src, capacity=2)
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(5,\)"):
        state.step(torch.ones(5, 1, dtype=torch.long))
    with torch.no_grad():
        state.step(torch.ones(5, dtype=torch.long))
        state.step(torch.ones(5, dtype=torch.long))
        with pytest.raises(ValueError, match="cache is full"):
            state.step(torch.ones(5, dtype=torch.long))


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_cached_tokens_equal_chapter07_greedy_decode(norm_first):
    for seed in range(3):
        model = tiny_model(norm_first, seed)
        src = padded_src(seed)
        expected = greedy_decode(model, src, max_len=20)
        assert torch.equal(greedy_decode_cached(model, src, max_len=20), expected)
    assert torch.equal(greedy_decode_cached(model, src), greedy_decode(model, src))  # the same default max_len
