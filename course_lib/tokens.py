"""Chapter 01 · Tokens: words, Hangul syllables and jamo, a vocabulary, byte-pair encoding.

Everything is written by hand: a word tokenizer for the corpus format, the arithmetic that splits a
Hangul syllable into its jamo, a ``Vocab`` with the four special tokens, and a byte-pair encoder
(BPE) whose ``detokenize(tokenize(text)) == text`` holds for every string.
"""
from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch

from .hangul import decompose  # the syllable arithmetic is shared with grammar.py
from .validate import TokenIdError, nfc

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["word_tokenize", "detokenize", "Tokenize", "decompose", "Vocab", "BPE", "SPACE", "LITERAL_SPACE_MARK", "pretokenize",
           "to_hf_tokenizer"]

# --- words ------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r"\s+([.,!?;:%)\]}])")
_NO_SPACE_AFTER = re.compile(r"([(\[{])\s+")

Tokenize = Callable[[str], list[str]]  # a tokenizer: text -> tokens (word_tokenize, BPE.tokenize, ...)


def word_tokenize(text: str) -> list[str]:
    """Split at whitespace and split every punctuation mark off as its own token (after NFC).

    ``word_tokenize("순이는 창문을 닫았다.") == ["순이는", "창문을", "닫았다", "."]``
    """
    if not isinstance(text, str):
        raise TypeError(f"word_tokenize expects a str, got {type(text).__name__}")
    return _WORD.findall(nfc(text))


def detokenize(tokens: list[str]) -> str:
    """Join tokens with spaces and attach punctuation back (the inverse for the corpus format)."""
    _check_tokens(tokens, "detokenize")
    text = " ".join(tokens)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


def _check_tokens(tokens: object, where: str) -> None:
    if isinstance(tokens, str):
        raise TypeError(f"{where} expects a list of tokens (e.g. word_tokenize(text)), got a str: {tokens[:30]!r}")
    if not isinstance(tokens, (list, tuple)):
        raise TypeError(f"{where} expects a list of str tokens, got {type(tokens).__name__}")
    bad = next((i for i, t in enumerate(tokens) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{where} expects a list of str tokens, got {type(tokens[bad]).__name__} "
                        f"{tokens[bad]!r:.40} at position {bad}")


# --- vocabulary -------------------------------------------------------------------------------

class Vocab:
    """Token <-> id, with ``<pad> <bos> <eos> <unk>`` at ids 0, 1, 2, 3; unknown tokens -> ``<unk>``.

    Tokens are stored and looked up in Unicode NFC, so NFD Hangul finds the same ids.
    """

    PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
    SPECIALS = (PAD, BOS, EOS, UNK)
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, itos: list[str]) -> None:
        _check_tokens(itos, "Vocab (itos, the tokens in id order)")
        itos = [nfc(tok) for tok in itos]
        if list(itos[:4]) != list(self.SPECIALS):
            raise ValueError(f"a Vocab starts with the special tokens {list(self.SPECIALS)}, got {list(itos[:4])}")
        if len(set(itos)) != len(itos):
            raise ValueError("a Vocab cannot hold the same token twice (after NFC normalisation)")
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {tok: i for i, tok in enumerate(self.itos)}

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Count tokens; keep those seen ``min_freq`` times or more, most frequent first (ties: A-Z).

        ``max_size`` caps the total size, the four special tokens included.
        """
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < len(cls.SPECIALS)):
            raise ValueError(f"max_size must be None or an int >= {len(cls.SPECIALS)} (the special tokens), got {max_size!r}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            _check_tokens(tokens, "Vocab.build (each item)")
            counts.update(nfc(tok) for tok in tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in cls.SPECIALS),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - len(cls.SPECIALS)]
        return cls([*cls.SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and nfc(token) in self.stoi

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {self.itos[4:10]}...)"

    def encode(self, tokens: list[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of the tokens; a token not in the vocabulary becomes ``unk_id``."""
        _check_tokens(tokens, "Vocab.encode")
        ids = [self.stoi.get(nfc(tok), self.unk_id) for tok in tokens]
        return [self.bos_id] * add_bos + ids + [self.eos_id] * add_eos

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> list[str]:
        """Tokens of the ids. With ``skip_special``: drop ``<pad>``/``<bos>``, stop at ``<eos>`` (``<unk>`` stays)."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"Vocab.decode expects one sequence of ids (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"Vocab.decode expects int ids, got {type(i).__name__} {i!r}")
            if not 0 <= i < len(self):
                raise TokenIdError(f"id {i} is out of range for a vocabulary of size {len(self)} (ids 0..{len(self) - 1})")
            if skip_special and i == self.eos_id:
                break
            if skip_special and i in (self.pad_id, self.bos_id):
                continue
            tokens.append(self.itos[i])
        return tokens

    def encode_batch(self, token_lists: list[list[str]], add_bos: bool = False, add_eos: bool = False) -> torch.Tensor:
        """Encode several sequences and pad them on the right with ``pad_id``.

        Shape:
            returns (B, L) int64, L = the longest sequence (with bos/eos)
        """
        if isinstance(token_lists, str) or not isinstance(token_lists, (list, tuple)) or not token_lists:
            raise ValueError("Vocab.encode_batch expects a non-empty list of token lists")
        rows = [self.encode(tokens, add_bos, add_eos) for tokens in token_lists]
        batch = torch.full((len(rows), max(len(r) for r in rows)), self.pad_id, dtype=torch.long)  # (B, L)
        for b, row in enumerate(rows):
            batch[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        return batch

    def to_dict(self) -> dict:
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if not isinstance(d, dict) or "itos" not in d:
            raise ValueError("Vocab.from_dict expects a dict made by Vocab.to_dict (with key 'itos')")
        return cls(list(d["itos"]))


# --- byte-pair encoding -----------------------------------------------------------------------

SPACE = "▁"  # U+2581: a space, made visible and attached to the word after it
LITERAL_SPACE_MARK = "<U+2581>"  # the piece for a literal U+2581 in the input (kept apart, never merged)
_CHUNK = re.compile(rf"{SPACE}?\w+|{SPACE}?[^\w\s{SPACE}]+|{SPACE}|\s")


def pretokenize(text: str) -> list[str]:
    """Cut text into the chunks BPE works inside: spaces become ``▁`` glued to the next word.

    One space is put in front of a non-empty text, so that every word starts with ``▁`` (as in
    SentencePiece): ``pretokenize("나는 학교에 간다.") == ["▁나는", "▁학교에", "▁간다", "."]``.
    No chunk holds both a word character and a punctuation mark, so no piece can equal
    ``LITERAL_SPACE_MARK``, the piece that stands for a literal U+2581 in the input.
    """
    if not isinstance(text, str):
        raise TypeError(f"BPE works on str, got {type(text).__name__}")
    chunks: list[str] = []
    for k, part in enumerate((" " + text if text else text).split(SPACE)):
        if k:
            chunks.append(LITERAL_SPACE_MARK)
        chunks.extend(_CHUNK.findall(part.replace(" ", SPACE)))
    return chunks


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every occurrence of ``pair`` by one symbol, left to right, never overlapping."""
    a, b = pair
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class _PairCounts:
    """Adjacent-pair counts over distinct chunks (weighted by frequency), kept current while merging."""

    def __init__(self, freqs: Counter[str]) -> None:
        self.words = [list(w) for w in freqs]  # each distinct chunk as a list of symbols
        self.counts = list(freqs.values())
        self.pair_counts: Counter[tuple[str, str]] = Counter()
        self.where: dict[tuple[str, str], set[int]] = {}  # pair -> ids of words that (may) contain it
        for w, symbols in enumerate(self.words):
            for pair in zip(symbols, symbols[1:]):
                self.pair_counts[pair] += self.counts[w]
                self.where.setdefault(pair, set()).add(w)
        self.heap = [(-c, p) for p, c in self.pair_counts.items()]
        heapq.heapify(self.heap)

    def learn(self, num_merges: int, min_freq: int) -> list[tuple[str, str]]:
        """Pop the most frequent pair (ties: smallest pair) until num_merges or a count below min_freq."""
        merges: list[tuple[str, str]] = []
        while len(merges) < num_merges and self.heap:
            neg, pair = heapq.heappop(self.heap)
            if self.pair_counts.get(pair, 0) != -neg:  # stale entry: the count has changed since
                continue
            if -neg < min_freq:
                break
            merges.append(pair)
            for w in self.where.pop(pair, ()):
                self._merge_in_word(w, pair)
        return merges

    def _merge_in_word(self, w: int, pair: tuple[str, str]) -> None:
        """Merge `pair` inside word `w`, update the counts of the pairs it touched and re-push them."""
        old = self.words[w]
        new = _merge(old, pair)
        if new == old:
            return
        changed = set()
        for p in zip(old, old[1:]):
            self.pair_counts[p] -= self.counts[w]
            changed.add(p)
        for p in zip(new, new[1:]):
            self.pair_counts[p] += self.counts[w]
            self.where.setdefault(p, set()).add(w)
            changed.add(p)
        self.words[w] = new
        for p in changed:
            if self.pair_counts[p] > 0:
                heapq.heappush(self.heap, (-self.pair_counts[p], p))
            else:
                del self.pair_counts[p]


