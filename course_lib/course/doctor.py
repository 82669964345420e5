"""``python -m course_lib doctor``: is this environment ready for the course? How to fix it if not.

One line per check (✓ or ✗); under each problem, the exact command that fixes it. Exit code 0
when every required check passes (chromium, needed only by the browser test, is optional).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PY = shlex.quote(sys.executable)
SETUP = "python3 course.py setup"
CPU_TORCH = "torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu"


@dataclass
class Check:
    """The result of one check: what was found, and the command that fixes a problem."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _dist_version(name: str) -> str | None:
    """The installed version of a distribution (pip package), or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python(version_info: tuple = tuple(sys.version_info[:3])) -> Check:
    version = ".".join(str(v) for v in version_info[:3])
    if tuple(version_info[:2]) >= (3, 10):
        return Check("Python", True, f"{version} ({sys.executable})")
    return Check("Python", False, f"{version} is too old; the course needs 3.10 or newer",
                 "install Python 3.10+ (python.org or your package manager), then: python3.10 course.py setup")


def check_torch() -> Check:
    try:
        import torch
    except ImportError as err:
        return Check("PyTorch", False, f"not importable ({err})", f"{PY} -m pip install {CPU_TORCH}")
    cuda_build = torch.version.cuda is not None
    build = f"CUDA {torch.version.cuda} build" if cuda_build else "CPU build"
    if cuda_build and torch.cuda.is_available():
        device = f"running on GPU ({torch.cuda.get_device_name(0)}); the course runs on CPU too"
    else:
        device = f"running on CPU ({torch.get_num_threads()} threads)"
        if shutil.which("nvidia-smi") and not cuda_build:
            device += "; an NVIDIA GPU is present but not needed"
        elif cuda_build and platform.system() == "Linux":
            device += ("; this CUDA build is several GB, the CPU build is enough here: "
                       f"{PY} -m pip install --force-reinstall {CPU_TORCH}")
    return Check("PyTorch", True, f"{torch.__version__}: {build}, {device}")


def check_jupyterlab() -> Check:
    version = _dist_version("jupyterlab")
    if version is None:
        return Check("JupyterLab", False, "not installed", f"{PY} -m pip install 'jupyterlab>=4.0'")
    if int(version.split(".")[0]) < 4:
        return Check("JupyterLab", False, f"{version} is too old (need 4.x)", f"{PY} -m pip install -U 'jupyterlab>=4.0'")
    return Check("JupyterLab", True, version)


def _labextension_dirs() -> list[Path]:
    from jupyter_core.paths import jupyter_path

    return [Path(p) for p in jupyter_path("labextensions")]


def check_widgets() -> Check:
    fix = f"{PY} -m pip install 'ipywidgets>=8' 'jupyterlab_widgets>=3', then restart JupyterLab and reload the page"
    ipywidgets, lab_widgets = _dist_version("ipywidgets"), _dist_version("jupyterlab_widgets")
    if ipywidgets is None or lab_widgets is None:
        missing = [n for n, v in (("ipywidgets", ipywidgets), ("jupyterlab_widgets", lab_widgets)) if v is None]
        return Check("Widgets (ipywidgets)", False, f"{' and '.join(missing)} not installed", fix)
    found = [d for d in _labextension_dirs() if (d / "@jupyter-widgets" / "jupyterlab-manager" / "package.json").is_file()]
    if not found:
        return Check("Widgets (ipywidgets)", False,
                     f"jupyterlab_widgets {lab_widgets} is installed but JupyterLab does not find its extension",
                     f"{PY} -m pip install --force-reinstall 'jupyterlab_widgets>=3'")
    return Check("Widgets (ipywidgets)", True,
                 f"ipywidgets {ipywidgets}, JupyterLab extension {lab_widgets} found in {found[0]}")


def check_hangul_font() -> Check:
    from course_lib.viz import HANGUL_FONT, hangul_font_path

    fix = f"{PY} -m pip install koreanize-matplotlib"
    try:
        path = hangul_font_path()
    except RuntimeError as err:
        return Check("Hangul font", False, str(err), fix)
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(path))
    if font.family_name != HANGUL_FONT or not all(font.get_char_index(ord(c)) for c in "한국어"):
        return Check("Hangul "
                     "font", False, f"{path} has no Hangul glyphs", f"{PY} -m pip install --force-reinstall koreanize-matplotlib")
    return Check("Hangul font", True, f"{HANGUL_FONT} ({path})")


def check_nbval() -> Check:
    """Optional: the tests need nbval; ``lab`` installs no test tool, ``python3 course.py test`` does."""
    version = _dist_version("nbval")
    if version is None:
        return Check("nbval (notebook tests)", False, "not installed (only the tests need it)",
                     f"python3 course.py test  (or: {PY} -m pip install nbval)", required=False)
    return Check("nbval (notebook tests)", True, version, required=False)


def _kernel_specs() -> dict[str, str]:
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager().find_kernel_specs()


_PROBE = "import torch, course_lib; print('probe-ok', torch.__version__, course_lib.__file__)"


def _probe_kernel(name: str = "python3", timeout: float = 90) -> tuple[bool, str]:
    """Start the Jupyter kernel ``name``, import torch and course_lib in it, shut it down.

    Returns (ok, what happened). The kernel's own stderr (e.g. its "running over TCP without
    encryption" warning) is discarded.
    """
    from jupyter_client.manager import start_new_kernel

    try:
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=timeout, stderr=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL)
    except Exception as err:  # noqa: BLE001 - a kernel that cannot start is the finding
        return False, f"the kernel does not start ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    printed: list[str] = []

    def keep(msg: dict) -> None:
        content = msg.get("content", {})
        if msg.get("msg_type") == "stream":
            printed.append(content.get("text", ""))
        elif msg.get("msg_type") == "error":
            printed.append(f"{content.get('ename')}: {content.get('evalue')}")

    try:
        reply = kc.execute_interactive(_PROBE, timeout=timeout, output_hook=keep, store_history=False)
        text = "".join(printed).strip()
        if reply.get("content", {}).get("status") == "ok" and text.startswith("probe-ok"):
            return True, text.removeprefix("probe-ok").strip()
        return False, text or "the import failed"
    except Exception as err:  # noqa: BLE001 - a kernel that dies on import is the finding
        return False, f"the kernel stopped while importing ({type(err).__name__}: {err})"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def check_kernel() -> Check:
    """The 'python3' kernel exists, starts, and imports torch and course_lib (what `check` needs)."""
    fix = f"{PY} -m pip install ipykernel && {PY} -m ipykernel install --sys-prefix --name python3"
    specs = _kernel_specs()
    if "python3" not in specs:
        return Check("Jupyter kernel", False, f"no 'python3' kernel (found: {sorted(specs) or 'none'})", fix)
    from jupyter_client.kernelspec import KernelSpecManager

    python = KernelSpecManager().get_kernel_spec("python3").argv[0]
    ok, detail = _probe_kernel("python3")
    if not ok:
        where = "" if python in ("python", "python3", "{python}", sys.executable) else f" (it runs {python})"
        return Check("Jupyter kernel", False, f"'python3'{where}: {detail}",
                     f"make the kernel use this Python, which has torch and the course: {fix}")
    return Check("Jupyter "
                 "kernel", True, f"python3 starts and imports torch {detail.split()[0]} and course_lib ({specs['python3']})")


def check_chromium() -> Check:
    """Optional: tests/test_browser.py drives Debian's chromium through the playwright package."""
    name = "Chromium (browser test only)"
    path = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
    if path is None:
        fix = "sudo apt-get install chromium" if platform.system() == "Linux" else "install Chromium"
        return Check(name, False, "not found; the browser test will be skipped", fix, required=False)
    if _dist_version("playwright") is None:
        return Check(name, False, f"{path} found, but the playwright package is missing",
                     f"{PY} -m pip install 'playwright>=1.40'  (no `playwright install` needed)", required=False)
    return Check(name, True, f"{path}, playwright {_dist_version('playwright')}", required=False)


