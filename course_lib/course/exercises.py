"""Exercise notebooks: generated from solutions, never overwriting the learner's (grading: ``scorecard``).

``solutions/NN_name.ipynb`` is the single source. Code between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` becomes ``raise NotImplementedError("...")`` in ``exercises/NN_name.ipynb``;
text after ``BEGIN SOLUTION`` on the same line becomes the message (what to write). In markdown,
text between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->`` is dropped.

Conventions every solution notebook follows (chapters 01-09):

- Each exercise's statement (a markdown cell) has the line
  ``**Difficulty:** ●●○ (2 of 3) · **about 15 minutes**`` before the task, states the goal and
  the contract (inputs, shapes, meaning, edge cases), not the code; formulas to derive go into the
  chapter's graded ``HINTS`` (``checks.hint("chNN.name")``).
- The notebook ends with a markdown cell headed ``## Open questions`` holding 2-4 numbered why /
  what-if questions, each in its own markdown cell (``**Question 1.** ...``), and each question is
  followed by a markdown cell whose FIRST LINE is exactly ``**Model answer.**``: such a cell is
  in ``solutions/`` only; the generator drops it from ``exercises/`` (see :data:`MODEL_ANSWER`).

Notebooks are written through ``files.atomic_write``, the course's one atomic writer.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from ..files import atomic_write

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
DEFAULT_TODO = "Write your answer here (replace this line), then run the check below."
MODEL_ANSWER = "**Model answer.**"  # first line of a markdown cell kept in solutions/ only
MODEL_ANSWERS = (MODEL_ANSWER, "**모범 답안.**")  # ... and in the Korean edition (course_lib.course.edition)
_MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.DOTALL)


def strip_code(source: str) -> str:
    """Replace every solution block of one code cell with a ``raise NotImplementedError``."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if inside:
                raise ValueError(f"line {number}: '{BEGIN}' inside another solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            todo = stripped[len(BEGIN):].strip(" :—-") or DEFAULT_TODO
            out.append(f"{indent}raise NotImplementedError({todo!r})")
        elif stripped.startswith(END):
            if not inside:
                raise ValueError(f"line {number}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{BEGIN}' is never closed by '{END}'")
    return "\n".join(out)


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The exercise notebook for a solution notebook: answers removed, outputs cleared."""
    nb = nbformat.from_dict(json.loads(json.dumps(solution)))
    nb.cells = [c for c in nb.cells if not is_model_answer(c)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_code(cell.source)
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown":
            cell.source = _MD_SOLUTION.sub("", cell.source)
    language = {"language": lang} if (lang := solution.metadata.get("course", {}).get("language")) else {}
    nb.metadata["course"] = {"generated_from": "solutions", "sha256": content_hash(nb), **language}
    return nb


def is_model_answer(cell: nbformat.NotebookNode) -> bool:
    """True for a markdown cell whose first line is ``**Model answer.**`` or ``**모범 답안.**`` (dropped from exercises)."""
    if cell.cell_type != "markdown":
        return False
    lines = cell.source.lstrip().splitlines()
    return bool(lines) and lines[0].strip() in MODEL_ANSWERS


def content_hash(nb: nbformat.NotebookNode) -> str:
    """A hash of the cells' sources: tells whether a learner edited a generated notebook."""
    text = json.dumps([(c.cell_type, c.source) for c in nb.cells], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_untouched(path: Path) -> bool:
    """True when the exercise notebook at ``path`` is exactly as it was generated.

    A file that cannot be read as a notebook (half-saved, hand-edited JSON) counts as the learner's.
    """
    return unreadable_reason(path) is None and _learners_change(path) is None


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` is not a readable UTF-8 notebook (half-saved, Latin-1, not JSON), or None."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not valid UTF-8 at byte {err.start} (half-saved, or saved in another encoding)"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    try:
        nbformat.reads(text, as_version=4)
    except Exception as err:  # noqa: BLE001 - any unreadable file is kept, never overwritten
        return f"not a readable notebook ({type(err).__name__})"
    return None


def _learners_change(path: Path) -> str | None:
    """What makes a readable notebook the learner's: edited sources, or outputs (they ran it); None if untouched."""
    nb = nbformat.read(path, as_version=4)
    recorded = nb.metadata.get("course", {}).get("sha256")
    if recorded is None or recorded != content_hash(nb):
        return "you edited it"
    if any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None) for c in nb.cells):
        return "you ran it: it has your outputs"
    return None


def backup_path(target: Path) -> Path:
    """A new, unused ``NAME.ipynb.bak-<time>[-n]`` beside ``target`` (never an existing backup)."""
    stem = f"{target.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
    backup, n = target.with_name(stem), 1
    while backup.exists():
        backup, n = target.with_name(f"{stem}-{n}"), n + 1
    return backup


def write_exercises(solutions: Path, exercises: Path, force: bool = False) -> list[str]:
    """Generate every exercise notebook; a learner's notebook is kept unless ``force``.

    A notebook counts as the learner's when its sources differ from the generated ones, when it has
    outputs (they ran it), or when it cannot be read (half-saved, Latin-1): it is kept with one
    line saying why, and the run goes on. With ``force`` it is first copied to
    ``NAME.ipynb.bak-<time>``. Returns one line per notebook saying what happened.

    Raises FileNotFoundError when ``solutions`` is not a folder of ``.ipynb`` files (nothing is
    created then), and an OSError naming ``exercises`` when it is a file or a folder that cannot be written.
    """
    solutions, exercises = Path(solutions), Path(exercises)
    sources = sorted(solutions.glob("*.ipynb")) if solutions.is_dir() else []
    if not sources:
        where = "is not a folder" if not solutions.is_dir() else "holds no .ipynb notebook"
        raise FileNotFoundError(f"{solutions} {where}: run make-exercises in the course folder "
                                "(the one with solutions/ and exercises/), or pass --solutions PATH")
    _writable_folder(exercises)
    report = []
    for src in sources:
        target = exercises / src.name
        try:
            text = nbformat.writes(make_exercise(nbformat.read(src, as_version=4))) + "\n"
        except Exception as err:  # noqa: BLE001 - a broken solution must not stop the other chapters
            report.append(f"SKIPPED    {target} (its solution {src} cannot be read: {type(err).__name__}: {err})")
            continue
        if target.exists() and _same_text(target, text):
            report.append(f"unchanged  {target}")
            continue
        if target.exists():
            why = unreadable_reason(target) or _learners_change(target)
            if why is not None:
                if not force:
                    report.append(f"KEPT       {target} ({why}; --force regenerates it after a backup)")
                    continue
                backup = backup_path(target)
                shutil.copy2(target, backup)
                report.append(f"backed up  {target} -> {backup}")
        _write_atomic(target, text)
        report.append(f"written    {target}")
    return report


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be created in it, else an OSError saying why."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--exercises {folder} is a file, not a folder: pass the folder the notebooks go to")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".make-exercises.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(err.errno, f"cannot write in --exercises {folder}: {err.strerror or err}") from None


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def _write_atomic(target: Path, text: str) -> None:
    """Write a notebook through ``files.atomic_write``: never half-written, the file's mode kept."""
    atomic_write(target, lambda f: f.write(text.encode("utf-8")))
