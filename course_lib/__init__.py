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
        source = inspect.getsource(obj)
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


def set_threads(workload: str = "small") -> int:
    """Choose torch's thread count for a chapter, by one policy for the whole course; returns it.

    ``"small"``: the tensors are tiny (chapters 00-06, 08's timings): one thread, which is fastest
    and stays fast when other programs share the CPU. ``"training"``: chapter 07's training, where
    two threads help on a quiet machine; on a busy one (load average at or above the core count)
    threads fight other programs for the cores, so one is used. See docs/troubleshooting.md.
    """
    import torch

    if workload not in ("small", "training"):
        raise ValueError(f"set_threads expects 'small' or 'training', got {workload!r}")
    threads = 1
    if workload == "training":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores
        threads = 1 if busy else max(1, min(2, cores))
    torch.set_num_threads(threads)
    return threads
