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


def test_evaluate_loss_restores_the_models_mode():
    from course_lib.training import collate, evaluate_loss
    model = _model()
    batch = collate([([4, 5, 6], [7, 8]), ([4, 9], [10])], pad_id=0)
    model.train()
    evaluate_loss(model, [batch])
    assert model.training
    model.eval()
    evaluate_loss(model, [batch])
    assert not model.training


def test_training_no_longer_advertises_checkpoint_names():
    from course_lib import checkpoint, training
    assert not set(training.__all__) & set(checkpoint.__all__)
    assert not any(hasattr(training, name) for name in ("load_pretrained", "load_checkpoint", "PRETRAINED_PATH", "Checkpoint"))
    assert "pair_text" not in training.__all__ and "pair_text" in __import__("course_lib.corpus").corpus.__all__


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_step_api_equals_the_full_layer(norm_first):
    """Feeding positions one at a time through the public step methods gives the full layer's rows."""
    from course_lib.attention import causal_mask
    from course_lib.decoder import DecoderLayer
    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32, dropout=0.0, norm_first=norm_first).double().eval()
    for p in layer.parameters():  # randomise every weight, norms included
        torch.nn.init.normal_(p, std=0.3)
    x, memory = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 3, 16, dtype=torch.float64)
    memory_mask = torch.tensor([[[True, True, False]], [[True, True, True]]])  # (B, 1, S)
    full = layer(x, memory, causal_mask(5), memory_mask)  # (B, T, D)
    keys = torch.zeros(2, 4, 5, 4, dtype=torch.float64)
    values = torch.zeros_like(keys)
    kv = layer.memory_keys_values(memory)
    rows = []
    for t in range(5):
        h = layer.self_attention_step(x[:, t:t + 1], keys, values, t)
        h = layer.cross_attention_step(h, kv, memory_mask.unsqueeze(1))
        rows.append(layer.feed_forward_step(h))
    torch.testing.assert_close(torch.cat(rows, dim=1), full, rtol=0, atol=1e-12)


def test_greedy_decode_and_cached_share_one_loop_and_agree():
    from course_lib import decoding, kvcache
    model = _model()
    src = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]])
    steps = []
    real = decoding.greedy_loop
    def spy(step, *args):
        steps.append(step)
        return real(step, *args)
    import unittest.mock
    with unittest.mock.patch.object(decoding, "greedy_loop", spy), unittest.mock.patch.object(kvcache, "greedy_loop", spy):
        slow, fast = decoding.greedy_decode(model, src), kvcache.greedy_decode_cached(model, src)
    assert len(steps) == 2
    assert torch.equal(slow, fast) and slow.shape[1] == 2 * 4 + 10  # an untrained model never says <eos> here


def test_the_browser_test_fails_on_a_missing_or_renamed_notebook():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).with_name("test_browser.py")
    spec = importlib.util.spec_from_file_location("_browser_for_lookup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.course_file("notebooks/03_attention.ipynb") == "notebooks/03_attention.ipynb"
    with pytest.raises(pytest.fail.Exception, match="03_attention_renamed.ipynb is missing"):
        module.course_file("notebooks/03_attention_renamed.ipynb")


def test_show_source_prints_the_source_and_names_what_it_needs(capsys):
    from course_lib import show_source
    from course_lib.hangul import final_index
    show_source(final_index)
    out = capsys.readouterr().out
    assert out.startswith("def final_index(word: str) -> int:") and "return (ord(ch) - HANGUL_FIRST) % 28" in out
    with pytest.raises(TypeError, match="show_source needs a function, class or module defined in Python source"):
        show_source(len)
