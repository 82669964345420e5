"""Parity with Hugging Face ``tokenizers``: our merges in HF's BPE model give our pieces exactly.

HF's own trainer learns different merges on the same corpus, and only because it breaks ties
between equally frequent pairs its own way: the first merge that differs was a tie.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

tokenizers = pytest.importorskip("tokenizers")

from course_lib import corpus  # noqa: E402  (after importorskip)
from course_lib.tokens import BPE, LITERAL_SPACE_MARK, pretokenize, to_hf_tokenizer  # noqa: E402

SPLITS = corpus.make_splits(seed=0)
FIRST_DIFFERENCE = {"ko": 57, "en": 37}  # index of the first merge HF's trainer learns differently


def _texts(split, lang: str) -> list[str]:
    return [getattr(pair, lang) for pair in split]


@pytest.fixture(scope="module", params=["ko", "en"])
def trained(request) -> tuple[str, BPE]:
    return request.param, BPE.train(_texts(SPLITS.train, request.param), num_merges=1000)


def test_our_merges_in_hf_give_our_pieces_on_every_test_sentence(trained):
    lang, bpe = trained
    hf = to_hf_tokenizer(bpe)
    texts = _texts(SPLITS.test, lang) + _texts(SPLITS.train[:2000], lang)
    different = [t for t in texts if hf.encode(t).tokens != bpe.tokenize(t)]
    assert different == [], f"{len(different)} sentences differ, e.g. {different[:1]}"
    assert len(texts) == 3000


def test_the_parity_test_can_fail(trained):
    """The same merges in another order (a real bug: ranks lost) do change HF's pieces."""
    lang, bpe = trained
    shuffled = to_hf_tokenizer(BPE(bpe.merges[::-1], alphabet=bpe.alphabet))
    assert any(shuffled.encode(t).tokens != bpe.tokenize(t) for t in _texts(SPLITS.test, lang)[:200])


def _pair_counts_after(texts: list[str], merges: list[tuple[str, str]]) -> Counter:
    """Adjacent-pair counts once ``merges`` have been applied to the training chunks (a slow replay)."""
    words = Counter(tuple(c) for t in texts for c in pretokenize(t) if c != LITERAL_SPACE_MARK)
    for a, b in merges:
        merged: Counter = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    counts: Counter = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += n
    return counts


def test_hf_trainer_differs_only_by_breaking_a_tie(trained):
    lang, bpe = trained
    texts = _texts(SPLITS.train, lang)
    hf = to_hf_tokenizer(BPE([], alphabet=bpe.alphabet))
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=len(bpe.alphabet) + 1000, min_frequency=2,
                                             show_progress=False, special_tokens=[])
    hf.train_from_iterator(texts, trainer)
    hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                 for m in json.loads(hf.to_str())["model"]["merges"]]
    first = next(i for i, (ours, theirs) in enumerate(zip(bpe.merges, hf_merges)) if ours != theirs)
    assert first == FIRST_DIFFERENCE[lang]
    counts = _pair_counts_after(texts, bpe.merges[:first])
    ours, theirs = bpe.merges[first], hf_merges[first]
    assert counts[ours] == counts[theirs] == max(counts.values()), "a tie between equally frequent pairs"
    assert ours < theirs, "ours takes the smallest tied pair in string order"
