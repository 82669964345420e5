"""Nothing a learner wrote is ever overwritten.

`python -m course_lib make-exercises` keeps an exercise notebook the learner edited (KEPT), and
with `--force` backs it up before regenerating it; an untouched generated notebook is simply
regenerated. `python -m course_lib check NOTEBOOK` only reads the learner's file. All on copies
in tmp_path.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import nbformat
import pytest

from course_lib.course import exercises
from course_lib.course.cli import main as cli
from course_lib.course.exercises import is_untouched, make_exercise

ROOT = Path(__file__).resolve().parents[1]


def course(*args: str, cwd: Path, new_process: bool = False) -> subprocess.CompletedProcess:
    """``python -m course_lib ARGS`` run in ``cwd``: in this process (fast), or in a new one."""
    if new_process:
        return subprocess.run([sys.executable, "-m", "course_lib", *args], capture_output=True,
                              text=True, timeout=300, cwd=cwd)
    out, err, old = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli(list(args))
    except Exception:  # what the learner would see as a traceback
        err.write("Traceback (most recent call last):\n" + traceback.format_exc())
        code = 1
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def solution_notebook(answer: str = "return x * x") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Exercises 00 · Squares<!-- BEGIN SOLUTION --> (solutions)<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell(
            "from course_lib.course.checks import checker, ok\n"
            "class checks:  # stands in for course_lib.course.checks\n"
            "    class ch00:\n"
            "        @staticmethod\n"
            "        @checker('ch00.square')\n"
            "        def square(f):\n"
            "            assert f(3) == 9, 'square(3) should be 9'\n"
            "            ok('square works')\n"
            "        @staticmethod\n"
            "        @checker('ch00.cube')\n"
            "        def cube(f):\n"
            "            assert f(2) == 8, 'cube(2) should be 8'\n"
            "            ok('cube works')"),
        nbformat.v4.new_markdown_cell("## Exercise 1: square"),
        nbformat.v4.new_code_cell(f"def square(x):\n    ### BEGIN SOLUTION x squared\n    {answer}\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("checks.ch00.square(square)"),
        nbformat.v4.new_markdown_cell("## Exercise 2: cube"),
        nbformat.v4.new_code_cell("def cube(x):\n    ### BEGIN SOLUTION x cubed\n    return x ** 3\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("checks.ch00.cube(cube)"),
    ]
    return nb


@pytest.fixture
def course_dir(tmp_path: Path) -> Path:
    (tmp_path / "solutions").mkdir()
    nbformat.write(solution_notebook(), tmp_path / "solutions" / "00_squares.ipynb")
    for real in sorted((ROOT / "solutions").glob("*.ipynb"))[:1]:  # and one real chapter, if any
        (tmp_path / "solutions" / real.name).write_bytes(real.read_bytes())
    proc = course("make-exercises", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("written") == len(list((tmp_path / "solutions").glob("*.ipynb")))
    return tmp_path


def learner_edits(path: Path) -> None:
    """What JupyterLab saves after a learner typed an answer (and ran the cell)."""
    nb = nbformat.read(path, as_version=4)
    stub = next(c for c in nb.cells if "raise NotImplementedError" in c.source)
    stub.source = stub.source.replace("raise NotImplementedError('x squared')", "return x * x  # mine!")
    stub.execution_count = 3
    nbformat.write(nb, path)


def _backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.bak-*"))


def test_second_run_changes_nothing(course_dir):
    before = {p.name: p.read_bytes() for p in (course_dir / "exercises").iterdir()}
    proc = course("make-exercises", cwd=course_dir)
    assert proc.returncode == 0 and "written" not in proc.stdout
    assert proc.stdout.count("unchanged") == len(before)
    assert {p.name: p.read_bytes() for p in (course_dir / "exercises").iterdir()} == before


def test_an_edited_exercise_is_kept(course_dir):
    target = course_dir / "exercises" / "00_squares.ipynb"
    learner_edits(target)
    mine = target.read_bytes()
    assert not is_untouched(target)
    # The course is updated: the solution changes, so the generated exercise would differ too.
    nbformat.write(solution_notebook("return x ** 2"), course_dir / "solutions" / "00_squares.ipynb")
    proc = course("make-exercises", cwd=course_dir)
    assert proc.returncode == 0, proc.stderr
    assert "KEPT       exercises/00_squares.ipynb (you edited it; --force" in proc.stdout
    assert target.read_bytes() == mine
    assert _backups(course_dir / "exercises") == []


def test_force_backs_up_the_edited_notebook_first(course_dir):
    target = course_dir / "exercises" / "00_squares.ipynb"
    learner_edits(target)
    mine = target.read_bytes()
    proc = course("make-exercises", "--force", cwd=course_dir, new_process=True)  # the real command
    assert proc.returncode == 0, proc.stderr
    backups = _backups(course_dir / "exercises")
    assert len(backups) == 1 and backups[0].name.startswith("00_squares.ipynb.bak-")
    assert backups[0].read_bytes() == mine, "the backup must hold exactly what the learner had"
    lines = proc.stdout.splitlines()
    backed = next(i for i, line in enumerate(lines) if line.startswith("backed up"))
    assert f"-> exercises/{backups[0].name}" in lines[backed]
    assert lines[backed + 1] == "written    exercises/00_squares.ipynb"  # written only after the backup
    assert is_untouched(target) and "# mine!" not in target.read_text(encoding="utf-8")


def test_force_keeps_the_mode_of_the_notebook_it_rewrites(course_dir):
    target = course_dir / "exercises" / "00_squares.ipynb"
    for mode in (0o644, 0o640):
        learner_edits(target)
        target.chmod(mode)
        proc = course("make-exercises", "--force", cwd=course_dir)
        assert proc.returncode == 0 and "written    exercises/00_squares.ipynb" in proc.stdout, proc.stdout + proc.stderr
        assert target.stat().st_mode & 0o777 == mode, oct(target.stat().st_mode)
    (course_dir / "exercises" / "00_squares.ipynb").unlink()  # a new notebook: readable by others, as a text editor makes it
    assert course("make-exercises", cwd=course_dir).returncode == 0
    assert target.stat().st_mode & 0o777 == 0o644


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this user cannot create files in (root ignores permission bits: a read-only kernel folder then)."""
    import tempfile

    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys/kernel")):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no folder here that this user cannot write in")


