"""Command line: ``python -m course_lib {check,make-exercises,doctor} ...``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _check(args: argparse.Namespace) -> int:
    from .scorecard import format_scorecard, notebook_language, scorecard

    path = Path(args.notebook)
    if path.suffix != ".ipynb":
        print(f"error: expected a Jupyter notebook (.ipynb), got {path}", file=sys.stderr)
        return 2
    try:
        results, notes = scorecard(path, timeout=args.timeout, time_limit=args.time_limit)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_scorecard(path, results, notes, notebook_language(path)))
    return 0 if results and all(r.status == "passed" for r in results) else 1


def _reason(err: OSError) -> str:
    """An OSError in one line, without the ``[Errno N]`` prefix."""
    if err.errno is None or not err.strerror:
        return str(err)
    return f"{err.strerror}: {err.filename}" if err.filename else err.strerror


def _make_exercises(args: argparse.Namespace) -> int:
    from .exercises import write_exercises

    try:
        lines = write_exercises(Path(args.solutions), Path(args.exercises), force=args.force)
    except OSError as err:  # no solutions, --exercises a file or unwritable, a disk that filled up
        print(f"error: {_reason(err)}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 1 if any(line.startswith("SKIPPED") for line in lines) else 0


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import main as doctor

    return doctor()


def main(argv: list[str] | None = None) -> int:
    from ..files import number

    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="run a copy of an exercise notebook and print a scorecard")
    check.add_argument("notebook", help="e.g. exercises/03_attention.ipynb (never modified)")
    seconds = number(int, 1, "a whole number of seconds >= 1")
    check.add_argument("--timeout", type=seconds, default=600, help="seconds allowed per cell (then it is interrupted)")
    check.add_argument("--time-limit", type=seconds, default=3600, help="seconds allowed for the whole notebook")
    check.set_defaults(func=_check)

    make = sub.add_parser("make-exercises", help="generate exercises/ from solutions/ (keeps edited notebooks)")
    make.add_argument("--solutions", default="solutions")
    make.add_argument("--exercises", default="exercises")
    make.add_argument("--force", action="store_true", help="regenerate edited notebooks too, after a backup")
    make.set_defaults(func=_make_exercises)

    doctor = sub.add_parser("doctor", help="check Python, PyTorch, JupyterLab, widgets, the Hangul font; print fixes")
    doctor.set_defaults(func=_doctor)

    args = parser.parse_args(argv)
    return args.func(args)

