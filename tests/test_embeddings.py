"""Chapter 02: token embedding, sinusoidal positions, the offset rotation, skip-gram."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib import set_seed
from course_lib.embeddings import (
    PositionalEncoding,
    TokenEmbedding,
    offset_matrix,
    sinusoidal_positional_encoding,
    skipgram_pairs,
    train_skipgram,
)

# --- sinusoidal table ----------------------------------------------------------------------------


def test_pe_golden_values():
    pe = sinusoidal_positional_encoding(50, 16, dtype=torch.float64)
    assert pe.shape == (50, 16) and pe.dtype == torch.float64
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 8, dtype=torch.float64))  # position 0: sin 0, cos 0
    assert pe[1, 0].item() == pytest.approx(math.sin(1.0), abs=1e-15)  # i = 0: frequency 1
    assert pe[1, 1].item() == pytest.approx(math.cos(1.0), abs=1e-15)
    assert pe[7, 15].item() == pytest.approx(math.cos(7 / 10000 ** (14 / 16)), abs=1e-15)


def test_pe_hand_computed_d4():
    # d_model = 4: frequencies 1 and 1/10000^(2/4) = 1/100
    pe = sinusoidal_positional_encoding(4, 4, dtype=torch.float64)
    assert pe[3].tolist() == pytest.approx([math.sin(3), math.cos(3), math.sin(0.03), math.cos(0.03)], abs=1e-15)
    assert pe[2, 2].item() == pytest.approx(0.019998666693333, abs=1e-14)  # sin(0.02), by hand


def test_pe_float32_default_matches_float64():
    pe32 = sinusoidal_positional_encoding(100, 32)
    assert pe32.dtype == torch.float32
    assert torch.allclose(pe32.double(), sinusoidal_positional_encoding(100, 32, torch.float64), atol=1e-6)


def test_pe_every_row_has_norm_sqrt_half_d():
    pe = sinusoidal_positional_encoding(200, 64, torch.float64)
    assert torch.allclose(pe.norm(dim=1), torch.full((200,), math.sqrt(32), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("max_len, d_model, message", [
    (10, 5, "must be even"), (10, 0, "d_model must be an int >= 1"), (-1, 4, "max_len"),
])
def test_pe_bad_arguments(max_len, d_model, message):
    with pytest.raises(ValueError, match=message):
        sinusoidal_positional_encoding(max_len, d_model)


def test_pe_empty_table():
    assert sinusoidal_positional_encoding(0, 8).shape == (0, 8)


# --- the fixed-offset linear relation ------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 10, -4])
def test_offset_matrix_moves_every_position_by_k(k):
    d = 16
    pe = sinusoidal_positional_encoding(300, d, torch.float64)
    m = offset_matrix(k, d)
    for pos in [4, 10, 57, 123, 250]:
        assert torch.allclose(m @ pe[pos], pe[pos + k], atol=1e-10), (k, pos)
    assert torch.allclose(m @ m.T, torch.eye(d, dtype=torch.float64), atol=1e-12)  # a rotation


def test_offset_matrix_composes_and_inverts():
    assert torch.allclose(offset_matrix(2, 8) @ offset_matrix(3, 8), offset_matrix(5, 8), atol=1e-12)
    assert torch.allclose(offset_matrix(-3, 8), offset_matrix(3, 8).T, atol=1e-12)
    assert torch.equal(offset_matrix(0, 8), torch.eye(8, dtype=torch.float64))


def test_offset_matrix_is_not_one_for_all_offsets():  # the test can fail: M_1 does not move by 2
    pe = sinusoidal_positional_encoding(20, 8, torch.float64)
    assert not torch.allclose(offset_matrix(1, 8) @ pe[5], pe[7], atol=1e-3)


# --- TokenEmbedding -----------------------------------------------------------------------------


def test_token_embedding_equals_nn_embedding_times_sqrt_d():
    set_seed(0)
    ours = TokenEmbedding(50, 16).double()
    ref = nn.Embedding(50, 16).double()
    with torch.no_grad():
        ref.weight.copy_(ours.weight)
    ids = torch.randint(0, 50, (3, 7))
    out = ours(ids)
    assert out.shape == (3, 7, 16)
    assert torch.allclose(out, ref(ids) * math.sqrt(16), atol=1e-10)
    assert torch.allclose(out[1, 2], ours.weight[ids[1, 2]] * 4.0, atol=1e-12)


def test_token_embedding_init_std_and_scaled_norm():
    set_seed(0)
    for d in (64, 256):
        emb = TokenEmbedding(2000, d)
        assert emb.weight.std().item() == pytest.approx(d**-0.5, rel=0.03)
        assert abs(emb.weight.mean().item()) < 0.01
        scaled_norm = emb(torch.arange(2000)).norm(dim=-1).mean().item()
        assert scaled_norm == pytest.approx(math.sqrt(d), rel=0.05)  # comparable to a PE row: sqrt(d/2)


def test_token_embedding_weight_is_a_parameter_for_tying():
    emb = TokenEmbedding(10, 4)
    assert isinstance(emb.weight, nn.Parameter) and emb.weight.shape == (10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tie
    assert head.weight.data_ptr() == emb.weight.data_ptr()


def test_token_embedding_padding_row_is_zero_and_gets_no_gradient():
    emb = TokenEmbedding(10, 4, padding_idx=0)
    assert torch.equal(emb.weight[0], torch.zeros(4))
    emb(torch.tensor([[0, 3, 0]])).sum().backward()
    assert torch.equal(emb.weight.grad[0], torch.zeros(4))
    assert emb.weight.grad[3].abs().sum() > 0


def test_token_embedding_accepts_int32_and_any_shape():
    emb = TokenEmbedding(10, 4)
    assert torch.equal(emb(torch.tensor([1, 2], dtype=torch.int32)), emb(torch.tensor([1, 2])))
    assert emb(torch.tensor(5)).shape == (4,)


@pytest.mark.parametrize("ids, error, message", [
    (torch.tensor([[1, 10]]), IndexError, "out of range for a vocabulary of size 10"),
    (torch.tensor([[-1, 2]]), IndexError, "vocabulary of size 10"),
    (torch.tensor([[1.0, 2.0]]), TypeError, "integer token ids"),
    (torch.tensor([[True, False]]), TypeError, "integer token ids"),
    ([[1, 2]], TypeError, "tensor of token ids"),
])
def test_token_embedding_bad_ids(ids, error, message):
    with pytest.raises(error, match=message):
        TokenEmbedding(10, 4)(ids)


@pytest.mark.parametrize("args, message", [((0, 4), "vocab_size"), ((10, 0), "d_model"), ((10, 4, 10), "padding_idx")])
def test_token_embedding_bad_construction(args, message):
    with pytest.raises(ValueError, match=message):
        TokenEmbedding(*args)


# --- PositionalEncoding --------------------------------------------------------------------------


def test_positional_encoding_adds_the_table():
    pe_module = PositionalEncoding(8, max_len=20)
    x = torch.randn(2, 5, 8)
    assert torch.allclose(pe_module(x), x + sinusoidal_positional_encoding(20, 8)[:5], atol=1e-7)
    assert torch.allclose(pe_module(x[:, 2:3], start=2), x[:, 2:3] + sinusoidal_positional_encoding(20, 8)[2:3])
    assert list(pe_module.parameters()) == []  # a buffer, not a parameter
    assert "pe" in dict(pe_module.named_buffers()) and "pe" not in pe_module.state_dict()


def test_positional_encoding_float64_and_dropout():
    x = torch.zeros(1, 4, 8, dtype=torch.float64)
    out = PositionalEncoding(8, max_len=10)(x)
    assert out.dtype == torch.float64
    assert torch.allclose(out[0], sinusoidal_positional_encoding(4, 8, torch.float64), atol=1e-7)
    drop = PositionalEncoding(8, max_len=10, dropout=0.5)
    assert torch.equal(drop.eval()(x), drop.eval()(x))  # no dropout at eval
    set_seed(0)
    assert (drop.train()(torch.ones(1, 10, 8)) == 0).any()


@pytest.mark.parametrize("x, error, message", [
    (torch.zeros(1, 11, 8), ValueError, "max_len=10"),
    (torch.zeros(11, 8), ValueError, r"shape \(B, T, 8\)"),
    (torch.zeros(1, 3, 6), ValueError, r"shape \(B, T, 8\)"),
    (torch.zeros(1, 3, 8, dtype=torch.long), TypeError, "float token vectors"),
])
def test_positional_encoding_bad_input(x, error, message):
    with pytest.raises(error, match=message):
        PositionalEncoding(8, max_len=10)(x)


def test_positional_encoding_bad_construction():
    with pytest.raises(ValueError, match="even"):
        PositionalEncoding(7)
    with pytest.raises(ValueError, match="dropout"):
        PositionalEncoding(8, dropout=1.0)


# --- skip-gram -----------------------------------------------------------------------------------


def test_skipgram_pairs_by_hand():
    pairs = skipgram_pairs([[4, 5, 6], [7]], window=1)
    assert pairs.tolist() == [[4, 5], [5, 4], [5, 6], [6, 5]]
    assert skipgram_pairs([[1, 2, 3]], window=2).shape == (6, 2)
    assert skipgram_pairs([[1]], window=2).shape == (0, 2)


def test_train_skipgram_learns_slots():
    # two interchangeable "foods" (4, 5) after verb 6 and two "places" (7, 8) after verb 9
    set_seed(0)
    gen = torch.Generator().manual_seed(0)
    sentences = []
    for _ in range(400):
        a, b = torch.randint(0, 2, (2,), generator=gen).tolist()
        sentences += [[10, 6, 4 + a], [11, 9, 7 + b]]
    weight, losses = train_skipgram(sentences, 12, d_model=8, epochs=4, batch_size=128, lr=0.05, seed=0)
    assert weight.shape == (12, 8) and len(losses) == 4 and losses[-1] < losses[0]
    w = torch.nn.functional.normalize(weight, dim=-1)
    assert w[4] @ w[5] > w[4] @ w[7] + 0.3  # same slot -> similar vectors
    again, _ = train_skipgram(sentences, 12, d_model=8, epochs=4, batch_size=128, lr=0.05, seed=0)
    assert torch.equal(weight, again)  # deterministic


def test_train_skipgram_bad_input():
    with pytest.raises(ValueError, match="at least two words"):
        train_skipgram([[1], [2]], 5)
    with pytest.raises(IndexError, match="vocabulary of size 5"):
        train_skipgram([[1, 7]], 5)
