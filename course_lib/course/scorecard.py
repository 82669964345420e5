"""``python -m course_lib check``: run a COPY of an exercise notebook in a sandbox, grade it honestly.

The notebook is copied into a fresh temporary folder and run there by a worker process in its own
session (the kernel's working directory and ``PWD`` are the copy's folder); the grader's own files sit in
another temporary folder. Every process the run starts is ended with it: on Linux the worker adopts the
orphans of the kernel's children (a child subreaper), and the grader kills every descendant of the worker,
including those seen during the run that left its tree. A per-run token goes to the worker on its stdin and
to the kernel in a silent request before the first cell, which puts it in ``os.environ`` only while it
imports ``course_lib.course.checks`` (which takes it out): no process's initial environment, command line or
file holds it. A checker decorated with
``@checks.checker`` that succeeds emits a display_data output whose metadata is
``{"course_check": {"name": "chNN.exercise", "token": TOKEN}}``; only such an output counts as a
pass (a printed "✓" does not). The token keeps honest mistakes (a check call left in a comment, a
stray print, a cell that copies the environment) from counting; it does not stop someone determined to
fool their own scorecard: code in the learner's kernel can always reach the checker's internals.
"""
from __future__ import annotations

import contextlib
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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..files import atomic_write
from ..validate import check_int
from .exercises import unreadable_reason

_CHECK_CALL = re.compile(r"checks\.(ch\d\d)\.(\w+)\(")

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
        if not names:  # a stub that raised counts until a cell runs cleanly (the learner's next answer, say)
            stub_failed = error is not None and (stub_failed or error[0] == "NotImplementedError")
            continue
        for name in names:
            if _reported_success(outputs, name, token):
                results.append(Result(name, "passed"))
            elif error is None:
                results.append(Result(name, "error", "the checker never reported success (is the call commented out?)"))
            elif error[0] == "NotImplementedError" or stub_failed:
                results.append(Result(name, "not attempted"))
            elif error[0] == "CheckFailed":
                hint = re.search(r"(?:hint|힌트):\s*(.*)", error[1])
                results.append(Result(name, "failed", hint.group(1).strip() if hint else error[1].strip()))
            else:
                results.append(Result(name, "error", f"{error[0]}: {error[1]}".strip()))
        stub_failed = False
    return results


def scorecard(path: str | Path, timeout: int = 600, time_limit: int = 1800) -> tuple[list[Result], list[str]]:
    """Run a COPY of an exercise notebook in a temporary folder and grade every checker cell.

    The learner's file and folder are only read. ``timeout`` bounds one cell (it is interrupted and
    the run goes on), ``time_limit`` the whole run (then everything still running is killed), both in
    seconds >= 1. No process is left behind, and whatever the notebook does (even deleting its own
    folder) the result is a scorecard. Returns the results and notes about what stopped the run early.
    Raises FileNotFoundError or ValueError for a bad path, TypeError or ValueError for a bad limit.
    """
    check_int(timeout, "timeout")
    check_int(time_limit, "time_limit")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such notebook: {path}")
    why = unreadable_reason(path)
    if why is not None:
        raise ValueError(f"{path} is not a Jupyter notebook (.ipynb JSON): {why}")
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="course-check-", ignore_cleanup_errors=True) as sandbox, \
            tempfile.TemporaryDirectory(prefix="course-grader-", ignore_cleanup_errors=True) as grader:
        work = Path(sandbox) / "sandbox" / "run"
        work.mkdir(parents=True)
        copy = work / path.name
        shutil.copyfile(path, copy)
        progress = Path(grader) / "progress.json"
        notes = _run_worker(copy, progress, token, timeout, time_limit, Path(grader))
        state = _read_state(progress)
    if state is None:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
        first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), 0)
        if not notes:
            notes.append("the run left no record of its cells (were the grader's files deleted?)")
        return grade(nb, token, {first: notes[0]}), notes
    nb = nbformat.from_dict(state["notebook"])
    stopped = {int(k): v for k, v in state["stopped"].items()}
    running = state.get("running")
    if running is not None and running not in stopped and notes:
        stopped[running] = notes.pop(0)
    notes += [f"cell {index + 1} {why}" if why.startswith("timed out") else f"cell {index + 1}: {why}"
              for index, why in sorted(stopped.items())]
    return grade(nb, token, stopped), notes


