"""course.py, the README's two commands: its functions, and `python3 course.py lab` itself, started
on a free port, fetched over 127.0.0.1 and stopped (with the existing .venv, so nothing installs)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def course():
    spec = importlib.util.spec_from_file_location("course_script", ROOT / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reachable_scopes_its_timeout_to_the_one_check(course, monkeypatch):
    seen = []

    def offline(host, port):
        seen.append((host, port))
        raise OSError("offline")

    before = socket.getdefaulttimeout()
    monkeypatch.setattr(course.socket, "getaddrinfo", offline)
    assert course.reachable("https://download.pytorch.org/whl/cpu") is False
    assert seen == [("download.pytorch.org", 443)]
    monkeypatch.setattr(course.socket, "getaddrinfo", lambda host, port: time.sleep(5) or [("addr",)])
    start = time.monotonic()
    assert course.reachable("https://download.pytorch.org/whl/cpu", timeout=0.2) is False  # a hanging DNS
    assert time.monotonic() - start < 2
    monkeypatch.setattr(course.socket, "getaddrinfo", lambda host, port: [("addr",)])
    assert course.reachable("https://download.pytorch.org/whl/cpu") is True
    assert socket.getdefaulttimeout() == before  # no process-wide side effect


def test_torch_comes_from_the_cpu_index_only_on_linux_without_a_gpu(course, monkeypatch):
    monkeypatch.setattr(course, "reachable", lambda url: True)
    for system, gpu, expected in [("Linux", False, [course.TORCH, "--extra-index-url", course.CPU_INDEX]),
                                  ("Linux", True, [course.TORCH]), ("Darwin", False, [course.TORCH])]:
        monkeypatch.setattr(course.platform, "system", lambda system=system: system)
        monkeypatch.setattr(course, "has_nvidia_gpu", lambda gpu=gpu: gpu)
        assert course.torch_install_args() == expected, (system, gpu)


def test_lab_passes_allow_root_only_as_root(course, monkeypatch, capsys):
    monkeypatch.setattr(course, "is_root", lambda: True)
    assert course.lab_args(["--no-browser"]) == ["--no-browser", "--allow-root"]
    capsys.readouterr()
    assert course.lab_args(["--allow-root"]) == ["--allow-root"]  # not twice
    monkeypatch.setattr(course, "is_root", lambda: False)
    assert course.lab_args(["--port", "9"]) == ["--port", "9"]
    assert capsys.readouterr().out == ""


def test_lab_says_so_in_one_line_when_root(course, monkeypatch, capsys):
    monkeypatch.setattr(course, "is_root", lambda: True)
    course.lab_args([])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "--allow-root" in out and "root" in out


@pytest.mark.parametrize("command, extras", [("lab", ""), ("test", "test"), ("site", "site"), ("setup", "")])
def test_each_command_installs_only_its_own_extra(course, monkeypatch, command, extras):
    """lab installs what the chapters and exercises need, no test tool (pytest, playwright, mypy, ...)."""
    asked = []
    monkeypatch.setattr(course, "setup", lambda extra="": asked.append(extra))
    monkeypatch.setattr(course, "install_browser", lambda: None)
    monkeypatch.setattr(course.subprocess, "call", lambda *a, **k: 0)
    monkeypatch.setattr(course.os, "chdir", lambda path: None)
    assert course.main([command]) == 0
    assert asked == [extras]


def test_the_lab_install_holds_no_test_tool():
    """The package's own dependencies (what lab installs) name none of the test or site tools."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    tools = {"pytest", "pytest-timeout", "pytest-cov", "nbval", "playwright", "ruff", "mypy", "jupyter-book", "sphinx"}
    assert not names & tools, f"lab would install test tools: {sorted(names & tools)}"
    extras = project["optional-dependencies"]
    assert {"pytest", "nbval", "playwright"} <= {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0] for d in extras["test"]}


