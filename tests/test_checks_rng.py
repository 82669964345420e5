"""Checkers leave no trace: torch's, NumPy's and Python's RNG states are as they were, on success
and on failure, for every checker of every chapter (issue 11 §4).

Failure: each public checker of each ``course_lib.course.checks.chNN`` module is given a wrong answer that
itself draws from all three RNGs. Success: each solution notebook's code runs in this process and
the states are compared around every check cell.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import random
import re
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
import torch

import course_lib.course.checks as checks_pkg

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(m.name for m in pkgutil.iter_modules(checks_pkg.__path__) if re.fullmatch(r"ch\d\d", m.name))


def _states() -> tuple:
    return (torch.random.get_rng_state(), np.random.get_state(), random.getstate())


def _assert_same(before: tuple, after: tuple, what: str) -> None:
    assert torch.equal(before[0], after[0]), f"{what} changed torch's global RNG state"
    assert all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(before[1], after[1])), \
        f"{what} changed NumPy's global RNG state"
    assert before[2] == after[2], f"{what} changed Python's global RNG state"


def _checkers(chapter: str) -> list[tuple[str, object]]:
    module = importlib.import_module(f"course_lib.course.checks.{chapter}")
    public = [(name, getattr(module, name)) for name in getattr(module, "__all__", [])]
    return [(name, obj) for name, obj in public if inspect.isfunction(obj)]  # not HINTS, not helper classes


def test_every_chapter_module_is_found():
    assert {"ch01", "ch02", "ch03", "ch04"} <= set(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_checker_is_decorated_and_has_graded_hints(chapter):
    module = importlib.import_module(f"course_lib.course.checks.{chapter}")
    assert len(_checkers(chapter)) >= 3, f"{chapter} has fewer than 3 checked exercises"
    for name, fn in _checkers(chapter):
        assert getattr(fn, "exercise", None) == f"{chapter}.{name}", f"{chapter}.{name} lacks @checker('{chapter}.{name}')"
        levels = getattr(module, "HINTS", {}).get(name)
        assert levels is not None and len(levels) == 3, f"{chapter}.HINTS has no (idea, approach, near-code) for {name}"


def _noisy_wrong_answer(*args, **kwargs):
    """A wrong answer that draws from every RNG first (like a learner's dropout would)."""
    torch.rand(3)
    np.random.rand(2)
    random.random()
    return object()


class _NoisyModule(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        torch.nn.init.normal_(torch.empty(3))
        random.random()

    def forward(self, *args, **kwargs):
        return _noisy_wrong_answer()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_a_failing_checker_leaves_every_rng_as_it_found_it(chapter):
    for name, fn in _checkers(chapter):
        for wrong in (_noisy_wrong_answer, _NoisyModule):
            torch.manual_seed(123)
            np.random.seed(123)
            random.seed(123)
            before = _states()
            with pytest.raises(Exception):  # noqa: B017 - any failure; CheckFailed for the checkers here
                fn(wrong)
            _assert_same(before, _states(), f"{chapter}.{name} (failing)")


SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
_CHECK_CALL = re.compile(r"checks\.(ch\d\d)\.(\w+)\(")



@pytest.mark.parametrize("solution", [pytest.param(p, id=p.name) for p in SOLUTIONS])
def test_a_passing_checker_leaves_every_rng_as_it_found_it(solution, capsys):
    """Run the solution's code here; around each check cell the three RNG states must not move."""
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": "__solution__"}
    checked = 0
    nb = nbformat.read(solution, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        if _CHECK_CALL.search(cell.source):
            before = _states()
            exec(compile(cell.source, f"{solution.name}[{index}]", "exec"), namespace)  # noqa: S102
            _assert_same(before, _states(), f"{solution.name} cell {index} (passing)")
            checked += 1
        else:
            exec(compile(cell.source, f"{solution.name}[{index}]", "exec"), namespace)  # noqa: S102
        plt.close("all")
    assert checked >= 3
    assert capsys.readouterr().out.count("✓") >= checked
