"""Exercise checkers, one module per chapter (``checks.ch03`` for chapter 03, ...).

A checker calls the learner's object on several cases. On success it prints one line that
starts with ``✓``; on failure it raises :class:`CheckFailed` saying what was tried, what was
expected, what came back, and a hint aimed at the likely mistake.

Conventions for a chapter module ``checks/chNN.py`` (every chapter follows them):

- ``HINTS: dict[str, tuple[str, str, str]]``: exercise name -> (idea, approach, near-code);
  ``checks.hint("chNN.name")`` prints the next level on each call. Every exercise has hints;
  formulas the learner should derive live here, not in the statement or the stub.
- Every public checker is decorated with ``@checker("chNN.name")``, ``name`` being the checker's
  own function name (the one the notebook calls as ``checks.chNN.name(...)``). The decorator runs
  it inside ``torch.random.fork_rng`` (Python's and NumPy's RNG restored too), adds
  ``more help: checks.hint('chNN.name')`` to a failure, and on success reports it to
  ``python -m course_lib check`` (a display_data output carrying the run's token; a printed
  "✓" alone never counts as a pass).
- Known mistakes are ``mistakes=[(hint, wrong_value), ...]`` lists given to :func:`expect_close`;
  cases come from :func:`randn` (``randn(2, 5, 16, seed=3)``), never from the global RNG.
- Random behaviour (dropout) is checked by its properties, not by matching a random stream.
- Tests: the solution passes in several styles, the stub propagates NotImplementedError, and
  each named wrong version fails with ITS hint (one test per mistake, asserting the hint text).

Checkers import no model module of ``course_lib``: their references are PyTorch's own
functions or small formulas written here, so a bug in the course cannot hide a bug of yours.
"""
from __future__ import annotations

import functools
import importlib
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch

__all__ = [
    "CheckFailed", "fail", "ok", "call", "expect_close", "expect_shape", "describe",
    "hint", "hints_for", "checker", "no_trace", "randn", "first_difference",
]

F = TypeVar("F", bound=Callable[..., Any])


class CheckFailed(AssertionError):
    """Raised by a checker when the learner's answer is wrong; the message explains why."""


def describe(value: Any, max_items: int = 6) -> str:
    """A short, readable description of a value (tensors: shape, dtype, first values)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().flatten()
        head = ", ".join(_fmt(v) for v in flat[:max_items].tolist())
        more = ", ..." if flat.numel() > max_items else ""
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}: [{head}{more}]"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fail(tried: str, expected: Any, got: Any, hint: str) -> NoReturn:
    """Raise CheckFailed with the four parts every message has."""
    exp = expected if isinstance(expected, str) else describe(expected)
    res = got if isinstance(got, str) else describe(got)
    raise CheckFailed(f"\n  tried:    {tried}\n  expected: {exp}\n  got:      {res}\n  hint:     {hint}")


def ok(message: str) -> None:
    """Print the one success line."""
    print(f"✓ {message}")


def call(fn: Callable[..., Any], *args: Any, tried: str, **kwargs: Any) -> Any:
    """Call the learner's function; an exception other than NotImplementedError becomes CheckFailed."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:  # the learner's code crashed: say where, not a deep traceback
        fail(tried, "a result", f"{type(err).__name__}: {err}", "run your function on this input yourself and read the error")


def expect_shape(got: Any, shape: tuple[int, ...], *, tried: str, hint: str = "") -> None:
    """Fail unless ``got`` is a tensor of exactly this shape."""
    if not isinstance(got, torch.Tensor):
        fail(tried, f"a torch.Tensor of shape {shape}", f"{type(got).__name__}: {describe(got)}", hint or "return a tensor")
    if tuple(got.shape) != tuple(shape):
        fail(tried, f"shape {tuple(shape)}", f"shape {tuple(got.shape)}", hint or "check which dimensions you reduce, transpose "
                                                                                  "or reshape")


Mistakes = Sequence[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor]


def _pairs(mistakes: Mistakes | None) -> Iterable[tuple[str, torch.Tensor]]:
    if mistakes is None:
        return ()
    return mistakes.items() if isinstance(mistakes, Mapping) else mistakes