def test_make_exercises_into_a_file_or_an_unwritable_folder_is_one_line_and_exit_2(course_dir, tmp_path):
    (course_dir / "a_file.txt").write_text("mine", encoding="utf-8")
    cases = [("a_file.txt", "error: --exercises a_file.txt is a file, not a folder"),
             (str(_unwritable_folder(tmp_path)), "error: cannot write in --exercises "),
             ("a_file.txt/sub", "error: cannot write in --exercises a_file.txt/sub: ")]
    for folder, message in cases:
        for new_process in (False, True):
            proc = course("make-exercises", "--exercises", folder, cwd=course_dir, new_process=new_process)
            assert proc.returncode == 2 and proc.stdout == "", (folder, proc.stdout, proc.stderr)
            assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
            assert "Traceback" not in proc.stderr and "[Errno" not in proc.stderr
    assert (course_dir / "a_file.txt").read_text(encoding="utf-8") == "mine"


def test_an_untouched_exercise_is_regenerated_silently(course_dir):
    target = course_dir / "exercises" / "00_squares.ipynb"
    assert is_untouched(target)  # as generated, never run (a run notebook is the learner's: see below)
    nbformat.write(solution_notebook("return x ** 2"), course_dir / "solutions" / "00_squares.ipynb")
    # A change visible in the exercise too: the instructions.
    sol = nbformat.read(course_dir / "solutions" / "00_squares.ipynb", as_version=4)
    sol.cells[2].source = "## Exercise 1: square (new wording)"
    nbformat.write(sol, course_dir / "solutions" / "00_squares.ipynb")
    proc = course("make-exercises", cwd=course_dir)
    assert "written    exercises/00_squares.ipynb" in proc.stdout and "KEPT" not in proc.stdout
    assert "new wording" in target.read_text(encoding="utf-8")
    assert _backups(course_dir / "exercises") == []


def test_a_notebook_without_the_generated_stamp_counts_as_the_learners(course_dir):
    """A notebook whose metadata was stripped (by a tool or by hand) is never overwritten."""
    target = course_dir / "exercises" / "00_squares.ipynb"
    nb = nbformat.read(target, as_version=4)
    del nb.metadata["course"]
    nbformat.write(nb, target)
    mine = target.read_bytes()
    proc = course("make-exercises", cwd=course_dir)
    assert "KEPT" in proc.stdout and target.read_bytes() == mine


