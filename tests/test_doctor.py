"""`python -m course_lib doctor`: every check passes here, and each failure prints its fix."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import viz
from course_lib.course import doctor
from course_lib.course.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def _by_name(results):
    return {r.name: r for r in results}


def test_this_environment_passes_every_required_check():
    results = doctor.run_checks()
    failed = [r for r in results if r.required and not r.ok]
    assert not failed, doctor.report(results)[0]
    names = [r.name for r in results]
    for expected in ("Python", "PyTorch", "JupyterLab", "Widgets (ipywidgets)", "Hangul font",
                     "nbval (notebook tests)", "Jupyter kernel", "Chromium (browser test only)"):
        assert expected in names
    import torch

    torch_line = _by_name(results)["PyTorch"].detail
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    on = "GPU" if torch.version.cuda and torch.cuda.is_available() else "CPU"
    assert torch_line.startswith(f"{torch.__version__}: {build}, running on {on} ("), torch_line
    assert torch.__version__.startswith("2.13")


def test_command_line_prints_one_line_per_check_and_exits_0():
    proc = subprocess.run([sys.executable, "-m", "course_lib", "doctor"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    marks = [line for line in proc.stdout.splitlines() if line[:1] in "✓✗"]
    assert len(marks) == len(doctor.CHECKS), proc.stdout
    assert proc.stdout.strip().endswith("Ready: every required check passed.")


def test_old_python_fails_with_a_fix():
    result = doctor.check_python((3, 9, 18))
    assert not result.ok and "3.9.18" in result.detail and "3.10" in result.detail
    assert "course.py setup" in result.fix
    assert doctor.check_python((3, 10, 0)).ok


def test_missing_torch_says_how_to_install_the_cpu_build(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    result = doctor.check_torch()
    assert not result.ok
    assert "pip install torch==2.13.0" in result.fix and "download.pytorch.org/whl/cpu" in result.fix


@pytest.mark.parametrize("missing", ["jupyterlab_widgets", "ipywidgets"])
def test_missing_widget_packages_fail(monkeypatch, missing):
    real = doctor._dist_version
    monkeypatch.setattr(doctor, "_dist_version", lambda name: None if name == missing else real(name))
    result = doctor.check_widgets()
    assert not result.ok and missing in result.detail
    assert "pip install" in result.fix and "jupyterlab_widgets" in result.fix and "restart JupyterLab" in result.fix


def test_widget_extension_not_found_by_jupyterlab(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor, "_labextension_dirs", lambda: [tmp_path])
    result = doctor.check_widgets()
    assert not result.ok and "does not find its extension" in result.detail
    assert "--force-reinstall" in result.fix


def test_old_or_missing_jupyterlab(monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version", lambda name: "3.6.7" if name == "jupyterlab" else None)
    assert not doctor.check_jupyterlab().ok and "jupyterlab>=4.0" in doctor.check_jupyterlab().fix
    monkeypatch.setattr(doctor, "_dist_version", lambda name: None)
    assert doctor.check_jupyterlab().detail == "not installed"


def test_missing_hangul_font(monkeypatch):
    def no_font():
        raise RuntimeError("No Hangul font: pip install koreanize-matplotlib (it ships NanumGothic)")

    monkeypatch.setattr(viz, "hangul_font_path", no_font)
    result = doctor.check_hangul_font()
    assert not result.ok and "No Hangul font" in result.detail
    assert result.fix.endswith("-m pip install koreanize-matplotlib")


def test_a_font_without_hangul_is_rejected(monkeypatch):
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    monkeypatch.setattr(viz, "hangul_font_path", lambda: dejavu)
    result = doctor.check_hangul_font()
    assert not result.ok and "no Hangul glyphs" in result.detail


def test_missing_nbval(monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version", lambda name: None)
    result = doctor.check_nbval()
    assert not result.ok and "pip install nbval" in result.fix
    assert not result.required  # `lab` installs no test tool; only the tests need nbval


def test_kernel_not_found(monkeypatch):
    monkeypatch.setattr(doctor, "_kernel_specs", lambda: {"ir": "/somewhere/ir"})
    result = doctor.check_kernel()
    assert not result.ok and "no 'python3' kernel" in result.detail and "ir" in result.detail
    assert "ipykernel install --sys-prefix --name python3" in result.fix


def test_the_kernel_really_runs_and_imports_torch_and_course_lib():
    result = doctor.check_kernel()
    assert result.ok, result
    assert "starts and imports torch 2.13" in result.detail and "course_lib" in result.detail


def _fake_kernelspec(tmp_path, monkeypatch, argv):
    """A 'python3' kernelspec found before the real one (JUPYTER_PATH comes first)."""
    import json

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "broken", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))


def test_a_kernel_whose_python_lacks_ipykernel_and_torch_is_a_problem(tmp_path, monkeypatch):
    """`python -S` sees no site-packages: neither ipykernel nor torch, as a bare system Python."""
    _fake_kernelspec(tmp_path, monkeypatch, [sys.executable, "-S", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    result = doctor.check_kernel()
    assert not result.ok, result
    assert "does not start" in result.detail or "died" in result.detail
    assert "ipykernel install --sys-prefix --name python3" in result.fix


def test_a_kernel_that_starts_but_cannot_import_the_course_is_a_problem(tmp_path, monkeypatch):
    (tmp_path / "torch.py").write_text("raise ImportError('no torch in this Python')")
    _fake_kernelspec(tmp_path, monkeypatch, [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the kernel finds the broken torch first
    result = doctor.check_kernel()
    assert not result.ok and "ImportError: no torch in this Python" in result.detail, result
    assert "pip install ipykernel" in result.fix


def test_the_kernel_probe_leaves_no_process_and_no_warning(capfd):
    ok, _ = doctor._probe_kernel()
    assert ok
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err


def test_chromium_missing_is_optional(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    result = doctor.check_chromium()
    assert not result.ok and not result.required and "apt-get install chromium" in result.fix


def test_exit_code_and_report(monkeypatch, capsys):
    good = doctor.Check("Python", True, "3.11")
    optional = doctor.Check("Chromium (browser test only)", False, "not found", "sudo apt-get install chromium", required=False)
    bad = doctor.Check("Hangul font", False, "No Hangul font", "python -m pip install koreanize-matplotlib")

    monkeypatch.setattr(doctor, "run_checks", lambda: [good, optional])
    assert cli(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "✓ Python: 3.11" in out and "✗ Chromium (browser test only): not found (optional)" in out
    assert "    fix: sudo apt-get install chromium" in out and "Ready" in out

    monkeypatch.setattr(doctor, "run_checks", lambda: [good, bad, optional])
    assert cli(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "✗ Hangul font: No Hangul font\n    fix: python -m pip install koreanize-matplotlib" in out
    assert "1 problem(s)" in out


def test_a_crashing_check_is_reported_not_raised(monkeypatch):
    def broken():
        raise OSError("disk on fire")

    monkeypatch.setattr(doctor, "CHECKS", [doctor.check_python, broken])
    results = doctor.run_checks()
    assert results[0].ok and not results[1].ok
    assert "OSError: disk on fire" in results[1].detail and results[1].fix


def test_chromium_without_playwright_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/chromium" if name == "chromium" else None)
    monkeypatch.setattr(doctor, "_dist_version", lambda name: None)
    result = doctor.check_chromium()
    assert not result.ok and not result.required and "playwright package is missing" in result.detail
    assert "pip install 'playwright>=1.40'" in result.fix


def test_a_cuda_build_without_a_gpu_points_to_the_cpu_build(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    monkeypatch.setattr(doctor.platform, "system", lambda: "Linux")
    result = doctor.check_torch()
    assert result.ok and "CUDA 12.8 build" in result.detail and "running on CPU" in result.detail
    assert "download.pytorch.org/whl/cpu" in result.detail
