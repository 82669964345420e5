"""Seams and single ways of doing things (issue 13): one id check, frozen configs, shared helpers."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import grammar, hangul, tokens
from course_lib.model import Transformer, TransformerConfig, count_parameters
from course_lib.tokens import Vocab
from course_lib.validate import TokenIdError, check_ids


def _model(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig.tiny(11, 13, **kw))


def test_out_of_range_ids_raise_one_exception_type_everywhere():
    model = _model()
    with pytest.raises(TokenIdError, match="token id 11 is out of range for a vocabulary of size 11"):
        model.encode(torch.tensor([[3, 11]]))
    with pytest.raises(TokenIdError, match="token id -1 is out of range for a vocabulary of size 13"):
        model.decode(torch.tensor([[1, -1]]), torch.zeros(1, 2, model.config.d_model))
    with pytest.raises(TokenIdError, match="vocabulary of size 5"):
        Vocab(["<pad>", "<bos>", "<eos>", "<unk>", "a"]).decode([5])
    assert issubclass(TokenIdError, ValueError) and issubclass(TokenIdError, IndexError)


def test_ids_are_range_checked_once_per_forward(monkeypatch):
    """The model checks shapes; only the embeddings read min/max (one host sync each on a GPU)."""
    model, calls = _model(), []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda t: calls.append(tuple(t.shape)) or real(t))
    model(torch.tensor([[3, 4, 5]]), torch.tensor([[1, 6]]))
    assert calls == [(1, 3), (1, 2)]  # src once, tgt once


def test_check_ids_rejects_wrong_types():
    with pytest.raises(TypeError, match="integer token ids"):
        check_ids(torch.zeros(2), 5, "x")
    with pytest.raises(TypeError, match="tensor of token ids"):
        check_ids([1, 2], 5, "x")
    assert check_ids(torch.tensor([0, 4], dtype=torch.int32), 5, "x").dtype == torch.long


def test_hangul_arithmetic_lives_in_one_module():
    assert tokens.decompose is hangul.decompose
    assert grammar.final_index is hangul.final_index
    assert hangul.decompose("닫") == ("ㄷ", "ㅏ", "ㄷ") and hangul.FINALS[hangul.RIEUL] == "ㄹ"
    assert [hangul.final_index(w) for w in ("사과", "책", "서울", "Seoul 서울!")] == [0, 1, 8, 8]
    with pytest.raises(ValueError, match="Hangul syllable"):
        hangul.final_index("abc")


def test_train_config_is_frozen():
    from course_lib.training import CHAPTER07_TRAIN, TrainConfig
    with pytest.raises(dataclasses.FrozenInstanceError):
        CHAPTER07_TRAIN.epochs = 1  # type: ignore[misc]
    quick = dataclasses.replace(CHAPTER07_TRAIN, max_steps=3)
    assert quick.max_steps == 3 and CHAPTER07_TRAIN.max_steps is None and isinstance(quick, TrainConfig)


def test_count_parameters_counts_a_tied_table_once():
    untied, tied = _model(), _model(tie_output=True)
    d, v = untied.config.d_model, untied.config.tgt_vocab_size
    assert count_parameters(untied) - count_parameters(tied) == v * d
    assert count_parameters(untied) == sum(p.numel() for p in untied.parameters())
    frozen = _model()
    frozen.generator.weight.requires_grad_(False)
    assert count_parameters(frozen) == count_parameters(untied) - v * d
