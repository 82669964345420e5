"""Chapter 02 · Embeddings: token vectors, sinusoidal positions, and a small skip-gram trainer.

``TokenEmbedding`` looks a token's row up in a (V, D) table and multiplies it by sqrt(D), as in
the Transformer paper. ``sinusoidal_positional_encoding`` builds the paper's fixed table of
positions and ``PositionalEncoding`` adds it to a batch of token vectors. ``offset_matrix`` is the
rotation that moves every position k steps on. ``train_skipgram`` learns word vectors from
sentences with negative sampling (word2vec's skip-gram), small enough for a CPU in seconds.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .validate import check_dropout, check_ids, check_int

__all__ = ["TokenEmbedding", "sinusoidal_positional_encoding", "PositionalEncoding", "offset_matrix",
           "skipgram_pairs", "train_skipgram"]


class TokenEmbedding(nn.Module):
    """A learned (V, D) table; ``forward(ids)`` returns the ids' rows times sqrt(D).

    The weight starts as normal(0, D**-0.5), so a row has norm about 1 and a scaled row has norm
    about sqrt(D), like a row of the positional table (norm sqrt(D/2)). ``weight`` is exposed so
    that the output layer can be tied to it.

    Shape:
        ids: (B, T) integer  ->  (B, T, D)   (any shape of ids works: (...,) -> (..., D))
    """

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.vocab_size = check_int(vocab_size, "vocab_size")
        self.d_model = check_int(d_model, "d_model")
        if padding_idx is not None and (isinstance(padding_idx, bool) or not isinstance(padding_idx, int)
                                        or not 0 <= padding_idx < vocab_size):
            raise ValueError(f"padding_idx must be None or an id in 0..{vocab_size - 1}, got {padding_idx!r}")
        self.padding_idx = padding_idx
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * d_model**-0.5)  # (V, D)
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()  # <pad> starts as the zero vector and gets no gradient

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = check_ids(ids, self.vocab_size, "TokenEmbedding")  # the one range check of token ids
        return F.embedding(ids, self.weight, self.padding_idx) * math.sqrt(self.d_model)  # (B, T, D)

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.vocab_size}, {self.d_model}{pad}, scale=sqrt({self.d_model})"


def sinusoidal_positional_encoding(max_len: int, d_model: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The paper's fixed table: PE[pos, 2i] = sin(pos / 10000^(2i/D)), PE[pos, 2i+1] = cos(same).

    Positions start at 0, so ``PE[0] = [0, 1, 0, 1, ...]``. Computed in float64, returned in ``dtype``.
    ``d_model`` must be even: every frequency has a sin column and a cos column.

    Shape:
        returns (max_len, D)
    """
    check_int(max_len, "max_len", minimum=0)
    check_int(d_model, "d_model")
    if d_model % 2:
        raise ValueError(f"d_model must be even for the sinusoidal encoding (sin and cos columns come in pairs), "
                         f"got {d_model}")
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (D/2,)  = 0, 2, 4, ...
    angle = pos / 10000.0 ** (two_i / d_model)  # (max_len, D/2)
    pe = torch.empty(max_len, d_model, dtype=torch.float64)  # (max_len, D)
    pe[:, 0::2] = torch.sin(angle)  # even columns
    pe[:, 1::2] = torch.cos(angle)  # odd columns
    return pe.to(dtype)


