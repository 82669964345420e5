"""The course map is true: ``course_lib.course.chapters.CHAPTERS`` against the notebooks, the README and chapter 00.

For any number of chapters: every ``notebooks/NN_name.ipynb`` is a published row of the list (and every
published row has its notebook, titled ``# NN · title``); a row marked ``planned`` has no notebook yet
(when its notebook arrives, remove the flag); the README's chapter table has one row per published
chapter with its notebook, modules and summary; chapter 00's markdown holds exactly the table ``course_map()``
makes; each notebook's "**What comes next**" names the next published chapter ("chapter
NN"), and only the last one says it is the last chapter.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_lib.course.chapters import CHAPTERS, Chapter, course_map, modules_cell, next_chapter, published

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LAST = re.compile(r"\blast chapter\b", re.IGNORECASE)


def _cells(path: Path) -> list[dict]:
    return [{**c, "source": "".join(c["source"])} for c in json.loads(path.read_text(encoding="utf-8"))["cells"]]


def next_problems(number: int, summary: str, chapters: list[Chapter]) -> list[str]:
    """What is wrong with chapter ``number``'s last cell (its summary) given the published ``chapters``."""
    if "**What comes next**" not in summary:
        return ["the summary has no '**What comes next**' line"]
    text = summary.split("**What comes next**", 1)[1]
    following = next((c for c in chapters if c.number > number), None)
    if following is None:
        return [] if LAST.search(text) else ["it is the last chapter: its 'What comes next' must say so ('the last chapter')"]
    problems = []
    if not re.search(rf"\bchapter {following.nn}\b", text):
        problems.append(f"'What comes next' must name chapter {following.nn} ({following.title})")
    if LAST.search(text):
        problems.append(f"'What comes next' says 'last chapter', but chapter {following.nn} follows")
    return problems


def test_next_problems_for_any_chapter_count():
    three = [Chapter(0, "a", "A", "a"), Chapter(1, "b", "B", "b"), Chapter(2, "c", "C", "c")]
    assert next_problems(0, "## Summary\n\n**What comes next**: chapter 01 builds B.", three) == []
    assert next_problems(2, "## Summary\n\n**What comes next**: this is the last chapter.", three) == []
    assert next_problems(1, "## Summary\n\n**What comes next**: this is the last chapter.", three) == [
        "'What comes next' must name chapter 02 (C)", "'What comes next' says 'last chapter', but chapter 02 follows"]
    assert next_problems(1, "## Summary\n\n**What comes next**: chapter 12 is next.", three) == [
        "'What comes next' must name chapter 02 (C)"]
    assert next_problems(2, "## Summary\n\n**What comes next**: chapter 03.", three) == [
        "it is the last chapter: its 'What comes next' must say so ('the last chapter')"]
    assert next_problems(0, "## Summary", three) == ["the summary has no '**What comes next**' line"]
    assert next_problems(1, "**What comes next**: the last chapter.", three[:2]) == []  # a shorter course


def test_the_list_is_numbered_in_order_and_names_existing_modules():
    assert [c.number for c in CHAPTERS] == list(range(len(CHAPTERS)))
    assert len({c.name for c in CHAPTERS}) == len(CHAPTERS)
    for c in published():
        for module in c.modules:
            assert (ROOT / "course_lib" / f"{module}.py").exists(), f"chapter {c.nn} lists course_lib/{module}.py"
    assert next_chapter(published()[-1].number) is None
    assert next_chapter(0) == published()[1]


def test_every_notebook_is_a_published_chapter_and_the_other_way_round():
    by_stem = {c.stem: c for c in CHAPTERS}
    for path in NOTEBOOKS:
        assert path.stem in by_stem, f"notebooks/{path.name} is not in course_lib/course/chapters.py: add its row"
        assert not by_stem[path.stem].planned, (
            f"notebooks/{path.name} exists: remove planned=True from its row in course_lib/course/chapters.py")
    stems = {p.stem for p in NOTEBOOKS}
    for c in published():
        assert c.stem in stems, f"chapter {c.nn} is listed but notebooks/{c.stem}.ipynb does not exist (mark it planned)"


@pytest.mark.parametrize("chapter", published(), ids=lambda c: c.stem)
def test_title_and_what_comes_next(chapter):
    cells = _cells(ROOT / "notebooks" / f"{chapter.stem}.ipynb")
    heading = re.search(r"^# (.+)$", cells[0]["source"], re.MULTILINE)
    assert heading and heading.group(1).strip() == f"{chapter.nn} · {chapter.title}", (
        "the notebook's title and course_lib/course/chapters.py disagree")
    assert next_problems(chapter.number, cells[-1]["source"], published()) == []
    elsewhere = [i for i, c in enumerate(cells[:-1]) if c["cell_type"] == "markdown" and LAST.search(c["source"])]
    if next_chapter(chapter.number) is not None:
        assert elsewhere == [], f"cells {elsewhere} call this the last chapter"


def _readme_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("\n## Chapters\n", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): line for line in table.splitlines() if (m := re.match(r"\| (\d\d) \|", line))}


def test_the_readme_table_is_the_list():
    rows = _readme_rows()
    assert sorted(rows) == [c.nn for c in published()], "the README's chapter table must list the published chapters"
    for c in published():
        cells = [cell.strip() for cell in rows[c.nn].strip("|").split("|")]
        assert f"(notebooks/{c.stem}.ipynb)" in cells[1], f"README row {c.nn}: link notebooks/{c.stem}.ipynb"
        assert cells[2] == modules_cell(c), f"README row {c.nn}: modules must read {modules_cell(c)}"
        assert c.summary in cells, f"README row {c.nn}: 'what you build' must read {c.summary!r}"


def test_chapter_00_shows_the_map_of_the_list():
    """The map is written in 00's markdown (a notebook stored without outputs still shows it) and is the list's."""
    cells = _cells(ROOT / "notebooks" / "00_introduction.ipynb")
    maps = [c["source"] for c in cells if c["cell_type"] == "markdown" and re.search(r"^\| ?\d\d ?\|", c["source"], re.M)]
    assert len(maps) == 1, "chapter 00 holds exactly one course map"
    assert maps[0].rstrip().endswith(course_map().rstrip()), (
        "chapter 00's course map differs from course_lib.course.chapters.course_map(): paste the new table")


def test_the_map_lists_every_published_chapter_and_no_planned_one():
    text = course_map(link=lambda c: f"notebooks/{c.stem}" if c.number == 3 else None)
    for c in CHAPTERS:
        assert (f"`{c.stem}`" in text) != c.planned
    assert "[`03_attention`](notebooks/03_attention)" in text
