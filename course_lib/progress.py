"""Chapter 07 · Keeping a long run: Ctrl-C stops after the current step, the progress goes to a file
beside the output (written atomically, with a SHA-256 of its content), and a resumed run continues it.

``training`` uses these for ``python -m course_lib.training --resume``.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, NoReturn

from .checkpoint import CheckpointError, atomic_save, content_digest, verified_load
from .files import name_max, number, temp_prefix  # number: re-exported

__all__ = ["TrainingInterrupted", "StopOnCtrlC", "progress_path", "save_progress", "load_progress", "unwritable",
           "OneLineParser", "number", "output_file"]

PROGRESS_FORMAT = "course_lib.training-progress/1"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``train(..., interruptible=True)``: raised after the current step, with ``progress``,
    everything ``train(..., resume=progress)`` needs to continue as if nothing had happened."""

    def __init__(self, progress: dict) -> None:
        super().__init__(f"training interrupted after step {progress['history']['steps']}")
        self.progress = progress


class StopOnCtrlC:
    """While active, the first Ctrl-C (SIGINT) only sets ``pressed`` (the loop stops after the step it is
    in, with consistent weights and optimizer state); a second one interrupts at once, as usual."""

    def __init__(self, active: bool) -> None:
        self.active = active and threading.current_thread() is threading.main_thread()
        self.pressed = False
        self._previous: Any = None  # the SIGINT handler to put back

    def _handle(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        print("\nCtrl-C: stopping after this step and saving the progress (press again to stop at once)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnCtrlC:
        if self.active:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            print("training: Ctrl-C stops after the current step and keeps the progress", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.signal(signal.SIGINT, self._previous)


PROGRESS_SUFFIX = ".progress.pt"


def progress_path(out: str | Path) -> Path:
    """Where Ctrl-C saves an interrupted run of ``--out out``: beside it, never over it."""
    out = Path(out)
    return out.with_name(out.name + PROGRESS_SUFFIX)


def output_file(text: str) -> Path:
    """An argparse type: the path of a file to write, whose name (and its ``.progress.pt`` twin) the folder allows."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected the path of a file to write, e.g. translator.pt, got an empty string")
    path = Path(text)
    limit = name_max(path.parent) - len(PROGRESS_SUFFIX)
    if len(path.name.encode()) > limit:
        raise argparse.ArgumentTypeError(f"the file name is {len(path.name.encode())} bytes long; this folder allows "
                                         f"{limit} (its limit, less room for {PROGRESS_SUFFIX})")
    return path


def unwritable(out: Path) -> str | None:
    """Why the checkpoint could not be written to ``out`` (None if it can): checked before training."""
    folder = out.parent
    if out.is_dir():
        return f"--out {out} is a folder; give a file inside it, e.g. {out / 'translator.pt'}"
    if not folder.is_dir():
        kind = "is a file, not a folder" if folder.exists() or any(p.is_file() for p in folder.parents) else "does not exist"
        return f"--out {out}: the folder {folder} {kind}"
    try:  # the real test: create (and remove) a file where the checkpoint will go
        fd, probe = tempfile.mkstemp(dir=folder, prefix=temp_prefix(out), suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"--out {out}: cannot write in {folder} ({err.strerror or err})"
    return None


def save_progress(path: Path, run: dict, progress: dict) -> Path:
    """Write an interrupted run's ``progress`` (from ``TrainingInterrupted``) and its options ``run`` atomically."""
    payload = {"format": PROGRESS_FORMAT, "run": run, "progress": progress}
    return atomic_save({**payload, "sha256": content_digest(payload)}, path)


def load_progress(path: Path, run: dict) -> dict:
    """The progress ``save_progress`` wrote, if its options equal ``run`` (else ``CheckpointError``)."""
    data = verified_load(path, "training progress file")
    if data.get("format") != PROGRESS_FORMAT or not isinstance(data.get("run"), dict):
        raise CheckpointError(f"{path} is not a progress file of python -m course_lib.training")
    differ = {k: (data["run"].get(k), run[k]) for k in run if data["run"].get(k) != run[k]}
    if differ:
        raise CheckpointError(f"--resume needs the options of the interrupted run; these differ (saved, now): {differ}")
    return data["progress"]


class OneLineParser(argparse.ArgumentParser):
    """argparse with each error in one line (no usage block): the error is what matters."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
