"""Checkers of chapter 11: solutions in several styles pass, stubs propagate NotImplementedError, each classic
mistake fails with its own hint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.course import checks
from course_lib.course.checks import CheckFailed

ch11 = checks.ch11


def _stub(*args, **kwargs):
    raise NotImplementedError("write your answer")


@pytest.mark.parametrize("name", ["previous_token_score", "induction_score", "logit_lens", "patch_hook", "recovery"])
def test_an_untouched_stub_propagates_not_implemented(name):
    with pytest.raises(NotImplementedError):
        getattr(ch11, name)(_stub)


def _fails_with(check, fn, *needles: str) -> None:
    with pytest.raises(CheckFailed) as err:
        check(fn)
    message = str(err.value)
    for needle in needles:
        assert needle in message, f"expected {needle!r} in:\n{message}"


# --- previous-token score -----------------------------------------------------------------------------------

def prev_diagonal(pattern):
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))


def prev_loops(pattern):
    B, H, T, _ = pattern.shape
    out = torch.zeros(H, dtype=pattern.dtype)
    for h in range(H):
        out[h] = sum(float(pattern[b, h, t, t - 1]) for b in range(B) for t in range(1, T)) / (B * (T - 1))
    return out


def prev_indexing(pattern):
    t = torch.arange(1, pattern.shape[-1])
    return pattern[..., t, t - 1].mean(-1).mean(0)


def test_previous_token_score_accepts_every_style(capsys):
    for fn in (prev_diagonal, prev_loops, prev_indexing):
        ch11.previous_token_score(fn)
    assert capsys.readouterr().out.count("✓ previous_token_score") == 3


@pytest.mark.parametrize("fn, needle", [
    (lambda p: p.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2)), "you read the query's own position t"),
    (lambda p: p.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, 2)), "lies the future"),
    (lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(dim=2).mean(0) / p.shape[-1], "do not count row 0"),
    (lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(1, 2)), "keep the head axis"),
])
def test_previous_token_score_names_each_mistake(fn, needle):
    _fails_with(ch11.previous_token_score, fn, needle, "checks.hint('ch11.previous_token_score')")


# --- induction score -------------------------------------------------------------------------------------------

def induction_diagonal(pattern, period):
    return pattern.diagonal(offset=-(period - 1), dim1=-2, dim2=-1)[..., 1:].mean(dim=(0, 2))


def induction_loops(pattern, period):
    B, H, T, _ = pattern.shape
    return torch.stack([torch.stack([pattern[b, h, t, t - period + 1] for b in range(B) for t in range(period, T)]).mean()
                        for h in range(H)])


def induction_einsum(pattern, period):
    T = pattern.shape[-1]
    select = torch.zeros(T, T, dtype=pattern.dtype)
    t = torch.arange(period, T)
    select[t, t - period + 1] = 1.0
    return torch.einsum("bhqk,qk->h", pattern, select) / (pattern.shape[0] * (T - period))


def test_induction_score_accepts_every_style(capsys):
    for fn in (induction_diagonal, induction_loops, induction_einsum):
        ch11.induction_score(fn)
    assert capsys.readouterr().out.count("✓ induction_score") == 3


def _induction_at(offset_from_period: int, first: int = 0):
    def fn(pattern, period):
        t = torch.arange(period + first, pattern.shape[-1])
        return pattern[:, :, t, t - period + offset_from_period].mean(dim=(0, 2))
    return fn


@pytest.mark.parametrize("fn, needle", [
    (_induction_at(0), "key t - period holds the SAME token"),
    (_induction_at(2), "two tokens after the earlier copy"),
    (_induction_at(1, first=-1), "score only the second copy"),
    (lambda p, period: p.diagonal(offset=-(period - 1), dim1=-2, dim2=-1).mean(dim=(1, 2)), "keep the head axis"),
])
def test_induction_score_names_each_mistake(fn, needle):
    _fails_with(ch11.induction_score, fn, needle)


# --- the logit lens ---------------------------------------------------------------------------------------------

def test_logit_lens_accepts_every_style(capsys):
    ch11.logit_lens(lambda resid, ln_final, unembed: unembed(ln_final(resid)))
    ch11.logit_lens(lambda r, ln, u: F.layer_norm(r, r.shape[-1:], ln.weight, ln.bias, ln.eps) @ u.weight.T)
    assert capsys.readouterr().out.count("✓ logit_lens") == 2


@pytest.mark.parametrize("fn, needle", [
    (lambda resid, ln_final, unembed: unembed(resid), "apply ln_final first"),
    (lambda resid, ln_final, unembed: unembed(F.layer_norm(resid, resid.shape[-1:])), "with its learned gain and bias"),
    (lambda resid, ln_final, unembed: ln_final(unembed.weight @ resid.transpose(1, 2)).transpose(1, 2), "logit_lens("),
])
def test_logit_lens_names_each_mistake(fn, needle):
    _fails_with(ch11.logit_lens, fn, needle)


# --- the patching hook ----------------------------------------------------------------------------------------------

def patch_solution(clean, position):
    def hook(act, name):
        act = act.clone()
        act[:, position] = clean[:, position]
        return act
    return hook


def patch_where(clean, position):
    def hook(act, name):
        keep = torch.zeros(act.shape[1], dtype=torch.bool)
        keep[position] = True
        return torch.where(keep.view(1, -1, *[1] * (act.dim() - 2)), clean, act)
    return hook


def patch_cat(clean, position):
    return lambda act, name: torch.cat([act[:, :position], clean[:, position:position + 1], act[:, position + 1:]], dim=1)


def test_patch_hook_accepts_every_style(capsys):
    for fn in (patch_solution, patch_where, patch_cat):
        ch11.patch_hook(fn)
    assert capsys.readouterr().out.count("✓ patch_hook") == 3


def _in_place(clean, position):
    def hook(act, name):
        act[:, position] = clean[:, position]
    return hook


def _in_place_returned(clean, position):
    def hook(act, name):
        act[:, position] = clean[:, position]
        return act
    return hook


def _shifted(shift):
    def make(clean, position):
        return patch_solution(clean, position + shift if 0 <= position + shift < clean.shape[1] else position - shift)
    return make


def _batch_axis(clean, position):
    def hook(act, name):
        act = act.clone()
        act[position] = clean[position]
        return act
    return hook


@pytest.mark.parametrize("fn, needle", [
    (_in_place, "returns None leaves the activation as it was"),
    (_in_place_returned, "clone the activation"),
    (_shifted(-1), "you patched position"),
    (_shifted(1), "you patched position"),
    (lambda clean, position: (lambda act, name: clean.clone()), "patch only the one position"),
    (_batch_axis, "dim 0 is the batch"),
    (lambda clean, position: patch_solution(clean, position)(clean, "x"), "returns the hook function itself"),
])
def test_patch_hook_names_each_mistake(fn, needle):
    _fails_with(ch11.patch_hook, fn, needle)


# --- recovery --------------------------------------------------------------------------------------------------

def test_recovery_accepts_every_style(capsys):
    ch11.recovery(lambda patched, clean, corrupted: (patched - corrupted) / (clean - corrupted))
    ch11.recovery(lambda p, c, x: 1 - (c - p) / (c - x))
    ch11.recovery(lambda p, c, x: torch.stack([(a - z) / (b - z) for a, b, z in zip(p, c, x)]))
    assert capsys.readouterr().out.count("✓ recovery") == 3


@pytest.mark.parametrize("fn, needle", [
    (lambda p, c, x: p - x, "normalise: divide by the clean-minus-corrupted gap"),
    (lambda p, c, x: (p - c) / (c - x), "yours is 0 at clean"),
    (lambda p, c, x: (c - p) / (c - x), "upside down"),
    (lambda p, c, x: p / c, "a ratio to the clean run alone"),
    (lambda p, c, x: ((p - x) / (c - x)).clamp(0, 1), "0 when the patched run does as the corrupted one"),
])
def test_recovery_names_each_mistake(fn, needle):
    _fails_with(ch11.recovery, fn, needle)


def test_the_checkers_leave_no_trace_on_the_global_rng():
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    ch11.previous_token_score(prev_diagonal)
    ch11.patch_hook(patch_solution)
    with pytest.raises(CheckFailed):
        ch11.recovery(lambda p, c, x: p - x)
    assert torch.equal(before, torch.random.get_rng_state())
