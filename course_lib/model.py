"""Chapter 07 · The whole Transformer: embeddings, positions, encoder, decoder, output projection.

Every part comes from an earlier chapter; this module only wires them together, as a typed config
and one class. The defaults are the paper's: post-LN layers, no final LayerNorm after a post-LN
stack (pre-LN adds one), a pre-softmax projection without bias, PyTorch's default initialisation.
(The Annotated Transformer's ``make_model`` differs on each: pre-LN with final norms, an output
bias, Xavier initialisation; chapters 05 and 07 measure each difference.)
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .attention import causal_mask, padding_mask
from .decoder import Decoder, DecoderLayer
from .embeddings import PositionalEncoding, TokenEmbedding
from .encoder import Encoder, EncoderLayer
from .hooks import HookPoint
from .validate import check_dropout, check_int, check_model_size

__all__ = ["TransformerConfig", "Transformer", "AttentionMaps", "count_parameters"]


@dataclass(frozen=True)
class TransformerConfig:
    """Every size and switch of the model; ``asdict`` of it is saved with each checkpoint."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_layers: int = 6  # N, for the encoder and for the decoder
    dropout: float = 0.1  # on each sub-layer's output and on the embedding sums (the paper's two places)
    attention_dropout: float | None = None  # on the attention weights; None = ``dropout`` (PyTorch's choice)
    ffn_dropout: float | None = None  # on the feed-forward hidden layer; None = ``dropout``
    max_len: int = 512
    norm_first: bool = False  # False = post-LN, as in the paper
    share_embeddings: bool = False  # one table for source and target (needs one shared vocabulary)
    tie_output: bool = False  # the pre-softmax projection reuses the target embedding table
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "n_layers", "max_len"):
            check_int(getattr(self, name), f"TransformerConfig.{name}")
        check_dropout(self.dropout, "TransformerConfig.dropout")
        check_int(self.pad_id, "TransformerConfig.pad_id", minimum=0)
        smallest = min(self.src_vocab_size, self.tgt_vocab_size)
        if self.pad_id >= smallest:
            raise ValueError(f"TransformerConfig.pad_id must be an id of both vocabularies, 0..{smallest - 1}, "
                             f"got {self.pad_id}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError("share_embeddings needs one vocabulary: src_vocab_size "
                             f"({self.src_vocab_size}) != tgt_vocab_size ({self.tgt_vocab_size})")
        for name in ("attention_dropout", "ffn_dropout"):
            if getattr(self, name) is not None:
                check_dropout(getattr(self, name), f"TransformerConfig.{name}")
        check_model_size("TransformerConfig", self._sizes())

    def _sizes(self) -> dict[str, int]:
        """The numbers the model will hold, by part, each named with the fields it comes from."""
        s, t, d, f, n, m = self.src_vocab_size, self.tgt_vocab_size, self.d_model, self.d_ff, self.n_layers, self.max_len
        tables = 1 + (not self.share_embeddings) + (not self.tie_output)  # source, target, output projection
        return {f"src_vocab_size = {s} × d_model = {d}": s * d,
                f"tgt_vocab_size = {t} × d_model = {d}": (tables - 1) * t * d,
                f"max_len = {m} × d_model = {d} (the positional table)": m * d,
                f"n_layers = {n} × 12 d_model² (attention, d_model = {d})": 12 * n * d * d,
                f"n_layers = {n} × 4 d_model × d_ff = {f} (feed-forward)": 4 * n * d * f}

    @classmethod
    def tiny(cls, src_vocab_size: int = 64, tgt_vocab_size: int = 64, **changes) -> TransformerConfig:
        """A model small enough for unit tests and a laptop CPU."""
        sizes = dict(d_model=32, n_heads=4, d_ff=64, n_layers=2, dropout=0.0, max_len=64)
        return cls(src_vocab_size, tgt_vocab_size, **{**sizes, **changes})

    @classmethod
    def paper_base(cls, vocab_size: int = 37000) -> TransformerConfig:
        """The paper's base model: N=6, d_model=512, d_ff=2048, h=8, shared and tied embeddings, and
        dropout 0.1 only where the paper puts it (sub-layer outputs, embedding sums)."""
        return cls(vocab_size, vocab_size, share_embeddings=True, tie_output=True, attention_dropout=0.0,
                   ffn_dropout=0.0)

    def to_dict(self) -> dict:
        return asdict(self)


class AttentionMaps(NamedTuple):
    """Every attention map of one forward pass (``Transformer.attention_maps``); layers numbered from 0.

    Shape:
        logits (B, T, V), equal to ``model(src, tgt)``
        encoder: n_layers × (B, H, S, S), the encoder's self-attention
        decoder_self: n_layers × (B, H, T, T), the decoder's masked self-attention
        cross: n_layers × (B, H, T, S), the decoder's cross-attention (queries: target, keys: source)
    """

    logits: Tensor
    encoder: list[Tensor]
    decoder_self: list[Tensor]
    cross: list[Tensor]


