"""Chapter 10 · Where the translator fails: held-out word forms, longer sentences, unknown words.

Each experiment is a split of the corpus (``held_out_form_splits``, ``length_capped_splits``), a probe
of a trained model (``shifted_source_positions``, ``substitution_set`` with ``kept_other_words``,
``unk_row_change``); the fix for unknown words, ``training.unk_dropout``, is part of the chapter 07
training command. ``fit`` trains a small model with the chapter 07 loop and measures its CPU cost.
"""
from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import cast

import torch
from torch import Tensor, nn

from .batches import Examples
from .corpus import Pair, generate, make_splits
from .grammar import NOUNS, with_particle
from .model import Transformer, TransformerConfig
from .tokens import Tokenize, Vocab, detokenize, word_tokenize
from .training import CHAPTER07_TRAIN, TrainConfig, build_vocabs, encode_pairs, make_batches, train

__all__ = ["HELD_OUT_NOUNS", "HELD_OUT_PARTICLES", "held_out_forms", "uses_form", "FormSplits", "held_out_form_splits",
           "LengthSplits", "length_capped_splits", "en_length", "by_length", "ShiftedSourceEmbedding",
           "shifted_source_positions", "OOV_NOUNS", "Substitution", "substitution_set", "kept_other_words",
           "unk_row_change", "fresh_model", "Fitted", "fit"]


# --- 1. word forms never seen in training ------------------------------------------------------

HELD_OUT_NOUNS = ("Minsu", "Jisu", "Minjun", "Seoyeon", "boy", "student", "nurse", "teacher", "old_woman", "tiger")
HELD_OUT_PARTICLES = ("에게", "와/과")


def held_out_forms(nouns: Sequence[str] = HELD_OUT_NOUNS, particles: Sequence[str] = HELD_OUT_PARTICLES) -> set[str]:
    """The Korean noun+particle words to hold out: held_out_forms(["boy"], ["에게"]) == {"소년에게"}.

    A particle written as a pair ("와/과") takes the form that fits the noun's last syllable.
    """
    unknown = [n for n in nouns if n not in NOUNS]
    if unknown:
        raise ValueError(f"unknown noun ids {unknown}; expected ids of course_lib.grammar.NOUNS such as 'boy'")
    return {with_particle(NOUNS[n].ko, p) if "/" in p else NOUNS[n].ko + p for n in nouns for p in particles}


def uses_form(pair: Pair, forms: Collection[str]) -> bool:
    """True when a word of the pair's Korean side (without the final full stop) is one of ``forms``."""
    return any(w.rstrip(".") in forms for w in pair.ko.split())


def _words(pairs: Sequence[Pair]) -> set[tuple[str, str]]:
    english = {("en", w.strip(".")) for p in pairs for w in p.en.split()}
    return english | {("ko", w.strip(".")) for p in pairs for w in p.ko.split()}


