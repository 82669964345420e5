"""Every notebook opens with the course header and ends with a summary (COURSE_DESIGN §4).

First cell: markdown ``# NN · Title`` (lectures) or ``# Exercises NN · Title`` (solutions and
exercises), NN being the file's number, with what you will learn, prerequisites, the measured CPU
time and a glossary table with English and 한국어 columns. Second cell: code that seeds
(``set_seed(``). Last cell: markdown ``## Summary``, in lectures with ``**What comes next**``; in
exercises and solutions the summary is followed by the ``## Open questions`` section.
No stored outputs. Parametrized over the files present, so a new chapter is checked at once.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb"))
HANGUL = re.compile(r"[\uac00-\ud7a3]")
TITLE = {"notebooks": re.compile(r"# (\d\d) · \S"), "solutions": re.compile(r"# Exercises (\d\d) · \S"),
         "exercises": re.compile(r"# Exercises (\d\d) · \S")}
TITLE_SHAPE = {"notebooks": "'# NN · Title'", "solutions": "'# Exercises NN · Title'",
               "exercises": "'# Exercises NN · Title'"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _table_body_rows(markdown: str) -> list[str]:
    """The rows of markdown tables below their |---| separator lines."""
    rows, in_body = [], False
    for line in markdown.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            in_body = False
        elif re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            in_body = True
        elif in_body:
            rows.append(line)
    return rows


def _glossary_columns(markdown: str) -> list[str]:
    """The header row of the first table after **Glossary**, lower-cased cells ([] if none)."""
    after = markdown.split("**Glossary**", 1)[1] if "**Glossary**" in markdown else ""
    for line in after.splitlines():
        if line.strip().startswith("|"):
            return [c.strip().lower() for c in line.strip().strip("|").split("|")]
    return []


def header_problems(nb: nbformat.NotebookNode, folder: str = "notebooks", number: str | None = None) -> list[str]:
    """Everything wrong with a notebook's header, seed cell, summary and outputs (empty if fine).

    ``folder`` is notebooks, solutions or exercises; ``number`` the NN of its file name.
    """
    cells = nb.cells
    if len(cells) < 3:
        return [f"only {len(cells)} cells"]
    problems = []
    first, second, last = cells[0], cells[1], cells[-1]
    if first.cell_type != "markdown":
        problems.append("the first cell must be markdown (the header)")
    text = first.source
    title = TITLE[folder].match(text)
    if not title:
        problems.append(f"the header must start with {TITLE_SHAPE[folder]}, it starts with {text[:40]!r}")
    elif number is not None and title.group(1) != number:
        problems.append(f"the title says chapter {title.group(1)} but the file is number {number}")
    for needed in ("**What you will learn**", "**Prerequisites:**", "**Time to run on a laptop CPU:**", "**Glossary**"):
        if needed not in text:
            problems.append(f"the header lacks {needed}")
    time_line = re.search(r"\*\*Time to run on a laptop CPU:\*\*(.*)", text)
    if time_line and not re.search(r"\d", time_line.group(1)):
        problems.append("the CPU time must be a measured number (e.g. 'about 40 s')")
    columns = _glossary_columns(text)
    if "**Glossary**" in text and not ("english" in columns and "한국어" in columns):
        problems.append(f"the glossary table needs columns English | 한국어 (| meaning |), found {columns}")
    if not any(HANGUL.search(row) for row in _table_body_rows(text)):
        problems.append("the glossary table needs rows with the Korean term (| attention | 어텐션 |)")
    if second.cell_type != "code" or "set_seed(" not in second.source:
        problems.append("the second cell must be code that calls set_seed(...)")
    questions = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Open questions")]
    if questions and folder != "notebooks":  # exercise notebooks end with open questions, right after the summary
        last = cells[questions[0] - 1]
    if last.cell_type != "markdown" or not last.source.startswith("## Summary"):
        problems.append("the last cell (in exercises: the cell before '## Open questions') must be markdown starting with '## "
                        "Summary'")
    elif folder == "notebooks" and "**What comes next**" not in last.source:
        problems.append("the summary lacks a '**What comes next**' line")
    stored = [i for i, c in enumerate(cells) if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    if stored:
        problems.append(f"cells {stored} have stored outputs or execution counts (save notebooks without outputs)")
    return problems


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS, "no notebooks found in notebooks/, solutions/, exercises/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_rel)
def test_notebook_header_and_summary(path):
    problems = header_problems(nbformat.read(path, as_version=4), path.parent.name, path.name[:2])
    assert not problems, f"{_rel(path)}:\n  - " + "\n  - ".join(problems)


def _good() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# 03 · Attention\n**What you will learn**\n- queries\n\n**Prerequisites:** chapter 02\n\n"
            "**Time to run on a laptop CPU:** about 40 s (measured on 2 cores)\n\n**Glossary**\n\n"
            "| English | 한국어 |\n|---|---|\n| attention | 어텐션 |"),
        nbformat.v4.new_code_cell("from course_lib import set_seed\nset_seed(0)"),
        nbformat.v4.new_markdown_cell("## Summary\n\n- done\n\n**What comes next**: chapter 04."),
    ]
    return nb


def test_the_checker_accepts_a_good_header_and_names_each_problem():
    assert header_problems(_good()) == []
    nb = _good()
    nb.cells[0].source = nb.cells[0].source.replace("**Glossary**", "Glossary").replace("어텐션", "attention")
    nb.cells[1].source = "import torch"
    nb.cells[-1].source = "## Summary\n\nThat's all."
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    problems = "\n".join(header_problems(nb))
    for expected in ("lacks **Glossary**", "Korean term", "set_seed", "What comes next", "stored outputs"):
        assert expected in problems
    nb = _good()
    nb.cells[0].source = nb.cells[0].source.replace("# 03 · Attention", "Attention")
    nb.cells[-1] = nbformat.v4.new_code_cell("print('bye')")
    problems = "\n".join(header_problems(nb))
    assert "'# NN · Title'" in problems and "'## Summary'" in problems


def test_folder_specific_rules():
    """Solutions/exercises are titled 'Exercises NN'; NN matches the file; the table has EN/KO columns."""
    nb = _good()
    assert header_problems(nb, "notebooks", "03") == []
    assert "the file is number 04" in "\n".join(header_problems(nb, "notebooks", "04"))
    assert "'# Exercises NN · Title'" in "\n".join(header_problems(nb, "solutions", "03"))
    nb.cells[0].source = nb.cells[0].source.replace(
        "# 03 · Attention", "# Exercises 03 · Attention<!-- BEGIN SOLUTION --> (solutions)<!-- END SOLUTION -->")
    nb.cells[-1].source = "## Summary\n\n- done"  # exercises need no 'What comes next'
    assert header_problems(nb, "solutions", "03") == [] and header_problems(nb, "exercises", "03") == []
    lecture = _good()
    lecture.cells[-1].source = "## Summary\n\n- done"
    assert "lacks a '**What comes next**'" in "\n".join(header_problems(lecture, "notebooks", "03"))
    nb = _good()
    nb.cells[0].source = nb.cells[0].source.replace("| English | 한국어 |", "| term | 용어 |")
    assert "columns English | 한국어" in "\n".join(header_problems(nb))
    nb.cells[0].source = nb.cells[0].source.replace("| term | 용어 |", "| English | 한국어 | meaning |")
    nb.cells[0].source = nb.cells[0].source.replace("|---|---|", "|---|---|---|") + " the softmax-weighted mix |"
    assert header_problems(nb) == []