class BPE:
    """Byte-pair encoding on characters: learn merges from text, apply them in the learned order."""

    def __init__(self, merges: list[tuple[str, str]], alphabet: Iterable[str] = ()) -> None:
        self.merges: list[tuple[str, str]] = [(m[0], m[1]) if len(m) == 2 else tuple(m) for m in merges]
        if not all(len(m) == 2 and all(isinstance(s, str) and s for s in m) for m in self.merges):
            raise ValueError("every merge must be a pair of two non-empty strings")
        self.ranks: dict[tuple[str, str], int] = {m: r for r, m in enumerate(self.merges)}
        self.alphabet: list[str] = sorted(set(alphabet))  # the characters seen in training
        if not all(isinstance(ch, str) and len(ch) == 1 for ch in self.alphabet):
            raise ValueError("the alphabet must hold single characters")

    @classmethod
    def train(cls, texts: Iterable[str], num_merges: int, min_freq: int = 2) -> BPE:
        """Learn up to ``num_merges`` merges: each time, merge the most frequent adjacent pair.

        Pairs are counted inside chunks (see ``pretokenize``), over distinct chunks weighted by
        their frequency. Ties go to the smallest pair in string order. Stops early when the best
        pair occurs fewer than ``min_freq`` times.
        """
        if isinstance(num_merges, bool) or not isinstance(num_merges, int) or num_merges < 0:
            raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")
        if isinstance(texts, str):
            raise TypeError("BPE.train expects an iterable of texts, got one str: wrap it in a list")
        freqs: Counter[str] = Counter()
        for text in texts:
            freqs.update(c for c in pretokenize(text) if c != LITERAL_SPACE_MARK)
        merges = _PairCounts(freqs).learn(num_merges, min_freq)
        return cls(merges, alphabet={ch for word in freqs for ch in word})

    def _encode_chunk(self, chunk: str) -> list[str]:
        """Apply the merges to one chunk in their learned order (the next applicable one each time)."""
        symbols, last = list(chunk), -1
        while len(symbols) > 1:
            ranked = [(r, p) for p in zip(symbols, symbols[1:]) if (r := self.ranks.get(p, -1)) > last]
            if not ranked:
                break
            last, pair = min(ranked)
            symbols = _merge(symbols, pair)
        return symbols

    def tokenize(self, text: str) -> list[str]:
        """Subword pieces of ``text``; a space shows as ``▁`` at the start of the next piece."""
        pieces: list[str] = []
        for chunk in pretokenize(text):
            pieces.extend([chunk] if chunk == LITERAL_SPACE_MARK else self._encode_chunk(chunk))
        return pieces

    def detokenize(self, pieces: list[str]) -> str:
        """The exact text back: ``detokenize(tokenize(text)) == text`` for every str."""
        _check_tokens(pieces, "BPE.detokenize")
        text = "".join(SPACE if p == LITERAL_SPACE_MARK else p.replace(SPACE, " ") for p in pieces)
        return text[1:] if text.startswith(" ") else text  # the space pretokenize put in front

    @property
    def pieces(self) -> list[str]:
        """Every piece tokenize can return for text made of training characters (for a Vocab)."""
        base = set(self.alphabet)
        made = [p for p in dict.fromkeys(a + b for a, b in self.merges) if p not in base]
        return [*self.alphabet, *made, LITERAL_SPACE_MARK]

    def __repr__(self) -> str:
        return f"BPE({len(self.merges)} merges, first {self.merges[:3]})"

    def to_dict(self) -> dict:
        return {"merges": [list(m) for m in self.merges], "alphabet": list(self.alphabet)}

    @classmethod
    def from_dict(cls, d: dict) -> BPE:
        if not isinstance(d, dict) or "merges" not in d:
            raise ValueError("BPE.from_dict expects a dict made by BPE.to_dict (with key 'merges')")
        return cls([tuple(m) for m in d["merges"]], d.get("alphabet", ()))


def to_hf_tokenizer(bpe: BPE) -> Tokenizer:
    """The same BPE as a Hugging Face ``tokenizers.Tokenizer``: our merges, our chunks, HF's encoder.

    A normalizer puts ``▁`` for every space (and one in front), a ``Split`` pre-tokenizer cuts the
    chunks with ``pretokenize``'s pattern, and HF's ``BPE`` model applies our merges. On text made
    of training characters (without a literal U+2581) it gives exactly ``bpe.tokenize``'s pieces;
    a character the alphabet lacks is dropped by HF (no unknown token), while ours keeps it.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers  # optional dependency

    vocab = {piece: i for i, piece in enumerate(bpe.pieces)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(bpe.merges)))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(" "), normalizers.Replace(" ", SPACE)])
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(_CHUNK.pattern), behavior="isolated")
    return tokenizer
