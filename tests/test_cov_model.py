"""TransformerConfig's validation and the model's boundary, through the public API only: each bad
setting raises the named error before a model is built, and a good one round-trips."""
from __future__ import annotations

import pytest
import torch

from course_lib.model import Transformer, TransformerConfig, count_parameters


@pytest.mark.parametrize("changes,error,message", [
    ({"n_layers": 0}, ValueError, r"TransformerConfig.n_layers must be an int >= 1, got 0"),
    ({"n_heads": "8"}, TypeError, r"TransformerConfig.n_heads must be an int >= 1, got str '8'"),
    ({"d_model": 30}, ValueError, r"d_model \(30\) must be divisible by n_heads \(4\)"),
    ({"max_len": True}, TypeError, r"TransformerConfig.max_len must be an int"),  # a bool is not a size
    ({"pad_id": -1}, ValueError, r"TransformerConfig.pad_id must be an int >= 0, got -1"),
    ({"pad_id": 9}, ValueError, r"pad_id must be an id of both vocabularies, 0\.\.8, got 9"),
    ({"dropout": 1.0}, ValueError, r"TransformerConfig.dropout must be a float in \[0, 1\)"),
    ({"ffn_dropout": -0.1}, ValueError, r"TransformerConfig.ffn_dropout must be a float in \[0, 1\)"),
    ({"share_embeddings": True}, ValueError, r"share_embeddings needs one vocabulary: src_vocab_size \(12\) != "
                                             r"tgt_vocab_size \(9\)"),
])
def test_a_bad_setting_is_named(changes, error, message):
    with pytest.raises(error, match=message):
        TransformerConfig.tiny(12, 9, **changes)


def test_a_good_config_round_trips_and_builds_the_model_it_describes():
    config = TransformerConfig.tiny(12, 12, share_embeddings=True, tie_output=True, pad_id=3)
    assert TransformerConfig(**config.to_dict()) == config
    model = Transformer(config)
    assert model.config is config and model.tgt_embed is model.src_embed
    untied = Transformer(TransformerConfig.tiny(12, 12))
    assert count_parameters(untied) - count_parameters(model) == 2 * 12 * 32  # one table shared, one tied


def test_the_model_wants_a_config_and_integer_ids():
    with pytest.raises(TypeError, match="Transformer expects a TransformerConfig, got dict"):
        Transformer({"src_vocab_size": 12, "tgt_vocab_size": 12})  # type: ignore[arg-type]
    model = Transformer(TransformerConfig.tiny(12, 9))
    ids = torch.tensor([[1, 2, 3]])
    assert model(ids, ids).shape == (1, 3, 9)
    for src, tgt in ((ids.float(), ids), (ids, ids[0])):  # float source ids; target ids without a batch axis
        with pytest.raises((TypeError, ValueError), match="integer token ids"):
            model(src, tgt)