def _read_state(progress: Path) -> dict | None:
    """The worker's last saved state, or None if there is none (never started, deleted, or not readable)."""
    try:
        state = json.loads(progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and isinstance(state.get("stopped"), dict) and isinstance(state.get("notebook"), dict)
    return state if ok and isinstance(state["notebook"].get("cells"), list) else None


RUN_ENV = "COURSE_CHECK_RUN"  # marks every process of one run: killed at the end (where /proc is missing)


def _kernel_env(work: Path) -> dict[str, str]:
    """The environment of the worker and its kernel: the grader's, without the run token, with ``PWD`` the copy's
    folder (not the learner's), a run mark, and this course_lib first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, "OLDPWD")}
    env["PWD"] = str(work)
    env[RUN_ENV] = secrets.token_hex(8)
    here = str(Path(__file__).resolve().parents[2])  # the course_lib this grader is, for the copy's kernel
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


def _last_line(log: Path, code: int) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    lines = [ln for ln in text.splitlines() if ln.strip() and "without encryption" not in ln]
    return lines[-1] if lines else f"exit code {code}"


def _run_worker(copy: Path, progress: Path, token: str, timeout: int, time_limit: int, tmp: Path) -> list[str]:
    """Run the worker in its own session (the token on its stdin); end it and everything it started, whatever happened."""
    log = tmp / "worker.log"
    pids = tmp / "kernel.pid"
    cmd = [sys.executable, "-m", "course_lib.course.scorecard", str(copy), str(progress), str(timeout), str(pids)]
    notes = []
    env = _kernel_env(copy.parent)
    seen: dict[int, str] = {}  # every descendant of the worker seen during the run: pid -> its start time
    with open(log, "wb") as err:
        worker = subprocess.Popen(cmd, cwd=copy.parent, env=env, stdin=subprocess.PIPE,
                                  stdout=err, stderr=err, start_new_session=True)
        try:
            with contextlib.suppress(OSError):
                worker.stdin.write(f"{token}\n".encode())  # type: ignore[union-attr]
                worker.stdin.close()  # type: ignore[union-attr]
            code = _wait(worker, time.monotonic() + time_limit, seen)
            if code is None:
                notes.append(f"stopped at the overall time limit ({time_limit} s)")
            elif code != 0:
                notes.append(f"the run failed: {_last_line(log, code)}")
        finally:
            _end_run(worker, seen)
            if pids.exists():
                with contextlib.suppress(OSError, ValueError):
                    for pid in pids.read_text().split():
                        _kill_group(int(pid))
            _kill_marked(env[RUN_ENV])
    return notes


def _wait(worker: subprocess.Popen, deadline: float, seen: dict[int, str]) -> int | None:
    """The worker's exit code, or None at the deadline; meanwhile note every process it started (``seen``)."""
    while True:
        seen.update(_descendants([worker.pid], _process_table()))
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            return worker.wait(timeout=min(left, 0.5))
        except subprocess.TimeoutExpired:
            continue


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every live process, from /proc (empty where there is none)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (name) ": state, ppid, ..., starttime (22nd field)
        if fields[0] not in ("Z", "X"):
            table[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return table


def _descendants(roots: Iterable[int], table: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Every live descendant of ``roots`` (not the roots themselves): pid -> start time."""
    children = defaultdict(list)
    for pid, (parent, _) in table.items():
        children[parent].append(pid)
    found: dict[int, str] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


def _kill_tree(root: int, seen: dict[int, str]) -> None:
    """SIGKILL every descendant of ``root``, and every process in ``seen`` that is still the same process (same
    start time) with its descendants, until none is left (``seen`` grows with what was killed)."""
    for _ in range(50):  # a process may fork while we kill: look again until nothing is left
        table = _process_table()
        same = [pid for pid, start in seen.items() if table.get(pid, (0, ""))[1] == start]
        targets = _descendants([root, *same], table) | {pid: seen[pid] for pid in same}
        targets.pop(os.getpid(), None)
        if not targets:
            return
        seen.update(targets)
        for pid in targets:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def _end_run(worker: subprocess.Popen, seen: dict[int, str]) -> None:
    """End the run: every process the worker started (``_kill_tree``), then the worker's session."""
    _kill_tree(worker.pid, seen)
    _kill_group(worker.pid)
    worker.wait()


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
    atomic_write(path, lambda f: f.write(json.dumps(state, ensure_ascii=False).encode("utf-8")))


# Run silently in the kernel before the first cell: the token exists in its os.environ only while
# course_lib.course.checks is imported (which takes it out), so no cell can read it there, nor in /proc/PID/environ.
_TOKEN_SETUP = """try:
    __import__("os").environ[{env!r}] = {token!r}
    __import__("course_lib.course.checks")
finally:
    __import__("os").environ.pop({env!r}, None)
"""


def _become_subreaper() -> None:
    """Linux: the orphans of the kernel's children become this process's children (not init's), so that
    every process of the run stays a descendant of the worker until it is ended."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _worker(copy: Path, progress: Path, timeout: int, pid_file: Path, token: str = "") -> int:
    """Execute the copy cell by cell, saving the outputs after each cell (the parent grades them)."""
    import logging

    from nbclient import NotebookClient

    logging.disable(logging.CRITICAL)  # nbclient's "Timeout waiting for execute reply" lines
    _become_subreaper()
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
    try:
        with client.setup_kernel():
            process = getattr(getattr(client.km, "provisioner", None), "process", None)
            if process is not None:
                pid_file.write_text(str(process.pid))
            try:
                if token and client.kc is not None:
                    client.wait_for_reply(client.kc.execute(_TOKEN_SETUP.format(env=TOKEN_ENV, token=token),
                                                            silent=True, store_history=False))
                _execute_cells(client, nb, progress, stopped, timeout)
            finally:
                if process is not None:
                    _kill_group(process.pid)  # the kernel's session: the kernel and whatever it started
    finally:
        _kill_tree(os.getpid(), {})  # and whatever left that session: never exit with a process of the run alive
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
            stopped[index] = f"timed out after {timeout} s"
        if not client.kc.is_alive():
            stopped[index] = "the kernel died (os._exit, a crash, or out of memory)"
            break
    _save_progress(progress, nb, stopped, None)


_KOREAN_STATUS = {"passed": "통과", "failed": "실패", "not attempted": "시도 안 함", "error": "오류", "not run": "실행 안 됨"}
_KOREAN_PHRASES = [(r"timed out after (\d+) s", r"시간 초과(\1초)"), (r"\bcell (\d+)", r"셀 \1"),
                   (r"\bkernel died", "커널이 멈춤"),
                   (r"the checker never reported success \(is the call commented out\?\)",
                    "검사기가 통과를 알리지 않았습니다(호출을 주석으로 막아 두었나요?)")]


def notebook_language(path: str | Path) -> str:
    """``"ko"`` for a notebook of the Korean edition (its metadata says so), else ``"en"``."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return "en"
    course = meta.get("course", {}) if isinstance(meta, dict) else {}
    return "ko" if isinstance(course, dict) and course.get("language") == "ko" else "en"


def _korean(text: str) -> str:
    for pattern, replacement in _KOREAN_PHRASES:
        text = re.sub(pattern, replacement, text)
    return text


def format_scorecard(path: str | Path, results: list[Result], notes: Sequence[str] = (), language: str = "en") -> str:
    """The scorecard as text, one line per exercise and a total (in Korean for ``language="ko"``)."""
    marks = {"passed": "✓", "failed": "✗", "not attempted": "·", "error": "!", "not run": "-"}
    ko = language == "ko"
    lines = [f"{path} 채점표 (사본에서 실행했습니다. 원래 파일은 바뀌지 않았습니다)" if ko
             else f"Scorecard for {path} (run on a copy; your file was not changed)"]
    for note in notes:
        lines.append(f"  참고: {_korean(note)}" if ko else f"  note: {note}")
    for r in results:
        status, detail = (_KOREAN_STATUS[r.status], _korean(r.detail)) if ko else (r.status, r.detail)
        lines.append(f"  {marks[r.status]} {r.name:<40} {status}" + (f": {detail}" if detail else ""))
    done = sum(r.status == "passed" for r in results)
    lines.append(f"  연습 문제 {len(results)}개 중 {done}개 통과" if ko else f"  {done}/{len(results)} exercises passed")
    return "\n".join(lines)


if __name__ == "__main__":  # the worker of ``scorecard``: python -m course_lib.course.scorecard COPY PROGRESS TIMEOUT PIDFILE
    sys.exit(_worker(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]),
                     token=sys.stdin.readline().strip()))  # the token comes on stdin, never in argv or the environment
