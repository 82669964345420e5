"""course_lib: the Transformer, built chapter by chapter.

One module per chapter; a module imports only modules of earlier chapters.

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
import os
import random

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


def thread_count(workload: str, cores: int, load: float) -> int:
    """The thread policy as a pure function of the workload, the usable cores and the 1-minute load.

    ``"small"`` (chapters 00-06, 08's timings): one thread. Tiny tensors gain nothing from more,
    and when other programs share the CPU a second thread waits for a core: a 64x20 embedding
    lookup took 20 ms with 2 threads and 15 us with 1 on a busy 2-core machine.
    ``"training"`` (chapter 07): two threads only when other programs leave about two cores free,
    else one. The 1-minute load average counts this kernel's own work of the previous cells (about
    1 on an otherwise idle machine: measured, a run of every notebook on an idle 2-core VM chose 1
    thread under the old rule ``cores - load >= 1.5``), so the rule is ``cores - load >= 0.5``.
    Measured on 2 cores: quiet, 63 ms a step with 2 threads vs 98 ms with 1; busy (load average
    10), 1.4-5.5 s with 2 threads vs 0.27-0.33 s with 1. A second thread gains 1.5x when a core
    is free and loses 4-20x (once 90x) when none is, so it waits for room.
    See docs/troubleshooting.md.
    """
    if workload not in ("small", "training"):
        raise ValueError(f"set_threads expects 'small' or 'training', got {workload!r}")
    if workload == "small" or cores < 2:
        return 1
    return 2 if cores - load >= 0.5 else 1


def set_threads(workload: str = "small") -> int:
    """Set torch's thread count for a chapter by the course's one policy (``thread_count``); returns it."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = thread_count(workload, cores, load)
    torch.set_num_threads(threads)
    return threads
