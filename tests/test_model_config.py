"""TransformerConfig: the paper's dropout placement as an option, and what model.py says it is."""
from __future__ import annotations

import pytest
import torch

import course_lib.model as model_module
from course_lib.encoder import EncoderLayer
from course_lib.model import Transformer, TransformerConfig
from course_lib.multihead import MultiHeadAttention


def dropouts(model: torch.nn.Module) -> dict[str, set[float]]:
    """The dropout rates used in each place of a model."""
    out: dict[str, set[float]] = {"attention weights": set(), "feed-forward hidden": set(), "sub-layer outputs": set(),
                                  "embedding sums": {model.pos.dropout.p}}
    for name, m in model.named_modules():
        if isinstance(m, MultiHeadAttention):
            out["attention weights"].add(m.dropout)
        elif name.endswith(".ff"):
            out["feed-forward hidden"].add(m.dropout.p)
        elif name.rpartition(".")[2] in ("dropout1", "dropout2", "dropout3"):
            out["sub-layer outputs"].add(m.p)
    return out


def test_default_uses_dropout_everywhere_like_pytorch():
    model = Transformer(TransformerConfig.tiny(dropout=0.2))
    assert dropouts(model) == {k: {0.2} for k in ("attention weights", "feed-forward hidden", "sub-layer outputs",
                                                   "embedding sums")}


def test_paper_setting_drops_only_sub_layer_outputs_and_embedding_sums():
    config = TransformerConfig.paper_base(100)
    assert (config.dropout, config.attention_dropout, config.ffn_dropout) == (0.1, 0.0, 0.0)
    with torch.device("meta"):
        model = Transformer(config)
    assert dropouts(model) == {"attention weights": {0.0}, "feed-forward hidden": {0.0}, "sub-layer outputs": {0.1},
                               "embedding sums": {0.1}}


def test_inner_dropouts_can_be_set_apart():
    model = Transformer(TransformerConfig.tiny(dropout=0.1, attention_dropout=0.3, ffn_dropout=0.0))
    d = dropouts(model)
    assert d["attention weights"] == {0.3} and d["feed-forward hidden"] == {0.0} and d["sub-layer outputs"] == {0.1}


def test_the_paper_setting_really_changes_training_noise():
    """With the paper's placement and dropout 0 outside, a train-mode pass is deterministic; with ours it is not."""
    src, tgt = torch.tensor([[5, 6, 7]]), torch.tensor([[1, 4, 5]])
    torch.manual_seed(0)
    quiet = Transformer(TransformerConfig.tiny(dropout=0.0, attention_dropout=0.0, ffn_dropout=0.0)).train()
    assert torch.equal(quiet(src, tgt), quiet(src, tgt))
    torch.manual_seed(0)
    noisy = Transformer(TransformerConfig.tiny(dropout=0.0, attention_dropout=0.5)).train()
    assert not torch.equal(noisy(src, tgt), noisy(src, tgt))


@pytest.mark.parametrize("field", ["dropout", "attention_dropout", "ffn_dropout"])
@pytest.mark.parametrize("bad", [-0.1, 1.0, "0.1", True])
def test_bad_dropout_is_named(field, bad):
    with pytest.raises((TypeError, ValueError), match=rf"TransformerConfig.{field} must be a float in \[0, 1\)"):
        TransformerConfig.tiny(**{field: bad})


def test_old_checkpoint_configs_without_the_new_fields_still_load():
    old = {k: v for k, v in TransformerConfig.tiny().to_dict().items() if k not in ("attention_dropout", "ffn_dropout")}
    assert TransformerConfig(**old).attention_dropout is None


def test_encoder_layer_keeps_pytorch_placement_by_default():
    layer = EncoderLayer(8, 2, 16, dropout=0.25)
    assert layer.self_attn.dropout == layer.ff.dropout.p == layer.dropout1.p == 0.25
    paper = EncoderLayer(8, 2, 16, dropout=0.25, attention_dropout=0.0, ffn_dropout=0.0)
    assert paper.self_attn.dropout == paper.ff.dropout.p == 0.0 and paper.dropout1.p == 0.25


def test_model_py_describes_itself_truthfully():
    doc = model_module.__doc__
    assert "post-LN" in doc and "without bias" in doc and "Annotated Transformer" in doc
    assert "Annotated\nTransformer's ``make_model``, as" not in doc
