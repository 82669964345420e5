"""Chapter 09 · Choosing the next token: greedy, temperature, top-k, top-p, and a generation loop.

Each rule is a small function on a batch of next-token logits (B, V). ``generate`` feeds a
decoder-only model (``gpt.GPT`` or ``llama.Llama``) one new token at a time with a ``KVCache``,
chapter 08's idea: the prompt runs once, then each step computes only the newest position.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .gpt import KVCache, check_ids
from .validate import check_int, check_number

__all__ = ["NonFiniteLogitsError", "apply_temperature", "generate", "greedy", "sample_next", "top_k_filter", "top_p_filter"]


class NonFiniteLogitsError(ValueError):
    """Next-token logits with NaN or +inf, or a row whose every logit is -inf: no token can be chosen from them."""


def _check_logits(logits: object, cause: str = "") -> Tensor:
    """``logits`` if they are a floating (B, V) tensor, V >= 1, that a token can be chosen from.

    -inf is allowed (a filtered token) as long as every row keeps one finite logit; NaN and +inf are not.
    ``cause`` ends the message (what made them so, when the caller knows).
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        got = f"{logits.dtype} {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"expected next-token logits: a floating tensor of shape (B, V), got {got}")
    if logits.shape[1] == 0:
        raise ValueError(f"expected next-token logits of shape (B, V) with V >= 1 (one per vocabulary entry), "
                         f"got {tuple(logits.shape)}")
    nan, pos_inf = logits.isnan().any(dim=-1), (logits == float("inf")).any(dim=-1)  # (B,) each
    bad = nan | pos_inf | (logits == float("-inf")).all(dim=-1)  # (B,) rows no token can be chosen from
    if bad.any():  # one host synchronisation per call
        row = int(bad.nonzero()[0, 0])
        what = "NaN" if nan[row] else "+inf" if pos_inf[row] else f"every logit of row {row} is -inf"
        cause = cause or "; did the model overflow (half precision) or get NaN weights?"
        raise NonFiniteLogitsError(f"next-token logits hold {what} (first in row {row} of {logits.shape[0]}): no token "
                                   f"can be chosen from them{cause}")
    return logits


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> float:
    """The sampling settings' clear errors, raised before any work; returns the temperature as a float."""
    temperature = check_number(temperature, "temperature", 0.0, hint="0 means greedy")
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        check_number(top_p, "top_p", 0.0, 1.0, above=True)
    return temperature


def _check_top_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive int, got {k!r}")
    return k


def greedy(logits: Tensor) -> Tensor:
    """The most likely token of every row. Shape: (B, V) -> (B,)"""
    return _check_logits(logits).argmax(dim=-1)  # (B,)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``: below 1 sharpens the distribution, above 1 flattens it. Shape: (B, V)."""
    temperature = check_number(temperature, "temperature", 0.0, above=True, hint="use greedy for temperature 0")
    scaled = _check_logits(logits) / temperature  # (B, V)
    return _check_logits(scaled, f": temperature = {temperature:g} is so small that logits / temperature overflow; "
                                 "use temperature=0 (greedy) or a larger temperature")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of every row, set the others to -inf (ties at the k-th value are kept).

    Shape: (B, V) -> (B, V)
    """
    logits = _check_logits(logits)
    _check_top_k(k)
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1) the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))  # (B, V)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``p``.

    The token that makes the running sum cross ``p`` is kept; the most likely token always is.
    Shape: (B, V) -> (B, V), the dropped tokens at -inf
    """
    logits = _check_logits(logits)
    check_number(p, "top_p", 0.0, 1.0, above=True)
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
    if _check_sampling(temperature, top_k, top_p) == 0:
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
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a decoder-only language model (course_lib GPT or Llama), got {type(model).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    config: Any = model.config
    check_ids(prompt, config.vocab_size, None, name="prompt")
    _check_sampling(temperature, top_k, top_p)
    if eos_id is not None:
        check_int(eos_id, "eos_id", minimum=0)
    max_len = getattr(config, "max_len", None)
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
