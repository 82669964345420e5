"""Golden hashes: splitting grammar/corpus/BPE into small functions must not change one byte of their output.

The hashes were taken from the code before the split (commit 7d82f36). A change to the corpus or to BPE
that is meant must update them, and say so in its commit. Updated for issue 22 §4 (natural Korean, the "it"
construction and ``Pair.it``): the corpus and so the BPE merges trained on it changed on purpose.
"""
from __future__ import annotations

import hashlib
import json

from course_lib import corpus
from course_lib.tokens import BPE


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False).encode()).hexdigest()[:16]


def _split_digests(splits: corpus.Splits) -> dict[str, str]:
    rows = {name: [[p.en, p.ko, p.construction, list(p.key), p.tense, list(p.words), p.it] for p in getattr(splits, name)]
            for name in ("train", "valid", "test")}
    return {name: _digest(r) for name, r in rows.items()}


def test_default_splits_are_byte_identical():
    assert _split_digests(corpus.make_splits(0)) == {
        "train": "1d595d8a6c8157a9", "valid": "869116174fdb2e6a", "test": "7fd558705e955d5a"}


def test_small_splits_are_byte_identical():
    assert _split_digests(corpus.make_splits(5, n_train=600, n_valid=50, n_test=40)) == {
        "train": "d2f8278a4cd574d0", "valid": "3eb1d0f423e0a94f", "test": "3bc995d7f79ef4f7"}


def test_bpe_merges_are_identical():
    train = corpus.make_splits(0).train[:3000]
    merges = BPE.train([p.en for p in train] + [p.ko for p in train], 300).merges
    assert len(merges) == 300 and _digest(merges) == "d12dd204cdcd3d92"
