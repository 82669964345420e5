"""Checkers of chapter 02: the solutions pass, stubs propagate NotImplementedError, classic mistakes get their hint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.course import checks
from course_lib.course.checks import CheckFailed

ch02 = checks.ch02


def stub(*args, **kwargs):
    raise NotImplementedError("write it")


@pytest.mark.parametrize("name", ch02.__all__)
def test_stubs_propagate_not_implemented(name):
    with pytest.raises(NotImplementedError):
        getattr(ch02, name)(stub)


# --- Exercise 1: positional encoding -------------------------------------------------------------

def pe_solution(max_len, d_model):  # as in solutions/02_embeddings.ipynb
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (D/2,)
    angle = pos / 10000 ** (two_i / d_model)  # (max_len, D/2)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe


def pe_loops(max_len, d_model):  # plain loops, float64, the log-space frequency of many codebases
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    for pos in range(max_len):
        for i in range(d_model // 2):
            w = math.exp(-math.log(10000.0) * 2 * i / d_model)
            pe[pos, 2 * i] = math.sin(pos * w)
            pe[pos, 2 * i + 1] = math.cos(pos * w)
    return pe


def pe_stack(max_len, d_model):  # stack sin/cos on a new last axis, then flatten: interleaves
    pos = torch.arange(max_len).float().unsqueeze(1)
    freq = torch.pow(10000.0, -torch.arange(0, d_model, 2).float() / d_model)
    return torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).reshape(max_len, d_model)


def test_pe_solutions_pass(capsys):
    for fn in (pe_solution, pe_loops, pe_stack):
        ch02.positional_encoding(fn)
    assert capsys.readouterr().out.count("✓ positional_encoding") == 3


def _pe(max_len, d_model, *, base=10000.0, start=0, swap=False, exponent="2i", halves=False, mul=False):
    pos = torch.arange(start, start + max_len, dtype=torch.float32)[:, None]
    i = torch.arange(0, d_model, 2, dtype=torch.float32)
    e_sin = {"2i": i, "i": i / 2, "j": i}[exponent] / d_model
    e_cos = {"2i": i, "i": i / 2, "j": i + 1}[exponent] / d_model
    f = (lambda e: pos * base**e) if mul else (lambda e: pos / base**e)
    s, c = torch.sin(f(e_sin)), torch.cos(f(e_cos))
    if swap:
        s, c = torch.cos(f(e_sin)), torch.sin(f(e_cos))
    if halves:
        return torch.cat([s, c], dim=1)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2], pe[:, 1::2] = s, c
    return pe


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, d: _pe(n, d, swap=True), "you swapped them"),
    (lambda n, d: _pe(n, d, exponent="i"), "you used i / d_model"),
    (lambda n, d: _pe(n, d, exponent="j"), "share ONE frequency"),
    (lambda n, d: _pe(n, d, base=1000.0), "the base is 10000.*you used 1000\n"),
    (lambda n, d: _pe(n, d, base=math.e), "the base is 10000"),
    (lambda n, d: _pe(n, d, halves=True), "you put all the sines in the first half"),
    (lambda n, d: _pe(n, d, start=1), "positions start at 0"),
    (lambda n, d: _pe(n, d, mul=True), "you multiplied by it"),
    (lambda n, d: _pe(n, d, base=3000.0), "columns 0 and 1 are right"),
    (lambda n, d: _pe(n, d).T, "not its transpose"),
    (lambda n, d: _pe(n, d).long(), "a float tensor"),
    (lambda n, d: _pe(n, d)[:-1], r"shape \(max_len, d_model\)"),
    (lambda n, d: _pe(n, d).numpy(), "return a tensor of shape"),
    (lambda n, d: _pe(n, d) + 0.01, "PE\\[pos, 2i\\] = sin"),
])
def test_pe_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch02.positional_encoding(wrong)


# --- Exercise 2: cosine similarity ---------------------------------------------------------------

def cos_solution(a, b):
    a_unit = a / a.norm(dim=-1, keepdim=True)
    b_unit = b / b.norm(dim=-1, keepdim=True)
    return a_unit @ b_unit.T


def cos_loops(a, b):  # loops over pairs with torch.dot
    out = torch.zeros(len(a), len(b), dtype=a.dtype)
    for n in range(len(a)):
        for m in range(len(b)):
            out[n, m] = torch.dot(a[n], b[m]) / (torch.linalg.norm(a[n]) * torch.linalg.norm(b[m]))
    return out


def cos_broadcast(a, b):  # PyTorch's own, broadcast to every pair
    return F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)


def test_cos_solutions_pass(capsys):
    for fn in (cos_solution, cos_loops, cos_broadcast):
        ch02.cosine_similarity(fn)
    assert capsys.readouterr().out.count("✓ cosine_similarity") == 3


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, b: a @ b.T, "raw dot products"),
    (lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, "not dim=0"),
    (lambda a, b: a @ F.normalize(b, dim=-1).T, "you normalised only b"),
    (lambda a, b: F.normalize(a, dim=-1) @ b.T, "you normalised only a"),
    (lambda a, b: (a @ b.T) / (a.norm(dim=-1)[:, None] ** 2 * b.norm(dim=-1)[None] ** 2), "not the squared norms"),
    (lambda a, b: torch.cdist(a, b), "not a distance"),
    (lambda a, b: cos_solution(b, a), r"multiply a by b.T"),
    (lambda a, b: cos_solution(a, b).sum(), r"\(N, M\) matrix"),
    (lambda a, b: cos_solution(a, b).abs(), "normalise every row"),
])
def test_cos_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch02.cosine_similarity(wrong)


# --- Exercise 3: one-hot lookup ------------------------------------------------------------------

def one_hot_solution(ids, weight):
    one_hot = F.one_hot(ids, num_classes=weight.shape[0]).to(weight.dtype)  # (B, T, V)
    return one_hot @ weight  # (B, T, D)


def one_hot_eye(ids, weight):  # rows of an identity matrix are one-hot vectors; einsum for the product
    one_hot = torch.eye(weight.shape[0], dtype=weight.dtype)[ids]
    return torch.einsum("btv,vd->btd", one_hot, weight)


def one_hot_index(ids, weight):  # the lookup itself: what the one-hot product computes
    return weight[ids]


def test_one_hot_solutions_pass(capsys):
    for fn in (one_hot_solution, one_hot_eye, one_hot_index):
        ch02.one_hot_lookup(fn)
    assert capsys.readouterr().out.count("✓ one_hot_lookup") == 3


@pytest.mark.parametrize("wrong, hint", [
    (lambda ids, w: F.one_hot(ids).to(w.dtype) @ w, "num_classes=weight.shape\\[0\\]"),
    (lambda ids, w: F.one_hot(ids, w.shape[0]) @ w, "convert it with .to\\(weight.dtype\\)"),
    (lambda ids, w: F.one_hot(ids, w.shape[0]).float() @ w, "not .float\\(\\)"),
    (lambda ids, w: F.one_hot(ids, w.shape[0]).to(w.dtype) @ w.T, "not weight.T"),
    (lambda ids, w: w.T[ids] if w.shape[0] == w.shape[1] else w[ids], "not weight.T"),
    (lambda ids, w: (F.one_hot(ids, w.shape[0]).to(w.dtype) @ w).reshape(-1, w.shape[1]), "keep the batch shape"),
    (lambda ids, w: w[ids] * math.sqrt(w.shape[1]), "no sqrt\\(d_model\\) scaling"),
    (lambda ids, w: w[ids].float(), "not .float\\(\\)"),
    (lambda ids, w: w[ids.flip(-1)], "picks row ids\\[b, t\\]"),
])
def test_one_hot_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch02.one_hot_lookup(wrong)


# --- Exercise 4: scaled embedding ----------------------------------------------------------------

def scaled_solution(ids, weight):
    return weight[ids] * math.sqrt(weight.shape[1])


def scaled_via_functional(ids, weight):
    d_model = weight.size(-1)
    return F.embedding(ids, weight) * d_model**0.5


def test_scaled_solutions_pass(capsys):
    for fn in (scaled_solution, scaled_via_functional, lambda ids, w: one_hot_solution(ids, w) * math.sqrt(w.shape[1])):
        ch02.scaled_embedding(fn)
    assert capsys.readouterr().out.count("✓ scaled_embedding") == 3


def scaled_in_place(ids, weight):
    weight *= math.sqrt(weight.shape[1])
    return weight[ids]


@pytest.mark.parametrize("wrong, hint", [
    (lambda ids, w: w[ids], "you returned the rows unscaled"),
    (lambda ids, w: w[ids] / math.sqrt(w.shape[1]), "do not divide"),
    (lambda ids, w: w[ids] * w.shape[1] ** -0.5, "do not divide"),
    (lambda ids, w: w[ids] * math.sqrt(w.shape[0]), "not of the vocabulary size"),
    (lambda ids, w: w[ids] * w.shape[1], "not by d_model itself"),
    (lambda ids, w: w[ids] / w.shape[1], "you divided by d_model"),
    (scaled_in_place, "weight changed in place(.|\\n)*do not change your inputs in place"),
    (lambda ids, w: w * math.sqrt(w.shape[1]), "look the rows up first"),
    (lambda ids, w: (w[ids] * math.sqrt(w.shape[1])).float(), "keep weight's dtype"),
])
def test_scaled_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch02.scaled_embedding(wrong)
