"""The grader behind ``python -m course_lib check``, in process and without a kernel (fast).

`test_learner_safety.py` runs the whole sandbox in a real process with a real kernel; these tests
drive the same functions with a stand-in worker or notebook client, so that each way a run can stop
(worker crash, overall time limit, dead kernel, cell timeout) is checked on its own, in seconds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

from course_lib.course import scorecard as sc

pytestmark = pytest.mark.skipif(os.name != "posix", reason="stand-in workers are shebang scripts; groups need POSIX")


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# my exercises")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


READ = """
def read(path):  # the notebook as nbformat.read gives it (sources as one string), without importing nbformat
    nb = json.load(open(path))
    for cell in nb['cells']:
        cell['source'] = ''.join(cell['source'])
    return nb
"""


def _fake_python(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for ``sys.executable`` when scorecard starts its worker."""
    script = tmp_path / "fake_python"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{READ}{body}\n", encoding="utf-8")
    script.chmod(0o755)
    return script


# --- scorecard(): the parent's side of a run ------------------------------------------------------

def test_a_worker_that_dies_at_once_leaves_every_check_not_run_with_its_last_line(tmp_path, monkeypatch):
    path = _notebook(tmp_path / "ex.ipynb", "x = 1", "checks.ch01.encode(encode)", "checks.ch01.decode(decode)")
    before = path.read_bytes()
    fake = _fake_python(tmp_path, "print('Traceback ...', file=sys.stderr)\n"
                                  "print('ModuleNotFoundError: no module named nbclient', file=sys.stderr)\nsys.exit(3)")
    monkeypatch.setattr(sc.sys, "executable", str(fake))
    results, notes = sc.scorecard(path, timeout=5, time_limit=30)
    assert notes == ["the run failed: ModuleNotFoundError: no module named nbclient"]
    assert [(r.name, r.status) for r in results] == [("ch01.encode", "not run"), ("ch01.decode", "not run")]
    # the run stopped before the first code cell (cell 2): every check after it is not run, with the reason
    assert {r.detail for r in results} == {"the run failed: ModuleNotFoundError: no module named nbclient in cell 2"}
    assert path.read_bytes() == before


def test_a_silent_worker_exit_is_reported_by_its_exit_code(tmp_path, monkeypatch):
    path = _notebook(tmp_path / "ex.ipynb", "checks.ch01.encode(encode)")
    monkeypatch.setattr(sc.sys, "executable", str(_fake_python(tmp_path, "sys.exit(5)")))
    results, notes = sc.scorecard(path, timeout=5, time_limit=30)
    assert notes == ["the run failed: exit code 5"]
    assert results[0].status == "not run" and "exit code 5" in results[0].detail


def test_the_overall_time_limit_stops_the_run_and_kills_what_it_started(tmp_path, monkeypatch):
    """The worker writes its progress, starts a 'kernel' in its own session and another process in a third
    session (as a kernel's child may), then hangs: all three are killed."""
    path = _notebook(tmp_path / "ex.ipynb", "a = 1", "checks.ch01.encode(encode)", "checks.ch01.decode(decode)")
    marker = tmp_path / "kernel_pid"
    body = f"""
import subprocess
copy, progress, timeout, pids = sys.argv[3:7]
kernel = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)
open(pids, 'w').write(str(kernel.pid))
open({str(marker)!r}, 'w').write(str(kernel.pid))
escapee = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)
open({str(marker)!r} + '_escapee', 'w').write(str(escapee.pid))  # in no group scorecard knows: found by its mark
nb = read(copy)
nb['cells'][2]['outputs'] = [{{'output_type': 'display_data', 'data': {{'text/plain': ''}},
    'metadata': {{'course_check': {{'name': 'ch01.encode', 'token': sys.stdin.readline().strip()}}}}}}]
state = {{'notebook': nb, 'stopped': {{}}, 'running': 3}}
open(progress, 'w').write(json.dumps(state))
time.sleep(120)
"""
    monkeypatch.setattr(sc.sys, "executable", str(_fake_python(tmp_path, body)))
    start = time.monotonic()
    results, notes = sc.scorecard(path, timeout=5, time_limit=6)
    assert time.monotonic() - start < 60
    assert notes == ["cell 4: stopped at the overall time limit (6 s)"]
    assert [(r.name, r.status) for r in results] == [("ch01.encode", "passed"), ("ch01.decode", "not run")]
    assert results[1].detail == "stopped at the overall time limit (6 s) (cell 4)"
    left = [int(marker.read_text()), int(Path(f"{marker}_escapee").read_text())]
    for _ in range(50):  # both were SIGKILLed; give them a moment to be reaped by init
        if not any(map(_alive, left)):
            break
        time.sleep(0.1)
    assert [pid for pid in left if _alive(pid)] == []


