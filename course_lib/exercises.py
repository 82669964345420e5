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
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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
    return _unreadable(path) is None and _learners_change(path) is None


def _unreadable(path: Path) -> str | None:
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
    created then).
    """
    solutions, exercises = Path(solutions), Path(exercises)
    sources = sorted(solutions.glob("*.ipynb")) if solutions.is_dir() else []
    if not sources:
        where = "is not a folder" if not solutions.is_dir() else "holds no .ipynb notebook"
        raise FileNotFoundError(f"{solutions} {where}: run make-exercises in the course folder "
                                "(the one with solutions/ and exercises/), or pass --solutions PATH")
    exercises.mkdir(parents=True, exist_ok=True)
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
            why = _unreadable(target) or _learners_change(target)
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


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def _write_atomic(target: Path, text: str) -> None:
    """Write through a temporary file in the same folder, then rename: never a half-written notebook."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- python -m course_lib check: a sandboxed run and an honest scorecard ---------------------------
#
# The notebook is copied into a fresh temporary folder and run there by a worker process in its own
# session; the kernel gets a per-run token in ``COURSE_CHECK_TOKEN``. A checker decorated with
# ``@checks.checker`` that succeeds emits a display_data output whose metadata is
# ``{"course_check": {"name": "chNN.exercise", "token": TOKEN}}``; only such an output counts as a
# pass (a printed "✓" does not). The token keeps honest mistakes (a check call left in a comment, a
# stray print) from counting; it does not stop someone determined to fool their own scorecard.

TOKEN_ENV = "COURSE_CHECK_TOKEN"
_TIMEOUT_ENAME = "CellTimeout"


@dataclass
class Result:
    """One exercise in a scorecard."""

    name: str
    status: str  # "passed" | "failed" | "not attempted" | "error" | "not run"
    detail: str = ""


def _error_text(outputs: list) -> tuple[str, str] | None:
    for out in outputs:
        if out.get("output_type") == "error":
            return out["ename"], out["evalue"]
    return None


def _reported_success(outputs: list, name: str, token: str | None) -> bool:
    """Did the checker ``name`` itself report success in these outputs (with this run's token)?"""
    if not token:
        return False
    for out in outputs:
        mark = out.get("metadata", {}).get("course_check") if out.get("output_type") == "display_data" else None
        if isinstance(mark, dict) and mark.get("name") == name and secrets.compare_digest(str(mark.get("token", "")), token):
            return True
    return False


def _check_calls(source: str) -> list[str]:
    """The checker names a cell calls, ``chNN.name``, in order (each once)."""
    return list(dict.fromkeys(f"{m.group(1)}.{m.group(2)}" for m in _CHECK_CALL.finditer(source)))


def grade(nb: nbformat.NotebookNode, token: str | None = None, stopped: dict[int, str] | None = None) -> list[Result]:
    """Read an executed notebook's checker cells (cells that call ``checks.chNN.name(...)``).

    A check passes only when the checker itself reported success with ``token`` (see above).
    ``stopped`` maps a cell index to why it did not finish ("timed out", "kernel died", ...): its
    checks, and those of every later cell that never ran, are "not run" with that reason.
    """
    stopped = stopped or {}
    results: list[Result] = []
    stub_failed = False  # did a stub cell since the last check raise NotImplementedError?
    ended = ""  # set once the kernel died or the run stopped: every later check is "not run"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        names = _check_calls(cell.source)
        if ended:
            results += [Result(n, "not run", ended) for n in names]
            continue
        if index in stopped:
            why = stopped[index]
            results += [Result(n, "not run", f"{why} (cell {index + 1})") for n in names]
            if not why.startswith("timed out"):  # a timed-out cell was interrupted and the run went on
                ended = f"{why} in cell {index + 1}"
            stub_failed = False
            continue
        outputs = cell.get("outputs", [])
        error = _error_text(outputs)
        if not names:
            stub_failed = stub_failed or (error is not None and error[0] == "NotImplementedError")
            continue
        for name in names:
            if _reported_success(outputs, name, token):
                results.append(Result(name, "passed"))
            elif error is None:
                results.append(Result(name, "error", "the checker never reported success (is the call commented out?)"))
            elif error[0] == "NotImplementedError" or stub_failed:
                results.append(Result(name, "not attempted"))
            elif error[0] == "CheckFailed":
                hint = re.search(r"hint:\s*(.*)", error[1])
                results.append(Result(name, "failed", hint.group(1).strip() if hint else error[1].strip()))
            else:
                results.append(Result(name, "error", f"{error[0]}: {error[1]}".strip()))
        stub_failed = False
    return results


def scorecard(path: str | Path, timeout: int = 600, time_limit: int = 1800) -> tuple[list[Result], list[str]]:
    """Run a COPY of an exercise notebook in a temporary folder and grade every checker cell.

    The learner's file and folder are only read. ``timeout`` bounds one cell (it is interrupted and
    the run goes on), ``time_limit`` the whole run (then everything still running is killed). No
    process is left behind. Returns the results and notes about what stopped the run early.
    Raises FileNotFoundError or ValueError for a bad path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such notebook: {path}")
    why = _unreadable(path)
    if why is not None:
        raise ValueError(f"{path} is not a Jupyter notebook (.ipynb JSON): {why}")
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="course-check-") as tmp:
        work = Path(tmp) / "sandbox" / "run"  # the grader's own files sit two levels above the copy
        work.mkdir(parents=True)
        copy = work / path.name
        shutil.copyfile(path, copy)
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        progress = state_dir / "progress.json"
        notes = _run_worker(copy, progress, token, timeout, time_limit, state_dir)
        state = json.loads(progress.read_text(encoding="utf-8")) if progress.exists() else None
    if state is None:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
        first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), 0)
        return grade(nb, token, {first: notes[0] if notes else "the run did not start"}), notes
    nb = nbformat.from_dict(state["notebook"])
    stopped = {int(k): v for k, v in state["stopped"].items()}
    running = state.get("running")
    if running is not None and running not in stopped and notes:
        stopped[running] = notes.pop(0)
    notes += [f"cell {index + 1} {why}" if why.startswith("timed out") else f"cell {index + 1}: {why}"
              for index, why in sorted(stopped.items())]
    return grade(nb, token, stopped), notes


RUN_ENV = "COURSE_CHECK_RUN"  # marks every process of one run (kept, unlike the token): killed at the end


def _kernel_env(token: str) -> dict[str, str]:
    env = dict(os.environ)
    env[TOKEN_ENV] = token
    env[RUN_ENV] = secrets.token_hex(8)
    here = str(Path(__file__).resolve().parents[1])  # the course_lib this grader is, for the copy's kernel
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


def _run_worker(copy: Path, progress: Path, token: str, timeout: int, time_limit: int, tmp: Path) -> list[str]:
    """Run the worker in its own session; kill it and its kernel at the end, whatever happened."""
    log = tmp / "worker.log"
    pids = tmp / "kernel.pid"
    cmd = [sys.executable, "-m", "course_lib.exercises", str(copy), str(progress), str(timeout), str(pids)]
    notes = []
    env = _kernel_env(token)
    with open(log, "wb") as err:
        worker = subprocess.Popen(cmd, cwd=copy.parent, env=env, stdin=subprocess.DEVNULL,
                                  stdout=err, stderr=err, start_new_session=True)
        try:
            code = worker.wait(timeout=time_limit)
            if code != 0:
                text = log.read_text(encoding="utf-8", errors="replace")
                lines = [ln for ln in text.splitlines() if ln.strip() and "without encryption" not in ln]
                notes.append(f"the run failed: {lines[-1] if lines else f'exit code {code}'}")
        except subprocess.TimeoutExpired:
            notes.append(f"stopped at the overall time limit ({time_limit} s)")
        finally:
            _kill_group(worker.pid)
            worker.wait()
            if pids.exists():
                for pid in pids.read_text().split():
                    _kill_group(int(pid))
            _kill_marked(env[RUN_ENV])
    return notes


def _kill_marked(run_id: str) -> None:
    """Kill any process left from this run, even one that left the kernel's process group."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return
    marker = f"{RUN_ENV}={run_id}"
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if f"{RUN_ENV}={env.get(RUN_ENV)}" == marker:
            try:
                proc.kill()
            except psutil.Error:
                pass


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (the worker's, or the kernel's own session)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, signal.SIGKILL)
        else:  # Windows: no process groups here; the marked-process sweep below catches the rest
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _save_progress(path: Path, nb: nbformat.NotebookNode, stopped: dict[int, str], running: int | None) -> None:
    state = {"notebook": nb, "stopped": {str(k): v for k, v in stopped.items()}, "running": running}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _worker(copy: Path, progress: Path, timeout: int, pid_file: Path) -> int:
    """Execute the copy cell by cell, saving the outputs after each cell (the parent grades them)."""
    import logging

    from nbclient import NotebookClient

    logging.disable(logging.CRITICAL)  # nbclient's "Timeout waiting for execute reply" lines
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                            interrupt_on_timeout=True,
                            error_on_timeout={"ename": _TIMEOUT_ENAME, "evalue": f"timed out after {timeout} s",
                                              "traceback": []},
                            resources={"metadata": {"path": str(copy.parent)}})
    stopped: dict[int, str] = {}
    _save_progress(progress, nb, stopped, None)
    with client.setup_kernel():
        process = getattr(getattr(client.km, "provisioner", None), "process", None)
        if process is not None:
            pid_file.write_text(str(process.pid))
        try:
            _execute_cells(client, nb, progress, stopped, timeout)
        finally:
            if process is not None:
                _kill_group(process.pid)  # the kernel's session: the kernel and whatever it started
    return 0


