"""Chapter 09 · Translation as next-token prediction: "English ⇒ Korean" lines for a decoder-only model.

One sequence per pair, ``<bos> English ⇒ Korean <eos>``, in one vocabulary for both languages.
The model reads the English and the arrow as a prompt and learns to continue it in Korean: the
loss counts only the Korean half (and ``<eos>``), so no capacity goes into predicting English.
Translating is generating after the arrow (``sampling.generate``, greedy, with the KV cache).
Scores are sacrebleu's, with its signature, the same as chapter 07's ``decoding.evaluate``.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .corpus import pair_text
from .gpt import GPT, next_token_loss
from .llama import Llama
from .sampling import generate
from .tokens import Vocab, detokenize, word_tokenize

__all__ = ["ARROW", "encode_lm", "evaluate_lm", "lm_batches", "lm_vocab", "score", "train_lm", "translate_lm"]

ARROW = "⇒"


def lm_vocab(pairs: Sequence) -> Vocab:
    """One vocabulary for both sides of the pairs, and the arrow."""
    sides = [pair_text(p) for p in pairs]
    return Vocab.build([[ARROW]] + [word_tokenize(en) + word_tokenize(ko) for en, ko in sides])


def encode_lm(english: str, vocab: Vocab, korean: str | None = None) -> tuple[list[int], int]:
    """``<bos> English ⇒ [Korean <eos>]`` as ids, and the prompt's length (up to and including the arrow)."""
    prompt = [vocab.bos_id, *vocab.encode(word_tokenize(english)), vocab.stoi[ARROW]]
    answer = [] if korean is None else [*vocab.encode(word_tokenize(korean)), vocab.eos_id]
    return prompt + answer, len(prompt)


def lm_batches(pairs: Sequence, vocab: Vocab, batch_size: int = 64, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Shuffled batches of (ids, labels), right-padded; labels are ids with the prompt and padding set to <pad>.

    Shape: ids and labels (B, T); ``next_token_loss(model(ids), labels, ignore_index=vocab.pad_id)``
    """
    examples = [encode_lm(*pair_text(p)[:1], vocab, pair_text(p)[1]) for p in pairs]
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start:start + batch_size]]
        ids = torch.full((len(chunk), max(len(e) for e, _ in chunk)), vocab.pad_id, dtype=torch.long)  # (B, T)
        for b, (e, _) in enumerate(chunk):
            ids[b, :len(e)] = torch.tensor(e)
        labels = ids.clone()
        for b, (_, n_prompt) in enumerate(chunk):
            labels[b, :n_prompt] = vocab.pad_id  # the prompt is given, not predicted
        batches.append((ids, labels))
    return batches


def train_lm(model: nn.Module, batches: list[tuple[Tensor, Tensor]], epochs: int = 1, lr: float = 3e-3,
             warmup: int = 100, pad_id: int = 0, max_seconds: float | None = None, progress=None) -> dict:
    """AdamW, linear warm-up then cosine decay over the planned steps; stops early after ``max_seconds``.

    Returns the loss of every step, the steps done and planned, whether all of them ran (``finished``; False when
    ``max_seconds`` stopped it) and the seconds taken.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    total = epochs * len(batches)

    def rate(step: int) -> float:  # a multiplier of lr, for step 0, 1, ...
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    losses, start = [], time.perf_counter()
    model.train()
    for step in range(total):
        ids, labels = batches[step % len(batches)]
        loss = next_token_loss(model(ids), labels, ignore_index=pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    model.eval()
    return {"losses": losses, "steps": len(losses), "planned": total, "finished": len(losses) == total,
            "seconds": time.perf_counter() - start}


def translate_lm(model: GPT | Llama, sentences: Sequence[str], vocab: Vocab, max_new_tokens: int | None = None) -> list[str]:
    """Greedy translation by generation after the arrow; prompts of equal length share a batch (no padding)."""
    if not isinstance(model, (GPT, Llama)):
        raise TypeError(f"translate_lm expects model: a course_lib GPT or Llama, got {type(model).__name__}")
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a course_lib.tokens.Vocab (lm_vocab makes it), got {type(vocab).__name__}")
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise TypeError("translate_lm expects a list of English sentences (str); wrap one sentence in a list")
    prompts = [encode_lm(s, vocab)[0] for s in sentences]
    out = [""] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, rows in by_length.items():
        limit = max_new_tokens or min(2 * length + 10, int(model.config.max_len) - length)
        ids = generate(model, torch.tensor([prompts[i] for i in rows]), limit, eos_id=vocab.eos_id)  # (B, T + n)
        for i, row in zip(rows, ids[:, length:].tolist()):
            row = row[:row.index(vocab.eos_id)] if vocab.eos_id in row else row
            out[i] = detokenize(vocab.decode(row))
    return out


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """sacrebleu's corpus BLEU (default 13a tokenizer, as chapter 07) with its signature, and exact match."""
    import sacrebleu

    bleu = sacrebleu.BLEU()
    result = bleu.corpus_score(list(hypotheses), [list(references)])
    exact = sum(h == r for h, r in zip(hypotheses, references)) / len(references)
    return {"bleu": result.score, "exact": exact, "signature": str(bleu.get_signature())}


def evaluate_lm(model: GPT | Llama, pairs: Sequence, vocab: Vocab) -> dict:
    """Translate the English side of ``pairs`` with ``translate_lm`` and ``score`` it against the Korean side."""
    sides = [pair_text(p) for p in pairs]
    hyps = translate_lm(model, [en for en, _ in sides], vocab)
    return {**score(hyps, [ko for _, ko in sides]), "hypotheses": hyps}
