"""The graded hints live in Markdown (course_lib/course/checks/hints/chNN.md), read by checks.load_hints:
the text comes back exactly as the Python tuples had it, tricky text survives, and a malformed file
fails with its file and line."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_lib.course import checks
from course_lib.course.checks import ch01, ch03, load_hints, read_hints

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HINTS_DIR = ROOT / "course_lib" / "course" / "checks" / "hints"

# Frozen copies of the tuples as they stood in ch01.py / ch03.py before the move to Markdown.
FROZEN = {
    "ch01.jamo_indices": (
        "Unicode lists the 11 172 syllables 가..힣 in one block, in dictionary order: all syllables with the "
        "first initial, then the second, ...; inside one initial, by medial; inside one medial, by final. "
        "So a syllable's position in the block is a number written in a mixed base.",
        "Take the syllable's offset from the first syllable 가 (ord(ch) - ord('가'), 0xAC00). There are 19 "
        "initials, 21 medials and 28 finals (final 0 = none). One initial's block holds 21 * 28 syllables, one "
        "medial's run holds 28: integer division and remainder peel the three indices off. Anything outside "
        "0 <= offset < 19 * 21 * 28 is not a syllable.",
        "offset = ord(syllable) - 0xAC00\n"
        "if not 0 <= offset < 11172: raise ValueError(...)\n"
        "return offset // 588, (offset // 28) % 21, offset % 28",
    ),
    "ch01.merge_pair": (
        "Read the symbols left to right, like a person would: when the pair starts here, glue the two symbols "
        "and continue AFTER both of them, so two merges never share a symbol.",
        "Use an index i and a while loop (a for loop cannot skip). If symbols[i] and symbols[i + 1] are the "
        "pair (and i + 1 exists), append the concatenation and move 2; else append symbols[i] and move 1. "
        "Compare whole symbols, never joined text.",
        "out, i = [], 0\nwhile i < len(symbols):\n"
        "    if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == tuple(pair): out.append(symbols[i] + symbols[i + 1]); i "
        "+= 2\n"
        "    else: out.append(symbols[i]); i += 1",
    ),
    "ch03.causal_mask": (
        "Row i is the query at position i, column j the key at position j; a decoder may look at itself "
        "and the past, never the future.",
        "Allowed means j <= i: that is the lower triangle INCLUDING the diagonal. Build it from a square of "
        "ones (a triangle function) or by comparing a column of positions with a row of positions; the "
        "result must be bool.",
        "torch.ones(n, n, dtype=torch.bool).tril()   # or: i = torch.arange(n); i[None, :] <= i[:, None]",
    ),
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_hints_read_from_markdown_equal_the_former_python_tuples(name):
    chapter, _, exercise = name.partition(".")
    module = {"ch01": ch01, "ch03": ch03}[chapter]
    assert module.HINTS[exercise] == FROZEN[name]
    assert checks.hints_for(name) == FROZEN[name]


def test_every_chapter_module_takes_its_hints_from_its_markdown_file_once():
    files = sorted(p.stem for p in HINTS_DIR.glob("ch*.md"))
    modules = sorted(p.stem for p in HINTS_DIR.parent.glob("ch*.py"))
    assert files == modules and {f"ch{n:02d}" for n in range(1, 10)} <= set(files)  # 01-09 and later chapters
    for chapter in files:
        module = getattr(checks, chapter)
        assert module.HINTS is load_hints(chapter)  # cached: read once
        assert all(len(levels) == 3 and all(levels) for levels in module.HINTS.values())


def test_the_hints_files_are_shipped_with_the_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "course_lib.course.checks" in config["packages"]
    shipped = config["package-data"]["course_lib.course.checks"]
    assert {"hints/*.md", "hints/ko/*.md", "hints/ko/*.json"} <= set(shipped)  # the Korean edition's hints and messages


CHECKERS = '''from . import checker


@checker("ch99.first")
def first(fn):
    pass


@checker("ch99.second")
def second(fn):
    pass
'''

TRICKY = '''# Chapter 99: hints

A preamble the loader skips, with `code` and a # inside a line.

## first

### idea

받침 and `inline code`, a # in the middle, trailing spaces kept   

### approach


First paragraph.

Second paragraph after a blank line; **bold** stays as written.

### near-code

````python
# a comment, not a heading
## nor this one
x = "```"
```
    indented  

y = 1   
````

## second
### idea
One line.
### approach
Two: ### not a heading mid-line.
### near-code
```
z = 0
```
'''

TRICKY_EXPECTED = {
    "first": (
        "받침 and `inline code`, a # in the middle, trailing spaces kept   ",
        "First paragraph.\n\nSecond paragraph after a blank line; **bold** stays as written.",
        '# a comment, not a heading\n## nor this one\nx = "```"\n```\n    indented  \n\ny = 1   ',
    ),
    "second": ("One line.", "Two: ### not a heading mid-line.", "z = 0"),
}


def _write(tmp_path: Path, markdown: str, source: str = CHECKERS, newline: str = "\n") -> tuple[Path, Path]:
    md, py = tmp_path / "ch99.md", tmp_path / "ch99.py"
    md.write_bytes(markdown.replace("\n", newline).encode("utf-8"))
    py.write_text(source, encoding="utf-8")
    return md, py


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_tricky_text_comes_back_verbatim(tmp_path, newline):
    assert read_hints(*_write(tmp_path, TRICKY, newline=newline)) == TRICKY_EXPECTED


VALID = '''# Chapter 99: hints

## first

### idea

Idea one.

### approach

Approach one.

### near-code

```python
x = 1
```

## second

### idea

Idea two.

### approach

Approach two.

### near-code

```python
y = 2
```
'''


def test_the_valid_example_reads(tmp_path):
    assert VALID.splitlines()[18] == "## second" and VALID.splitlines()[30] == "```python"  # the lines named below
    assert read_hints(*_write(tmp_path, VALID)) == {
        "first": ("Idea one.", "Approach one.", "x = 1"), "second": ("Idea two.", "Approach two.", "y = 2")}


def _broken(old: str, new: str, count: int = 1) -> str:
    assert old in VALID
    return VALID.replace(old, new, count)


MALFORMED = {
    "missing level in the middle": (
        _broken("### approach\n\nApproach one.\n\n", ""),
        "ch99.md:9: unexpected heading '### near-code' in exercise 'first'; expected '### approach'"),
    "missing level at the end": (
        _broken("### near-code\n\n```python\ny = 2\n```\n", ""),
        "ch99.md:19: exercise 'second' has no '### near-code'"),
    "levels out of order": (
        _broken("### idea\n\nIdea one.\n\n### approach\n\nApproach one.",
                "### approach\n\nApproach one.\n\n### idea\n\nIdea one."),
        "ch99.md:5: unexpected heading '### approach' in exercise 'first'; expected '### idea'"),
    "repeated level": (
        _broken("y = 2\n```\n", "y = 2\n```\n\n### near-code\n\n```\nz = 3\n```\n"),
        "ch99.md:35: unexpected heading '### near-code' in exercise 'second'; expected the next '## exercise'"),
    "duplicate exercise": (
        _broken("## second", "## first"),
        "ch99.md:19: exercise 'first' again (first at line 3)"),
    "unknown level heading": (
        _broken("### approach\n\nApproach one.", "### hint\n\nApproach one."),
        "ch99.md:9: unexpected heading '### hint' in exercise 'first'; expected '### approach'"),
    "unknown deeper heading": (
        _broken("Idea one.\n", "Idea one.\n\n#### note\n"),
        "ch99.md:9: unexpected heading '#### note' in exercise 'first'; expected '### approach'"),
    "a title after the exercises": (
        _broken("y = 2\n```\n", "y = 2\n```\n\n# Appendix\n"),
        "ch99.md:35: unexpected heading '# Appendix' in exercise 'second'; expected the next '## exercise'"),
    "a level before any exercise": (
        _broken("# Chapter 99: hints\n", "# Chapter 99: hints\n\n### idea\n"),
        "ch99.md:3: '### idea' before the first '## exercise'"),
    "not an exercise name": (
        _broken("## first", "## the first one"),
        "ch99.md:3: '## the first one' is not an exercise name"),
    "text before the first level": (
        _broken("## first\n", "## first\nStray text.\n"),
        "ch99.md:3: text under '## first' before '### idea'"),
    "empty level": (
        _broken("Idea one.\n", ""),
        "ch99.md:5: '### idea' has no text"),
    "near-code without a fence": (
        _broken("```python\nx = 1\n```", "x = 1"),
        "ch99.md:13: '### near-code' must hold one fenced code block"),
    "near-code with text after the fence": (
        _broken("x = 1\n```\n", "x = 1\n```\nand more\n"),
        "ch99.md:13: '### near-code' must hold one fenced code block"),
    "near-code with two fences": (
        _broken("x = 1\n```\n", "x = 1\n```\n```\nx = 2\n```\n"),
        "ch99.md:13: '### near-code' must hold one fenced code block"),
    "empty code block": (
        _broken("```python\nx = 1\n```", "```python\n\n```"),
        "ch99.md:13: '### near-code' must hold one fenced code block"),
    "unclosed fence": (
        VALID.rstrip("`\n") + "\n",
        "ch99.md:31: this code block is never closed"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_hints_file_fails_naming_its_file_and_line(tmp_path, case):
    markdown, message = MALFORMED[case]
    md, py = _write(tmp_path, markdown)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / message}")):
        read_hints(md, py)


def test_hints_without_a_checker_fail_at_their_heading(tmp_path):
    md, py = _write(tmp_path, VALID, CHECKERS.split("\n\n\n@checker(\"ch99.second\")")[0])
    with pytest.raises(ValueError, match=re.escape(f"{md}:19: hints for 'second', but ch99.py has no @checker('ch99.second')")):
        read_hints(md, py)


def test_a_checker_without_hints_fails_at_its_definition(tmp_path):
    source = CHECKERS + '\n\n@checker("ch99.third")\ndef third(fn):\n    pass\n'
    assert source.splitlines()[13] == "@checker(\"ch99.third\")"
    md, py = _write(tmp_path, VALID, source)
    with pytest.raises(ValueError, match=re.escape(f"{py}:15: @checker('ch99.third') has no hints: add '## third' to {md}")):
        read_hints(md, py)