def _alive(pid: int) -> bool:
    """Is ``pid`` running (a killed process not yet reaped, a zombie, counts as dead)?"""
    if Path("/proc").is_dir():
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_forged_token_and_a_stub_are_told_apart_from_a_pass(tmp_path, monkeypatch):
    """The worker reports outputs; only the one carrying this run's token counts as passed."""
    path = _notebook(tmp_path / "ex.ipynb", "def f(x):\n    raise NotImplementedError", "checks.ch01.encode(f)",
                     "checks.ch01.decode(g)", "checks.ch01.vocab(v)")
    body = """
copy, progress, timeout, pids = sys.argv[3:7]
nb = read(copy)
token = sys.stdin.readline().strip()  # the run's token comes on stdin
mark = lambda name, tok: {'output_type': 'display_data', 'data': {'text/plain': ''},
                          'metadata': {'course_check': {'name': name, 'token': tok}}}
nb['cells'][1]['outputs'] = [{'output_type': 'error', 'ename': 'NotImplementedError', 'evalue': '', 'traceback': []}]
nb['cells'][2]['outputs'] = [{'output_type': 'error', 'ename': 'CheckFailed', 'evalue': 'hint: x', 'traceback': []}]
nb['cells'][3]['outputs'] = [mark('ch01.decode', 'f' * 32)]
nb['cells'][4]['outputs'] = [mark('ch01.vocab', token)]
open(progress, 'w').write(json.dumps({'notebook': nb, 'stopped': {}, 'running': None}))
"""
    monkeypatch.setattr(sc.sys, "executable", str(_fake_python(tmp_path, body)))
    results, notes = sc.scorecard(path, timeout=5, time_limit=30)
    assert notes == []
    assert [(r.name, r.status) for r in results] == [
        ("ch01.encode", "not attempted"), ("ch01.decode", "error"), ("ch01.vocab", "passed")]
    assert "never reported success" in results[1].detail


def test_the_kernel_gets_no_token_and_no_learners_folder_but_a_run_mark_and_this_course_lib_first(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv(sc.TOKEN_ENV, "a token of an outer run")
    monkeypatch.setenv("PWD", "/home/learner/course/exercises")
    monkeypatch.setenv("OLDPWD", "/home/learner")
    env = sc._kernel_env(tmp_path)
    assert sc.TOKEN_ENV not in env and "OLDPWD" not in env and env["PWD"] == str(tmp_path)
    assert "/home/learner" not in "".join(env.values())
    assert len(env[sc.RUN_ENV]) == 16
    here = str(Path(__file__).resolve().parents[1])  # the folder that holds this course_lib (the repository)
    assert env["PYTHONPATH"].split(os.pathsep) == [here, "/somewhere/else"]
    assert sc._kernel_env(tmp_path)[sc.RUN_ENV] != env[sc.RUN_ENV]  # a fresh mark for every run


def test_the_worker_gets_the_token_on_stdin_never_in_its_arguments_or_environment(tmp_path, monkeypatch):
    path = _notebook(tmp_path / "ex.ipynb", "checks.ch01.encode(encode)")
    body = """
copy, progress, timeout, pids = sys.argv[3:7]
token = sys.stdin.readline().strip()
seen = {'argv': ' '.join(sys.argv), 'env': ' '.join(f'{k}={v}' for k, v in os.environ.items()), 'token': token}
open(os.path.join(os.path.dirname(sys.argv[0]), 'seen.json'), 'w').write(json.dumps(seen))
nb = read(copy)
nb['cells'][1]['outputs'] = [{'output_type': 'display_data', 'data': {'text/plain': ''},
                              'metadata': {'course_check': {'name': 'ch01.encode', 'token': token}}}]
open(progress, 'w').write(json.dumps({'notebook': nb, 'stopped': {}, 'running': None}))
"""
    monkeypatch.setattr(sc.sys, "executable", str(_fake_python(tmp_path, body)))
    results, notes = sc.scorecard(path, timeout=5, time_limit=30)
    assert [(r.name, r.status) for r in results] == [("ch01.encode", "passed")] and notes == []
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert len(seen["token"]) == 32 and seen["token"] not in seen["argv"] + seen["env"]


def test_killing_a_group_that_is_gone_is_quiet():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    sc._kill_group(proc.pid)  # no such process group any more: no exception


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such notebook"):
        sc.scorecard(tmp_path / "missing.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.ipynb is not a Jupyter notebook \(.ipynb JSON\)"):
        sc.scorecard(bad)


# --- the worker's side: execute cell by cell, save after each, stop with a reason ---------------------

class _Kc:
    def __init__(self, alive: list[bool]):
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive.pop(0) if self.alive else True


class _Client:
    """Stands in for nbclient.NotebookClient: runs each cell by calling ``actions[index]``."""

    def __init__(self, actions: dict, alive: list[bool] | None = None, progress: Path | None = None):
        self.actions, self.kc, self.ran, self.progress = actions, _Kc(alive or []), [], progress
        self.saved_running: list = []

    def execute_cell(self, cell, index):  # noqa: ANN001
        if self.progress is not None:  # what the parent would read if the run stopped now
            self.saved_running.append(json.loads(self.progress.read_text())["running"])
        self.ran.append(index)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"ran {index}\n")]
        action = self.actions.get(index)
        if action is not None:
            action()


