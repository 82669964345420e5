"""Chapter 08 · Incremental decoding with a key/value cache.

Greedy decoding by recomputation feeds the whole prefix ``<bos> y1 .. yt`` through the decoder at
every step, so step ``t`` redoes the work of every earlier step: ``O(L²)`` token passes for ``L``
output tokens. Nothing earlier changes when a token is appended (the self-attention is causal), so
the keys and values that earlier positions produced can be kept and reused:

* each decoder layer's **self-attention** keys/values grow by one row per step (the cache);
* each layer's **cross-attention** keys/values come from the encoder's memory, which never
  changes: they are computed once, before the first step.

Every weight used here belongs to the chapter 07 ``Transformer`` (``layer.self_attn.w_q`` ...);
only the order of the work changes. Chapter 07's ``decoding.greedy_decode`` is the slow reference
that the tests and chapter 08 compare against: ``greedy_decode_cached`` runs the same greedy loop
with the same rules, so the two differ only in how a step's logits are computed.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .attention import padding_mask
from .decoding import check_src, decode_limits, inference  # the same rules as decoding.greedy_decode
from .model import Transformer
from .multihead import MultiHeadAttention, split_heads

__all__ = ["IncrementalDecoder", "greedy_decode_cached", "cache_bytes"]

def _residual(layer: nn.Module, index: int, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
    """One residual sub-layer of ``layer`` with its ``norm{index}``, placed as ``layer.norm_first`` says."""
    norm = getattr(layer, f"norm{index}")
    if layer.norm_first:
        return x + sublayer(norm(x))  # pre-LN: normalise the branch's input
    return norm(x + sublayer(x))  # post-LN (the paper): normalise the sum


class IncrementalDecoder:
    """Decoding state for one batch of sources: the memory's K/V and each layer's growing K/V.

    ``step(tokens)`` feeds the newest target token of every row (``<bos>`` first) and returns
    the logits for the next one, exactly what ``model.decode(prefix, memory)[:, -1]`` gives for
    the whole prefix. The state lives in this object, never on the model.

    Args:
        capacity: the most tokens ``step`` may be fed (default ``model.config.max_len``).
    Shape:
        src (B, S) ids; src_mask bool (B, 1, S), None builds the padding mask
        step: tokens (B,) ids -> logits (B, V)
    """

    def __init__(self, model: Transformer, src: Tensor, src_mask: Tensor | None = None,
                 capacity: int | None = None) -> None:
        if not isinstance(model, Transformer):
            raise TypeError(f"IncrementalDecoder needs a course_lib.model.Transformer, got {type(model).__name__}")
        c = model.config
        capacity = c.max_len if capacity is None else capacity
        if not isinstance(capacity, int) or not 1 <= capacity <= c.max_len:
            raise ValueError(f"capacity must be an int in 1..{c.max_len} (the model's max_len, the size of its "
                             f"positional table), got {capacity!r}")
        self.model, self.capacity, self.length = model, capacity, 0
        self.src_mask = padding_mask(src, c.pad_id) if src_mask is None else src_mask  # (B, 1, S)
        memory = model.encode(src, self.src_mask)  # (B, S, D): the encoder runs once
        self.cross_mask = self.src_mask.unsqueeze(1)  # (B, 1, 1, S): every head, the one query
        self.cross_kv = [(split_heads(layer.cross_attn.w_k(memory), c.n_heads),  # (B, H, S, Dh)
                          split_heads(layer.cross_attn.w_v(memory), c.n_heads))  # (B, H, S, Dh)
                         for layer in model.decoder.layers]
        b, dh = src.shape[0], c.d_model // c.n_heads
        shape = (c.n_layers, b, c.n_heads, capacity, dh)  # one slot per position, filled step by step
        self.keys = memory.new_zeros(shape)  # (N, B, H, capacity, Dh)
        self.values = memory.new_zeros(shape)  # (N, B, H, capacity, Dh)

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row at position ``self.length``; return next-token logits (B, V)."""
        m = self.model
        if tokens.dim() != 1 or tokens.shape[0] != self.keys.shape[1]:
            raise ValueError(f"step expects one token id per row, shape (B,) = ({self.keys.shape[1]},), "
                             f"got {tuple(tokens.shape)}")
        if self.length >= self.capacity:
            raise ValueError(f"the cache is full: {self.capacity} tokens fed already (capacity); "
                             "build the IncrementalDecoder with a larger capacity")
        x = m.pos(m.tgt_embed(tokens[:, None]), start=self.length)  # (B, 1, D) at its true position
        for i, layer in enumerate(m.decoder.layers):
            x = _residual(layer, 1, x, lambda h: layer.dropout1(self._self_attend(i, layer.self_attn, h)))
            x = _residual(layer, 2, x, lambda h: layer.dropout2(self._cross_attend(i, layer.cross_attn, h)))
            x = _residual(layer, 3, x, layer._ff_block)  # (B, 1, D)
        if m.decoder.norm is not None:  # pre-LN stacks end with one more LayerNorm
            x = m.decoder.norm(x)
        self.length += 1
        return m.generator(x[:, 0])  # (B, V)

    def _self_attend(self, i: int, attn: MultiHeadAttention, h: Tensor) -> Tensor:
        t, n_heads = self.length, attn.n_heads
        q = split_heads(attn.w_q(h), n_heads)  # (B, H, 1, Dh)
        self.keys[i, :, :, t:t + 1] = split_heads(attn.w_k(h), n_heads)  # write row t of the cache
        self.values[i, :, :, t:t + 1] = split_heads(attn.w_v(h), n_heads)
        keys, values = self.keys[i, :, :, :t + 1], self.values[i, :, :, :t + 1]  # (B, H, t+1, Dh)
        return attn.attend(q, keys, values)  # (B, 1, D): positions 0..t, so no causal mask needed

    def _cross_attend(self, i: int, attn: MultiHeadAttention, h: Tensor) -> Tensor:
        q = split_heads(attn.w_q(h), attn.n_heads)  # (B, H, 1, Dh)
        keys, values = self.cross_kv[i]  # (B, H, S, Dh), computed once from the memory
        return attn.attend(q, keys, values, self.cross_mask)  # (B, 1, D)


