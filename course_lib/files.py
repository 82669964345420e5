"""Files and arguments of the course's commands: the one atomic writer, Ctrl-C held during a save, numbers.

Every file a course command writes (exercise notebooks, checkpoints, training progress, the grader's
state) goes through :func:`atomic_write`. Chapter-independent: the standard library only, so that the
model modules (checkpoints, training) and the course's machinery (exercises, check) share it.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# --- the one atomic writer ------------------------------------------------------------------------

STALE_AFTER = 600.0  # seconds: a temporary file unchanged this long has no live writer (whatever its pid says)
_PID_WIDTH = 8  # room kept for the writer's pid in a temporary name (Linux pids have at most 7 digits)
_RANDOM = re.compile(r"[a-z0-9_]{8}")  # what mkstemp adds to a name


@contextlib.contextmanager
def hold_ctrl_c(message: str | None = "Ctrl-C: finishing the save first (it takes a moment)",
                deliver: bool = True) -> Iterator[list[int]]:
    """While the block runs, Ctrl-C (SIGINT) is held instead of interrupting it; afterwards it is delivered
    once if it came and ``deliver`` (a no-op outside the main thread, or inside another ``hold_ctrl_c``,
    which then holds it). Yields the list of held presses."""
    held: list[int] = []
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None or getattr(previous, "holds_ctrl_c", False):
        yield held
        return

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)
        if message:
            print(f"\n{message}", file=sys.stderr, flush=True)

    hold.holds_ctrl_c = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, hold)
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)
    if held and deliver:
        signal.raise_signal(signal.SIGINT)  # to the handler that was there before: KeyboardInterrupt by default


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) ``folder``'s file system allows (NAME_MAX; 255 where it cannot be asked)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def temp_prefix(target: Path) -> str:
    """The start of a temporary file's name for ``target``, without the pid: ``.NAME.``. A long NAME is cut and
    ends in a hash of the whole name, so that the finished temporary name fits the file system's limit."""
    target = Path(target)
    name, room = target.name, name_max(target.parent) - (2 + _PID_WIDTH + 1 + 8 + len(".tmp"))
    if len(name.encode()) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name.encode()[:room - 9].decode("utf-8", errors="ignore") + "~" + digest
    return f".{name}."


def _writer_gone(pid: int | None, path: str) -> bool:
    """Is the writer of the temporary file at ``path`` (pid ``pid``, if its name holds one) gone?"""
    try:
        if time.time() - os.stat(path).st_mtime > STALE_AFTER:
            return True
    except OSError:
        return False
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # it exists but belongs to someone else, or the name holds no real pid
        return False
    return False


def _remove_stale_temps(target: Path) -> None:
    """Delete the temporary files of ``target`` whose writer was killed (only names this writer makes)."""
    prefix = temp_prefix(target)
    pattern = re.compile(rf"{re.escape(prefix)}(?:(\d+)\.)?{_RANDOM.pattern}\.tmp")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if found and _writer_gone(int(found.group(1)) if found.group(1) else None, entry.path):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _named(err: BaseException, path: Path) -> BaseException:
    """The OSError a failed write really was (torch.save reports a full disk as "enforce fail ... unexpected pos",
    with the OSError as its context), in one line naming ``path``; else ``err`` itself."""
    cause: BaseException | None = err
    for _ in range(5):
        if cause is None or (isinstance(cause, OSError) and cause.errno is not None):
            break
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, OSError) or cause.errno is None:
        return err
    hint = " (free some space)" if cause.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return OSError(cause.errno, f"could not write {path}: {os.strerror(cause.errno)}{hint}; "
                                "the previous file, if any, is unchanged")


def _fill(fd: int, write: Callable[[Any], object], path: Path) -> None:
    """Let ``write`` fill the open file ``fd``, flush it to disk and close it (a failed write named by ``_named``)."""
    f = os.fdopen(fd, "wb")
    try:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(OSError):
            f.close()  # closes the descriptor even when flushing the rest fails again
        named = _named(err, path)
        if named is err:
            raise
        raise named from err
    finally:
        with contextlib.suppress(OSError):
            f.close()


def _fsync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # make a rename in ``folder`` durable (POSIX)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], object]) -> Path:
    """Call ``write(file)`` on a new temporary file beside ``path``, flush and fsync it, then rename it over
    ``path``: a kill at any moment leaves the old file or the new one, and two writers leave one writer's whole
    file. The new file keeps the old one's mode (0o644 for a new file). Ctrl-C is held until the file is in
    place (then delivered); temporary files that killed writers of ``path`` left are removed first; a full disk
    or a file-size limit is an OSError that says so in one line.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644  # mkstemp's 0o600 would hide the file from others
    _remove_stale_temps(path)
    with hold_ctrl_c():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{temp_prefix(path)}{os.getpid()}.", suffix=".tmp")
        try:
            os.chmod(tmp, mode)
            _fill(fd, write, path)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
    return path


# --- command-line numbers ----------------------------------------------------------------------------

def number(kind: type, low: float, what: str, high: float = math.inf) -> Callable[[str], int | float]:
    """An argparse type: ``kind(text)``, finite and in [``low``, ``high``]; else an error saying ``what`` was expected."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse
