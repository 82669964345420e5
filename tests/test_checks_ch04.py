"""Checkers of chapter 04: solutions in several styles pass, stubs propagate NotImplementedError,
and each classic mistake is rejected with its own hint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import scaled_dot_product_attention
from course_lib.course import checks
from course_lib.course.checks import CheckFailed
from course_lib.multihead import MultiHeadAttention as LibraryMHA
from course_lib.multihead import merge_heads as lib_merge
from course_lib.multihead import split_heads as lib_split

ch04 = checks.ch04


# --- split heads ------------------------------------------------------------------------------

def split_solution(x, n_heads):
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def split_loops(x, n_heads):
    d_head = x.shape[-1] // n_heads
    return torch.stack([x[..., h * d_head:(h + 1) * d_head] for h in range(n_heads)], dim=1)


def split_einops_style(x, n_heads):
    b, t, d = x.shape
    return torch.einsum("bthd->bhtd", x.reshape(b, t, n_heads, d // n_heads))


def split_plain_view(x, n_heads):
    b, t, d = x.shape
    return x.reshape(b, n_heads, t, d // n_heads)


def split_interleaved(x, n_heads):
    b, t, d = x.shape
    return x.reshape(b, t, d // n_heads, n_heads).permute(0, 3, 1, 2)


def split_no_transpose(x, n_heads):
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads)


def split_flat_heads(x, n_heads):
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2).reshape(b * n_heads, t, d // n_heads)


def test_split_heads_solutions_pass(capsys):
    for fn in (split_solution, split_loops, split_einops_style, lib_split):
        ch04.split_heads(fn)
    assert capsys.readouterr().out.count("✓ split_heads") == 4


@pytest.mark.parametrize("wrong, hint", [
    (split_plain_view, "heads split in the wrong order: x.view\\(B, H, T, Dh\\)"),
    (split_interleaved, "not every H-th feature"),
    (split_no_transpose, "you return \\(B, T, H, Dh\\)"),
    (split_flat_heads, "keep the batch axis, then heads"),
])
def test_split_heads_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch04.split_heads(wrong)


# --- merge heads ------------------------------------------------------------------------------

def merge_solution(x):
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def merge_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_contiguous_view(x):
    b, h, t, dh = x.shape
    return x.permute(0, 2, 1, 3).contiguous().view(b, t, h * dh)


def merge_plain_reshape(x):
    b, h, t, dh = x.shape
    return x.reshape(b, t, h * dh)


def merge_interleaved(x):
    b, h, t, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * dh)


def merge_view_after_transpose(x):
    b, h, t, dh = x.shape
    return x.transpose(1, 2).view(b, t, h * dh)


def merge_not_flattened(x):
    return x.transpose(1, 2)


def test_merge_heads_solutions_pass(capsys):
    for fn in (merge_solution, merge_cat, merge_contiguous_view, lib_merge):
        ch04.merge_heads(fn)
    assert capsys.readouterr().out.count("✓ merge_heads") == 4


@pytest.mark.parametrize("wrong, hint", [
    (merge_plain_reshape, "heads merged in the wrong order"),
    (merge_interleaved, "concatenate the heads: head 0's Dh features"),
    (merge_view_after_transpose, "not contiguous in memory, so .view fails"),
    (merge_not_flattened, "flatten the last two axes"),
])
def test_merge_heads_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch04.merge_heads(wrong)


@pytest.mark.parametrize("checker, stub", [
    (ch04.split_heads, lambda x, n_heads: (_ for _ in ()).throw(NotImplementedError("split"))),
    (ch04.merge_heads, lambda x: (_ for _ in ()).throw(NotImplementedError("merge"))),
])
def test_split_and_merge_stubs_propagate(checker, stub):
    with pytest.raises(NotImplementedError):
        checker(stub)


# --- the full forward -------------------------------------------------------------------------

class Scaffold(nn.Module):
    """The exercise's given __init__."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads, self.d_k = n_heads, d_model // n_heads
        self.w_q, self.w_k = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.w_v, self.w_o = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)


class Solution(Scaffold):
    """The solution notebook's answer, with switches that make the classic mistakes."""

    split, merge, scale, swap, use_w_o, mask_mode, softmax_dim = "right", "right", "d_k", None, True, "right", -1

    def _split(self, x):
        b, t, d = x.shape
        if self.split == "view":
            return x.view(b, self.n_heads, t, self.d_k)
        return x.view(b, t, self.n_heads, self.d_k).transpose(1, 2)

    def _merge(self, x):
        b, h, t, dh = x.shape
        if self.merge == "view":
            return x.reshape(b, t, h * dh)
        return x.transpose(1, 2).reshape(b, t, h * dh)

    def forward(self, query, key, value, mask=None):
        k_in, v_in = (value, key) if self.swap == "inputs" else (key, value)
        q, k, v = self._split(self.w_q(query)), self._split(self.w_k(k_in)), self._split(self.w_v(v_in))
        if self.swap == "tensors":
            k, v = v, k
        scores = q @ k.transpose(-2, -1)
        scores = scores / {"d_k": math.sqrt(self.d_k), "d_model": math.sqrt(query.shape[-1]), "none": 1}[self.scale]
        if mask is not None and self.mask_mode != "ignored":
            if mask.dim() == 3 and self.mask_mode != "not per head":
                mask = mask.unsqueeze(1)
            if self.mask_mode == "inverted":
                mask = ~mask
            if self.mask_mode != "after softmax":
                scores = scores.masked_fill(~mask, 0.0 if self.mask_mode == "zero" else float("-inf"))
        weights = torch.softmax(scores, dim=self.softmax_dim)
        if self.mask_mode == "after softmax" and mask is not None:
            weights = weights * mask
        out = self._merge(weights @ v)
        return self.w_o(out) if self.use_w_o else out


def _wrong(**switches):
    return type("Wrong_" + "_".join(f"{k}_{v}" for k, v in switches.items()), (Solution,), switches)


class LoopOverHeads(Scaffold):
    def forward(self, query, key, value, mask=None):
        q, k, v = self.w_q(query), self.w_k(key), self.w_v(value)
        heads = []
        for h in range(self.n_heads):
            cols = slice(h * self.d_k, (h + 1) * self.d_k)
            scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(self.d_k)  # (B, T_q, T_k)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            heads.append(torch.softmax(scores, dim=-1) @ v[..., cols])
        return self.w_o(torch.cat(heads, dim=-1))


class Einsum(Scaffold):
    def forward(self, query, key, value, mask=None):
        b, t_q, d = query.shape
        q = self.w_q(query).view(b, t_q, self.n_heads, self.d_k)
        k = self.w_k(key).view(b, key.shape[1], self.n_heads, self.d_k)
        v = self.w_v(value).view(b, key.shape[1], self.n_heads, self.d_k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * self.d_k ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~(mask.unsqueeze(1) if mask.dim() == 3 else mask), -1e9)
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        return self.w_o(out.reshape(b, t_q, d))


class WithLibraryPieces(Scaffold):
    def forward(self, query, key, value, mask=None):
        q, k, v = (lib_split(w(x), self.n_heads) for w, x in ((self.w_q, query), (self.w_k, key), (self.w_v, value)))
        mask = mask.unsqueeze(1) if mask is not None and mask.dim() == 3 else mask
        out, _ = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(lib_merge(out))


class Fused(Scaffold):
    def forward(self, query, key, value, mask=None):
        q, k, v = (lib_split(w(x), self.n_heads) for w, x in ((self.w_q, query), (self.w_k, key), (self.w_v, value)))
        mask = mask.unsqueeze(1) if mask is not None and mask.dim() == 3 else mask
        return self.w_o(lib_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class Library(LibraryMHA):
    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)


def test_multi_head_attention_solutions_in_several_styles_pass(capsys):
    for cls in (Solution, LoopOverHeads, Einsum, WithLibraryPieces, Fused, Library):
        ch04.multi_head_attention(cls)
    assert capsys.readouterr().out.count("✓ multi_head_attention") == 6


def test_multi_head_attention_stub_propagates():
    class Stub(Scaffold):
        def forward(self, query, key, value, mask=None):
            raise NotImplementedError("write forward")
    with pytest.raises(NotImplementedError):
        ch04.multi_head_attention(Stub)


class ReturnsWeightsToo(Solution):
    def forward(self, query, key, value, mask=None):
        return super().forward(query, key, value, mask), None


class RenamedLinears(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model)

    def forward(self, query, key, value, mask=None):
        return query


@pytest.mark.parametrize("wrong, hint", [
    (_wrong(scale="none"), "the scale is missing: divide the scores"),
    (_wrong(scale="d_model"), "the size of ONE head, not 1/sqrt\\(d_model\\)"),
    (_wrong(use_w_o=False), "W_O is missing"),
    (_wrong(split="view"), "heads split in the wrong order"),
    (_wrong(split="view", merge="view"), "heads split in the wrong order.*and merge back"),
    (_wrong(merge="view"), "heads merged in the wrong order"),
    (_wrong(swap="tensors"), "keys and values swapped.*projected K and V"),
    (_wrong(swap="inputs"), "keys and values swapped.*value input as keys"),
    (_wrong(softmax_dim=-2), "softmax over the keys, the LAST axis"),
    (_wrong(mask_mode="ignored"), "the mask is ignored"),
    (_wrong(mask_mode="inverted"), "inverted mask: True = may attend"),
    (_wrong(mask_mode="zero"), "fill masked scores with -inf, not 0"),
    (_wrong(mask_mode="not per head"), "the mask is not broadcast per head"),
    (_wrong(mask_mode="after softmax"), "mask the scores BEFORE the softmax"),
    (ReturnsWeightsToo, "return only the output"),
    (RenamedLinears, "keep the given __init__"),
])
def test_multi_head_attention_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch04.multi_head_attention(wrong)


def test_mask_not_per_head_is_caught_both_as_a_crash_and_as_a_silent_error():
    """B != H: the broadcast fails (a crash, turned into the hint); B == H: it silently uses the wrong mask."""
    bad = _wrong(mask_mode="not per head")
    with pytest.raises(CheckFailed, match="RuntimeError.*must match the size") as crash:
        ch04.multi_head_attention(bad)
    assert "padding mask" in str(crash.value) and "mask is not broadcast per head" in str(crash.value)
    from course_lib.course.checks.ch04 import _cases, _mha, _mistakes
    what, d_model, n_heads, (q, k, v), mask = _cases()[3]
    assert mask.shape[0] == n_heads == 2
    module = bad(d_model, n_heads).double()
    torch.manual_seed(0)
    p = {n: (getattr(module, f"w_{n}").weight.detach(), getattr(module, f"w_{n}").bias.detach()) for n in "qkvo"}
    with torch.no_grad():
        got = module(q, k, v, mask=mask)
    assert not torch.allclose(got, _mha(p, q, k, v, mask, n_heads), atol=1e-6)
    from course_lib.course.checks.ch04 import MASK_HEAD_HINT
    torch.testing.assert_close(got, dict(_mistakes(p, q, k, v, mask, n_heads))[MASK_HEAD_HINT])


def test_reference_equals_the_library_and_pytorch():
    """The checker's own reference is right: equal to nn.MultiheadAttention with copied weights."""
    from course_lib.course.checks.ch04 import _cases, _mha
    for what, d_model, n_heads, (q, k, v), mask in _cases():
        torch.manual_seed(1)
        theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True).double()
        w = theirs.in_proj_weight.detach().chunk(3)
        bias = theirs.in_proj_bias.detach().chunk(3)
        p = {"q": (w[0], bias[0]), "k": (w[1], bias[1]), "v": (w[2], bias[2]),
             "o": (theirs.out_proj.weight.detach(), theirs.out_proj.bias.detach())}
        torch_mask = None if mask is None else ~(mask.expand(q.shape[0], q.shape[1], k.shape[1])).repeat_interleave(n_heads, 0)
        with torch.no_grad():
            ref, _ = theirs(q, k, v, attn_mask=torch_mask)
        torch.testing.assert_close(_mha(p, q, k, v, mask, n_heads), ref, atol=1e-10, rtol=1e-10, msg=what)


# --- issue 11 §3: mistakes with their own hint -------------------------------------------------

class RepeatWrongOrder(Scaffold):
    """Copies the (B, ., T_k) mask per head with repeat(H, 1, 1): head-major, so heads get other sentences' masks."""

    def forward(self, query, key, value, mask=None):
        q, k, v = (lib_split(w(x), self.n_heads) for w, x in ((self.w_q, query), (self.w_k, key), (self.w_v, value)))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)  # (B, H, T_q, T_k)
        if mask is not None:
            if mask.dim() == 3:
                mask = mask.repeat(self.n_heads, 1, 1).view(query.shape[0], self.n_heads, *mask.shape[1:])
            scores = scores.masked_fill(~mask, float("-inf"))
        return self.w_o(lib_merge(torch.softmax(scores, -1) @ v))


class RepeatRightOrder(Solution):
    """The same idea done right (repeat_interleave): must pass."""

    def forward(self, query, key, value, mask=None):
        if mask is not None and mask.dim() == 3:
            mask = mask.repeat_interleave(self.n_heads, 0).view(query.shape[0], self.n_heads, *mask.shape[1:])
        return super().forward(query, key, value, mask)


class KeyT(Scaffold):
    def forward(self, query, key, value, mask=None):
        q, k, v = (lib_split(w(x), self.n_heads) for w, x in ((self.w_q, query), (self.w_k, key), (self.w_v, value)))
        scores = q @ k.T / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~(mask.unsqueeze(1) if mask.dim() == 3 else mask), float("-inf"))
        return self.w_o(lib_merge(torch.softmax(scores, -1) @ v))


class OverflowingSoftmax(Scaffold):
    def forward(self, query, key, value, mask=None):
        q, k, v = (lib_split(w(x), self.n_heads) for w, x in ((self.w_q, query), (self.w_k, key), (self.w_v, value)))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~(mask.unsqueeze(1) if mask.dim() == 3 else mask), float("-inf"))
        e = torch.exp(scores)
        return self.w_o(lib_merge(e / e.sum(-1, keepdim=True) @ v))


def test_a_mask_repeated_per_head_in_the_wrong_order_is_named():
    with pytest.raises(CheckFailed, match=r"built with repeat in the wrong order"):
        ch04.multi_head_attention(RepeatWrongOrder)


def test_a_mask_repeated_per_head_in_the_right_order_passes(capsys):
    ch04.multi_head_attention(RepeatRightOrder)
    assert "✓ multi_head_attention" in capsys.readouterr().out


def test_k_T_on_the_batched_keys_is_named():
    with pytest.raises(CheckFailed, match=r"k\.T reverses ALL the axes"):
        ch04.multi_head_attention(KeyT)


def test_a_softmax_that_overflows_on_large_scores_is_named():
    with pytest.raises(CheckFailed, match=r"your softmax overflows on large scores") as err:
        ch04.multi_head_attention(OverflowingSoftmax)
    assert "LARGE inputs" in str(err.value)


def test_every_ch04_checker_has_three_graded_hints():
    for name in ch04.__all__:
        assert len(checks.hints_for(f"ch04.{name}")) == 3
