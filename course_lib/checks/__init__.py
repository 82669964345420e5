"""Exercise checkers, one module per chapter (``checks.ch03`` for chapter 03, ...).

A checker calls the learner's object on several cases. On success it prints one line that
starts with ``✓``; on failure it raises :class:`CheckFailed` saying what was tried, what was
expected, what came back, and a hint aimed at the likely mistake.

Checkers import no model module of ``course_lib``: their references are PyTorch's own
functions or small formulas written here, so a bug in the course cannot hide a bug of yours.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, NoReturn

import torch

__all__ = ["CheckFailed", "fail", "ok", "call", "expect_close", "expect_shape", "expect_equal", "describe"]


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
        fail(tried, f"shape {tuple(shape)}", f"shape {tuple(got.shape)}", hint or "check which dimensions you reduce, transpose or reshape")


def expect_close(
    got: Any,
    expected: torch.Tensor,
    *,
    tried: str,
    hint: str,
    mistakes: Mapping[str, torch.Tensor] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Fail unless ``got`` matches ``expected``.

    ``mistakes`` maps a hint to the value a known mistake produces; when ``got`` matches one of
    them, that hint is given instead of the generic one.
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
    for mistake_hint, wrong in (mistakes or {}).items():
        if wrong.shape == got_c.shape and torch.allclose(got_c, wrong.to(expected.dtype), atol=atol, rtol=rtol, equal_nan=True):
            fail(tried, expected, got, mistake_hint)
    fail(tried, expected, got, hint)


def expect_equal(got: Any, expected: Any, *, tried: str, hint: str) -> None:
    """Fail unless ``got == expected`` (tensors compared element-wise, with shape and dtype)."""
    if isinstance(expected, torch.Tensor):
        expect_shape(got, tuple(expected.shape), tried=tried, hint=hint)
        if got.dtype != expected.dtype:
            fail(tried, f"dtype {expected.dtype}", f"dtype {got.dtype}", hint)
        if not torch.equal(got, expected):
            fail(tried, expected, got, hint)
        return
    if got != expected:
        fail(tried, expected, got, hint)


def __getattr__(name: str) -> Any:
    """Load ``checks.ch03`` and friends on first use, so ``from course_lib import checks`` is enough."""
    if name.startswith("ch") and name[2:].isdigit():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