def expect_close(
    got: Any,
    expected: torch.Tensor,
    *,
    tried: str,
    hint: str,
    mistakes: Mistakes | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Fail unless ``got`` matches ``expected``.

    ``mistakes`` is a list of ``(hint, value)`` pairs, the value a known mistake produces; when
    ``got`` matches one of them, that hint is given instead of the generic one (a dict is accepted
    too). The message names the first element that differs.
    """
    expect_shape(got, tuple(expected.shape), tried=tried, hint=hint)
    same_kind = (got.dtype == torch.bool) == (expected.dtype == torch.bool) and (
        got.dtype.is_floating_point == expected.dtype.is_floating_point
    )
    if not same_kind:
        fail(tried, f"dtype {expected.dtype}", f"dtype {got.dtype}", hint)
    got_c = got.detach().to(expected.dtype)
    if torch.allclose(got_c, expected, atol=atol, rtol=rtol, equal_nan=True):
        return
    where = first_difference(got_c, expected, atol=atol, rtol=rtol)
    for mistake_hint, wrong in _pairs(mistakes):
        if wrong.shape == got_c.shape and torch.allclose(got_c, wrong.to(expected.dtype), atol=atol, rtol=rtol, equal_nan=True):
            fail(tried, f"{describe(expected)}\n  first difference: {where}", got, mistake_hint)
    fail(tried, f"{describe(expected)}\n  first difference: {where}", got, hint)


def first_difference(got: torch.Tensor, expected: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-4) -> str:
    """``at index (i, j): expected x, got y`` for the first element outside the tolerance."""
    close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)  # same shape as expected
    bad = (~close).nonzero()
    if len(bad) == 0:
        return "none"
    index = tuple(bad[0].tolist())
    return f"at index {index}: expected {_fmt(expected[index].item())}, got {_fmt(got[index].item())}"


def randn(*shape: int, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Seeded normal samples from a private generator: a checker's cases never touch the global RNG."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def no_trace(checker: F) -> F:
    """Run a checker with torch's, NumPy's and Python's random states restored afterwards.

    A learner's notebook must not behave differently because a checker ran in it.
    """

    @functools.wraps(checker)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                return checker(*args, **kwargs)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    return wrapped  # type: ignore[return-value]


# --- Hints on demand ------------------------------------------------------------------------
# Each chapter module defines ``HINTS = {"exercise_name": (idea, approach, near_code), ...}``.
# ``hint("ch07.noam_lr")`` prints the next level each time it is called.

_shown: dict[str, int] = {}


def hints_for(name: str) -> tuple[str, ...]:
    """The graded hints of ``"chNN.exercise"``; raises KeyError naming what exists."""
    chapter, _, exercise = name.partition(".")
    try:
        module = importlib.import_module(f"{__name__}.{chapter}")
    except ImportError:
        raise KeyError(f"no checker chapter {chapter!r}: use a name like 'ch03.scaled_dot_product_attention'") from None
    table: Mapping[str, tuple[str, ...]] = getattr(module, "HINTS", {})
    if exercise not in table:
        known = ", ".join(f"{chapter}.{k}" for k in table) or "none"
        raise KeyError(f"no hints for {name!r}; this chapter has hints for: {known}")
    return tuple(table[exercise])


def hint(name: str, level: int | None = None) -> None:
    """Print a hint for an exercise: the idea first, then the approach, then near-code.

    Args:
        name: ``"chNN.exercise"``, e.g. ``"ch07.noam_lr"``.
        level: 1, 2, 3, ... to show one level again; by default each call shows the next one.
    """
    levels = hints_for(name)
    if level is None:
        level = min(_shown.get(name, 0) + 1, len(levels))
    if not 1 <= level <= len(levels):
        raise ValueError(f"{name} has hints 1 to {len(levels)}, not {level}")
    _shown[name] = max(_shown.get(name, 0), level)
    label = ("idea", "approach", "near-code")[level - 1] if len(levels) == 3 else f"{level}/{len(levels)}"
    more = f" (call again for hint {level + 1})" if level < len(levels) else " (the last hint; the solution is in solutions/)"
    print(f"Hint {level} of {len(levels)}, {label}{more}:\n{levels[level - 1]}")


def hint_available(name: str) -> str:
    """The line a failure message ends with when ``name`` has hints."""
    try:
        hints_for(name)
    except KeyError:
        return ""
    return f"\n  more help: checks.hint({name!r})"


def __getattr__(name: str) -> Any:
    """Load ``checks.ch03`` and friends on first use, so ``from course_lib import checks`` is enough."""
    if name.startswith("ch") and name[2:].isdigit():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ``python -m course_lib check`` gives the kernel a per-run token; it is read once and removed
# from the environment, so the learner's subprocesses do not see it.
_RUN_TOKEN = os.environ.pop("COURSE_CHECK_TOKEN", "")


def _report_success(name: str) -> None:
    """Tell ``python -m course_lib check`` that checker ``name`` passed (no-op outside a check run)."""
    if not _RUN_TOKEN:
        return
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    display({"text/plain": ""}, raw=True, metadata={"course_check": {"name": name, "token": _RUN_TOKEN}})


def checker(name: str) -> Callable[[F], F]:
    """Decorate a chapter's checker: no trace on the RNGs, and a failure that points to the hints.

    ``@checker("ch07.noam_lr")`` on ``def noam_lr(fn): ...`` makes a failure end with
    ``more help: checks.hint('ch07.noam_lr')`` (when the chapter has hints for it).
    """

    def decorate(fn: F) -> F:
        quiet = no_trace(fn)

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                result = quiet(*args, **kwargs)
            except CheckFailed as err:
                raise CheckFailed(f"{err}{hint_available(name)}") from None
            _report_success(name)
            return result

        wrapped.exercise = name  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate
