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

Every file a course command writes (exercise notebooks, checkpoints, training progress) goes through
:func:`atomic_write`, the one atomic writer (it lives here because this module imports no model code).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
DEFAULT_TODO = "Write your answer here (replace this line), then run the check below."
MODEL_ANSWER = "**Model answer.**"  # first line of a markdown cell kept in solutions/ only
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
    """Write a notebook through :func:`atomic_write`: never half-written, the file's mode kept."""
    atomic_write(target, lambda f: f.write(text.encode("utf-8")))


# --- the one atomic writer ------------------------------------------------------------------------

STALE_AFTER = 600.0  # seconds: a temporary file unchanged this long has no live writer (whatever its pid says)
_PID_WIDTH = 8  # room kept for the writer's pid in a temporary name (Linux pids have at most 7 digits)
_RANDOM = re.compile(r"[a-z0-9_]{8}")  # what mkstemp adds to a name


@contextlib.contextmanager
def hold_ctrl_c(message: str | None = "Ctrl-C: finishing the save first (it takes a moment)",
                deliver: bool = True) -> Iterator[list[int]]:
    """While the block runs, Ctrl-C (SIGINT) is held instead of interrupting it; afterwards it is delivered
    once if it came and ``deliver`` (a no-op outside the main thread, or inside another ``hold_ctrl_c``,
    which then holds it). Yields the list of held presses."""
    held: list[int] = []
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None or getattr(previous, "holds_ctrl_c", False):
        yield held
        return

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)
        if message:
            print(f"\n{message}", file=sys.stderr, flush=True)

    hold.holds_ctrl_c = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, hold)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)
    if held and deliver:
        signal.raise_signal(signal.SIGINT)  # to the handler that was there before: KeyboardInterrupt by default


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) ``folder``'s file system allows (NAME_MAX; 255 where it cannot be asked)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def temp_prefix(target: Path) -> str:
    """The start of a temporary file's name for ``target``, without the pid: ``.NAME.``. A long NAME is cut and
    ends in a hash of the whole name, so that the finished temporary name fits the file system's limit."""
    target = Path(target)
    name, room = target.name, name_max(target.parent) - (2 + _PID_WIDTH + 1 + 8 + len(".tmp"))
    if len(name.encode()) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name.encode()[:room - 9].decode("utf-8", errors="ignore") + "~" + digest
    return f".{name}."


def _writer_gone(pid: int | None, path: str) -> bool:
    """Is the writer of the temporary file at ``path`` (pid ``pid``, if its name holds one) gone?"""
    try:
        if time.time() - os.stat(path).st_mtime > STALE_AFTER:
            return True
    except OSError:
        return False
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # it exists but belongs to someone else, or the name holds no real pid
        return False
    return False


def _remove_stale_temps(target: Path) -> None:
    """Delete the temporary files of ``target`` whose writer was killed (only names this writer makes)."""
    prefix = temp_prefix(target)
    pattern = re.compile(rf"{re.escape(prefix)}(?:(\d+)\.)?{_RANDOM.pattern}\.tmp")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found and _writer_gone(int(found.group(1)) if found.group(1) else None, entry.path):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _named(err: BaseException, path: Path) -> BaseException:
    """The OSError a failed write really was (torch.save reports a full disk as "enforce fail ... unexpected pos",
    with the OSError as its context), in one line naming ``path``; else ``err`` itself."""
    cause: BaseException | None = err
    for _ in range(5):
        if cause is None or (isinstance(cause, OSError) and cause.errno is not None):
            break
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, OSError) or cause.errno is None:
        return err
    hint = " (free some space)" if cause.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return OSError(cause.errno, f"could not write {path}: {os.strerror(cause.errno)}{hint}; "
                                "the previous file, if any, is unchanged")


def _fill(fd: int, write: Callable[[Any], object], path: Path) -> None:
    """Let ``write`` fill the open file ``fd``, flush it to disk and close it (a failed write named by ``_named``)."""
    f = os.fdopen(fd, "wb")
    try:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(OSError):
            f.close()  # closes the descriptor even when flushing the rest fails again
        named = _named(err, path)
        if named is err:
            raise
        raise named from err
    finally:
        with contextlib.suppress(OSError):
            f.close()


def _fsync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # make a rename in ``folder`` durable (POSIX)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], object]) -> Path:
    """Call ``write(file)`` on a new temporary file beside ``path``, flush and fsync it, then rename it over
    ``path``: a kill at any moment leaves the old file or the new one, and two writers leave one writer's whole
    file. The new file keeps the old one's mode (0o644 for a new file). Ctrl-C is held until the file is in
    place (then delivered); temporary files that killed writers of ``path`` left are removed first; a full disk
    or a file-size limit is an OSError that says so in one line.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644  # mkstemp's 0o600 would hide the file from others
    _remove_stale_temps(path)
    with hold_ctrl_c():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{temp_prefix(path)}{os.getpid()}.", suffix=".tmp")
        try:
            os.chmod(tmp, mode)
            _fill(fd, write, path)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
    return path


# --- command-line numbers ----------------------------------------------------------------------------

def number(kind: type, low: float, what: str, high: float = math.inf) -> Callable[[str], int | float]:
    """An argparse type: ``kind(text)``, finite and in [``low``, ``high``]; else an error saying ``what`` was expected."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse
