"""Checkers for chapter 11 (inside the trained model): the previous-token and induction scores of attention
patterns, the logit lens through the final norm, a patching hook, and the normalised patching metric.

References are small formulas written here on random causal attention patterns, PyTorch's ``nn.LayerNorm``
and ``nn.Linear``, and seeded tensors. No course model module is imported.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import call, checker, describe, expect_close, expect_shape, fail, load_hints, ok, randn

__all__ = ["previous_token_score", "induction_score", "logit_lens", "patch_hook", "recovery", "HINTS"]

HINTS = load_hints("ch11")


def _causal_patterns(B: int, H: int, T: int, seed: int) -> torch.Tensor:
    """Random softmax rows over the keys 0..t of each query t: (B, H, T, T), float64."""
    scores = randn(B, H, T, T, seed=seed, scale=2.0)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)  # (B, H, T, T)


def _diagonal_mean(pattern: torch.Tensor, offset: int, first_query: int) -> torch.Tensor:
    """Mean over the batch and the queries >= first_query of pattern[b, h, t, t + offset]."""
    T = pattern.shape[-1]
    rows = torch.arange(first_query, T)
    cols = (rows + offset).clamp(0, T - 1)
    values = pattern[:, :, rows, cols]  # (B, H, len(rows))
    values = torch.where(((rows + offset) >= 0) & ((rows + offset) < T), values, torch.zeros_like(values))
    return values.mean(dim=(0, 2))  # (H,)


_ONE_PER_HEAD = ("one score per head: average over the batch (dim 0) and the query positions, and keep the head axis "
                 "(dim 1) of the (B, H, T, T) pattern")


# --- Exercise 1: the previous-token score --------------------------------------------------------------

@checker("ch11.previous_token_score")
def previous_token_score(fn: Callable[[torch.Tensor], Any]) -> None:
    """Check ``previous_token_score(pattern (B, H, T, T)) -> (H,)``: each head's mean weight on key t - 1."""
    for B, H, T, seed in ((3, 4, 7, 1), (2, 5, 12, 2)):
        pattern = _causal_patterns(B, H, T, seed)
        tried = f"previous_token_score on random causal attention patterns of shape ({B}, {H}, {T}, {T})"
        got = call(fn, pattern.clone(), tried=tried)
        expect_shape(got, (H,), tried=tried, hint=_ONE_PER_HEAD)
        expected = _diagonal_mean(pattern, -1, 1)
        expect_close(got, expected, tried=tried, hint="average pattern[b, h, t, t - 1] over the batch and the queries t = 1..T-1",
                     mistakes=[
                         ("the previous token is the key one position BEFORE the query, t - 1 (just below the diagonal); "
                          "you read the query's own position t (the diagonal)", _diagonal_mean(pattern, 0, 0)),
                         ("the previous token is t - 1, BELOW the diagonal; above it (t + 1) lies the future, which a "
                          "causal pattern never attends to", torch.zeros(H, dtype=torch.float64)),
                         ("query 0 has no previous token: average over the T - 1 queries 1..T-1, do not count row 0 "
                          "as a zero", _diagonal_mean(pattern, -1, 1) * (T - 1) / T),
                     ])
    ok("previous_token_score: each head's mean attention from token t to token t - 1")


# --- Exercise 2: the induction score ----------------------------------------------------------------------