def _execute_cells(client, nb: nbformat.NotebookNode, progress: Path, stopped: dict[int, str], timeout: int) -> None:  # noqa: ANN001
    from nbclient.exceptions import DeadKernelError

    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        _save_progress(progress, nb, stopped, index)
        start = time.monotonic()
        try:
            client.execute_cell(cell, index)
        except DeadKernelError:
            stopped[index] = "the kernel died (os._exit, a crash, or out of memory)"
            break
        except Exception as err:  # noqa: BLE001 - anything else ends the run, with a reason
            stopped[index] = f"the run stopped: {type(err).__name__}: {err}"
            break
        if time.monotonic() - start >= timeout:
            stopped[index] = f"timed out after {timeout} s (interrupted)"
        if not client.kc.is_alive():
            stopped[index] = "the kernel died (os._exit, a crash, or out of memory)"
            break
    _save_progress(progress, nb, stopped, None)


def format_scorecard(path: str | Path, results: list[Result], notes: Sequence[str] = ()) -> str:
    """The scorecard as text, one line per exercise and a total."""
    marks = {"passed": "✓", "failed": "✗", "not attempted": "·", "error": "!", "not run": "-"}
    lines = [f"Scorecard for {path} (run on a copy; your file was not changed)"]
    for note in notes:
        lines.append(f"  note: {note}")
    for r in results:
        lines.append(f"  {marks[r.status]} {r.name:<40} {r.status}" + (f": {r.detail}" if r.detail else ""))
    done = sum(r.status == "passed" for r in results)
    lines.append(f"  {done}/{len(results)} exercises passed")
    return "\n".join(lines)


if __name__ == "__main__":  # the worker of ``scorecard``: python -m course_lib.exercises COPY PROGRESS TIMEOUT PIDFILE
    sys.exit(_worker(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])))
