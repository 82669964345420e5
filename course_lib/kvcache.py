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

import torch
from torch import Tensor

from .attention import padding_mask
from .decoder import DecoderLayer
from .decoding import check_src, decode_limits, greedy_loop  # the same loop and rules as decoding.greedy_decode
from .model import Transformer, inference
from .validate import check_int

__all__ = ["IncrementalDecoder", "greedy_decode_cached", "cache_bytes"]


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
        self.layers = [layer for layer in model.decoder.layers if isinstance(layer, DecoderLayer)]
        if len(self.layers) != len(model.decoder.layers):
            raise TypeError("IncrementalDecoder needs a decoder made of course_lib DecoderLayers (their step methods)")
        self.cross_kv = [layer.memory_keys_values(memory) for layer in self.layers]  # (B, H, S, Dh) each, once
        b, dh = src.shape[0], c.d_model // c.n_heads
        shape = (c.n_layers, b, c.n_heads, capacity, dh)  # one slot per position, filled step by step
        self.keys = memory.new_zeros(shape)  # (N, B, H, capacity, Dh)
        self.values = memory.new_zeros(shape)  # (N, B, H, capacity, Dh)

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token per row at position ``self.length``; return next-token logits (B, V)."""
        m = self.model
        if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
            got = f"dtype {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(f"step expects one token id per row: an integer tensor of shape (B,) = ({self.keys.shape[1]},), "
                            f"got {got}")
        if tokens.dim() != 1 or tokens.shape[0] != self.keys.shape[1]:
            raise ValueError(f"step expects one token id per row, shape (B,) = ({self.keys.shape[1]},), "
                             f"got {tuple(tokens.shape)}")
        if self.length >= self.capacity:
            raise ValueError(f"the cache is full: {self.capacity} tokens fed already (capacity); "
                             "build the IncrementalDecoder with a larger capacity")
        x = m.pos(m.tgt_embed(tokens[:, None]), start=self.length)  # (B, 1, D) at its true position
        for i, layer in enumerate(self.layers):
            x = layer.self_attention_step(x, self.keys[i], self.values[i], self.length)  # (B, 1, D)
            x = layer.cross_attention_step(x, self.cross_kv[i], self.cross_mask)  # (B, 1, D)
            x = layer.feed_forward_step(x)  # (B, 1, D)
        if m.decoder.norm is not None:  # pre-LN stacks end with one more LayerNorm
            x = m.decoder.norm(x)
        self.length += 1
        return m.generator(x[:, 0])  # (B, V)


def cache_bytes(model: Transformer, batch: int, length: int) -> int:
    """Bytes of the self-attention cache for ``length`` tokens: keys and values, every layer."""
    if not isinstance(model, Transformer):
        raise TypeError(f"cache_bytes needs a course_lib.model.Transformer, got {type(model).__name__}")
    check_int(batch, "batch", minimum=0)
    check_int(length, "length", minimum=0)
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

        def step(ys: Tensor) -> Tensor:  # only the newest token goes in; the cache holds the rest
            return decoder.step(ys[:, -1])  # (B, V)

        return greedy_loop(step, limits, bos_id, eos_id, pad_id)
