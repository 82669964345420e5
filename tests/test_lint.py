"""The code passes ruff (style, imports, bugbear, pyupgrade, complexity <= 15) and mypy on course_lib.

The rules live in pyproject.toml ([tool.ruff], [tool.mypy]); a failure prints the tools' own report.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing():
    pytest.importorskip("ruff")
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", "course_lib", "tests", "benchmarks", "course.py")
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing_in_course_lib():
    pytest.importorskip("mypy")
    result = _run("mypy", "course_lib")
    assert result.returncode == 0, f"mypy course_lib found problems:\n{result.stdout}{result.stderr}"


def test_complexity_cap_is_configured():
    """The complexity cap replaces the old 350-line module cap: it must stay on and at 15."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]
    assert "C901" in lint["select"] and lint["mccabe"]["max-complexity"] == 15
