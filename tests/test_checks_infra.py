"""The checker infrastructure (course_lib.course.checks): graded hints, first difference, (hint, value)
mistakes, the @checker decorator (no RNG trace, a pointer to the hints, a success report that only
`python -m course_lib check` can read)."""
from __future__ import annotations

import random

import IPython
import IPython.display
import numpy as np
import pytest
import torch

from course_lib.course import checks
from course_lib.course.checks import CheckFailed, checker, expect_close, randn


def test_hint_prints_the_next_level_on_each_call(capsys, monkeypatch):
    monkeypatch.setattr(checks, "_shown", {})
    levels = checks.hints_for("ch03.softmax")
    for n, label in ((1, "idea"), (2, "approach"), (3, "near-code"), (3, "near-code")):
        checks.hint("ch03.softmax")
        out = capsys.readouterr().out
        assert out.startswith(f"Hint {n} of 3, {label}") and levels[n - 1] in out
    checks.hint("ch03.softmax", 1)
    assert "Hint 1 of 3, idea (call again for hint 2)" in capsys.readouterr().out


def test_hint_names_what_exists_when_asked_for_something_unknown():
    with pytest.raises(KeyError, match="ch03.scaled_dot_product_attention"):
        checks.hint("ch03.no_such_exercise")
    with pytest.raises(KeyError, match="no checker chapter 'ch99'"):
        checks.hint("ch99.anything")
    with pytest.raises(ValueError, match="hints 1 to 3, not 4"):
        checks.hint("ch03.softmax", 4)


def test_expect_close_names_the_first_element_that_differs_even_when_the_first_values_agree():
    expected = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    got = expected.clone()
    got[2, 1] = 99.0
    with pytest.raises(CheckFailed, match=r"first difference: at index \(2, 1\): expected 9, got 99"):
        expect_close(got, expected, tried="t", hint="generic")


def test_mistakes_are_a_list_of_pairs_and_a_hint_may_repeat():
    expected = torch.zeros(3, dtype=torch.float64)
    one, two = torch.ones(3, dtype=torch.float64), torch.full((3,), 2.0, dtype=torch.float64)
    mistakes = [("same hint", one), ("same hint", two), ("other", two)]
    with pytest.raises(CheckFailed, match="hint:     same hint"):
        expect_close(two, expected, tried="t", hint="generic", mistakes=mistakes)
    with pytest.raises(CheckFailed, match="hint:     generic"):
        expect_close(-one, expected, tried="t", hint="generic", mistakes=mistakes)


def test_randn_is_seeded_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b = randn(2, 3, seed=5), randn(2, 3, seed=5)
    assert torch.equal(a, b) and a.dtype == torch.float64 and not torch.equal(a, randn(2, 3, seed=6))
    assert torch.equal(before, torch.random.get_rng_state())


@checker("ch03.softmax")
def _reseeding_checker(fails: bool) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    torch.rand(5)
    if fails:
        checks.fail("tried", "expected", "got", "the hint")
    checks.ok("fine")


@pytest.mark.parametrize("fails", [False, True])
def test_checker_restores_every_rng_and_points_to_the_hints(fails, capsys):
    torch.manual_seed(42)
    np.random.seed(42)
    random.seed(42)
    states = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    if fails:
        with pytest.raises(CheckFailed, match=r"hint:     the hint\n  more help: checks\.hint\('ch03\.softmax'\)"):
            _reseeding_checker(True)
    else:
        _reseeding_checker(False)
        assert "✓ fine" in capsys.readouterr().out
    assert torch.equal(states[0], torch.random.get_rng_state())
    assert np.array_equal(states[1], np.random.get_state()[1]) and states[2] == random.getstate()
    assert _reseeding_checker.exercise == "ch03.softmax"


def test_success_is_reported_to_the_grader_only_with_the_run_token(monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(k.get("metadata")))
    monkeypatch.setattr(checks, "_RUN_TOKEN", "")
    _reseeding_checker(False)
    assert shown == []  # outside `python -m course_lib check`: nothing but the ✓ line
    monkeypatch.setattr(checks, "_RUN_TOKEN", "tok123")
    _reseeding_checker(False)
    assert shown == [{"course_check": {"name": "ch03.softmax", "token": "tok123"}}]
    with pytest.raises(CheckFailed):
        _reseeding_checker(True)
    assert len(shown) == 1  # a failure reports nothing