@dataclass(frozen=True)
class FormSplits:
    """train holds no pair that uses a held-out form; test (i) is the normal test split without such pairs
    (and only with words train has); held_out (ii) holds pairs that need a held-out form."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    held_out: list[Pair]
    forms: set[str]
    removed: int  # training pairs removed (and replaced by others)


def held_out_form_splits(seed: int = 0, n_train: int = 20000, n_valid: int = 1000, n_test: int = 1000,
                         forms: Collection[str] | None = None) -> FormSplits:
    """``make_splits(seed, ...)`` with every training pair that uses one of ``forms`` removed and refilled
    to ``n_train`` with new grammar pairs (none of valid/test's keys, none using a form)."""
    forms = held_out_forms() if forms is None else set(forms)
    base = make_splits(seed, n_train, n_valid, n_test)
    train = [p for p in base.train if not uses_form(p, forms)]
    removed = [p for p in base.train if uses_form(p, forms)]
    n_removed = len(removed)
    held_keys, seen = {p.key for p in base.valid + base.test}, {p.en for p in base.train + base.valid + base.test}
    for p in generate(seed + 1, 4 * len(removed) + 100):  # refill with fresh pairs of the same grammar
        if len(train) >= n_train:
            break
        if p.key in held_keys or p.en in seen:
            continue
        seen.add(p.en)
        (removed if uses_form(p, forms) else train).append(p)
    if len(train) < n_train:
        raise RuntimeError(f"could refill only {len(train)} of {n_train} training pairs")
    known = _words(train)
    covered = [p for p in base.test if not uses_form(p, forms) and _words([p]) <= known]
    held_out = [p for p in removed + base.valid + base.test if uses_form(p, forms)
                and all(w in known or w[1] in forms for w in _words([p]))]
    valid = [p for p in base.valid if not uses_form(p, forms)]
    return FormSplits(train, valid, covered, held_out, set(forms), n_removed)


# --- 2. sentences longer than any in training --------------------------------------------------

def en_length(pair: Pair | tuple[str, str]) -> int:
    """Words of the English side, split at spaces ("I go to school." has 4)."""
    return len((pair.en if isinstance(pair, Pair) else pair[0]).split())


def by_length(pairs: Sequence) -> dict[int, list]:
    """The pairs grouped by English length, shortest first."""
    groups: dict[int, list] = {}
    for p in sorted(pairs, key=en_length):
        groups.setdefault(en_length(p), []).append(p)
    return groups


@dataclass(frozen=True)
class LengthSplits:
    train: list[Pair]  # every English side has at most max_words words
    valid: list[Pair]
    test: list[Pair]  # every length, the longer ones never seen in training
    max_words: int


def length_capped_splits(seed: int = 0, max_words: int = 7, n_train: int = 20000, n_valid: int = 1000,
                         n_test: int = 1000) -> LengthSplits:
    """``make_splits(seed, n_train, ...)`` keeping only training pairs of at most ``max_words`` English words
    (fewer pairs: the others are dropped, not replaced) and validation pairs of that length."""
    if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
        raise ValueError(f"max_words must be a positive int, got {max_words!r}")
    base = make_splits(seed, n_train, n_valid, n_test)
    short = [p for p in base.train if en_length(p) <= max_words]
    return LengthSplits(short, [p for p in base.valid if en_length(p) <= max_words], base.test, max_words)


class ShiftedSourceEmbedding(nn.Module):
    """Wraps a source embedding so that the encoder reads positions ``shift .. shift + S - 1`` instead of 0 .. S-1.

    ``Transformer.encode`` adds ``pe[0:S]`` to the embedding; this module adds ``pe[shift:shift+S] - pe[0:S]``
    first, so the sum is the embedding plus ``pe[shift:shift+S]``: the same sentence, placed later.

    Shape:
        src (B, S) ids -> (B, S, D)
    """

    def __init__(self, embed: nn.Module, pe: Tensor, shift: int) -> None:
        super().__init__()
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ValueError(f"shift must be an int >= 0, got {shift!r}")
        self.embed, self.shift = embed, shift
        self.pe: Tensor
        self.register_buffer("pe", pe, persistent=False)  # (max_len, D)

    def forward(self, src: Tensor) -> Tensor:
        x = self.embed(src)  # (B, S, D)
        s = x.shape[1]
        if self.shift + s > self.pe.shape[0]:
            raise ValueError(f"positions {self.shift}..{self.shift + s - 1} do not fit in the table of "
                             f"{self.pe.shape[0]} positions (TransformerConfig.max_len)")
        return x + (self.pe[self.shift:self.shift + s] - self.pe[:s]).to(x.dtype)  # (B, S, D) + (S, D)


@contextlib.contextmanager
def shifted_source_positions(model: Transformer, shift: int) -> Iterator[Transformer]:
    """Inside the block the encoder of ``model`` reads its source at positions offset by ``shift``.

    The decoder is untouched. ``model.src_embed`` is restored on exit (also after an error).
    """
    if not isinstance(model, Transformer):
        raise TypeError(f"expected a course_lib Transformer, got {type(model).__name__}")
    original = model.src_embed
    model.src_embed = ShiftedSourceEmbedding(original, model.pos.pe, shift)  # type: ignore[assignment]
    try:
        yield model
    finally:
        model.src_embed = original


# --- 3. words the model has never seen ---------------------------------------------------------

OOV_NOUNS = ("zebra", "mango", "violin", "tulip", "robot", "lemon", "panda", "kettle", "camel", "parrot", "pillow",
             "rocket", "donut", "koala", "saxophone", "penguin", "trumpet", "cactus", "lantern", "walrus")  # not in the grammar


@dataclass(frozen=True)
class Substitution:
    en: str        # the test sentence with one noun replaced by a word the model has never seen
    ko: str        # the original sentence's Korean (the reference for every other word)
    slot: int      # index, in ko.split(), of the Korean word that holds the replaced noun
    noun: str      # the replaced noun's id
    word: str      # the out-of-vocabulary word put in its place


def _slot(pair: Pair, noun_id: str) -> int | None:
    """Where noun ``noun_id`` sits in the Korean words, if its English and Korean occur exactly once."""
    n = NOUNS[noun_id]
    en = [w.strip(".") for w in pair.en.split()]
    ko = [i for i, w in enumerate(pair.ko.split()) if w.startswith(n.ko)]
    if n.kind in "nPh" or " " in n.en or en.count(n.en) != 1 or len(ko) != 1:
        return None
    if en.index(n.en) > 0 and en[en.index(n.en) - 1].lower() == "an":
        return None  # "an apple" -> "an zebra"
    return ko[0]


def substitution_set(pairs: Sequence[Pair], src_vocab: Vocab, n: int = 50, seed: int = 0,
                     words: Sequence[str] = OOV_NOUNS) -> list[Substitution]:
    """``n`` sentences of ``pairs``, each with one noun replaced by one of ``words`` (cycled), all unknown to ``src_vocab``."""
    known = [w for w in words if w in src_vocab or w.capitalize() in src_vocab]
    if known:
        raise ValueError(f"the replacement words {known} are in the source vocabulary; choose words it has never seen")
    rng, out = random.Random(seed), cast(list, [])
    order = list(pairs)
    rng.shuffle(order)
    for p in order:
        slots = [(w[2:], s) for w in p.words if w.startswith("N.") and w[2:] in NOUNS and (s := _slot(p, w[2:])) is not None]
        if not slots:
            continue
        noun, slot = rng.choice(slots)
        word = words[len(out) % len(words)]
        en = " ".join(w.replace(NOUNS[noun].en, word) if w.strip(".") == NOUNS[noun].en else w for w in p.en.split())
        out.append(Substitution(en, p.ko, slot, noun, word))
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} of the pairs have a noun that can be replaced; {n} were asked for")