def offset_matrix(k: int, d_model: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The (D, D) matrix M_k with PE[pos + k] = M_k @ PE[pos] for EVERY pos: 2x2 rotations by k*w_i.

    sin(a + b) = sin a cos b + cos a sin b and cos(a + b) = cos a cos b - sin a sin b, with
    a = pos*w_i, b = k*w_i: the block [[cos b, sin b], [-sin b, cos b]] depends on k, not on pos.
    """
    pe_k = sinusoidal_positional_encoding(abs(k) + 1, d_model, torch.float64)[abs(k)]  # (D,)
    sin_b, cos_b = pe_k[0::2] * (1 if k >= 0 else -1), pe_k[1::2]  # (D/2,) each
    m = torch.zeros(d_model, d_model, dtype=torch.float64)  # (D, D)
    even = torch.arange(0, d_model, 2)
    m[even, even], m[even, even + 1] = cos_b, sin_b
    m[even + 1, even], m[even + 1, even + 1] = -sin_b, cos_b
    return m.to(dtype)


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to token vectors, then applies dropout.

    The table is a buffer (moves with ``.to(device)``, never trained, not saved in the state dict).
    ``start`` shifts the positions (for decoding one token at a time with a cache).

    Shape:
        x: (B, T, D)  ->  (B, T, D)
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        check_dropout(dropout)
        self.d_model, self.max_len = d_model, check_int(max_len, "max_len")
        self.pe: torch.Tensor
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)  # (max_len, D)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"PositionalEncoding expects token vectors of shape (B, T, {self.d_model}), got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"PositionalEncoding expects float token vectors (after the embedding), got {x.dtype}")
        t = x.shape[1]
        if start < 0 or start + t > self.max_len:
            raise ValueError(f"positions {start}..{start + t - 1} do not fit in the table of max_len={self.max_len}; "
                             "build PositionalEncoding (in a Transformer: TransformerConfig) with a larger max_len, "
                             "or cut the sequence")
        return self.dropout(x + self.pe[start:start + t].to(x.dtype))  # (B, T, D) + (T, D)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


# --- skip-gram with negative sampling (word2vec) -----------------------------------------------

def skipgram_pairs(sentences: Iterable[list[int]], window: int = 2) -> torch.Tensor:
    """Every (centre, context) pair of ids with the context at most ``window`` words away.

    Shape:
        returns (N, 2) long: column 0 the centre word, column 1 a context word
    """
    check_int(window, "window")
    pairs = [(s[i], s[j]) for s in sentences for i in range(len(s))
             for j in range(max(0, i - window), min(len(s), i + window + 1)) if j != i]
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)  # (N, 2)


def train_skipgram(sentences: list[list[int]], vocab_size: int, d_model: int = 32, *, window: int = 2,
                   negatives: int = 5, epochs: int = 5, batch_size: int = 512, lr: float = 0.01,
                   seed: int = 0, progress: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Learn word vectors: make a centre's vector v_c agree with its context's u_o, not with noise words.

    Loss per pair: -log sigmoid(u_o . v_c) - sum over k noise words of log sigmoid(-u_k . v_c); noise
    words are drawn from unigram counts ** 0.75. Returns the centre table (V, D) and the mean loss
    of every epoch.
    """
    for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("negatives", negatives),
                        ("epochs", epochs), ("batch_size", batch_size)):
        check_int(value, name)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    pairs = skipgram_pairs(sentences, window)  # (N, 2)
    if len(pairs) == 0:
        raise ValueError("train_skipgram needs sentences with at least two words")
    check_ids(pairs, vocab_size, "train_skipgram")
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(torch.tensor([i for s in sentences for i in s]), minlength=vocab_size).double()
    noise = counts**0.75 / (counts**0.75).sum()  # (V,)
    centre = nn.Embedding(vocab_size, d_model)
    context = nn.Embedding(vocab_size, d_model)
    with torch.no_grad():
        centre.weight.uniform_(-0.5 / d_model, 0.5 / d_model, generator=gen)  # word2vec's init
        context.weight.zero_()
    optimizer = torch.optim.Adam([centre.weight, context.weight], lr=lr)
    steps = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="skip-gram epochs")
    losses = []
    for _ in steps:
        order = torch.randperm(len(pairs), generator=gen)
        total = 0.0
        for start in range(0, len(pairs), batch_size):
            batch = pairs[order[start:start + batch_size]]  # (b, 2)
            noise_ids = torch.multinomial(noise, len(batch) * negatives, replacement=True, generator=gen)
            v = centre(batch[:, 0])  # (b, D)
            u_pos = context(batch[:, 1])  # (b, D)
            u_neg = context(noise_ids.view(len(batch), negatives))  # (b, k, D)
            pos_score = (v * u_pos).sum(-1)  # (b,)
            neg_score = torch.einsum("bkd,bd->bk", u_neg, v)  # (b, k)
            loss = -(F.logsigmoid(pos_score) + F.logsigmoid(-neg_score).sum(-1)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(pairs))
    return centre.weight.detach().clone(), losses
