"""Exercise notebooks: generated from solutions, checked with a scorecard, never overwritten.

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
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
DEFAULT_TODO = "Write your answer here (replace this line), then run the check below."
MODEL_ANSWER = "**Model answer.**"  # first line of a markdown cell kept in solutions/ only
_MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.DOTALL)
_CHECK_CALL = re.compile(r"checks\.(ch\d\d)\.(\w+)\(")


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
    nb.metadata["course"] = {"generated_from": "solutions", "sha256": content_hash(nb)}
    return nb


def is_model_answer(cell: nbformat.NotebookNode) -> bool:
    """True for a markdown cell whose first line is ``**Model answer.**`` (dropped from exercises)."""
    if cell.cell_type != "markdown":
        return False
    lines = cell.source.lstrip().splitlines()
    return bool(lines) and lines[0].strip() == MODEL_ANSWER


def content_hash(nb: nbformat.NotebookNode) -> str:
    """A hash of the cells' sources: tells whether a learner edited a generated notebook."""
    text = json.dumps([(c.cell_type, c.source) for c in nb.cells], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_untouched(path: Path) -> bool:
    """True when the exercise notebook at ``path`` is exactly as it was generated.

    A file that cannot be read as a notebook (half-saved, hand-edited JSON) counts as the learner's.
    """
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - any unreadable file is kept, never overwritten
        return False
    recorded = nb.metadata.get("course", {}).get("sha256")
    return recorded is not None and recorded == content_hash(nb)


def backup_path(target: Path) -> Path:
    """A new, unused ``NAME.ipynb.bak-<time>[-n]`` beside ``target`` (never an existing backup)."""
    stem = f"{target.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
    backup, n = target.with_name(stem), 1
    while backup.exists():
        backup, n = target.with_name(f"{stem}-{n}"), n + 1
    return backup


def write_exercises(solutions: Path, exercises: Path, force: bool = False) -> list[str]:
    """Generate every exercise notebook; a learner's edited notebook is kept unless ``force``.

    With ``force`` an edited notebook is first copied to ``NAME.ipynb.bak-<time>``.
    Returns one line per notebook saying what happened.
    """
    exercises.mkdir(parents=True, exist_ok=True)
    report = []
    for src in sorted(Path(solutions).glob("*.ipynb")):
        target = exercises / src.name
        text = nbformat.writes(make_exercise(nbformat.read(src, as_version=4))) + "\n"
        if target.exists() and target.read_text(encoding="utf-8") == text:
            report.append(f"unchanged  {target}")
            continue
        if target.exists() and not is_untouched(target):
            if not force:
                report.append(f"KEPT       {target} (you edited it; --force regenerates it after a backup)")
                continue
            backup = backup_path(target)
            shutil.copy2(target, backup)
            report.append(f"backed up  {target} -> {backup}")
        target.write_text(text, encoding="utf-8")
        report.append(f"written    {target}")
    return report


@dataclass
class Result:
    """One exercise in a scorecard."""

    name: str
    status: str  # "passed" | "failed" | "not attempted" | "error"
    detail: str = ""


def _error_text(outputs: list) -> tuple[str, str] | None:
    for out in outputs:
        if out.get("output_type") == "error":
            return out["ename"], out["evalue"]
    return None


def _printed(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def scorecard(path: str | Path, timeout: int = 600) -> list[Result]:
    """Run a copy of an exercise notebook and grade every checker cell in it.

    The learner's file is only read. Raises FileNotFoundError or ValueError for a bad path.
    """
    from nbclient import NotebookClient

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such notebook: {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:
        raise ValueError(f"{path} is not a Jupyter notebook (.ipynb JSON): {err}") from err
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    client.execute()  # works on the in-memory copy; the file on disk is never written
    return grade(nb)


def grade(nb: nbformat.NotebookNode) -> list[Result]:
    """Read an executed notebook's checker cells (cells that call ``checks.chNN.name(...)``)."""
    results: list[Result] = []
    stub_failed = False  # did a stub cell since the last check raise NotImplementedError?
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        error = _error_text(cell.get("outputs", []))
        match = _CHECK_CALL.search(cell.source)
        if not match:
            stub_failed = stub_failed or (error is not None and error[0] == "NotImplementedError")
            continue
        name = f"{match.group(1)}.{match.group(2)}"
        if error is None:
            ok = "✓" in _printed(cell.get("outputs", []))
            results.append(Result(name, "passed" if ok else "error", "" if ok else "the check printed no ✓ line"))
        elif error[0] == "NotImplementedError" or stub_failed:
            results.append(Result(name, "not attempted"))
        elif error[0] == "CheckFailed":
            hint = re.search(r"hint:\s*(.*)", error[1])
            results.append(Result(name, "failed", hint.group(1).strip() if hint else error[1].strip()))
        else:
            results.append(Result(name, "error", f"{error[0]}: {error[1]}".strip()))
        stub_failed = False
    return results


def format_scorecard(path: str | Path, results: list[Result]) -> str:
    """The scorecard as text, one line per exercise and a total."""
    marks = {"passed": "✓", "failed": "✗", "not attempted": "·", "error": "!"}
    lines = [f"Scorecard for {path}"]
    for r in results:
        lines.append(f"  {marks[r.status]} {r.name:<40} {r.status}" + (f": {r.detail}" if r.detail else ""))
    done = sum(r.status == "passed" for r in results)
    lines.append(f"  {done}/{len(results)} exercises passed")
    return "\n".join(lines)
