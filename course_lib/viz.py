"""Plots and interactive explorers. Takes arrays and labels; imports no model module.

Korean labels need a Hangul font: :func:`use_hangul_font` registers NanumGothic (shipped by the
``koreanize-matplotlib`` package; we only read its font files, we do not import it).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager

HANGUL_FONT = "NanumGothic"


def hangul_font_path() -> Path:
    """Path of the NanumGothic .ttf file, or a clear error saying what to install."""
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("No Hangul font: pip install koreanize-matplotlib (it ships NanumGothic)")
    path = Path(list(spec.submodule_search_locations)[0]) / "fonts" / "NanumGothic.ttf"
    if not path.exists():
        raise RuntimeError(f"Hangul font file missing: {path}; reinstall koreanize-matplotlib")
    return path


def use_hangul_font() -> str:
    """Make matplotlib draw Hangul beside Latin text, digits and minus signs."""
    path = hangul_font_path()
    if HANGUL_FONT not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(path))
    # DejaVu Sans first (Latin, digits, the minus sign U+2212 and math), NanumGothic for Hangul:
    # matplotlib falls back glyph by glyph, so no label shows boxes and no warning is printed.
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", HANGUL_FONT]
    return HANGUL_FONT


def heatmap(
    weights: np.ndarray | Sequence[Sequence[float]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    *,
    ax: plt.Axes | None = None,
    title: str = "",
    annotate: bool = False,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> plt.Axes:
    """Draw a matrix (e.g. attention weights, rows = queries, columns = keys) with Hangul labels.

    Shape:
        weights: (rows, cols) array or tensor
    """
    use_hangul_font()
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"heatmap expects a 2-D matrix (rows, cols), got shape {w.shape}")
    for name, labels, n in (("row_labels", row_labels, w.shape[0]), ("col_labels", col_labels, w.shape[1])):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} labels but the matrix has {n} {name[:3]}s")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * w.shape[1] + 2.5, 0.5 * w.shape[0] + 1.5))
    image = ax.imshow(w, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if col_labels is not None:
        ax.set_xticks(range(w.shape[1]), col_labels, rotation=60, ha="right")
    if row_labels is not None:
        ax.set_yticks(range(w.shape[0]), row_labels)
    if annotate:
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if w[i, j] < (w.max() + w.min()) / 2 else "black")
    if title:
        ax.set_title(title)
    return ax
