"""The language checkers speak: English, or Korean in the Korean edition (``checks.language("ko")``).

What changes in Korean: the fixed words of a message (tried / expected / got / hint, "more help", the hint
levels), the ``✓`` lines, the hints a checker gives for a mistake, the cases it names as tried, and the graded
hints (``hints/ko/chNN.md``, the same exercises and levels as ``hints/chNN.md``). The ✓ lines, mistake hints
and cases are translated by exact English text through ``hints/ko/messages.json`` (a list of
``[English, Korean]`` pairs; a graded hint given as a failure's hint is found in the Korean hints file); a text
built at run time (an f-string with the case's numbers) stays English. :func:`static_messages` lists the texts
that must have a translation; ``tests/test_edition.py`` checks that every one has, and that none is left over.
"""
from __future__ import annotations

import ast
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

LANGUAGES = ("en", "ko")
_HERE = Path(__file__).resolve().parent
_state = {"language": "en"}

CATALOG = _HERE / "hints" / "ko" / "messages.json"
LABELS = {
    "en": {"tried": "tried:   ", "expected": "expected:", "got": "got:     ", "hint": "hint:    ",
           "first difference": "first difference:", "more help": "more help:",
           "hint line": "Hint {level} of {count}, {name}", "next hint": " (call again for hint {level})",
           "last hint": " (the last hint; the solution is in solutions/)"},
    "ko": {"tried": "시도:", "expected": "기대:", "got": "결과:", "hint": "힌트:",
           "first difference": "처음 다른 곳:", "more help": "힌트 더 보기:",
           "hint line": "힌트 {level}/{count}, {name}", "next hint": " (다시 부르면 힌트 {level})",
           "last hint": " (마지막 힌트입니다. 풀이는 ko/solutions/에 있습니다)"},
}
LEVELS = {"en": ("idea", "approach", "near-code"), "ko": ("아이디어", "접근", "코드에 가까운 힌트")}


def language(code: str | None = None) -> str:
    """Set the checkers' language (``"en"`` or ``"ko"``) and return it; ``language()`` only returns it."""
    if code is not None:
        if code not in LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(map(repr, LANGUAGES))}, got {code!r}")
        _state["language"] = code
    return _state["language"]


def label(key: str) -> str:
    """A fixed word of a checker's message in the current language."""
    return LABELS[_state["language"]][key]


@functools.cache
def catalog() -> dict[str, str]:
    """English text -> Korean text, read once from :data:`CATALOG`."""
    path = CATALOG
    if not path.exists():
        return {}
    pairs = json.loads(path.read_text(encoding="utf-8"))
    bad = [p for p in pairs if not (isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and s for s in p))]
    if bad:
        raise ValueError(f"{path}: every entry must be [English, Korean], two non-empty strings; found {bad[0]!r}")
    return dict(pairs)


def translate(text: str) -> str:
    """``text`` in the current language: itself in English, its catalogue entry (or itself) in Korean."""
    if _state["language"] == "en" or not isinstance(text, str):
        return text
    return catalog().get(text) or graded_pairs().get(text, text)


def translate_within(text: str) -> str:
    """Like :func:`translate`, and where ``text`` is not a catalogue entry, each entry found inside it (a case
    named inside ``f"softmax({case})"``) is translated in place, longest first."""
    whole = translate(text)
    if whole != text or _state["language"] == "en" or not isinstance(text, str):
        return whole
    for english in _by_length():
        if english in text:
            text = text.replace(english, catalog()[english])
    return text


@functools.cache
def _by_length() -> list[str]:
    return sorted((k for k in catalog() if len(k) >= 12), key=len, reverse=True)


@functools.cache
def graded_pairs() -> dict[str, str]:
    """English graded hint -> its Korean level, for a checker that gives a graded hint as a failure's hint."""
    from . import korean_hints, load_hints

    pairs: dict[str, str] = {}
    for korean in sorted((_HERE / "hints" / "ko").glob("ch*.md")):
        translated = korean_hints(korean.stem)
        for name, levels in load_hints(korean.stem).items():
            pairs.update(zip(levels, translated[name]))
    return pairs


def _strings(node: ast.AST) -> Iterator[str]:
    """The plain string constants a hint or message argument may be (one, or either side of an ``if``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def static_messages(source: str) -> list[str]:
    """The constant texts of a checker module that reach a learner: ``ok(...)`` lines, hints given to ``fail``,
    ``expect_close``, ``expect_shape``, ``forbidden`` and friends (``hint=``), the first item of each
    ``(hint, value)`` pair in a list or tuple (``mistakes=[...]``, ``variants = [...]``), and strings assigned to a
    name with "hint" in it or to a constant in capitals (a dict of them too)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            if name == "ok" and node.args:
                found += _strings(node.args[0])
            if name == "fail" and len(node.args) >= 4:
                found += _strings(node.args[3])
            for kw in node.keywords:
                if kw.arg == "hint":
                    found += _strings(kw.value)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and any(
                _hint_name(t) for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            values = node.value.values if isinstance(node.value, ast.Dict) else [node.value]
            for value in values:
                found += _strings(value)
        elif isinstance(node, (ast.List, ast.Tuple)):  # (hint, wrong version) pairs, wherever a list of them is built
            for item in node.elts:
                if isinstance(item, ast.Tuple) and len(item.elts) >= 2:
                    found += _strings(item.elts[0])
    return list(dict.fromkeys(t for t in found if " " in t and re.search("[A-Za-z]", t)))  # prose, not '은' or 'x'


def _hint_name(target: ast.expr) -> bool:
    """A name that holds a message: ``hint``, ``mistake_hint``, ``_GROW_HINT``, or any module constant in capitals."""
    name = target.id if isinstance(target, ast.Name) else ""
    return "hint" in name.lower() or (name.lstrip("_")[:1].isupper() and name.upper() == name)


def all_static_messages() -> dict[str, str]:
    """Every text of :func:`static_messages` over the checker modules, with the module it comes from."""
    found: dict[str, str] = {}
    for path in sorted(_HERE.glob("*.py")):
        if path.stem != "i18n":
            for text in static_messages(path.read_text(encoding="utf-8")):
                found.setdefault(text, path.name)
    return found