CHECKS: list[Callable[[], Check]] = [check_python, check_torch, check_jupyterlab, check_widgets,
                                     check_hangul_font, check_nbval, check_kernel, check_chromium]


def run_checks() -> list[Check]:
    """Run every check; a check that crashes is reported as a problem, not as a traceback."""
    results = []
    for check in CHECKS:
        try:
            results.append(check())
        except Exception as err:  # noqa: BLE001 - the doctor must always finish
            name = check.__name__.removeprefix("check_").replace("_", " ")
            results.append(Check(name, False, f"the check failed: {type(err).__name__}: {err}", SETUP))
    return results


def report(results: list[Check]) -> tuple[str, int]:
    """The text to print and the exit code (1 when a required check failed)."""
    lines = [f"Course environment ({platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores)"]
    for r in results:
        mark = "✓" if r.ok else "✗"
        lines.append(f"{mark} {r.name}: {r.detail}" + ("" if r.ok or r.required else " (optional)"))
        if not r.ok and r.fix:
            lines.append(f"    fix: {r.fix}")
    problems = [r for r in results if not r.ok and r.required]
    if problems:
        lines.append(f"{len(problems)} problem(s). Run the fix commands above (or `{SETUP}`), then "
                     "`python -m course_lib doctor` again.")
    else:
        lines.append("Ready: every required check passed.")
    return "\n".join(lines), 1 if problems else 0


def main() -> int:
    text, code = report(run_checks())
    print(text)
    return code