def kept_other_words(hypothesis: str, sub: Substitution) -> bool:
    """True when the translation has as many words as the reference and every word but the noun's slot is right."""
    hyp, ref = hypothesis.split(), sub.ko.split()
    return len(hyp) == len(ref) and all(h == r for i, (h, r) in enumerate(zip(hyp, ref)) if i != sub.slot)


def fresh_model(config: TransformerConfig, seed: int) -> Transformer:
    """The model ``torch.manual_seed(seed); Transformer(config)`` builds, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Transformer(config)


def unk_row_change(trained: Transformer, initial: Transformer) -> float:
    """Largest absolute change of the source ``<unk>`` embedding row between two models of one config."""
    if trained.config != initial.config:
        raise ValueError("unk_row_change compares a model with its own initialisation: the configs differ")
    a, b = trained.src_embed.weight[Vocab.unk_id], initial.src_embed.weight[Vocab.unk_id]  # (D,)
    return float((a.detach().float() - b.detach().float()).abs().max())


# --- training small models ---------------------------------------------------------------------

@dataclass
class Fitted:
    model: Transformer
    src_vocab: Vocab
    tgt_vocab: Vocab
    tokenize: Tokenize
    detokenize: Callable[[list[str]], str]
    cpu_seconds: float   # time.process_time() spent (all threads of this process)
    wall_seconds: float
    steps: int


def fit(pairs: Sequence[Pair], seed: int = 0, steps: int = 600, batch_size: int = 64, d_model: int = 64,
        tokenize: Tokenize = word_tokenize, detokenize: Callable[[list[str]], str] = detokenize,
        transform: Callable[[Examples], Examples] | None = None, max_len: int = 128) -> Fitted:
    """Train a small translator (2+2 layers, ``d_model``, 4 heads) on ``pairs`` for ``steps`` steps with the
    chapter 07 loop and schedule; ``transform`` changes the encoded training examples first (e.g. ``unk_dropout``)."""
    cpu, wall = time.process_time(), time.perf_counter()
    src_vocab, tgt_vocab = build_vocabs(pairs, tokenize=tokenize)
    examples = encode_pairs(pairs, src_vocab, tgt_vocab, tokenize)
    examples = transform(examples) if transform is not None else examples
    batches = make_batches(examples, batch_size, seed=seed)
    config = TransformerConfig(len(src_vocab), len(tgt_vocab), d_model=d_model, n_heads=4, d_ff=4 * d_model, n_layers=2,
                               dropout=0.0, max_len=max_len)
    model = fresh_model(config, seed)
    epochs = -(-steps // len(batches))
    settings = {**asdict(CHAPTER07_TRAIN), "epochs": epochs, "batch_size": batch_size, "seed": seed, "max_seconds": None,
                "max_steps": steps, "average_last": 1, "warmup": min(CHAPTER07_TRAIN.warmup, steps // 3)}
    history = train(model, batches, None, TrainConfig(**settings), progress=False)
    return Fitted(model, src_vocab, tgt_vocab, tokenize, detokenize, time.process_time() - cpu,
                  time.perf_counter() - wall, history["steps"])

