"""Chapter 06 · The decoder: masked self-attention, cross-attention to the encoder, feed-forward.

A decoder layer has three sub-layers, each wrapped in a residual connection:

1. masked self-attention over the target prefix (``tgt_mask``, usually ``causal_mask(T)``),
2. cross-attention (encoder-decoder attention): queries from the decoder, keys and values from
   ``memory``, the encoder's FINAL output, the same tensor for every decoder layer,
3. the position-wise feed-forward network.

Masks follow the course convention: boolean, **True = may attend**.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .encoder import (
    FeedForward,
    LayerNorm,
    LayerStack,
    attention_branch,
    check_input,
    inner_dropouts,
    layer_from_torch,
)
from .hooks import HookPoint
from .multihead import Attended, MultiHeadAttention, required_weights, split_heads

__all__ = ["DecoderLayer", "Decoder"]


def check_memory(x: Tensor, memory: Tensor, d_model: int) -> None:
    """Raise a clear error unless ``memory`` is (B, S, D) with the same B as the decoder input."""
    check_input(memory, d_model, "memory", "(B, S, D), the encoder's output")
    if memory.shape[0] != x.shape[0]:
        raise ValueError(f"memory has batch size {memory.shape[0]} but x has {x.shape[0]}: "
                         "each target sentence needs its own encoded source, memory (B, S, D)")


class DecoderLayer(nn.Module):
    """One decoder layer: masked self-attention, cross-attention, feed-forward (each with a residual).

    ``norm_first=False`` is the paper (post-LN), ``True`` is pre-LN (see ``EncoderLayer``).

    Shape:
        x: (B, T, D) target vectors; memory: (B, S, D) the encoder's final output
        tgt_mask: bool (T, T) or (B, T, T), True = may attend (causal, maybe & target padding)
        memory_mask: bool (B, 1, S), True = a real source token (not padding)
        returns (B, T, D); ``forward_with_weights`` -> Attended(output (B, T, D),
        weights (self-attention (B, H, T, T), cross-attention (B, H, T, S)))
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False,
                 eps: float = 1e-5, bias: bool = True, *, attention_dropout: float | None = None,
                 ffn_dropout: float | None = None) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.norm_first = d_model, n_heads, norm_first
        attention_dropout, ffn_dropout = inner_dropouts(dropout, attention_dropout, ffn_dropout)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=attention_dropout, bias=bias)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=attention_dropout, bias=bias)
        self.ff = FeedForward(d_model, d_ff, dropout=ffn_dropout, bias=bias)
        self.norm1 = LayerNorm(d_model, eps=eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=eps, bias=bias)
        self.norm3 = LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        # chapter 11's hook points, (B, T, D) each; resid_mid2 sits between cross-attention and the feed-forward
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_mid = HookPoint(), HookPoint(), HookPoint()
        self.hook_cross_attn_out, self.hook_resid_mid2 = HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        return self._forward(x, memory, tgt_mask, memory_mask, need_weights=False)[0]  # (B, T, D)

    def forward_with_weights(self, x: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                             memory_mask: Tensor | None = None) -> Attended[tuple[Tensor, Tensor]]:
        """``forward``'s output and (self-attention weights (B, H, T, T), cross-attention weights (B, H, T, S))."""
        out, (self_w, cross_w) = self._forward(x, memory, tgt_mask, memory_mask, need_weights=True)
        return Attended(out, (required_weights(self_w), required_weights(cross_w)))

    def _forward(self, x: Tensor, memory: Tensor, tgt_mask: Tensor | None, memory_mask: Tensor | None,
                 need_weights: bool) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        check_input(x, self.d_model, "x", "(B, T, D)")
        check_memory(x, memory, self.d_model)
        x = self.hook_resid_pre(x)
        if self.norm_first:
            attended, self_w = self._sa_block(self.norm1(x), tgt_mask, need_weights)
            x = self.hook_resid_mid(x + attended)  # (B, T, D)
            crossed, cross_w = self._ca_block(self.norm2(x), memory, memory_mask, need_weights)
            x = self.hook_resid_mid2(x + crossed)  # (B, T, D)
            x = x + self._ff_block(self.norm3(x))
        else:
            attended, self_w = self._sa_block(x, tgt_mask, need_weights)
            x = self.hook_resid_mid(self.norm1(x + attended))  # (B, T, D)
            crossed, cross_w = self._ca_block(x, memory, memory_mask, need_weights)
            x = self.hook_resid_mid2(self.norm2(x + crossed))  # (B, T, D)
            x = self.norm3(x + self._ff_block(x))
        return self.hook_resid_post(x), (self_w, cross_w)  # (B, T, D), ((B, H, T, T), (B, H, T, S)) or Nones

    def _sa_block(self, x: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        # queries, keys and values all come from the target prefix x; the mask hides the future
        attended, weights = attention_branch(self.self_attn, self.dropout1, x, x, mask, need_weights)
        return self.hook_attn_out(attended), weights  # (B, T, D)

    def _ca_block(self, x: Tensor, memory: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        # queries come from the decoder (x); keys and values from the encoder's output (memory)
        crossed, weights = attention_branch(self.cross_attn, self.dropout2, x, memory, mask, need_weights)
        return self.hook_cross_attn_out(crossed), weights  # (B, T, D)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.hook_mlp_out(self.dropout3(self.ff(x)))

    # --- one incremental step (chapter 08's key/value cache): the same sub-layers, one new position ---

    def _sublayer(self, index: int, x: Tensor, branch: Callable[[Tensor], Tensor]) -> Tensor:
        """Residual sub-layer ``index`` (1, 2, 3) around ``branch``, with its norm placed as norm_first says."""
        norm = (self.norm1, self.norm2, self.norm3)[index - 1]
        return x + branch(norm(x)) if self.norm_first else norm(x + branch(x))  # pre-LN / post-LN (the paper)

    def self_attention_step(self, x: Tensor, keys: Tensor, values: Tensor, position: int) -> Tensor:
        """Sub-layer 1 for ONE new position: write its key and value into row ``position`` of the
        cache ``keys`` / ``values`` (in place), then attend to rows 0..position (no causal mask needed).

        Shape:
            x (B, 1, D); keys, values (B, H, capacity, Dh) -> (B, 1, D)
        """
        attn = self.self_attn

        def branch(h: Tensor) -> Tensor:
            q = split_heads(attn.w_q(h), attn.n_heads)  # (B, H, 1, Dh)
            keys[:, :, position:position + 1] = split_heads(attn.w_k(h), attn.n_heads)  # write row `position`
            values[:, :, position:position + 1] = split_heads(attn.w_v(h), attn.n_heads)
            seen_k, seen_v = keys[:, :, :position + 1], values[:, :, :position + 1]  # (B, H, position+1, Dh)
            return self.dropout1(attn.attend(q, seen_k, seen_v))  # (B, 1, D)

        return self._sublayer(1, x, branch)

    def memory_keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """The cross-attention's keys and values of ``memory``, split into heads: computed once per source.

        Shape:
            memory (B, S, D) -> keys, values (B, H, S, Dh)
        """
        attn = self.cross_attn
        return split_heads(attn.w_k(memory), attn.n_heads), split_heads(attn.w_v(memory), attn.n_heads)

    def cross_attention_step(self, x: Tensor, keys_values: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        """Sub-layer 2 with keys and values precomputed by ``memory_keys_values``.

        Shape:
            x (B, T, D); keys, values (B, H, S, Dh); mask bool (B, 1, 1, S) or None -> (B, T, D)
        """
        attn = self.cross_attn
        keys, values = keys_values

        def branch(h: Tensor) -> Tensor:
            q = split_heads(attn.w_q(h), attn.n_heads)  # (B, H, T, Dh)
            return self.dropout2(attn.attend(q, keys, values, mask))  # (B, T, D)

        return self._sublayer(2, x, branch)

    def feed_forward_step(self, x: Tensor) -> Tensor:
        """Sub-layer 3, the position-wise feed-forward network with its residual and norm: (B, T, D) -> (B, T, D)."""
        return self._sublayer(3, x, self._ff_block)

    @classmethod
    def from_torch(cls, module: nn.TransformerDecoderLayer) -> DecoderLayer:
        """Our layer with the same weights as a ``nn.TransformerDecoderLayer(batch_first=True)``."""
        return layer_from_torch(cls, module, nn.TransformerDecoderLayer)


class Decoder(LayerStack):
    """``n_layers`` copies of one ``DecoderLayer`` (see ``LayerStack``); every layer reads the same ``memory``.

    Shape:
        x: (B, T, D), memory: (B, S, D), masks as in ``DecoderLayer`` -> (B, T, D);
        ``forward_with_weights`` -> Attended(output (B, T, D), weights: n_layers × (self (B, H, T, T), cross (B, H, T, S)))
    """

    layer_type = DecoderLayer
    torch_type = nn.TransformerDecoder

    def forward(self, x: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None) -> Tensor:
        return self._forward(x, memory, tgt_mask, memory_mask, need_weights=False).output  # (B, T, D)

    def forward_with_weights(self, x: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                             memory_mask: Tensor | None = None) -> Attended[list[tuple[Tensor, Tensor]]]:
        """``forward``'s output and each layer's (self (B, H, T, T), cross (B, H, T, S)) weights, layer 0 first."""
        return self._forward(x, memory, tgt_mask, memory_mask, need_weights=True)

    def _forward(self, x: Tensor, memory: Tensor, tgt_mask: Tensor | None, memory_mask: Tensor | None,
                 need_weights: bool) -> Attended[list[tuple[Tensor, Tensor]]]:
        return self._run(x, need_weights, memory, tgt_mask, memory_mask)  # the SAME memory for every layer
