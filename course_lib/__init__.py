"""course_lib: the Transformer, built chapter by chapter.

One module per chapter; a module imports only modules of earlier chapters. The course's machinery (exercise
checkers, grading, the course map, the website, claims) lives apart in ``course_lib.course``, and nothing here
imports it (``tests/test_project.py``).

Shape legend (used in every shape comment of the package):
    B   batch size
    S   source length (tokens)
    T   target length (tokens)
    D   d_model, the width of every token vector
    H   number of attention heads
    Dh  head size, D // H
    V   vocabulary size
"""
from __future__ import annotations

import inspect
import math
import os
import random
from collections.abc import Iterable
from pathlib import Path

__version__ = "0.1.0"

SHAPE_LEGEND = {
    "B": "batch size",
    "S": "source length",
    "T": "target length",
    "D": "d_model",
    "H": "number of heads",
    "Dh": "head size (D // H)",
    "V": "vocabulary size",
}


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's random generators (explicitly, once per notebook)."""
    if not isinstance(seed, int):
        raise TypeError(f"set_seed expects an int, got {type(seed).__name__}")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def show_source(obj: object) -> None:
    """Print the source code of a function or class, highlighted when running in Jupyter."""
    try:
        source = inspect.getsource(obj)  # type: ignore[arg-type]  # a TypeError is reported below
    except (TypeError, OSError) as err:
        raise TypeError(f"show_source needs a function, class or module defined in Python source, got {obj!r}") from err
    try:
        from IPython import get_ipython
        from IPython.display import Code, display

        if get_ipython() is not None:
            display(Code(source, language="python"))
            return
    except ImportError:
        pass
    print(source)


TRAINING_THREAD_CAP = 8  # the most threads a training gets: a guess, see thread_count


def thread_count(workload: str, cores: int, load: float) -> int:
    """The thread policy as a pure function of the workload, the usable physical cores and the 1-minute load.

    ``"small"`` (chapters 00-06, 08's timings): one thread. Tiny tensors gain nothing from more,
    and when other programs share the CPU a second thread waits for a core: a 64x20 embedding
    lookup took 20 ms with 2 threads and 15 us with 1 on a busy 2-core machine.
    ``"training"`` (chapters 07, 09-11): one thread per core that other programs leave free,
    ``floor(cores - load + 1.5)`` clamped to ``1 .. min(cores, TRAINING_THREAD_CAP)``. The 1-minute
    load average counts this kernel's own work of the previous cells (about 1 on an otherwise idle
    machine: measured, a run of every notebook on an idle 2-core VM chose 1 thread under the old rule
    ``cores - load >= 1.5``), hence the +1 for our own core and +0.5 to round. On 2 cores this is the
    measured rule ``2 threads if cores - load >= 0.5 else 1`` exactly.
    Measured on 2 cores: quiet, 63 ms a step with 2 threads vs 98 ms with 1; busy (load average
    10), 1.4-5.5 s with 2 threads vs 0.27-0.33 s with 1. A thread gains 1.5x when a core is free
    and loses 4-20x (once 90x) when none is, so each thread waits for a free core.
    The cap of 8 is not measured (only 2-core machines were at hand): the course's models are small
    (d_model 128, batches of about 1,500 tokens), so a matrix product is split into pieces of a few
    hundred rows at 8 threads, and beyond that the threads' synchronisation at every operation
    costs more than the split saves. ``COURSE_THREADS=N`` overrides the rule (``set_threads``).
    See docs/troubleshooting.md.
    """
    if workload not in ("small", "training"):
        raise ValueError(f"set_threads expects 'small' or 'training', got {workload!r}")
    if workload == "small":
        return 1
    free = math.floor(cores - load + 1.5)  # the cores others leave free, our own counted as free
    return max(1, min(free, cores, TRAINING_THREAD_CAP))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def usable_cores(cpus: Iterable[int] | None = None, sys_root: Path = Path("/sys")) -> int:
    """Physical cores among the CPUs this process may run on, within its cgroup CPU quota.

    Physical: distinct (package, core) pairs of Linux's ``devices/system/cpu/cpuN/topology``; where
    that is not readable (macOS, Windows, a container without /sys) every logical CPU counts.
    ``cpus`` defaults to ``os.sched_getaffinity(0)`` (else ``os.cpu_count()``); ``sys_root`` is for tests.
    """
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cpus = sorted(cpus)
    topology = [(_read(sys_root / f"devices/system/cpu/cpu{n}/topology/physical_package_id"),
                 _read(sys_root / f"devices/system/cpu/cpu{n}/topology/core_id")) for n in cpus]
    readable = all(package is not None and core is not None for package, core in topology)
    cores = len(set(topology)) if readable else len(cpus)
    quota = (_read(sys_root / "fs/cgroup/cpu.max") or "max").split()  # "max 100000": no quota
    if len(quota) == 2 and quota[0].isdigit() and quota[1].isdigit() and int(quota[1]) > 0:
        cores = min(cores, -(-int(quota[0]) // int(quota[1])))  # quota / period, rounded up
    return max(1, cores)


def set_threads(workload: str = "small") -> int:
    """Set torch's thread count for a chapter by the course's one policy (``thread_count``); returns it.

    For ``"training"``, the environment variable ``COURSE_THREADS=N`` (a positive integer) sets N instead.
    """
    import torch

    override = os.environ.get("COURSE_THREADS", "").strip()
    if override and not (override.isascii() and override.isdigit() and int(override) >= 1):
        raise ValueError(f"the environment variable COURSE_THREADS must be a positive integer "
                         f"(the threads for training), got {override!r}")
    if workload == "training" and override:
        threads = int(override)
    else:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = thread_count(workload, usable_cores(), load)
    torch.set_num_threads(threads)
    return threads
