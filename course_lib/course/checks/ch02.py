"""Checkers for chapter 02 (embeddings): positional encoding, cosine similarity, lookups.

References are small formulas written here with PyTorch built-ins; no course model module is
imported. Each classic mistake is computed here too: when the learner's answer equals a mistake's
answer, the checker names that mistake.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from . import CheckFailed, call, call_untouched, checker, describe, expect_close, expect_shape, fail, load_hints, ok

__all__ = ["positional_encoding", "cosine_similarity", "one_hot_lookup", "scaled_embedding"]

HINTS = load_hints("ch02")


# --- Exercise 1: the sinusoidal positional encoding ----------------------------------------------

def _pe(n: int, d: int, *, base: float = 10000.0, start: int = 0, swap: bool = False, exponent: str = "2i",
        halves: bool = False, multiply: bool = False) -> torch.Tensor:
    """The table and its classic mistakes, in float64."""
    pos = torch.arange(start, start + n, dtype=torch.float64)[:, None]  # (n, 1)
    col = torch.arange(d, dtype=torch.float64)  # (d,)
    power = {"2i": 2 * (col // 2), "i": col // 2, "j": col}[exponent] / d  # (d,)
    angle = pos * base**power if multiply else pos / base**power  # (n, d)
    sin_here = (col % 2 == 0) != swap  # (d,)
    pe = torch.where(sin_here, torch.sin(angle), torch.cos(angle))  # (n, d)
    return torch.cat([pe[:, 0::2], pe[:, 1::2]], dim=1) if halves else pe


_PE_MISTAKES: list[tuple[str, dict[str, Any]]] = [
    ("sin goes in the EVEN columns (0, 2, 4, ...) and cos in the ODD ones; you swapped them", {"swap": True}),
    ("interleave the columns: sin in 0, 2, 4, ... and cos in 1, 3, 5, ...; you put all the sines in the first half "
     "and all the cosines in the second (some code does that, but the formula PE[pos, 2i], PE[pos, 2i+1] interleaves)",
     {"halves": True}),
    ("the exponent is 2i / d_model where i counts sin/cos PAIRS (columns 2i and 2i+1 share one frequency); "
     "you used i / d_model, so the frequencies fall off half as fast", {"exponent": "i"}),
    ("columns 2i and 2i+1 share ONE frequency: use the even index 2i in the exponent for both; "
     "you used the column's own index (2i+1 for the cos column)", {"exponent": "j"}),
    ("positions start at 0: use torch.arange(max_len), so that row 0 is [0, 1, 0, 1, ...]; you started at 1",
     {"start": 1}),
    ("divide the position by 10000 ** (2i / d_model); you multiplied by it", {"multiply": True}),
    ("sin and cos swapped AND the two halves concatenated: sin in the even columns, cos in the odd ones, interleaved",
     {"swap": True, "halves": True}),
]
_BASES = (1000.0, 100.0, 10.0, 100000.0, 1000000.0, math.e, 2.0)


@checker("ch02.positional_encoding")
def positional_encoding(fn: Callable[[int, int], torch.Tensor]) -> None:
    """Check ``positional_encoding(max_len, d_model) -> (max_len, d_model)`` against the paper's formula."""
    for n, d in [(12, 8), (50, 16), (3, 2), (1, 6), (100, 64)]:
        tried = f"positional_encoding(max_len={n}, d_model={d})"
        got = call(fn, n, d, tried=tried)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (d, n) and n != d:
            fail(tried, f"shape ({n}, {d})", f"shape {tuple(got.shape)}",
                 "one ROW per position: return shape (max_len, d_model), not its transpose")
        expect_shape(got, (n, d), tried=tried, hint="return a tensor of shape (max_len, d_model): one row per position")
        if not got.is_floating_point():
            fail(tried, "a float tensor", describe(got), "sin and cos are floats: build the positions with dtype=torch.float")
        mistakes = [(hint, _pe(n, d, **kw)) for hint, kw in _PE_MISTAKES]
        mistakes += [(f"the base is 10000 (pos / 10000 ** (2i / d_model)); you used {b:g}", _pe(n, d, base=b))
                     for b in _BASES]
        hint = "PE[pos, 2i] = sin(pos / 10000 ** (2i / d_model)), PE[pos, 2i+1] = cos(pos / 10000 ** (2i / d_model))"
        got64 = got.detach().double()
        ref = _pe(n, d)
        if n > 1 and d > 2 and torch.allclose(got64[:, :2], ref[:, :2], atol=1e-5) and not torch.allclose(got64, ref, atol=1e-5):
            hint = ("columns 0 and 1 are right but later ones are not: check the frequency of pair i, "
                    "1 / 10000 ** (2i / d_model)")
        expect_close(got64, ref, tried=tried, hint=hint, mistakes=mistakes, atol=1e-5, rtol=1e-4)
    ok("positional_encoding: sin in even columns, cos in odd ones, frequencies 1/10000^(2i/d), positions from 0")


# --- Exercise 2: cosine similarity ---------------------------------------------------------------

def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (N, M)


@checker("ch02.cosine_similarity")
def cosine_similarity(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``cosine_similarity(a (N, D), b (M, D)) -> (N, M)``: the cosine of every pair of rows."""
    gen = torch.Generator().manual_seed(2)
    scales_a = torch.tensor([0.2, 1.0, 3.0, 7.0, 0.5], dtype=torch.float64)[:, None]
    a = torch.randn(5, 6, generator=gen, dtype=torch.float64) * scales_a  # rows of very different lengths
    b = torch.randn(3, 6, generator=gen, dtype=torch.float64) * torch.tensor([[4.0], [0.3], [1.5]], dtype=torch.float64)
    hand_a = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    hand_b = torch.tensor([[3.0, 0.0], [-1.0, 0.0], [0.0, 0.5]])
    cases = [(a, b, "a of shape (5, 6), b of shape (3, 6), rows of different lengths"),
             (hand_a, hand_b, "a = [[1,0],[2,0],[0,3],[1,1]], b = [[3,0],[-1,0],[0,0.5]] (expect 1, -1, 0, 0.7071)"),
             (a[:1], b, "a with ONE row (1, 6) and b (3, 6)"),
             (a[:3, :3], b[:, :3], "square inputs: a (3, 3), b (3, 3)")]
    for x, y, what in cases:
        tried = f"cosine_similarity({what})"
        got = call(fn, x.clone(), y.clone(), tried=tried)
        n, m = len(x), len(y)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (m, n) and n != m:
            fail(tried, f"shape ({n}, {m})", f"shape {tuple(got.shape)}",
                 "entry [n, m] compares a[n] with b[m]: multiply a by b.T (not b by a.T)")
        expect_shape(got, (n, m), tried=tried, hint="return an (N, M) matrix: one cosine per pair (row of a, row of b)")
        na, nb = x.norm(dim=-1, keepdim=True), y.norm(dim=-1, keepdim=True)
        mistakes = [
            ("divide by the lengths: cos = a . b / (|a| |b|); you returned the raw dot products", x @ y.T),
            ("normalise each VECTOR (each row) to length 1: take the norm over dim=-1 (the features), "
             "not dim=0 (across the vectors)", F.normalize(x, dim=0) @ F.normalize(y, dim=0).T),
            ("normalise BOTH a and b (you normalised only b)", x @ F.normalize(y, dim=-1).T),
            ("normalise BOTH a and b (you normalised only a)", F.normalize(x, dim=-1) @ y.T),
            ("divide by the norms |a| |b|, not the squared norms (.norm() already takes the square root)",
             (x @ y.T) / (na**2 * nb.T**2)),
            ("cosine similarity is a normalised dot product, not a distance", torch.cdist(x, y)),
        ]
        expect_close(got.detach().double(), _cos(x.double(), y.double()), tried=tried, mistakes=mistakes,
                     hint="normalise every row of a and of b to length 1 (over dim=-1), then take a @ b.T",
                     atol=1e-5, rtol=1e-4)
    ok("cosine_similarity: every pair of rows, invariant to the vectors' lengths")


# --- Exercise 3: an embedding lookup as one-hot x matrix ----------------------------------------

def _crash(fn: Callable[..., Any], *args: Any) -> Exception | None:
    try:
        fn(*args)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:
        return err
    return None


@checker("ch02.one_hot_lookup")
def one_hot_lookup(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``one_hot_lookup(ids (B, T), weight (V, D)) -> (B, T, D)`` (the rows of weight)."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(7, 3, generator=gen)
    full = torch.tensor([[0, 6, 2, 2], [5, 1, 3, 6]])  # contains the last id, V - 1 = 6
    low = torch.tensor([[0, 4, 2, 2], [1, 1, 3, 0]])  # largest id 4 < V - 1
    err_full, err_low = _crash(fn, full, w.clone()), _crash(fn, low, w.clone())
    if err_low is not None and err_full is None:
        fail("one_hot_lookup(ids whose largest id is 4, weight of shape (7, 3))", "shape (2, 4, 3)",
             f"{type(err_low).__name__}: {err_low}",
             "F.one_hot(ids) guesses the number of classes from the largest id in THIS batch: "
             "pass num_classes=weight.shape[0] (V)")
    if err_full is not None:
        text = str(err_full)
        hint = "run your function on this input yourself and read the error"
        if "dtype" in text or "Long" in text or "Int" in text:
            hint = "F.one_hot returns integers: convert it with .to(weight.dtype) before the matrix product"
        elif "shapes cannot be multiplied" in text or "size mismatch" in text or "must match" in text:
            hint = "one_hot(ids) is (B, T, V) and weight is (V, D): multiply by weight itself, not weight.T"
        fail("one_hot_lookup(ids of shape (2, 4), weight of shape (7, 3))", "shape (2, 4, 3)",
             f"{type(err_full).__name__}: {err_full}", hint)
    w64 = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    err64 = _crash(fn, full, w64.clone())
    if err64 is not None:
        fail("one_hot_lookup(ids, weight in float64)", "a float64 result", f"{type(err64).__name__}: {err64}",
             "make the one-hot matrix in weight's own dtype: .to(weight.dtype), not .float()")
    square = torch.randn(5, 5, generator=gen)
    cases = [(full, w, "ids (2, 4), weight (7, 3)"), (low, w, "ids (2, 4) without id 6, weight (7, 3)"),
             (full, w64, "ids (2, 4), weight (7, 3) in float64"),
             (torch.tensor([[4, 0, 3]]), square, "ids [[4, 0, 3]], a square weight (5, 5)"),
             (torch.tensor([[2], [0], [1]]), w, "ids of shape (3, 1)")]
    for ids, weight, what in cases:
        tried = f"one_hot_lookup({what})"
        got = call(fn, ids.clone(), weight.clone(), tried=tried)
        if isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape[0] == ids.numel():
            fail(tried, f"shape {(*ids.shape, weight.shape[1])}", f"shape {tuple(got.shape)}",
                 "keep the batch shape: one_hot(ids) is (B, T, V), so the product is (B, T, D)")
        mistakes = [
            ("this is the plain lookup: no sqrt(d_model) scaling here (that comes in the next exercise)",
             weight[ids] * math.sqrt(weight.shape[1])),
        ]
        if weight.shape[0] == weight.shape[1]:
            mistakes.append(("multiply by weight (V, D), not weight.T", weight.T[ids]))
        expect_close(got, weight[ids], tried=tried, mistakes=mistakes, atol=1e-6, rtol=1e-5,
                     hint="F.one_hot(ids, num_classes=V).to(weight.dtype) @ weight picks row ids[b, t] of weight")
        if got.dtype != weight.dtype:
            fail(tried, f"dtype {weight.dtype}", f"dtype {got.dtype}",
                 "make the one-hot matrix in weight's own dtype: .to(weight.dtype), not .float()")
    ok("one_hot_lookup: one_hot(ids) @ weight picks exactly the rows weight[ids]")


# --- Exercise 4: the scaled embedding ------------------------------------------------------------

@checker("ch02.scaled_embedding")
def scaled_embedding(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``scaled_embedding(ids (B, T), weight (V, D)) -> weight[ids] * sqrt(D)``."""
    gen = torch.Generator().manual_seed(4)
    cases = [(torch.tensor([[1, 5, 10], [0, 0, 3]]), torch.randn(11, 16, generator=gen), "ids (2, 3), weight (11, 16)"),
             (torch.tensor([[19, 2, 7, 7]]), torch.randn(20, 9, generator=gen, dtype=torch.float64),
              "ids (1, 4), weight (20, 9) in float64"),
             (torch.tensor([[3], [1]]), torch.randn(4, 25, generator=gen), "ids (2, 1), weight (4, 25)")]
    for ids, weight, what in cases:
        tried = f"scaled_embedding({what})"
        got = call_untouched(fn, ids, weight, tried=tried, names=("ids", "weight"))
        v, d = weight.shape
        rows = weight[ids]  # (B, T, D)
        mistakes = [
            ("multiply by sqrt(d_model): the table's entries have std d_model**-0.5, so scaled rows get norm about "
             "sqrt(d_model), like the positional encoding's; you returned the rows unscaled", rows),
            ("MULTIPLY by sqrt(d_model), do not divide", rows / math.sqrt(d)),
            ("scale by the square root of d_model (weight.shape[1]), not of the vocabulary size (weight.shape[0])",
             rows * math.sqrt(v)),
            ("scale by the SQUARE ROOT of d_model, not by d_model itself", rows * d),
            ("MULTIPLY by sqrt(d_model) (weight.shape[1]); you divided by d_model", rows / d),
        ]
        expect_shape(got, (*ids.shape, d), tried=tried,
                     hint="look the rows up first (weight[ids], shape (B, T, D)), then scale them")
        expect_close(got, rows * math.sqrt(d), tried=tried, mistakes=mistakes, atol=1e-5, rtol=1e-5,
                     hint="return weight[ids] * math.sqrt(d_model) with d_model = weight.shape[1]")
        if got.dtype != weight.dtype:
            fail(tried, f"dtype {weight.dtype}", f"dtype {got.dtype}", "keep weight's dtype (do not call .float())")
    ok("scaled_embedding: rows of weight times sqrt(d_model)")
