"""Exercise checkers, one module per chapter (``checks.ch03`` for chapter 03, ...).

A checker calls the learner's object on several cases. On success it prints one line that
starts with ``✓``; on failure it raises :class:`CheckFailed` saying what was tried, what was
expected, what came back, and a hint aimed at the likely mistake.

Conventions for a chapter module ``checks/chNN.py`` (every chapter follows them):

- ``HINTS = load_hints("chNN")``: exercise name -> (idea, approach, near-code), written as
  Markdown in ``checks/hints/chNN.md`` (format: :func:`load_hints`); ``checks.hint("chNN.name")``
  prints the next level on each call. Every checker has hints and every hint a checker (the loader
  checks both); formulas the learner should derive live there, not in the statement or the stub.
- Every public checker is decorated with ``@checker("chNN.name")``, ``name`` being the checker's
  own function name (the one the notebook calls as ``checks.chNN.name(...)``). The decorator runs
  it inside ``torch.random.fork_rng`` (Python's and NumPy's RNG restored too), adds
  ``more help: checks.hint('chNN.name')`` to a failure, and on success reports it to
  ``python -m course_lib check`` (a display_data output carrying the run's token; a printed
  "✓" alone never counts as a pass).
- Known mistakes are ``mistakes=[(hint, wrong_value), ...]`` lists given to :func:`expect_close`;
  cases come from :func:`randn` (``randn(2, 5, 16, seed=3)``), never from the global RNG.
- Random behaviour (dropout) is checked by its properties, not by matching a random stream.
- Shared guards, one helper per kind: :func:`call_untouched` (inputs changed in place), :func:`expect_default`
  (a wrong default, called with the argument left out), :func:`forbidden` (a call the statement forbids, patched to
  raise inside the check and restored after), :func:`naive_softmax` with :data:`OVERFLOW_HINT` (attention on large
  scores, in every attention checker).
- Tests: the solution passes in several styles, the stub propagates NotImplementedError, and
  each named wrong version fails with ITS hint (one test per mistake, asserting the hint text).

Checkers import no model module of ``course_lib``: their references are PyTorch's own
functions or small formulas written here, so a bug in the course cannot hide a bug of yours.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import importlib
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch

from .i18n import LEVELS as LEVEL_NAMES
from .i18n import label as _label
from .i18n import language, translate, translate_within

__all__ = [
    "CheckFailed", "fail", "ok", "call", "expect_close", "expect_shape", "describe",
    "hint", "hints_for", "load_hints", "korean_hints", "read_hints", "HINT_LEVELS", "checker", "no_trace", "randn",
    "first_difference",
    "call_untouched", "expect_default", "forbidden", "naive_softmax", "OVERFLOW_HINT", "INPLACE_HINT", "language",
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
        if language() == "ko":
            return f"모양 {tuple(value.shape)}, dtype {value.dtype}인 텐서: [{head}{more}]"
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}: [{head}{more}]"
    if isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value):
        return "(" + "; ".join(describe(v, max_items) for v in value) + ")"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fail(tried: str, expected: Any, got: Any, hint: str) -> NoReturn:
    """Raise CheckFailed with the four parts every message has."""
    exp = expected if isinstance(expected, str) else describe(expected)
    res = got if isinstance(got, str) else describe(got)
    raise CheckFailed(f"\n  {_label('tried')} {translate_within(tried)}\n  {_label('expected')} {exp}\n  {_label('got')} {res}"
                      f"\n  {_label('hint')} {translate(hint)}")


def ok(message: str) -> None:
    """Print the one success line."""
    print(f"✓ {translate(message)}")


def call(fn: Callable[..., Any], *args: Any, tried: str, **kwargs: Any) -> Any:
    """Call the learner's function; an exception other than NotImplementedError becomes CheckFailed."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:  # the learner's code crashed: say where, not a deep traceback
        fail(tried, "a result", f"{type(err).__name__}: {err}", "run your function on this input yourself and read the error")


INPLACE_HINT = ("do not change your inputs in place (x /= ..., x.masked_fill_(...), x[...] = ...): the caller still "
                "needs them as they were; build new tensors instead (x = x / ...)")


