"""Checkers of chapter 03: solutions in several styles pass, stubs propagate NotImplementedError,
and each classic mistake fails with its own hint."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import attention
from course_lib.course import checks
from course_lib.course.checks import CheckFailed

ch03 = checks.ch03


# --- softmax ------------------------------------------------------------------------------------

def sm_solution(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum(dim, keepdim=True)


def sm_logsumexp(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim, keepdim=True))


def sm_loops(x, dim=-1):
    moved = x.movedim(dim, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    out = torch.empty_like(rows)
    for r in range(rows.shape[0]):
        m = max(rows[r].tolist())
        e = torch.stack([torch.exp(v - m) for v in rows[r]])
        out[r] = e / e.sum()
    return out.reshape(moved.shape).movedim(-1, dim)


def sm_naive(x, dim=-1):
    return torch.exp(x) / torch.exp(x).sum(dim, keepdim=True)


def sm_global_max(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim, keepdim=True)


def sm_ignores_dim(x, dim=-1):
    return sm_solution(x, -1)


def sm_wrong_axis(x, dim=-1):
    return sm_solution(x, 0 if dim % x.dim() != 0 else 1)


def sm_no_keepdim(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True).values)
    return e / e.sum(dim)


def sm_max_tuple(x, dim=-1):
    e = torch.exp(x - x.max(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def sm_total_sum(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum()


def sm_uses_torch(x, dim=-1):
    return torch.softmax(x, dim)


def test_softmax_solutions_pass(capsys):
    for fn in (sm_solution, sm_logsumexp, sm_loops):
        ch03.softmax(fn)
    assert capsys.readouterr().out.count("✓ softmax") == 3


def test_softmax_stub_propagates():
    def stub(x, dim=-1):
        raise NotImplementedError("write softmax")
    with pytest.raises(NotImplementedError):
        ch03.softmax(stub)


@pytest.mark.parametrize("wrong, hint", [
    (sm_naive, "subtract each slice's maximum before exp"),
    (sm_global_max, "each slice's OWN maximum"),
    (sm_ignores_dim, r"along dim=0 must sum to 1, but yours sum to 1 along dim=-1: use the `dim` argument"),
    (sm_wrong_axis, r"along dim=-1 must sum to 1, but yours sum to 1 along dim=-2"),
    (sm_no_keepdim, "keep the reduced dimension"),
    (sm_max_tuple, r"take \.values"),
    (sm_total_sum, "sum of the whole tensor"),
    (sm_uses_torch, "write it yourself"),
])
def test_softmax_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch03.softmax(wrong)


# --- scaled dot-product attention -------------------------------------------------------------

def sdpa_solution(query, key, value, mask=None, scale=None):
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def sdpa_einsum_big_negative(query, key, value, mask=None, scale=None):
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("...qd,...kd->...qk", query, key) * scale
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(-1e9, dtype=scores.dtype))
    weights = sm_solution(scores, -1)
    return torch.einsum("...qk,...kd->...qd", weights, value), weights


def sdpa_loops(query, key, value, mask=None, scale=None):
    """One query, one key at a time, on the flattened batch."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])
    T_q, T_k = query.shape[-2], key.shape[-2]
    q = query.expand(*batch, *query.shape[-2:]).reshape(-1, T_q, query.shape[-1])
    k = key.expand(*batch, *key.shape[-2:]).reshape(-1, T_k, key.shape[-1])
    v = value.expand(*batch, *value.shape[-2:]).reshape(-1, T_k, value.shape[-1])
    m = (torch.ones(T_q, T_k, dtype=torch.bool) if mask is None else mask).expand(*batch, T_q, T_k).reshape(-1, T_q, T_k)
    out = torch.zeros(q.shape[0], T_q, v.shape[-1], dtype=query.dtype)
    weights = torch.zeros(q.shape[0], T_q, T_k, dtype=query.dtype)
    for b in range(q.shape[0]):
        for i in range(T_q):
            scores = [float(q[b, i] @ k[b, j]) * scale if m[b, i, j] else -math.inf for j in range(T_k)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            for j in range(T_k):
                weights[b, i, j] = exps[j] / sum(exps)
                out[b, i] += weights[b, i, j] * v[b, j]
    return out.reshape(*batch, T_q, -1), weights.reshape(*batch, T_q, T_k)


def sdpa_library(query, key, value, mask=None, scale=None):
    return attention.scaled_dot_product_attention(query, key, value, mask, scale)


def _wrong(**how):
    """A version of the solution with one classic mistake."""
    def fn(query, key, value, mask=None, scale=None):
        d_k = query.shape[-1]
        if how.get("swap"):
            key, value = value, key
        s = 1 / math.sqrt(d_k) if scale is None else scale
        s = how.get("fixed_scale", lambda d, given: s)(d_k, scale)
        scores = query @ key.transpose(-2, -1) * s
        if mask is not None and not how.get("ignore_mask"):
            blocked = mask if how.get("invert") else ~mask
            scores = scores.masked_fill(blocked, how.get("fill", float("-inf")))
        weights = torch.softmax(scores, dim=how.get("dim", -1))
        if how.get("after") and mask is not None:
            weights = torch.softmax(query @ key.transpose(-2, -1) * s, -1) * mask
        if how.get("nan_to_zero"):
            weights = weights.nan_to_num(0.0)
        out = weights @ value
        return (weights, out) if how.get("order") else (out,) if how.get("only_out") else (out, weights)
    return fn


def sdpa_divides_by_scale(query, key, value, mask=None, scale=None):
    scores = query @ key.transpose(-2, -1) / (math.sqrt(query.shape[-1]) if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1)
    return weights @ value, weights


def sdpa_in_place(query, key, value, mask=None, scale=None):
    query /= math.sqrt(query.shape[-1]) if scale is None else 1 / scale
    return sdpa_solution(query, key, value, mask, scale=1.0)


def sdpa_qk_transposed(query, key, value, mask=None, scale=None):
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = key @ query.transpose(-2, -1) * scale  # (T_k, T_q): the transpose of the scores
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def test_an_in_place_scaled_query_is_named_not_called_unscaled():
    with pytest.raises(CheckFailed) as err:
        ch03.scaled_dot_product_attention(sdpa_in_place)
    assert "do not change your inputs in place" in str(err.value) and "sqrt(d_k)" not in str(err.value)


def test_sdpa_wrong_defaults_are_named():
    def scale_one_by_default(query, key, value, mask=None, scale=1.0):
        return sdpa_solution(query, key, value, mask, scale)

    with pytest.raises(CheckFailed, match=r"mask/scale left out(.|\n)*hint: +keep the defaults(.|\n)*mask=None, scale=None"):
        ch03.scaled_dot_product_attention(scale_one_by_default)


def test_softmax_wrong_default_dim_is_named():
    with pytest.raises(CheckFailed, match="dim left out(.|\n)*dim=-1"):
        ch03.softmax(lambda x, dim=0: sm_solution(x, dim))


def test_sdpa_solutions_pass(capsys):
    for fn in (sdpa_solution, sdpa_einsum_big_negative, sdpa_loops, sdpa_library):
        ch03.scaled_dot_product_attention(fn)
    assert capsys.readouterr().out.count("✓ scaled_dot_product_attention") == 4


def test_sdpa_stub_propagates():
    def stub(query, key, value, mask=None, scale=None):
        raise NotImplementedError("write attention")
    with pytest.raises(NotImplementedError):
        ch03.scaled_dot_product_attention(stub)


@pytest.mark.parametrize("wrong, hint", [
    (_wrong(fixed_scale=lambda d, given: 1.0 if given is None else given), "divide the scores by sqrt\\(d_k\\)"),
    (_wrong(fixed_scale=lambda d, given: 1 / d if given is None else given), "not 1/d_k"),
    (_wrong(fixed_scale=lambda d, given: 1 / math.sqrt(d)), "when `scale` is given"),
    (sdpa_divides_by_scale, "you divided by it"),
    (_wrong(dim=-2), "softmax over the KEYS"),
    (_wrong(swap=True), "keys and values are swapped"),
    (_wrong(invert=True), "the mask is inverted"),
    (_wrong(invert=True, fill=-1e9), "the mask is inverted"),
    (_wrong(invert=True, nan_to_zero=True), "the mask is inverted"),
    (_wrong(ignore_mask=True), "the mask is ignored"),
    (_wrong(fill=0.0), "not 0: exp\\(0\\) = 1"),
    (_wrong(after=True), "apply the mask to the SCORES"),
    (_wrong(order=True), "the output first"),
    (_wrong(only_out=True), "return both"),
    (sdpa_in_place, "query changed in place"),
    (sdpa_qk_transposed, "query and key are swapped in the scores"),
])
def test_sdpa_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch03.scaled_dot_product_attention(wrong)


def test_sdpa_with_an_untransposed_key_fails_with_what_was_tried():
    def no_transpose(query, key, value, mask=None, scale=None):
        weights = torch.softmax(query @ key / math.sqrt(query.shape[-1]), -1)
        return weights @ value, weights
    with pytest.raises(CheckFailed, match=r"tried:.*the note's example.*\n.*\n.*got:.*(Error|shape)"):
        ch03.scaled_dot_product_attention(no_transpose)


# --- causal mask ---------------------------------------------------------------------------------

def causal_solution(n):
    return torch.ones(n, n, dtype=torch.bool).tril()


def causal_compare(n):
    i = torch.arange(n)
    return i[None, :] <= i[:, None]


def causal_loops(n):
    return torch.tensor([[j <= i for j in range(n)] for i in range(n)])


def test_causal_mask_solutions_pass(capsys):
    for fn in (causal_solution, causal_compare, causal_loops, attention.causal_mask):
        ch03.causal_mask(fn)
    assert capsys.readouterr().out.count("✓ causal_mask") == 4


def test_causal_mask_stub_propagates():
    def stub(n):
        raise NotImplementedError("write the mask")
    with pytest.raises(NotImplementedError):
        ch03.causal_mask(stub)


@pytest.mark.parametrize("wrong, hint", [
    (lambda n: torch.ones(n, n, dtype=torch.bool).triu(1), "inverted: True must mean MAY attend"),
    (lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1), "off by one: a position may attend to ITSELF"),
    (lambda n: torch.ones(n, n, dtype=torch.bool).tril(1), "off by one: position i may see i \\+ 1"),
    (lambda n: torch.ones(n, n, dtype=torch.bool).triu(), "upper triangle"),
    (lambda n: torch.ones(n, n, dtype=torch.bool), "sees the whole sequence"),
    (lambda n: torch.ones(n, n).tril(), "return a bool tensor"),
    (lambda n: torch.full((n, n), -math.inf).triu(1), "additive mask"),
    (lambda n: torch.ones(n, dtype=torch.bool), r"shape \(5, 5\)"),
])
def test_causal_mask_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch03.causal_mask(wrong)


# --- padding mask --------------------------------------------------------------------------------

def padding_solution(ids, pad_id):
    return (ids != pad_id).unsqueeze(1)


def padding_loops(ids, pad_id):
    return torch.tensor([[[int(t) != pad_id for t in row] for row in ids.tolist()]]).transpose(0, 1)


def test_padding_mask_solutions_pass(capsys):
    for fn in (padding_solution, padding_loops, lambda ids, p: ids.ne(p)[:, None, :], attention.padding_mask):
        ch03.padding_mask(fn)
    assert capsys.readouterr().out.count("✓ padding_mask") == 4


def test_padding_mask_stub_propagates():
    def stub(ids, pad_id):
        raise NotImplementedError("write the mask")
    with pytest.raises(NotImplementedError):
        ch03.padding_mask(stub)


def _by_length(ids, pad_id):
    lengths = (ids != pad_id).sum(-1, keepdim=True)
    return (torch.arange(ids.shape[1]) < lengths)[:, None, :]


@pytest.mark.parametrize("wrong, hint", [
    (lambda ids, p: (ids == p).unsqueeze(1), "inverted: True must mean a REAL token"),
    (lambda ids, p: ids != p, "add the middle axis"),
    (lambda ids, p: (ids != p).unsqueeze(-1), "the 1 goes in the MIDDLE"),
    (lambda ids, p: (ids != 0).unsqueeze(1), "use the pad_id argument"),
    (_by_length, "padding is not always at the end"),
    (lambda ids, p: (ids != p).unsqueeze(1).long(), "return a bool tensor"),
])
def test_padding_mask_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch03.padding_mask(wrong)


def test_every_failure_message_has_the_four_parts():
    with pytest.raises(CheckFailed) as info:
        ch03.scaled_dot_product_attention(_wrong(dim=-2))
    text = str(info.value)
    for part in ("tried:", "expected:", "got:", "hint:"):
        assert part in text
    assert "the note's example" in text


@pytest.mark.parametrize("uses", [
    lambda x, dim=-1: x.softmax(dim),
    lambda x, dim=-1: torch.nn.functional.softmax(x, dim),
    lambda x, dim=-1: torch.special.softmax(x, dim),
    lambda x, dim=-1: torch.log_softmax(x, dim).exp(),
])
def test_softmax_checker_sees_every_way_of_calling_torchs_softmax(uses):
    with pytest.raises(CheckFailed, match="write it yourself"):
        ch03.softmax(uses)


# --- issue 11 §3: mistakes with their own hint -------------------------------------------------

def sdpa_key_T(query, key, value, mask=None, scale=None):
    """key.T: fine on the note's 2-D example, wrong on batched tensors."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.T * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def sdpa_overflowing_softmax(query, key, value, mask=None, scale=None):
    """Right everywhere except that its softmax is exp / sum without subtracting the maximum."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    e = torch.exp(scores)
    weights = e / e.sum(-1, keepdim=True)
    return weights @ value, weights


def test_sdpa_with_key_T_on_batched_tensors_is_named():
    with pytest.raises(CheckFailed, match=r"key\.T reverses ALL the axes of a batched tensor") as err:
        ch03.scaled_dot_product_attention(sdpa_key_T)
    assert "query (2, 4, 8), key (2, 6, 8)" in str(err.value)  # passes the 2-D note example, fails batched


def test_sdpa_whose_softmax_overflows_on_large_scores_is_named():
    with pytest.raises(CheckFailed, match=r"your softmax overflows on large scores") as err:
        ch03.scaled_dot_product_attention(sdpa_overflowing_softmax)
    assert "LARGE scores" in str(err.value) and "nan" in str(err.value)


def test_failure_messages_point_to_the_graded_hints():
    with pytest.raises(CheckFailed, match=r"more help: checks\.hint\('ch03\.softmax'\)"):
        ch03.softmax(sm_naive)


def test_every_ch03_checker_has_three_graded_hints():
    for name in ch03.__all__:
        levels = checks.hints_for(f"ch03.{name}")
        assert len(levels) == 3 and all(len(h) > 40 for h in levels), name


def test_a_wrong_mask_names_its_first_differing_element():
    def late(n):  # right in the first rows, wrong at (6, 7)
        m = torch.ones(n, n, dtype=torch.bool).tril()
        if n == 8:
            m[6, 7] = True
        return m
    with pytest.raises(CheckFailed, match=r"first difference: at index \(6, 7\): expected 0, got 1"):
        ch03.causal_mask(late)