def test_an_unreadable_exercise_is_kept_with_a_clear_line(course_dir):
    target = course_dir / "exercises" / "00_squares.ipynb"
    target.write_text('{"cells": [', encoding="utf-8")  # e.g. a half-saved file
    proc = course("make-exercises", cwd=course_dir)
    assert target.read_text(encoding="utf-8") == '{"cells": ['
    assert proc.returncode == 0 and "KEPT       exercises/00_squares.ipynb" in proc.stdout
    assert "Traceback" not in proc.stderr
    proc = course("make-exercises", "--force", cwd=course_dir)  # --force still backs it up first
    backups = _backups(course_dir / "exercises")
    assert proc.returncode == 0 and len(backups) == 1
    assert backups[0].read_text(encoding="utf-8") == '{"cells": ['
    assert is_untouched(target)


def test_a_second_forced_backup_never_replaces_the_first(course_dir, monkeypatch):
    """Two --force runs within the same second: both edited versions survive in backups."""
    monkeypatch.setattr(exercises.time, "strftime", lambda fmt: "20250101-120000")
    target = course_dir / "exercises" / "00_squares.ipynb"
    kept = []
    for attempt in ("first", "second"):
        learner_edits(target)
        target.write_text(target.read_text(encoding="utf-8").replace("# mine!", f"# mine, {attempt}"),
                          encoding="utf-8")
        kept.append(target.read_bytes())
        proc = course("make-exercises", "--force", cwd=course_dir)
        assert proc.returncode == 0, proc.stderr
    backups = _backups(course_dir / "exercises")
    assert [b.name for b in backups] == ["00_squares.ipynb.bak-20250101-120000",
                                         "00_squares.ipynb.bak-20250101-120000-1"]
    assert [b.read_bytes() for b in backups] == kept


def test_notebooks_without_a_solution_are_never_touched(course_dir):
    """A learner's own notebook in exercises/ (no solution of that name) is left alone."""
    own = course_dir / "exercises" / "my_notes.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), own)
    mine = own.read_bytes()
    for args in (("make-exercises",), ("make-exercises", "--force")):
        proc = course(*args, cwd=course_dir)
        assert proc.returncode == 0 and "my_notes" not in proc.stdout
    assert own.read_bytes() == mine and _backups(course_dir / "exercises") == []


# --- python -m course_lib check -----------------------------------------------------------------