class Transformer(nn.Module):
    """The encoder-decoder Transformer of "Attention Is All You Need".

    Shape:
        src (B, S) ids, tgt (B, T) ids -> logits (B, T, V_tgt)
        src_mask: bool (B, 1, S), True = real token; None builds ``padding_mask(src, pad_id)``
        tgt_mask: bool (T, T) or (B, T, T); None builds ``causal_mask(T)``
        ``attention_maps(src, tgt)`` -> AttentionMaps(the same logits and every layer's attention weights)
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"Transformer expects a TransformerConfig, got {type(config).__name__}")
        c = self.config = config
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model)  # ids -> vectors * sqrt(D)
        self.tgt_embed = self.src_embed if c.share_embeddings else TokenEmbedding(c.tgt_vocab_size, c.d_model)
        self.pos = PositionalEncoding(c.d_model, c.max_len, c.dropout)
        layer = (c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first)
        inner = {"attention_dropout": c.attention_dropout, "ffn_dropout": c.ffn_dropout}
        self.encoder = Encoder(EncoderLayer(*layer, **inner), c.n_layers)  # type: ignore[arg-type]
        self.decoder = Decoder(DecoderLayer(*layer, **inner), c.n_layers)  # type: ignore[arg-type]
        self.generator = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)  # the pre-softmax projection
        if c.tie_output:
            self.generator.weight = self.tgt_embed.weight  # (V, D): one table, used both ways
        # chapter 11: the token vectors (times sqrt(D)) before the positions are added, (B, S, D) and (B, T, D)
        self.hook_src_embed, self.hook_tgt_embed = HookPoint("encoder.hook_embed"), HookPoint("decoder.hook_embed")

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """(B, S) ids -> memory (B, S, D)."""
        x, src_mask = self._source(src, src_mask)  # (B, S, D), (B, 1, S)
        return self.encoder(x, src_mask)  # (B, S, D)

    def decode(self, tgt: Tensor, memory: Tensor, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None,
               *, src: Tensor | None = None) -> Tensor:
        """Target prefix (B, T) and memory (B, S, D) -> logits (B, T, V).

        ``src_mask`` hides the source padding from cross-attention; pass it (or ``src``, from
        which it is built) whenever the batch is padded.
        """
        if src_mask is None and src is not None:
            src_mask = padding_mask(src, self.config.pad_id)  # (B, 1, S)
        y, tgt_mask = self._target(tgt, tgt_mask)  # (B, T, D), (T, T)
        return self.generator(self.decoder(y, memory, tgt_mask, src_mask))  # (B, T, V)

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None, tgt_mask: Tensor | None = None) -> Tensor:
        src_mask = padding_mask(src, self.config.pad_id) if src_mask is None else src_mask  # (B, 1, S)
        memory = self.encode(src, src_mask)  # (B, S, D)
        return self.decode(tgt, memory, src_mask, tgt_mask)  # (B, T, V)

    def attention_maps(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None,
                       tgt_mask: Tensor | None = None) -> AttentionMaps:
        """``forward`` once, keeping every attention map (always the hand-written attention: see ``AttentionMaps``)."""
        x, src_mask = self._source(src, src_mask)  # (B, S, D), (B, 1, S)
        memory, encoder = self.encoder.forward_with_weights(x, src_mask)  # (B, S, D), n_layers × (B, H, S, S)
        y, tgt_mask = self._target(tgt, tgt_mask)  # (B, T, D), (T, T)
        hidden, decoder = self.decoder.forward_with_weights(y, memory, tgt_mask, src_mask)  # (B, T, D)
        return AttentionMaps(self.generator(hidden), encoder, [s for s, _ in decoder], [c for _, c in decoder])

    def _source(self, src: Tensor, src_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Source ids (B, S) -> embedded positions (B, S, D) and the mask (B, 1, S), built from the padding if None."""
        self._check_ids(src, self.config.src_vocab_size, "src")
        src_mask = padding_mask(src, self.config.pad_id) if src_mask is None else src_mask  # (B, 1, S)
        return self.pos(self.hook_src_embed(self.src_embed(src))), src_mask  # (B, S, D)

    def _target(self, tgt: Tensor, tgt_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Target ids (B, T) -> embedded positions (B, T, D) and the mask, ``causal_mask(T)`` if None."""
        self._check_ids(tgt, self.config.tgt_vocab_size, "tgt")
        tgt_mask = causal_mask(tgt.shape[1], tgt.device) if tgt_mask is None else tgt_mask  # (T, T)
        return self.pos(self.hook_tgt_embed(self.tgt_embed(tgt))), tgt_mask  # (B, T, D)

    @staticmethod
    def _check_ids(ids: Tensor, vocab_size: int, name: str) -> None:
        """Shape and type only (no host sync): the embedding range-checks the ids (validate.check_ids)."""
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
            got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
            raise TypeError(f"{name} must be integer token ids of shape (B, L), got {got}")


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """No gradients and eval mode (no dropout) inside; the model's previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, counting a tied (shared) table once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


if __name__ == "__main__":  # python -m course_lib.model: the paper's base model, counted
    print(f"{count_parameters(Transformer(TransformerConfig.paper_base())):,} parameters in paper_base")