def _cells(n: int) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("intro")] + [nbformat.v4.new_code_cell(f"c{i}") for i in range(1, n + 1)]
    return nb


def _raise(err: BaseException):
    def action():
        raise err
    return action


def test_execute_cells_saves_the_running_cell_before_each_and_none_at_the_end(tmp_path):
    progress = tmp_path / "progress.json"
    nb, stopped = _cells(3), {}
    client = _Client({}, progress=progress)
    sc._save_progress(progress, nb, stopped, None)
    sc._execute_cells(client, nb, progress, stopped, timeout=600)
    assert client.ran == [1, 2, 3] and client.saved_running == [1, 2, 3]
    state = json.loads(progress.read_text())
    assert state["running"] is None and state["stopped"] == {}
    assert [c["outputs"][0]["text"] for c in state["notebook"]["cells"][1:]] == ["ran 1\n", "ran 2\n", "ran 3\n"]
    assert not progress.with_suffix(".tmp").exists()  # written atomically


def test_execute_cells_names_a_dead_kernel_and_stops(tmp_path):
    from nbclient.exceptions import DeadKernelError

    progress, nb, stopped = tmp_path / "p.json", _cells(3), {}
    client = _Client({2: _raise(DeadKernelError("gone"))})
    sc._execute_cells(client, nb, progress, stopped, timeout=600)
    assert client.ran == [1, 2]
    assert stopped == {2: "the kernel died (os._exit, a crash, or out of memory)"}
    assert json.loads(progress.read_text())["stopped"] == {"2": stopped[2]}


def test_execute_cells_names_a_kernel_that_died_without_an_exception(tmp_path):
    nb, stopped = _cells(3), {}
    client = _Client({}, alive=[True, False])
    sc._execute_cells(client, nb, tmp_path / "p.json", stopped, timeout=600)
    assert client.ran == [1, 2] and stopped == {2: "the kernel died (os._exit, a crash, or out of memory)"}


def test_execute_cells_stops_on_any_other_error_with_its_type_and_text(tmp_path):
    nb, stopped = _cells(3), {}
    client = _Client({1: _raise(RuntimeError("the channel closed"))})
    sc._execute_cells(client, nb, tmp_path / "p.json", stopped, timeout=600)
    assert client.ran == [1] and stopped == {1: "the run stopped: RuntimeError: the channel closed"}


def test_execute_cells_marks_a_cell_that_ran_past_the_timeout_and_goes_on(tmp_path):
    nb, stopped = _cells(3), {}
    client = _Client({2: lambda: time.sleep(1.1)})
    sc._execute_cells(client, nb, tmp_path / "p.json", stopped, timeout=1)
    assert client.ran == [1, 2, 3] and stopped == {2: "timed out after 1 s"}


class _Provisioned:
    def __init__(self, pid: int | None):
        self.process = None if pid is None else type("P", (), {"pid": pid})()


class _WorkerClient(_Client):
    def __init__(self, nb, timeout, allow_errors, kernel_name, interrupt_on_timeout, error_on_timeout, resources,
                 pid=None, actions=None):  # noqa: ANN001
        super().__init__(actions or {})
        self.options = dict(timeout=timeout, allow_errors=allow_errors, kernel_name=kernel_name,
                            interrupt_on_timeout=interrupt_on_timeout, error_on_timeout=error_on_timeout,
                            resources=resources)
        self.km = type("KM", (), {"provisioner": _Provisioned(pid)})()

    @contextmanager
    def setup_kernel(self):
        yield