@checker("ch11.induction_score")
def induction_score(fn: Callable[[torch.Tensor, int], Any]) -> None:
    """Check ``induction_score(pattern (B, H, 2L, 2L), period=L) -> (H,)`` on random causal patterns."""
    for B, H, period, seed in ((2, 3, 5, 3), (3, 4, 8, 4)):
        T = 2 * period
        pattern = _causal_patterns(B, H, T, seed)
        tried = (f"induction_score(pattern, period={period}) on random causal patterns of shape ({B}, {H}, {T}, {T}) "
                 f"(a sequence of {period} random tokens, then the same {period} again)")
        got = call(fn, pattern.clone(), period, tried=tried)
        expect_shape(got, (H,), tried=tried, hint=_ONE_PER_HEAD)
        expect_close(got, _diagonal_mean(pattern, -(period - 1), period), tried=tried,
                     hint="average pattern[b, h, t, t - period + 1] over the batch and the second copy's queries t = period..T-1",
                     mistakes=[
                         ("off by one: key t - period holds the SAME token as the query (its earlier copy); the induction "
                          "head looks one further, at the token that FOLLOWED it, key t - period + 1",
                          _diagonal_mean(pattern, -period, period)),
                         ("off by one the other way: key t - period + 2 is two tokens after the earlier copy; the next token "
                          "is at t - period + 1", _diagonal_mean(pattern, -(period - 2), period)),
                         ("score only the second copy, queries period..T-1: in the first copy there is nothing earlier to "
                          "copy from (you included query period - 1)", _diagonal_mean(pattern, -(period - 1), period - 1)),
                     ])
    ok("induction_score: each head's attention to the token after the previous occurrence of the current one")


# --- Exercise 3: the logit lens through the final norm -------------------------------------------------

def _lens_case(seed: int) -> tuple[torch.Tensor, nn.LayerNorm, nn.Linear]:
    B, T, D, V = 2, 5, 8, 11
    resid = randn(B, T, D, seed=seed, scale=3.0) + 2.0  # a residual stream far from mean 0, std 1
    norm = nn.LayerNorm(D).double()
    unembed = nn.Linear(D, V, bias=False).double()
    with torch.no_grad():
        norm.weight.copy_(randn(D, seed=seed + 1) + 1.0)
        norm.bias.copy_(randn(D, seed=seed + 2))
        unembed.weight.copy_(randn(V, D, seed=seed + 3))
    return resid, norm, unembed


@checker("ch11.logit_lens")
def logit_lens(fn: Callable[..., Any]) -> None:
    """Check ``logit_lens(resid (B, T, D), ln_final, unembed) -> (B, T, V)`` on a random pre-LN model's last parts."""
    for seed in (5, 6):
        resid, norm, unembed = _lens_case(seed)
        tried = "logit_lens(resid (2, 5, 8), ln_final = nn.LayerNorm(8) with random gain and bias, unembed = nn.Linear(8, 11))"
        with torch.no_grad():
            got = call(fn, resid.clone(), norm, unembed, tried=tried)
            expected = unembed(norm(resid))
            expect_close(got, expected, tried=tried, hint="the lens reads the residual stream as the unembedding would: "
                         "through the final norm, then the unembedding", mistakes=[
                             ("the unembedding of a pre-LN model reads the FINAL NORM's output, never the raw residual stream: "
                              "apply ln_final first (without it the scale and the directions are wrong)", unembed(resid)),
                             ("use the model's own final norm, with its learned gain and bias: a fresh normalisation "
                              "(F.layer_norm without weight and bias) is not what the unembedding was trained to read",
                              unembed(F.layer_norm(resid, resid.shape[-1:]))),
                         ])
    ok("logit_lens: the residual stream through the final norm and the unembedding")


# --- Exercise 4: a hook that patches one position -------------------------------------------------------

@checker("ch11.patch_hook")
def patch_hook(fn: Callable[[torch.Tensor, int], Any]) -> None:
    """Check ``patch_hook(clean, position) -> hook(act, name)`` that returns ``act`` with one position from ``clean``."""
    for shape, position, seed in (((4, 6, 3), 2, 7), ((3, 5, 2, 3), 4, 8), ((1, 4, 5), 0, 9)):
        clean, corrupted = randn(*shape, seed=seed), randn(*shape, seed=seed + 50)
        tried = (f"hook = patch_hook(clean, position={position}); hook(act, 'blocks.0.hook_resid_pre') with act and clean "
                 f"of shape {shape}")
        hook = call(fn, clean.clone(), position, tried=tried)
        if not callable(hook):
            fail(tried, "a function hook(act, name)", describe(hook), "patch_hook returns the hook function itself "
                 "(define it inside and return it); run_with_hooks calls it with the activation and the hook's name")
        act = corrupted.clone()
        got = call(hook, act, "blocks.0.hook_resid_pre", tried=tried)
        if got is None:
            fail(tried, "the patched activation", "None", "a hook that returns None leaves the activation as it was; "
                 "return the patched tensor so that run_with_hooks uses it instead")
        if not torch.equal(act, corrupted):
            fail(tried, "the activation it was given left unchanged", "the activation changed in place",
                 "clone the activation before you patch it: changing it in place also changes what other hooks and "
                 "the rest of the forward pass see")
        expected = corrupted.clone()
        expected[:, position] = clean[:, position]
        mistakes = [("patch only the one position: everything else must stay as in the corrupted run", clean)]
        for wrong in (position - 1, position + 1):
            if 0 <= wrong < shape[1]:
                bad = corrupted.clone()
                bad[:, wrong] = clean[:, wrong]
                mistakes.append((f"you patched position {wrong} instead of {position}: positions count from 0 and the "
                                 "position is index `position` on dim 1 (B, T, ...)", bad))
        if position < shape[0]:
            bad = corrupted.clone()
            bad[position] = clean[position]
            mistakes.append(("dim 0 is the batch: the positions are dim 1 of (B, T, ...), so index [:, position]", bad))
        expect_close(got, expected, tried=tried, mistakes=mistakes,
                     hint="return a copy of the activation whose position `position` (dim 1) comes from the clean run")
    ok("patch_hook: returns the activation with one position taken from the clean run")


# --- Exercise 5: the normalised patching metric ---------------------------------------------------------

@checker("ch11.recovery")
def recovery(fn: Callable[..., Any]) -> None:
    """Check ``recovery(patched, clean, corrupted)`` (tensors of logit differences) -> 0 at corrupted, 1 at clean."""
    clean = torch.tensor([3.0, 2.5, -1.0, 4.0], dtype=torch.float64)
    corrupted = torch.tensor([-1.0, 0.5, -3.0, 1.0], dtype=torch.float64)
    patched = torch.tensor([1.0, 2.5, -3.0, 5.5], dtype=torch.float64)
    tried = f"recovery(patched={patched.tolist()}, clean={clean.tolist()}, corrupted={corrupted.tolist()})"
    got = call(fn, patched.clone(), clean.clone(), corrupted.clone(), tried=tried)
    expected = (patched - corrupted) / (clean - corrupted)
    expect_close(got, expected, tried=tried,
                 hint="0 when the patched run does as the corrupted one, 1 when it does as the clean one", mistakes=[
                     ("normalise: divide by the clean-minus-corrupted gap, so that 0 means 'as corrupted' and 1 means "
                      "'as clean' whatever the size of the logits", patched - corrupted),
                     ("measure from the corrupted run: (patched - corrupted), not from the clean one; yours is 0 at clean",
                      (patched - clean) / (clean - corrupted)),
                     ("upside down: yours is 1 at corrupted and 0 at clean", (clean - patched) / (clean - corrupted)),
                     ("a ratio to the clean run alone is not normalised: it is 0 only when the patched metric is 0, not when "
                      "it equals the corrupted one", patched / clean),
                 ])
    for p, c, x in ((clean, clean, corrupted), (corrupted, clean, corrupted)):
        edge = call(fn, p.clone(), c.clone(), x.clone(), tried="recovery with patched equal to clean (or to corrupted)")
        expect_close(edge, torch.full_like(clean, 1.0 if p is clean else 0.0), tried="recovery at the two ends",
                     hint="exactly 1 when patched equals clean and 0 when it equals corrupted")
    ok("recovery: (patched - corrupted) / (clean - corrupted), 0 = corrupted, 1 = clean")
