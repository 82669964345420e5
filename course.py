#!/usr/bin/env python3
"""Set up the course and run it: ``python3 course.py lab``, ``python3 course.py test`` or
``python3 course.py site`` (the course as a website with every output, in ``_build/site/``).
``python3 course.py lab --ko`` opens the Korean edition (한국어판).

Needs only Python 3.10+. Creates ``.venv/`` beside this file, installs PyTorch (the CPU build
on machines without an NVIDIA GPU) and the course, then opens JupyterLab, runs every test or builds
the site. ``lab`` installs only what the chapters and exercises need; ``test`` adds the test tools and
``site`` the site builder, each once. A second run skips what is already installed.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def run(*cmd: str | Path, **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Does ``url``'s host resolve within ``timeout`` seconds? (A DNS lookup ignores socket timeouts, so it
    runs in a helper thread; nothing process-wide changes.)"""
    host, found = url.split("/")[2], []

    def resolve() -> None:
        try:
            found.append(bool(socket.getaddrinfo(host, 443)))
        except OSError:
            found.append(False)

    lookup = threading.Thread(target=resolve, daemon=True)
    lookup.start()
    lookup.join(timeout)
    return bool(found and found[0])


def torch_install_args() -> list[str]:
    """On Linux without an NVIDIA GPU, prefer PyTorch's CPU wheel index (no multi-GB CUDA build)."""
    if platform.system() == "Linux" and not has_nvidia_gpu() and reachable(CPU_INDEX):
        return [TORCH, "--extra-index-url", CPU_INDEX]
    return [TORCH]  # macOS/Windows wheels on PyPI are CPU builds; a GPU machine wants CUDA


def venv_usable(venv: Path = VENV) -> bool:
    """Is ``venv`` a virtual environment whose Python starts and has pip? (Ctrl-C during its creation
    can leave one without pip, and every later run would fail.)"""
    python = venv / PY.relative_to(VENV)
    if not (venv / "pyvenv.cfg").is_file() or not python.exists():
        return False
    try:
        check = subprocess.run([str(python), "-c", "import pip, sys; sys.exit(0)"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0


def ensure_venv(venv: Path = VENV) -> None:
    """Create ``venv``, or rebuild it when it is there but unusable."""
    if venv.exists() or venv.is_symlink():
        if venv_usable(venv):
            return
        print(f"{venv} is unusable (no working Python or no pip, e.g. an interrupted first run): rebuilding it",
              flush=True)
        if venv.is_symlink() or venv.is_file():
            venv.unlink()
        else:
            shutil.rmtree(venv)
    run(sys.executable, "-m", "venv", venv)


# What each command installs: the chapters and exercises need only the package's own dependencies;
# the tests add pytest, nbval, playwright, ruff, mypy and the site tools; the site adds Jupyter Book.
EXTRAS = {"lab": "", "setup": "", "test": "test", "site": "site"}
COVERS = {"test": ("", "site"), "site": ("",), "": ()}  # the test extra holds the site's tools too


def stamp_path(extras: str, venv: Path = VENV) -> Path:
    """The file that says ``extras`` (``""`` for the package alone) is installed, one per extra."""
    return venv / (f".course-installed-{extras}" if extras else ".course-installed")


def stamp_text(extras: str) -> str:
    """What a stamp holds: a hash of pyproject.toml and the extra, so an edited pyproject installs again."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()


def setup(extras: str = "") -> None:
    """Create .venv/ and install PyTorch and the course with ``extras`` (once: a stamp per extra
    remembers it, keyed by pyproject.toml, so a later command with the same extra starts at once)."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python 3.10 or newer is needed, this is {platform.python_version()}")
    ensure_venv()
    stamp = stamp_path(extras)
    if stamp.exists() and stamp.read_text() == stamp_text(extras):
        return
    stamp.unlink(missing_ok=True)  # written again only once everything below is installed
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check"]
    run(*pip, "--upgrade", "pip")
    run(*pip, *torch_install_args())
    run(*pip, "-e", f"{ROOT}[{extras}]" if extras else str(ROOT))
    for done in (extras, *COVERS.get(extras, ())):
        stamp_path(done).write_text(stamp_text(done))


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


KOREAN_START = "ko/notebooks/00_introduction.ipynb"  # the Korean edition (한국어판): ``lab --ko`` opens it


def lab_args(extra: list[str]) -> list[str]:
    """JupyterLab's arguments: ``extra``, plus ``--allow-root`` when we run as root (a container, a cloud
    VM), where JupyterLab otherwise refuses to start. ``--ko`` becomes the Korean edition's first chapter."""
    if "--ko" in extra:  # a file argument would make its folder the server's root: open the page instead
        extra = [a for a in extra if a != "--ko"] + [f"--LabApp.default_url=/lab/tree/{KOREAN_START}"]
    if is_root() and "--allow-root" not in extra:
        print("running as root (e.g. in a container): passing --allow-root to JupyterLab", flush=True)
        return [*extra, "--allow-root"]
    return list(extra)


def install_browser() -> None:
    """The browser test drives Debian's chromium; install it when missing and we may (root + apt)."""
    if shutil.which("chromium") or not shutil.which("apt-get"):
        return
    if is_root():
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            run("apt-get", "update", "-q", env=env)
            run("apt-get", "install", "-y", "-q", "chromium", env=env)
        except subprocess.CalledProcessError as err:  # the other tests still run; the browser test says why
            print(f"note: installing chromium failed ({err}); the browser test will fail", flush=True)
    else:
        print("note: chromium is not installed; the browser test will be skipped "
              "(sudo apt-get install chromium to run it)")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    if command == "lab":
        setup(EXTRAS["lab"])
        os.chdir(ROOT)
        return subprocess.call([str(BIN / "jupyter"), "lab", *lab_args(argv[1:])])
    if command == "test":
        setup(EXTRAS["test"])
        install_browser()
        os.chdir(ROOT)
        return subprocess.call([str(PY), "-m", "pytest", *argv[1:]])
    if command == "site":  # the course as a static website with every output: _build/site/
        setup(EXTRAS["site"])
        os.chdir(ROOT)
        return subprocess.call([str(PY), "-m", "course_lib.course.website", *argv[1:]])
    if command == "setup":
        setup(EXTRAS["setup"])
        return 0
    print(__doc__)
    return 0 if command == "help" else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