def cache_bytes(model: Transformer, batch: int, length: int) -> int:
    """Bytes of the self-attention cache for ``length`` tokens: keys and values, every layer."""
    c, size = model.config, next(model.parameters()).element_size()
    return 2 * c.n_layers * batch * length * c.d_model * size


def greedy_decode_cached(model: Transformer, src: Tensor, max_len: int | None = None, bos_id: int = 1,
                         eos_id: int = 2, src_mask: Tensor | None = None) -> Tensor:
    """Greedy decoding with a key/value cache: the same tokens as ``decoding.greedy_decode``, far less work.

    The same loop and rules as chapter 07's version: the generated ids without ``<bos>``, ``<pad>``
    after a row's ``<eos>``, at most ``max_len`` tokens (by default 2 S + 10 for a row of S source
    tokens). An ``eos_id`` that no token has (e.g. -1) never stops early: always ``max_len`` tokens.

    Shape:
        src (B, S) ids -> (B, L) ids, L <= max_len
    """
    src, pad_id = check_src(model, src), model.config.pad_id
    with inference(model):  # eval mode (no dropout), no gradients; the model's mode is restored after
        src_mask = padding_mask(src, pad_id) if src_mask is None else src_mask.to(src.device)  # (B, 1, S)
        limits = decode_limits(model, src_mask, max_len)  # (B,) tokens each row may produce
        decoder = IncrementalDecoder(model, src, src_mask, capacity=int(limits.max()))  # the encoder runs here, once
        tokens = torch.full((src.shape[0],), bos_id, dtype=torch.long, device=src.device)  # (B,) <bos> first
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)  # (B,)
        out = []
        for t in range(1, decoder.capacity + 1):
            tokens = decoder.step(tokens).argmax(dim=-1).masked_fill(done, pad_id)  # (B,) rows that ended get <pad>
            done |= (tokens == eos_id) | (limits <= t)
            out.append(tokens)
            if done.all():
                break
    return torch.stack(out, dim=1)  # (B, L)