def test_check_reads_but_never_writes_the_notebook(tmp_path):
    exercise = make_exercise(solution_notebook())
    stub = exercise.cells[3]
    stub.source = stub.source.replace("raise NotImplementedError('x squared')", "return x * x")
    path = tmp_path / "00_squares.ipynb"
    nbformat.write(exercise, path)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))  # a recognisable mtime
    before, stat = path.read_bytes(), path.stat()
    proc = course("check", str(path), cwd=tmp_path, new_process=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one exercise done, one not attempted
    assert "✓ ch00.square" in proc.stdout and "passed" in proc.stdout
    assert "· ch00.cube" in proc.stdout and "not attempted" in proc.stdout
    assert "1/2 exercises passed" in proc.stdout
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_squares.ipynb"], "check wrote files"


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (Linux /proc)."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes():
                found.append(int(env.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


MISBEHAVING = [
    "import os, signal, time, torch\nfrom course_lib.course import checks",
    # 1. a correct answer whose check passes
    "def pad_batch(id_lists, pad_id):\n    L = max(map(len, id_lists))\n"
    "    return torch.tensor([x + [pad_id] * (L - len(x)) for x in id_lists])",
    "checks.ch01.pad_batch(pad_batch)",
    # 2. deletes every file beside it, writes a new one, and rewrites the notebook itself
    "import glob\nfor f in glob.glob('*') + glob.glob('../*'):\n    try:\n        os.remove(f)\n    except OSError:\n        "
    "pass\n"
    "open('planted.txt', 'w').write('x')\n"
    "open(glob.glob('*.ipynb')[0] if glob.glob('*.ipynb') else 'nb.ipynb', 'w').write('{}')",
    # 3. a fake success line, the check in a comment
    "print('✓ encode: known tokens, <unk> for unknown ones')  # checks.ch01.encode(encode)",
    # 4. a forged marker without the run's token
    "from IPython.display import display\n"
    "display({'text/plain': ''}, raw=True, metadata={'course_check': {'name': 'ch01.jamo_indices', 'token': 'guess'}})\n"
    "# checks.ch01.jamo_indices(jamo_indices)",
    # 5. a wrong answer: failed with its hint
    "checks.ch01.merge_pair(lambda s, p: list(s))",
    # 6. loops forever (interrupted at the cell timeout; the run goes on)
    "while True:\n    pass",
    "checks.ch01.choose_particle(lambda w, p: p[0])",
    # 7. a child process that would outlive everything, then the kernel kills itself
    "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "os.kill(os.getpid(), signal.SIGKILL)",
    "checks.ch01.most_frequent_pair(lambda wf: None)",
]


def test_check_is_a_sandbox_with_an_honest_scorecard(tmp_path):
    """A notebook that deletes files, rewrites itself, fakes a ✓, loops forever and kills its kernel."""
    import uuid

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in MISBEHAVING]
    folder = tmp_path / "exercises"
    folder.mkdir()
    path = folder / "01_tokens.ipynb"
    nbformat.write(nb, path)
    (folder / "my_notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "beside.txt").write_text("also mine", encoding="utf-8")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*")if p.is_file()}
    marker = f"COURSE_TEST_MARK_{uuid.uuid4().hex}"
    env = dict(os.environ, COURSE_TEST_MARK=marker)
    proc = subprocess.run([sys.executable, "-m", "course_lib", "check", str(path), "--timeout", "8", "--time-limit", "240"],
                          capture_output=True, text=True, timeout=300, cwd=folder, env=env)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before, "check touched the learner's files"
    lines = {line.split()[1]: line for line in out.splitlines() if line.strip()[:1] in "✓✗·!-"}
    assert "passed" in lines["ch01.pad_batch"]
    assert "error" in lines["ch01.encode"] and "never reported success" in lines["ch01.encode"]
    assert "error" in lines["ch01.jamo_indices"]
    assert "failed" in lines["ch01.merge_pair"]
    assert "failed" in lines["ch01.choose_particle"] or "error" in lines["ch01.choose_particle"]
    assert "not run" in lines["ch01.most_frequent_pair"] and "kernel died" in lines["ch01.most_frequent_pair"]
    assert "cell 8 timed out" in out and "cell 10: the kernel died" in out, out
    assert "1/6 exercises passed" in out
    assert "without encryption" not in out + proc.stderr and "Traceback" not in out + proc.stderr
    time.sleep(0.5)
    assert _processes_with(marker) == [], "check left processes running"


ESCAPING = [  # issue 24: what a notebook can do to its grader; {report} and {pids} are files outside the learner's folder
    "import json, os, shutil, subprocess, sys, torch",
    # 1. where am I, and can I see the run's token?
    "parent = f'/proc/{{os.getppid()}}/environ'\n"
    "json.dump({{'cwd': os.getcwd(), 'env': dict(os.environ), 'token': os.environ.get('COURSE_CHECK_TOKEN'),\n"
    "           'proc': [open(p, 'rb').read().decode(errors='replace') for p in ('/proc/self/environ', parent)\n"
    "                    if os.path.exists(p)]}}, open({report!r}, 'w'))",
    # 2. a forged pass with the token from the environment (the check itself in a comment)
    "from IPython.display import display\n"
    "display({{'text/plain': ''}}, raw=True, metadata={{'course_check': {{'name': 'ch01.encode',\n"
    "        'token': os.environ.get('COURSE_CHECK_TOKEN', '')}}}})\n# checks.ch01.encode(encode)",
    # 3. processes that leave the kernel: a new session without the environment, and a double-forked daemon
    "a = subprocess.Popen(['sleep', '300'], start_new_session=True, env={{}})\n"
    "b = subprocess.Popen(['sh', '-c', 'setsid sleep 301 & echo $!'], stdout=subprocess.PIPE, env={{}})\n"
    "open({pids!r}, 'w').write(f'{{a.pid}} {{b.stdout.readline().decode().strip()}}')",
    # 4. deletes the temporary folder it runs in
    "shutil.rmtree(os.path.dirname(os.path.dirname(os.getcwd())))",
    # 5. and a real check still passes after all that
    "from course_lib.course import checks\n"
    "def pad_batch(id_lists, pad_id):\n    L = max(map(len, id_lists))\n"
    "    return torch.tensor([x + [pad_id] * (L - len(x)) for x in id_lists])\n"
    "checks.ch01.pad_batch(pad_batch)",
]


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_check_hides_the_token_and_the_learners_folder_ends_every_process_and_survives_a_deleted_folder(tmp_path):
    folder = tmp_path / "learner" / "exercises"
    folder.mkdir(parents=True)
    report, pids = tmp_path / "report.json", tmp_path / "pids"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src.format(report=str(report), pids=str(pids))) for src in ESCAPING]
    path = folder / "01_tokens.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run([sys.executable, "-m", "course_lib", "check", path.name, "--timeout", "60", "--time-limit", "240"],
                          capture_output=True, text=True, timeout=300, cwd=folder, env=dict(os.environ, PWD=str(folder)))
    out = proc.stdout
    assert proc.returncode == 1 and out.startswith("Scorecard for 01_tokens.ipynb"), out + proc.stderr
    assert "error: the checker never reported success" in out and "✓ ch01.pad_batch" in out
    assert out.rstrip().endswith("1/2 exercises passed") and "Traceback" not in out + proc.stderr
    seen = json.loads(report.read_text())
    assert seen["token"] is None and not any("COURSE_CHECK_TOKEN" in text for text in seen["proc"])
    assert str(tmp_path / "learner") not in seen["cwd"] + json.dumps(seen["env"]), (seen["cwd"], seen["env"].get("PWD"))
    assert seen["env"]["PWD"] == seen["cwd"]
    left = [int(pid) for pid in pids.read_text().split()]
    assert len(left) == 2
    for _ in range(50):
        if not any(map(_running, left)):
            break
        time.sleep(0.1)
    assert [pid for pid in left if _running(pid)] == [], "check left processes running"


def _running(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie waiting to be reaped counts as ended)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


# --- make-exercises keeps the promise ---------------------------------------------------------------

def test_a_half_saved_or_latin1_exercise_is_kept_and_later_chapters_are_still_generated(course_dir):
    """One line per kept file, no traceback, and the chapters after it are (re)generated."""
    (course_dir / "solutions" / "99_later.ipynb").write_bytes((course_dir / "solutions" / "00_squares.ipynb").read_bytes())
    target = course_dir / "exercises" / "00_squares.ipynb"
    hangul = target.read_bytes().replace(b"Squares", "Squares 제곱".encode())
    half_saved = hangul[: hangul.index("제".encode()) + 2]  # cut inside a Hangul character (3 bytes in UTF-8)
    latin1 = target.read_bytes().replace(b"Squares", "Squares café".encode("latin-1"))
    for broken in (half_saved, latin1):
        target.write_bytes(broken)
        later = course_dir / "exercises" / "99_later.ipynb"
        later.unlink(missing_ok=True)
        proc = course("make-exercises", cwd=course_dir)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        kept = [line for line in proc.stdout.splitlines() if "00_squares" in line]
        assert len(kept) == 1 and kept[0].startswith("KEPT") and "UTF-8" in kept[0], proc.stdout
        assert target.read_bytes() == broken
        assert later.exists() and "written    exercises/99_later.ipynb" in proc.stdout


def test_a_missing_solutions_folder_is_an_error_and_creates_nothing(tmp_path):
    proc = course("make-exercises", cwd=tmp_path)
    assert proc.returncode == 2 and "solutions is not a folder" in proc.stderr, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "solutions").mkdir()
    proc = course("make-exercises", cwd=tmp_path)
    assert proc.returncode == 2 and "holds no .ipynb notebook" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["solutions"]


def test_a_notebook_the_learner_only_ran_is_theirs(course_dir):
    """Same sources as generated, but outputs and execution counts: kept (the learner ran it)."""
    target = course_dir / "exercises" / "00_squares.ipynb"
    nb = nbformat.read(target, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 1
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="my run\n")]
    nbformat.write(nb, target)
    ran = target.read_bytes()
    (course_dir / "solutions" / "00_squares.ipynb").write_text(
        (course_dir / "solutions" / "00_squares.ipynb").read_text(encoding="utf-8").replace("Exercise 1: "
                                                                                            "square", "Exercise 1: the square"),
        encoding="utf-8")
    proc = course("make-exercises", cwd=course_dir)
    assert "KEPT       exercises/00_squares.ipynb (you ran it: it has your outputs" in proc.stdout, proc.stdout
    assert target.read_bytes() == ran


@pytest.mark.parametrize("name, content, message", [
    ("missing.ipynb", None, "no such notebook"),
    ("notes.txt", "not a notebook", "expected a Jupyter notebook (.ipynb)"),
    ("broken.ipynb", "{not json", "is not a Jupyter notebook"),
])
def test_check_rejects_bad_paths_with_exit_code_2(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    proc = course("check", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    if content is not None:
        assert path.read_text(encoding="utf-8") == content