def call_untouched(fn: Callable[..., Any], *args: Any, tried: str, names: Sequence[str] = (),
                   caller: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """Like :func:`call`, on copies of the tensor arguments; fails with :data:`INPLACE_HINT` when one was changed in place.

    ``names`` names the positional arguments in the message (``"q"``, ``"k"``, ...); ``caller(fn, *args, **kwargs)``
    replaces :func:`call` where a checker recognises particular crashes.
    """
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    kw_copies = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    got = (caller or functools.partial(call, tried=tried))(fn, *copies, **kw_copies)
    labels = [*names, *(f"argument {i + 1}" for i in range(len(names), len(args)))]
    pairs = [*zip(labels, args, copies), *((k, kwargs[k], v) for k, v in kw_copies.items())]
    for label, given, seen in pairs:
        if isinstance(given, torch.Tensor) and not torch.equal(given, seen.detach()):
            fail(tried, f"{label} left as it was", f"{label} changed in place: {describe(seen)}", INPLACE_HINT)
    return got


def _same(a: Any, b: Any) -> bool:
    """Equal results: tensors close (nan where nan), sequences element by element, anything else by ==."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, atol=1e-9, rtol=1e-7, equal_nan=True)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and bool(a == b)


def expect_default(fn: Callable[..., Any], *args: Any, tried: str, defaults: Mapping[str, Any]) -> Any:
    """Call ``fn(*args)`` with the arguments ``defaults`` left out, then with them given; fail unless both agree.

    A wrong default (``dim=0``, ``eps=1e-5``, ``base=100``) is caught even when every explicit case passes.
    Returns the result of the call with the defaults left out.
    """
    given = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
    left_out = call(fn, *args, tried=f"{tried}, {'/'.join(defaults)} left out")
    explicit = call(fn, *args, tried=f"{tried}, {given}", **defaults)
    if not _same(left_out, explicit):
        fail(f"{tried}, {'/'.join(defaults)} left out", f"the same result as with {given}", describe(left_out),
             f"keep the defaults of the statement's signature: {given}")
    return left_out


@contextlib.contextmanager
def forbidden(calls: Mapping[str, tuple[Any, str]], *, tried: str, hint: str) -> Iterator[None]:
    """Inside the block, each ``name: (owner, attribute)`` raises CheckFailed with ``hint`` when called; restored after.

    ``owner`` is a module (``torch.nn.functional``), a class or an object (a layer whose ``forward`` is forbidden).
    """
    saved = [(owner, attr, attr in vars(owner), getattr(owner, attr)) for owner, attr in calls.values()]

    def refuse(name: str) -> Callable[..., NoReturn]:
        def blocked(*args: Any, **kwargs: Any) -> NoReturn:
            fail(tried, f"an answer that does not call {name}", f"a call to {name}", hint)
        return blocked

    try:
        for name, (owner, attr) in calls.items():
            setattr(owner, attr, refuse(name))
        yield
    finally:
        for owner, attr, own, original in reversed(saved):
            if own:
                setattr(owner, attr, original)
            else:  # an object's attribute that came from its class: remove the patch
                delattr(owner, attr)


OVERFLOW_HINT = ("your softmax overflows on large scores: exp of a score above ~709 (float64) or ~88 (float32) is inf, "
                 "and inf / inf = nan; subtract each row's maximum before exp (softmax(x) = softmax(x - max), the stable "
                 "softmax of chapter 03), or use torch.softmax, which does")


def naive_softmax(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp / sum without subtracting the maximum: what an overflowing softmax returns (nan on large scores)."""
    e = torch.exp(scores)
    return e / e.sum(dim, keepdim=True)


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
            fail(tried, f"{describe(expected)}\n  {_label('first difference')} {where}", got, mistake_hint)
    fail(tried, f"{describe(expected)}\n  {_label('first difference')} {where}", got, hint)


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
# A chapter's hints are text a teacher edits, in ``checks/hints/chNN.md``; the chapter module reads
# them with ``HINTS = load_hints("chNN")``. ``hint("ch07.noam_lr")`` prints the next level each call.

HINT_LEVELS = ("idea", "approach", "near-code")
_HERE = Path(__file__).resolve().parent
_FENCE = re.compile(r"(`{3,})")
_EXERCISE = re.compile(r"[A-Za-z_]\w*")


@dataclasses.dataclass
class _Block:
    """One heading of a hints file and the lines under it, up to the next heading."""

    depth: int  # 1 for '#', 2 for '##', ...
    title: str
    line: int  # the heading's line number (1-based)
    body: list[str] = dataclasses.field(default_factory=list)


@functools.cache
def load_hints(chapter: str) -> dict[str, tuple[str, str, str]]:
    """The graded hints of a chapter, ``{exercise: (idea, approach, near-code)}``, read once from
    ``checks/hints/<chapter>.md`` and checked against the ``@checker`` functions of ``checks/<chapter>.py``.

    The file (Markdown) is an optional title and preamble, then for each exercise a heading
    ``## name`` (its checker's name) followed by exactly ``### idea``, ``### approach`` and
    ``### near-code``, in this order. A level's text is the lines under its heading, verbatim, without
    the blank lines at its start and end; near-code is one fenced code block (three or more backticks),
    whose content is the hint, so that ``#`` lines in code are not headings. Any other heading, a missing
    or repeated level, a repeated exercise, hints without a checker or a checker without hints raise
    ValueError ``"<file>:<line>: <what is wrong>"``.
    """
    return read_hints(_HERE / "hints" / f"{chapter}.md", _HERE / f"{chapter}.py")


def read_hints(path: Path, source: Path) -> dict[str, tuple[str, str, str]]:
    """The hints in the file ``path`` (format: :func:`load_hints`), checked against the checkers in ``source``."""
    chapter = path.stem
    exercises = _exercises(path, _blocks(path))
    checkers = _checker_lines(source, chapter)
    for name, (line, _) in exercises.items():
        if name not in checkers:
            raise ValueError(f"{path}:{line}: hints for {name!r}, but {source.name} has no @checker('{chapter}.{name}')")
    for name, line in checkers.items():
        if name not in exercises:
            raise ValueError(f"{source}:{line}: @checker('{chapter}.{name}') has no hints: add '## {name}' to {path}")
    return {name: levels for name, (_, levels) in exercises.items()}


def _blocks(path: Path) -> list[_Block]:
    """Split a hints file at its headings; lines inside a fenced code block are never headings."""
    blocks = [_Block(0, "", 0)]  # the preamble
    fence, fence_line = "", 0
    for number, text in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        opening = _FENCE.match(text)
        if fence and _closes(text, fence):
            fence = ""
        elif not fence and opening:
            fence, fence_line = opening.group(1), number
        elif not fence and text.startswith("#"):
            hashes = len(text) - len(text.lstrip("#"))
            blocks.append(_Block(hashes, text[hashes:].strip(), number))
            continue
        blocks[-1].body.append(text)
    if fence:
        raise ValueError(f"{path}:{fence_line}: this code block is never closed (a line of {fence})")
    return blocks


def _exercises(path: Path, blocks: list[_Block]) -> dict[str, tuple[int, tuple[str, str, str]]]:
    """``{exercise: (line of its heading, (idea, approach, near-code))}`` from a file's blocks."""
    found: dict[str, tuple[int, tuple[str, str, str]]] = {}
    heads = [i for i, b in enumerate(blocks) if b.depth == 2]
    for block in blocks[1:heads[0] if heads else None]:
        if block.depth != 1:
            raise ValueError(f"{path}:{block.line}: '{'#' * block.depth} {block.title}' before the first '## exercise'")
    for start, end in zip(heads, heads[1:] + [len(blocks)]):
        head = blocks[start]
        if head.title in found:
            raise ValueError(f"{path}:{head.line}: exercise {head.title!r} again (first at line {found[head.title][0]})")
        found[head.title] = (head.line, _levels(path, head, blocks[start + 1:end]))
    return found


def _levels(path: Path, head: _Block, levels: list[_Block]) -> tuple[str, str, str]:
    """The three hint texts of one exercise: its heading, then its ``###`` blocks."""
    if not _EXERCISE.fullmatch(head.title):
        raise ValueError(f"{path}:{head.line}: '## {head.title}' is not an exercise name (a checker's function name)")
    if any(text.strip() for text in head.body):
        raise ValueError(f"{path}:{head.line}: text under '## {head.title}' before '### idea'")
    for i, block in enumerate(levels):
        wanted = HINT_LEVELS[i] if i < len(HINT_LEVELS) else None
        if block.depth != 3 or block.title != wanted:
            expected = f"'### {wanted}'" if wanted else "the next '## exercise'"
            raise ValueError(f"{path}:{block.line}: unexpected heading '{'#' * block.depth} {block.title}' "
                             f"in exercise {head.title!r}; expected {expected}")
    if len(levels) < len(HINT_LEVELS):
        missing = HINT_LEVELS[len(levels)]
        raise ValueError(f"{path}:{head.line}: exercise {head.title!r} has no '### {missing}' (each exercise has "
                         + ", ".join(f"### {level}" for level in HINT_LEVELS) + ")")
    idea, approach, code = levels
    return _text(path, idea), _text(path, approach), _code(path, code)


def _trimmed(body: list[str]) -> list[str]:
    """The lines without the blank lines at the start and the end."""
    filled = [i for i, text in enumerate(body) if text.strip()]
    return body[filled[0]:filled[-1] + 1] if filled else []


def _text(path: Path, block: _Block) -> str:
    lines = _trimmed(block.body)
    if not lines:
        raise ValueError(f"{path}:{block.line}: '### {block.title}' has no text")
    return "\n".join(lines)


def _code(path: Path, block: _Block) -> str:
    """The content of the one fenced code block under ``### near-code``."""
    lines = _trimmed(block.body)
    fence = _FENCE.match(lines[0]) if lines else None
    ends = [i for i, text in enumerate(lines) if fence and i > 0 and _closes(text, fence.group(1))]
    if not fence or ends != [len(lines) - 1] or not "".join(lines[1:-1]).strip():
        raise ValueError(f"{path}:{block.line}: '### {block.title}' must hold one fenced code block (```python ... ```) "
                         "with code in it, and nothing else")
    return "\n".join(lines[1:-1])


def _closes(text: str, fence: str) -> bool:
    """Whether a line closes a code block opened by ``fence``: backticks only, at least as many."""
    line = text.rstrip()
    return len(line) >= len(fence) and set(line) == {"`"}


def _checker_lines(source: Path, chapter: str) -> dict[str, int]:
    """``{exercise: line}`` for every function of a chapter module decorated ``@checker("<chapter>.exercise")``."""
    found: dict[str, int] = {}
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        decorators = node.decorator_list if isinstance(node, ast.FunctionDef) else []
        for deco in decorators:
            if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Name) and deco.func.id == "checker"
                    and deco.args and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
                found[deco.args[0].value.removeprefix(f"{chapter}.")] = node.lineno
    return found


