"""Chapter 09: translation as next-token prediction, on a few pairs a tiny model can learn by heart."""
from __future__ import annotations

import pytest
import torch

from course_lib import set_seed
from course_lib.corpus import make_splits
from course_lib.gpt import GPT, GPTConfig, next_token_loss
from course_lib.gpt_translate import (
    ARROW,
    encode_lm,
    evaluate_lm,
    lm_batches,
    lm_vocab,
    score,
    train_lm,
    translate_lm,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest on a shared CPU

PAIRS = [("I go to school.", "나는 학교에 간다."), ("She likes apples.", "그녀는 사과를 좋아한다."),
         ("The boy closed the window.", "소년은 창문을 닫았다."), ("We eat lunch.", "우리는 점심을 먹는다.")]


def test_encoding_and_the_loss_mask():
    vocab = lm_vocab(PAIRS)
    assert ARROW in vocab and "학교에" in vocab and "school" in vocab
    ids, n_prompt = encode_lm("I go to school.", vocab, "나는 학교에 간다.")
    words = [vocab.itos[i] for i in ids]
    assert words == ["<bos>", "I", "go", "to", "school", ".", ARROW, "나는", "학교에", "간다", ".", "<eos>"]
    assert n_prompt == 7 and encode_lm("I go to school.", vocab) == (ids[:7], 7)
    (batch, labels), = lm_batches(PAIRS, vocab, batch_size=4)
    assert batch.shape[0] == 4 and torch.equal(labels != vocab.pad_id, (batch != vocab.pad_id) & (labels == batch))
    for row, lab in zip(batch.tolist(), labels.tolist()):  # only the Korean half and <eos> are targets
        n = row.index(vocab.stoi[ARROW]) + 1
        assert all(t == vocab.pad_id for t in lab[:n]) and lab[n:] == [t for t in row[n:]]
    logits = torch.randn(*batch.shape, len(vocab))
    assert next_token_loss(logits, labels, ignore_index=vocab.pad_id) != next_token_loss(logits, batch)


def test_a_tiny_model_learns_the_pairs_and_scores_them():
    set_seed(0)
    vocab = lm_vocab(PAIRS)
    model = GPT(GPTConfig(len(vocab), d_model=32, n_heads=4, n_layers=1, max_len=32))
    history = train_lm(model, lm_batches(PAIRS, vocab, batch_size=4), epochs=150, lr=1e-2, warmup=10)
    assert history["steps"] == history["planned"] == 150 and history["losses"][-1] < 0.05
    assert translate_lm(model, [en for en, _ in PAIRS], vocab) == [ko for _, ko in PAIRS]
    result = evaluate_lm(model, PAIRS, vocab)
    assert result["exact"] == 1.0 and abs(result["bleu"] - 100.0) < 1e-6 and "tok:13a" in result["signature"]


def test_score_and_the_time_guard():
    s = score(["나는 학교에 간다.", "틀렸다."], ["나는 학교에 간다.", "맞았다."])
    assert s["exact"] == 0.5 and 0 < s["bleu"] < 100 and s["signature"].startswith("nrefs:1")
    vocab = lm_vocab(PAIRS)
    model = GPT(GPTConfig(len(vocab), d_model=16, n_heads=2, n_layers=1, max_len=32))
    history = train_lm(model, lm_batches(PAIRS, vocab, batch_size=2), epochs=50, max_seconds=0.0)
    assert history["steps"] == 1 and history["planned"] == 100


def test_the_shared_vocabulary_covers_the_test_split():
    splits = make_splits(0, n_train=3000, n_valid=100, n_test=100)
    vocab = lm_vocab(splits.train)
    unknown = {t for p in splits.test for t in encode_lm(p.en, vocab, p.ko)[0] if t == vocab.unk_id}
    assert not unknown