def test_worker_clears_old_outputs_runs_every_cell_and_kills_the_kernels_session(tmp_path, monkeypatch):
    import nbclient

    copy = _notebook(tmp_path / "ex.ipynb", "a = 1", "b = 2")
    nb = nbformat.read(copy, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="an old, stale output\n")]
    nb.cells[1].execution_count = 7
    nbformat.write(nb, copy)
    kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        made: list = []
        monkeypatch.setattr(nbclient, "NotebookClient",
                            lambda nb, **kw: made.append(_WorkerClient(nb, pid=kernel.pid, **kw)) or made[-1])
        progress, pids = tmp_path / "progress.json", tmp_path / "kernel.pid"
        assert sc._worker(copy, progress, 9, pids) == 0
        assert kernel.wait(timeout=10) == -9  # SIGKILLed with its session
    finally:
        if kernel.poll() is None:
            kernel.kill()
    client = made[0]
    assert client.ran == [1, 2]
    assert client.options["timeout"] == 9 and client.options["interrupt_on_timeout"] is True
    assert client.options["error_on_timeout"]["evalue"] == "timed out after 9 s"
    assert client.options["resources"] == {"metadata": {"path": str(copy.parent)}}
    assert pids.read_text() == str(kernel.pid)
    state = json.loads(progress.read_text())
    assert [c["outputs"] for c in state["notebook"]["cells"][1:]] == [
        [{"name": "stdout", "output_type": "stream", "text": "ran 1\n"}],
        [{"name": "stdout", "output_type": "stream", "text": "ran 2\n"}]]
    assert state["running"] is None and state["stopped"] == {}


def test_worker_without_a_kernel_process_still_runs_and_writes_no_pid(tmp_path, monkeypatch):
    import nbclient

    copy = _notebook(tmp_path / "ex.ipynb", "a = 1")
    monkeypatch.setattr(nbclient, "NotebookClient", lambda nb, **kw: _WorkerClient(nb, pid=None, **kw))
    assert sc._worker(copy, tmp_path / "p.json", 5, tmp_path / "kernel.pid") == 0
    assert not (tmp_path / "kernel.pid").exists()
    assert json.loads((tmp_path / "p.json").read_text())["notebook"]["cells"][1]["outputs"][0]["text"] == "ran 1\n"


def test_format_scorecard_counts_passes_and_shows_notes():
    results = [sc.Result("ch01.a", "passed"), sc.Result("ch01.b", "failed", "use pad_id"),
               sc.Result("ch01.c", "not run", "timed out")]
    text = sc.format_scorecard("ex.ipynb", results, ["cell 4 timed out after 5 s"])
    assert text.splitlines()[1] == "  note: cell 4 timed out after 5 s"
    assert "✗ ch01.b" in text and "failed: use pad_id" in text and text.endswith("1/3 exercises passed")


