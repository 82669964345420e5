"""Chapter 07 · Batches: sentence pairs -> token ids -> padded batches of similar length (and ``unk_dropout``,
which teaches the model the unknown-word token ``<unk>``).

``training`` re-exports these names; the chapter teaches them as part of training.
"""
from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .attention import padding_mask
from .corpus import pair_text
from .tokens import Tokenize, Vocab, word_tokenize

__all__ = ["build_vocabs", "encode_pairs", "unk_dropout", "Batch", "collate", "make_batches"]

Examples = list[tuple[list[int], list[int]]]  # (source ids, target ids) per pair


def build_vocabs(pairs: Sequence, min_freq: int = 1, tokenize: Tokenize = word_tokenize) -> tuple[Vocab, Vocab]:
    """Source (English) and target (Korean) vocabularies of the tokenized pairs."""
    sides = [pair_text(p) for p in pairs]
    return (Vocab.build((tokenize(en) for en, _ in sides), min_freq),
            Vocab.build((tokenize(ko) for _, ko in sides), min_freq))


def encode_pairs(pairs: Sequence, src_vocab: Vocab, tgt_vocab: Vocab,
                 tokenize: Tokenize = word_tokenize) -> Examples:
    """Each pair as (source ids, target ids), without <bos>/<eos> (``make_batches`` adds them)."""
    return [(src_vocab.encode(tokenize(en)), tgt_vocab.encode(tokenize(ko))) for en, ko in map(pair_text, pairs)]


def unk_dropout(examples: Sequence[tuple[list[int], list[int]]], p: float, seed: int = 0, unk_id: int = Vocab.unk_id,
                only: Collection[int] | None = None) -> Examples:
    """The (source ids, target ids) examples with each source id replaced by ``unk_id`` with probability ``p``.

    The targets stay: the model learns that ``<unk>`` stands for some word whose translation it cannot know
    while the rest of the sentence is still to be translated. Special ids (below 4) are never replaced;
    ``only`` limits the replacement to those ids (e.g. the nouns). A new list; ``examples`` is not changed.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    rng = random.Random(seed)
    return [([unk_id if i >= len(Vocab.SPECIALS) and (only is None or i in only) and rng.random() < p else i
              for i in src], list(tgt)) for src, tgt in examples]


@dataclass
class Batch:
    """One padded batch. ``tgt_in`` = <bos> + tokens is what the decoder reads; ``tgt_out`` = tokens
    + <eos> is what it must predict, one position ahead (teacher forcing).

    Shape:
        src (B, S) long, src_mask (B, 1, S) bool (True = real token), tgt_in and tgt_out (B, T) long
    """

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    src_mask: Tensor
    n_tokens: int  # non-pad target tokens: what the loss averages over

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.src_mask.to(device),
                     self.n_tokens)


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int = 0) -> Batch:
    """Pad (source ids, target ids) examples into one ``Batch`` (adding <bos> and <eos> to the target)."""
    if not examples or any(len(src) == 0 for src, _ in examples):
        raise ValueError("collate needs (source ids, target ids) examples, at least one, none with an empty source")
    S, T = max(len(s) for s, _ in examples), max(len(t) for _, t in examples) + 1
    src = torch.full((len(examples), S), pad_id, dtype=torch.long)  # (B, S)
    tgt_in = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    for b, (s, t) in enumerate(examples):
        src[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[b, :len(t) + 1] = torch.tensor([Vocab.bos_id, *t], dtype=torch.long)
        tgt_out[b, :len(t) + 1] = torch.tensor([*t, Vocab.eos_id], dtype=torch.long)
    src_mask = padding_mask(src, pad_id)  # (B, 1, S)
    return Batch(src, tgt_in, tgt_out, src_mask, int((tgt_out != pad_id).sum()))


def make_batches(examples: Sequence[tuple[list[int], list[int]]], batch_size: int = 64, shuffle: bool = True,
                 seed: int = 0, pad_id: int = 0, pool: int = 50) -> list[Batch]:
    """Batches of sentences of similar length (little padding): sort by length inside pools of
    ``pool * batch_size`` examples, cut into batches, then shuffle the batches (if ``shuffle``).
    Without ``shuffle`` the examples keep their order apart from the sort inside each pool."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rng, order = random.Random(seed), list(range(len(examples)))
    if shuffle:
        rng.shuffle(order)
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = sorted(order[start:start + pool * batch_size], key=lambda i: (len(examples[i][0]), len(examples[i][1])))
        batches += [collate([examples[i] for i in chunk[k:k + batch_size]], pad_id)
                    for k in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches
