"""Chapter 10's experiments: held-out word forms, length-capped splits, the shift probe, unknown words."""
from __future__ import annotations

import pytest
import torch

from course_lib.corpus import make_splits
from course_lib.generalisation import (
    OOV_NOUNS,
    Substitution,
    by_length,
    en_length,
    fit,
    fresh_model,
    held_out_form_splits,
    held_out_forms,
    kept_other_words,
    length_capped_splits,
    shifted_source_positions,
    substitution_set,
    unk_row_change,
    uses_form,
)
from course_lib.model import Transformer, TransformerConfig
from course_lib.tokens import Vocab
from course_lib.training import build_vocabs


@pytest.fixture(scope="module")
def small_splits():
    return make_splits(0, n_train=3000, n_valid=200, n_test=200)


def test_held_out_forms_are_the_noun_with_the_fitting_particle():
    assert held_out_forms(["boy"], ["에게"]) == {"소년에게"}
    assert held_out_forms(["boy", "old_woman"], ["와/과"]) == {"소년과", "할머니와"}
    forms = held_out_forms()
    assert len(forms) == 20 and {"민수에게", "민준과", "호랑이와", "선생님에게"} <= forms
    with pytest.raises(ValueError, match="unknown noun ids \\['grandma'\\]"):
        held_out_forms(["grandma"])


def test_held_out_form_splits_keep_every_form_out_of_training():
    fs = held_out_form_splits(0, n_train=3000, n_valid=200, n_test=200)
    assert len(fs.train) == 3000 and fs.removed > 0
    assert not any(uses_form(p, fs.forms) for p in fs.train + fs.test + fs.valid)
    assert fs.held_out and all(uses_form(p, fs.forms) for p in fs.held_out)
    train_en, train_keys = {p.en for p in fs.train}, {p.key for p in fs.train}
    assert not train_en & {p.en for p in fs.held_out + fs.test}
    assert not train_keys & {p.key for p in fs.test}
    assert len(fs.test) > 150  # the normal test split, less the few pairs that need a held-out form
    ko_train = {w.strip(".") for p in fs.train for w in p.ko.split()}
    for p in fs.held_out[:50]:  # every word but the held-out forms was seen in training
        assert all(w.strip(".") in ko_train or w.strip(".") in fs.forms for w in p.ko.split())


def test_uses_form_looks_at_whole_korean_words():
    from course_lib.corpus import Pair
    pair = Pair("Suni sent a gift to the boy.", "순이는 소년에게 선물을 보냈다.", "dative", ("Suni", "send", "gift"))
    assert uses_form(pair, {"소년에게"}) and not uses_form(pair, {"소년"}) and not uses_form(pair, {"소년과"})


def test_length_capped_splits_and_grouping(small_splits):
    ls = length_capped_splits(0, max_words=6, n_train=3000, n_valid=200, n_test=200)
    assert ls.train and max(map(en_length, ls.train)) == 6 and max(map(en_length, ls.valid)) <= 6
    assert max(map(en_length, ls.test)) > 6 and ls.test == small_splits.test
    groups = by_length(ls.test)
    assert list(groups) == sorted(groups) and sum(map(len, groups.values())) == len(ls.test)
    assert all(en_length(p) == n for n, ps in groups.items() for p in ps)
    assert en_length(("I go to school.", "나는 학교에 간다.")) == 4
    with pytest.raises(ValueError, match="max_words must be a positive int"):
        length_capped_splits(0, max_words=0)


def _model(seed: int = 0) -> Transformer:
    return fresh_model(TransformerConfig.tiny(30, 30, max_len=16), seed).eval()


def test_the_shift_probe_moves_the_source_positions_and_nothing_else():
    model = _model()
    src = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])  # (B, S)
    with torch.no_grad():
        plain = model.encode(src)
        with shifted_source_positions(model, 0):
            same = model.encode(src)
        with shifted_source_positions(model, 3):
            moved = model.encode(src)
        by_hand = model.encoder(model.src_embed(src) + model.pos.pe[3:7], (src != 0).unsqueeze(1))  # (B, S, D)
    torch.testing.assert_close(same, plain)
    torch.testing.assert_close(moved, by_hand)
    assert (moved - plain).abs().max() > 1e-3
    assert model.src_embed.__class__.__name__ == "TokenEmbedding"  # restored
    with pytest.raises(ValueError, match="do not fit in the table of 16 positions"), shifted_source_positions(model, 14):
        model.encode(src)
    assert model.src_embed.__class__.__name__ == "TokenEmbedding"  # restored after the error too
    with pytest.raises(ValueError, match="shift must be an int >= 0"), shifted_source_positions(model, -1):
        pass


def test_substitution_set_replaces_one_noun_with_an_unknown_word(small_splits):
    src_vocab, _ = build_vocabs(small_splits.train)
    subs = substitution_set(small_splits.test, src_vocab, n=30, seed=1)
    originals = {p.ko: p for p in small_splits.test}
    assert len(subs) == 30 and len({s.en for s in subs}) == 30
    for s in subs:
        original = originals[s.ko].en.split()
        changed = [(a, b) for a, b in zip(original, s.en.split()) if a != b]
        assert len(original) == len(s.en.split()) and len(changed) == 1, (original, s.en)
        assert changed[0][1].strip(".") == s.word and s.word in OOV_NOUNS
        assert s.ko.split()[s.slot].startswith(__import__("course_lib.grammar").grammar.NOUNS[s.noun].ko)
    assert subs == substitution_set(small_splits.test, src_vocab, n=30, seed=1)
    with pytest.raises(ValueError, match="in the source vocabulary"):
        substitution_set(small_splits.test, src_vocab, words=["cat"])
    with pytest.raises(ValueError, match="only .* of the pairs"):
        substitution_set(small_splits.test[:5], src_vocab, n=30)


def test_kept_other_words_ignores_only_the_slot():
    sub = Substitution("The zebra ate an apple.", "고양이는 사과를 먹었다.", 0, "cat", "zebra")
    assert kept_other_words("감자는 사과를 먹었다.", sub)
    assert kept_other_words("고양이는 사과를 먹었다.", sub)
    assert not kept_other_words("감자는 사과를 먹는다.", sub)
    assert not kept_other_words("감자는 먹었다.", sub)  # a word dropped
    assert not kept_other_words("감자는 감자는 사과를 먹었다.", sub)


def test_unk_row_change_sees_a_trained_row_and_nothing_else():
    a, b = _model(0), _model(0)
    assert unk_row_change(a, b) == 0.0 and unk_row_change(a, _model(1)) > 0.01
    with torch.no_grad():
        a.src_embed.weight[Vocab.unk_id, 5] += 0.25
        a.src_embed.weight[Vocab.unk_id + 1] += 1.0  # another row: not counted
    assert unk_row_change(a, b) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="configs differ"):
        unk_row_change(a, fresh_model(TransformerConfig.tiny(31, 30, max_len=16), 0))
    state = torch.random.get_rng_state()
    fresh_model(TransformerConfig.tiny(30, 30), 3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


def test_fit_trains_a_small_model_and_measures_its_cost(small_splits):
    fitted = fit(small_splits.train[:300], steps=6, batch_size=32, d_model=32)
    assert fitted.steps == 6 and fitted.cpu_seconds > 0 and fitted.wall_seconds > 0
    assert fitted.model.config.d_model == 32 and len(fitted.src_vocab) > 50
    again = fit(small_splits.train[:300], steps=6, batch_size=32, d_model=32)
    for p, q in zip(fitted.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(p, q)  # seeded: the same call gives the same model