def test_a_test_install_stamps_the_site_and_the_package_too(course, monkeypatch, tmp_path):
    venv = tmp_path / ".venv"
    venv.mkdir()
    monkeypatch.setattr(course, "VENV", venv)
    monkeypatch.setattr(course, "PY", venv / "bin" / "python")
    monkeypatch.setattr(course, "ensure_venv", lambda venv=None: None)
    monkeypatch.setattr(course, "torch_install_args", lambda: [course.TORCH])
    ran = []
    monkeypatch.setattr(course, "run", lambda *cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(course, "stamp_path", lambda extras, venv=venv: venv / f"stamp-{extras or 'base'}")
    course.setup("test")
    assert sorted(p.name for p in venv.iterdir()) == ["stamp-base", "stamp-site", "stamp-test"]
    ran.clear()
    for extras in ("", "site", "test"):  # each is installed now: nothing runs
        course.setup(extras)
    assert ran == []
    (venv / "stamp-base").write_text("an older pyproject")
    course.setup("")
    assert any("pip" in map(str, cmd) for cmd in ran)  # an edited pyproject installs again


def test_an_unusable_venv_is_detected_and_rebuilt(course, monkeypatch, tmp_path):
    assert course.venv_usable(Path(sys.prefix))  # the venv running these tests works
    assert not course.venv_usable(tmp_path / "none")
    broken = tmp_path / "venv"
    (broken / course.PY.relative_to(course.VENV)).parent.mkdir(parents=True)
    (broken / "pyvenv.cfg").write_text("home = /nowhere\n")
    (broken / course.PY.relative_to(course.VENV)).write_text("#!/bin/false\n")  # a Python that does not start
    assert not course.venv_usable(broken)
    commands = []
    monkeypatch.setattr(course, "run", lambda *cmd, **kw: commands.append([str(c) for c in cmd]))
    course.ensure_venv(broken)
    assert not broken.exists() and commands == [[sys.executable, "-m", "venv", str(broken)]]
    commands.clear()
    course.ensure_venv(Path(sys.prefix))  # a working one is kept as it is
    assert commands == []
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)  # a broken .venv that is a link: remove the link, never what it points to
    course.ensure_venv(tmp_path / "link")
    assert target.is_dir() and not (tmp_path / "link").is_symlink()


def test_a_venv_without_pip_is_unusable(course, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True, timeout=120)
    assert not course.venv_usable(tmp_path / "v")  # what Ctrl-C during the first run leaves


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("korean", [False, True], ids=["lab", "lab --ko"])
def test_course_py_lab_starts_jupyterlab_and_serves_lab(tmp_path, korean):
    """The README's main command, run as the learner runs it (as root here, it must pass --allow-root); with --ko
    it opens the Korean edition's first chapter and still serves the whole course (the server's root)."""
    venv = Path(sys.prefix)
    stamp = venv / ".course-installed"  # lab needs the package alone (no extra)
    extras_hash = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + b"").hexdigest()
    if not (venv / "bin" / "jupyter").exists() or not stamp.is_file() or stamp.read_text() != extras_hash:
        pytest.skip("the running venv is not a course .venv made from this pyproject.toml (it would install)")
    for name in ("course.py", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(venv)  # the existing venv: setup() finds it complete and installs nothing
    port = _free_port()
    cmd = ["python3", str(tmp_path / "course.py"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={tmp_path}", *(["--ko"] if korean else [])]
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    try:
        deadline, status, token = time.monotonic() + 120, None, None
        while time.monotonic() < deadline and proc.poll() is None:
            found = re.search(rf"127\.0\.0\.1:{port}(/lab\S*)\?token=(\w+)", log.read_text(errors="replace"))
            if found:
                opened, token = found.group(1), found.group(2)
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{opened}?token={token}", timeout=10) as page:
                        status, body = page.status, page.read().decode(errors="replace")
                    break
                except OSError:
                    pass
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert status == 200, f"no /lab page (exit code {proc.poll()}):\n{text[-3000:]}"
        assert "JupyterLab" in body or "jupyter" in body.lower()
        assert opened == ("/lab/tree/ko/notebooks/00_introduction.ipynb" if korean else "/lab"), opened
        assert f"Serving notebooks from local directory: {tmp_path}" in text  # not ko/notebooks/: the whole course
        assert "pip install" not in text and "+ " + sys.executable not in text  # nothing was installed
        if os.geteuid() == 0:
            assert "passing --allow-root" in text and "Running as root is not recommended" not in text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group we started: course.py and its jupyter
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
    with pytest.raises(ProcessLookupError):  # nothing of the group is left running
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)


def test_lab_ko_opens_the_korean_editions_first_chapter(course, monkeypatch):
    monkeypatch.setattr(course, "is_root", lambda: False)
    assert course.lab_args(["--ko", "--no-browser"]) == ["--no-browser", f"--LabApp.default_url=/lab/tree/{course.KOREAN_START}"]
    assert (course.ROOT / course.KOREAN_START).name == "00_introduction.ipynb"
    assert course.lab_args(["--no-browser"]) == ["--no-browser"]