def test_the_check_command_prints_the_scorecard_and_fails_unless_all_passed(tmp_path, monkeypatch, capsys):
    from course_lib.course import cli

    path = _notebook(tmp_path / "ex.ipynb", "checks.ch01.encode(encode)", "checks.ch01.decode(decode)")
    body = """
copy, progress, timeout, pids = sys.argv[3:7]
nb = read(copy)
token = sys.stdin.readline().strip()  # the run's token comes on stdin
for index, name in ((1, 'ch01.encode'), (2, 'ch01.decode')):
    if name == 'ch01.encode' or os.environ.get('PASS_ALL'):
        nb['cells'][index]['outputs'] = [{'output_type': 'display_data', 'data': {'text/plain': ''},
                                          'metadata': {'course_check': {'name': name, 'token': token}}}]
open(progress, 'w').write(json.dumps({'notebook': nb, 'stopped': {}, 'running': None}))
"""
    monkeypatch.setattr(sc.sys, "executable", str(_fake_python(tmp_path, body)))
    assert cli.main(["check", str(path), "--timeout", "5", "--time-limit", "30"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Scorecard for {path} (run on a copy; your file was not changed)"
    assert out[-1] == "  1/2 exercises passed" and "never reported success" in out[2]
    monkeypatch.setenv("PASS_ALL", "1")
    assert cli.main(["check", str(path), "--timeout", "5", "--time-limit", "30"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "  2/2 exercises passed"


# --- issue 24: limits, a run that deletes its folders, processes that leave the kernel's tree ----------

@pytest.mark.parametrize("option", ["--timeout", "--time-limit"])
@pytest.mark.parametrize("value", ["0", "-1", "-5", "1.5", "soon"])
def test_check_refuses_a_limit_below_one_second_in_the_parser(tmp_path, capsys, option, value):
    from course_lib.course import cli

    path = _notebook(tmp_path / "ex.ipynb", "x = 1")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check", str(path), option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"error: argument {option}: expected a whole number of seconds >= 1, got " in err and "Traceback" not in err


@pytest.mark.parametrize("name,value,error", [("timeout", 0, ValueError), ("time_limit", -5, ValueError),
                                              ("timeout", True, TypeError), ("time_limit", "60", TypeError)])
def test_scorecard_refuses_a_bad_limit_before_running_anything(tmp_path, monkeypatch, name, value, error):
    path = _notebook(tmp_path / "ex.ipynb", "x = 1")
    monkeypatch.setattr(sc.subprocess, "Popen", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(error, match=rf"{name} must be an int >= 1"):
        sc.scorecard(path, **{name: value})


def test_a_run_that_deletes_its_own_folders_still_gives_a_scorecard(tmp_path, monkeypatch, capsys):
    """The worker (as a notebook might) deletes the sandbox and then the grader's folder: a scorecard, exit 1."""
    from course_lib.course import cli

    path = _notebook(tmp_path / "ex.ipynb", "checks.ch01.encode(encode)")
    body = """
import shutil
copy, progress, timeout, pids = sys.argv[3:7]
shutil.rmtree(os.path.dirname(os.path.dirname(os.path.dirname(copy))))  # course-check-*/sandbox/run/ex.ipynb
shutil.rmtree(os.path.dirname(progress))
"""
    monkeypatch.setattr(sc.sys, "executable", str(_fake_python(tmp_path, body)))
    assert cli.main(["check", str(path), "--timeout", "5", "--time-limit", "30"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Scorecard for") and out[-1] == "  0/1 exercises passed", out
    assert "note: the run left no record of its cells (were the grader's files deleted?)" in out[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex.ipynb", "fake_python"]


def test_a_corrupt_record_of_the_run_is_no_record(tmp_path):
    (tmp_path / "p.json").write_text('{"notebook": [1, 2]', encoding="utf-8")
    assert sc._read_state(tmp_path / "p.json") is None and sc._read_state(tmp_path / "missing.json") is None
    (tmp_path / "p.json").write_text('{"notebook": 3, "stopped": {}}', encoding="utf-8")
    assert sc._read_state(tmp_path / "p.json") is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_processes_that_leave_the_worker_before_it_exits_are_ended_too(tmp_path, monkeypatch):
    """A child in a new session with an empty environment (no run mark) and a double-forked daemon (adopted by the
    worker, a subreaper, as the real one is); then the worker dies: they are no longer its descendants at the end,
    but were seen during the run."""
    path = _notebook(tmp_path / "ex.ipynb", "x = 1")
    pids = tmp_path / "pids"
    body = f"""
import subprocess
from course_lib.course.scorecard import _become_subreaper
_become_subreaper()
copy, progress, timeout, pidfile = sys.argv[3:7]
a = subprocess.Popen(['sleep', '300'], start_new_session=True, env={{}})
b = subprocess.Popen(['sh', '-c', 'setsid sleep 301 & echo $!'], stdout=subprocess.PIPE, env={{}})
open({str(pids)!r}, 'w').write(f"{{a.pid}} {{b.stdout.readline().decode().strip()}}")
b.wait()
time.sleep(1.5)  # the grader looks every half second
os._exit(0)  # a worker that ends abruptly: its children are adopted by init
"""
    monkeypatch.setattr(sc.sys, "executable", str(_fake_python(tmp_path, body)))
    sc.scorecard(path, timeout=5, time_limit=30)
    left = [int(pid) for pid in pids.read_text().split()]
    assert len(left) == 2
    for _ in range(50):
        if not any(map(_alive, left)):
            break
        time.sleep(0.1)
    assert [pid for pid in left if _alive(pid)] == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_the_process_table_finds_every_descendant_and_kill_tree_ends_them():
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                               "subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
                               "print('ready', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline() == "ready\n"
        found = sc._descendants([os.getpid()], sc._process_table())
        assert parent.pid in found
        children = sc._descendants([parent.pid], sc._process_table())
        assert len(children) == 1  # the sleep, in its own session
        sc._kill_tree(parent.pid, {})
        for _ in range(50):
            if not any(map(_alive, children)):
                break
            time.sleep(0.1)
        assert not any(map(_alive, children)) and parent.poll() is None  # the root itself is spared
    finally:
        parent.kill()
        parent.wait()
