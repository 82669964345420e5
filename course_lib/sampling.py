"""Chapter 09 · Choosing the next token: greedy, temperature, top-k, top-p, and a generation loop.

Each rule is a small function on a batch of next-token logits (B, V). ``generate`` feeds a
decoder-only model (``gpt.GPT`` or ``llama.Llama``) one new token at a time with a ``KVCache``,
chapter 08's idea: the prompt runs once, then each step computes only the newest position.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .gpt import KVCache

__all__ = ["apply_temperature", "generate", "greedy", "sample_next", "top_k_filter", "top_p_filter"]


def _check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        got = f"{logits.dtype} {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"expected next-token logits: a floating tensor of shape (B, V), got {got}")
    return logits


def greedy(logits: Tensor) -> Tensor:
    """The most likely token of every row. Shape: (B, V) -> (B,)"""
    return _check_logits(logits).argmax(dim=-1)  # (B,)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``: below 1 sharpens the distribution, above 1 flattens it. Shape: (B, V)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy for temperature 0), got {temperature!r}")
    return _check_logits(logits) / temperature  # (B, V)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of every row, set the others to -inf (ties at the k-th value are kept).

    Shape: (B, V) -> (B, V)
    """
    logits = _check_logits(logits)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive int, got {k!r}")
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))  # (B, V)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``.

    The token that makes the running sum cross ``p`` is kept; the most likely token always is.
    Shape: (B, V) -> (B, V), the dropped tokens at -inf
    """
    logits = _check_logits(logits)
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)  # (B, V) most likely first
    before = probs.cumsum(dim=-1) - probs  # (B, V) probability of the tokens ranked above each one
    drop_sorted = before >= p  # the set had reached p before this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, V) back in vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """One next token per row: greedy when ``temperature == 0``, else sampled after the filters.

    Order: temperature, then top-k, then top-p (the order ``transformers`` uses).
    Shape: (B, V) -> (B,)
    """
    if temperature == 0:
        return greedy(logits)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)  # (B,)


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             generator: torch.Generator | None = None, use_cache: bool = True) -> Tensor:
    """Continue ``prompt`` by up to ``max_new_tokens`` tokens; rows that produced ``eos_id`` get more ``eos_id``.

    With ``use_cache=False`` every step reruns the whole sequence (the slow reference; same tokens).
    Shape: prompt (B, T) ids -> (B, T + n) ids, n <= max_new_tokens
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    max_len = getattr(getattr(model, "config", None), "max_len", None)
    if max_len is not None and prompt.shape[-1] + max_new_tokens > max_len:
        raise ValueError(f"a prompt of {prompt.shape[-1]} tokens plus max_new_tokens = {max_new_tokens} exceeds the "
                         f"model's max_len = {max_len} positions; ask for at most {max_len - prompt.shape[-1]} new tokens")
    was_training = model.training
    model.eval()
    try:
        cache = KVCache() if use_cache else None
        ids, new = prompt, prompt
        done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)  # (B,)
        for _ in range(max_new_tokens):
            logits = model(new, cache)[:, -1] if use_cache else model(ids)[:, -1]  # (B, V)
            token = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            if eos_id is not None:
                token = token.masked_fill(done, eos_id)
                done |= token == eos_id
            ids = torch.cat([ids, token[:, None]], dim=1)  # (B, T + 1)
            new = token[:, None]  # (B, 1): the cache holds the rest
            if eos_id is not None and done.all():
                break
        return ids
    finally:
        model.train(was_training)