_shown: dict[str, int] = {}


@functools.cache
def korean_hints(chapter: str) -> dict[str, tuple[str, str, str]]:
    """The Korean graded hints, ``checks/hints/ko/<chapter>.md``: the same exercises and levels as the English."""
    return read_hints(_HERE / "hints" / "ko" / f"{chapter}.md", _HERE / f"{chapter}.py")


def hints_for(name: str) -> tuple[str, ...]:
    """The graded hints of ``"chNN.exercise"``; raises KeyError naming what exists."""
    chapter, _, exercise = name.partition(".")
    try:
        module = importlib.import_module(f"{__name__}.{chapter}")
    except ImportError:
        raise KeyError(f"no checker chapter {chapter!r}: use a name like 'ch03.scaled_dot_product_attention'") from None
    table: Mapping[str, tuple[str, ...]] = getattr(module, "HINTS", {})
    if language() == "ko" and table:
        table = korean_hints(chapter)
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
    name_of_level = LEVEL_NAMES[language()][level - 1] if len(levels) == len(HINT_LEVELS) else f"{level}/{len(levels)}"
    more = _label("next hint").format(level=level + 1) if level < len(levels) else _label("last hint")
    print(f"{_label('hint line').format(level=level, count=len(levels), name=name_of_level)}{more}:\n{levels[level - 1]}")


def hint_available(name: str) -> str:
    """The line a failure message ends with when ``name`` has hints."""
    try:
        hints_for(name)
    except KeyError:
        return ""
    return f"\n  {_label('more help')} checks.hint({name!r})"


def __getattr__(name: str) -> Any:
    """Load ``checks.ch03`` and friends on first use, so ``from course_lib.course import checks`` is enough."""
    if name.startswith("ch") and name[2:].isdigit():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ``python -m course_lib check`` puts a per-run token in the kernel's os.environ just before it imports
# this module, before the first cell; it is read once and removed here, so no cell or subprocess sees it.
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
