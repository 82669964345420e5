"""Plots and interactive explorers. Takes arrays and labels; imports no model module.

Korean labels need a Hangul font: :func:`use_hangul_font` registers NanumGothic (shipped by the
``koreanize-matplotlib`` package; we only read its font files, we do not import it).
"""
from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager, patches

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


def hangul_rc() -> dict[Any, Any]:  # matplotlib types rc keys as a Literal of every name
    """matplotlib settings that draw Hangul beside Latin text (the font file is registered once).

    DejaVu Sans first (Latin, digits, the minus sign U+2212 and math), NanumGothic for Hangul:
    matplotlib falls back glyph by glyph, so no label shows boxes and no warning is printed.
    """
    path = hangul_font_path()
    if HANGUL_FONT not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(path))
    return {"font.family": ["DejaVu Sans", HANGUL_FONT]}


def use_hangul_font() -> str:
    """Make matplotlib draw Hangul beside Latin text, digits and minus signs, in every later figure."""
    matplotlib.rcParams.update(hangul_rc())
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

    Its own labels and title use a Hangul font; the global settings (rcParams) are left as they are.

    Shape:
        weights: (rows, cols) array or tensor
    """
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    if w.ndim != 2:
        raise ValueError(f"heatmap expects a 2-D matrix (rows, cols), got shape {w.shape}")
    for name, labels, n in (("row_labels", row_labels, w.shape[0]), ("col_labels", col_labels, w.shape[1])):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} labels but the matrix has {n} {name[:3]}s")
    with matplotlib.rc_context(hangul_rc()):  # the texts created here keep the font, nothing global changes
        return _draw_heatmap(w, row_labels, col_labels, ax, title, annotate, cmap, vmin, vmax)


def _draw_heatmap(w: np.ndarray, row_labels: Sequence[str] | None, col_labels: Sequence[str] | None,
                  ax: plt.Axes | None, title: str, annotate: bool, cmap: str, vmin: float | None,
                  vmax: float | None) -> plt.Axes:
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


# --- The paper's Figure 1, drawn in code ---------------------------------------------------------
# Each block: (name, column, y_bottom, height, English, Korean, face colour). Columns: "enc", "dec".
_MHA, _FFN, _NORM, _EMB, _LIN, _SOFT = "#fbd8a6", "#c7e4f5", "#f3f0b8", "#f7cfd8", "#ddd3f1", "#cfeccd"
_BLOCKS = [
    ("enc_embedding", "enc", 1.2, 0.8, "Input Embedding", "입력 임베딩", _EMB),
    ("enc_attention", "enc", 3.3, 0.8, "Multi-Head Attention", "멀티 헤드 어텐션", _MHA),
    ("enc_norm1", "enc", 4.45, 0.6, "Add & Norm", "잔차 연결 + 층 정규화", _NORM),
    ("enc_ffn", "enc", 5.45, 0.8, "Feed Forward", "피드포워드", _FFN),
    ("enc_norm2", "enc", 6.6, 0.6, "Add & Norm", "잔차 연결 + 층 정규화", _NORM),
    ("dec_embedding", "dec", 1.2, 0.8, "Output Embedding", "출력 임베딩", _EMB),
    ("dec_attention", "dec", 3.3, 0.8, "Masked Multi-Head Attention", "마스크드 멀티 헤드 어텐션", _MHA),
    ("dec_norm1", "dec", 4.45, 0.6, "Add & Norm", "잔차 연결 + 층 정규화", _NORM),
    ("dec_cross", "dec", 5.45, 0.8, "Multi-Head Attention", "인코더-디코더 어텐션", _MHA),
    ("dec_norm2", "dec", 6.6, 0.6, "Add & Norm", "잔차 연결 + 층 정규화", _NORM),
    ("dec_ffn", "dec", 7.6, 0.8, "Feed Forward", "피드포워드", _FFN),
    ("dec_norm3", "dec", 8.75, 0.6, "Add & Norm", "잔차 연결 + 층 정규화", _NORM),
    ("linear", "dec", 10.0, 0.6, "Linear", "선형 층", _LIN),
    ("softmax", "dec", 10.95, 0.6, "Softmax", "소프트맥스", _SOFT),
]
_CENTRE = {"enc": 2.5, "dec": 7.7}
_WIDTH = 3.5
_PE_Y = 2.55  # the ⊕ where positional encodings are added
_FRAME = {"enc": (3.0, 7.5), "dec": (3.0, 9.65)}  # (bottom, top) of the N× boxes
_ENC_BLOCKS = ("enc_attention", "enc_norm1", "enc_ffn", "enc_norm2")
_DEC_BLOCKS = ("dec_attention", "dec_norm1", "dec_cross", "dec_norm2", "dec_ffn", "dec_norm3")
FIGURE1_PARTS: dict[str, tuple[str, ...]] = {
    "embeddings": ("enc_embedding", "dec_embedding"),
    "positional": ("enc_positional", "dec_positional"),
    "encoder_self_attention": ("enc_attention",),
    "encoder_ffn": ("enc_ffn",),
    "decoder_self_attention": ("dec_attention",),
    "cross_attention": ("dec_cross",),
    "decoder_ffn": ("dec_ffn",),
    "add_norm": ("enc_norm1", "enc_norm2", "dec_norm1", "dec_norm2", "dec_norm3"),
    "output": ("linear", "softmax"),
    "encoder": (*_ENC_BLOCKS, "enc_frame"),
    "decoder": (*_DEC_BLOCKS, "dec_frame"),
}
HIGHLIGHT_COLOUR = "#d62728"


def _label(english: str, korean: str, lang: str) -> str:
    return {"en": english, "ko": korean, "both": f"{english}\n{korean}"}[lang]


def _parts_to_highlight(highlight: str | Sequence[str] | None) -> set[str]:
    """The drawing's element names for the public part names, with a clear error for a bad name."""
    if highlight is None:
        return set()
    names = [highlight] if isinstance(highlight, str) else list(highlight)
    unknown = [n for n in names if n not in FIGURE1_PARTS]
    if unknown:
        raise ValueError(f"draw_transformer: unknown part(s) {unknown}; choose from {sorted(FIGURE1_PARTS)}")
    return {element for n in names for element in FIGURE1_PARTS[n]}


def _arrow(ax: plt.Axes, points: Sequence[tuple[float, float]], colour: str = "0.25") -> None:
    """A line through ``points`` that ends in an arrow head."""
    xs, ys = zip(*points)
    ax.plot(xs[:-1], ys[:-1], color=colour, lw=1.2, solid_capstyle="butt", zorder=1)
    ax.annotate("", xy=points[-1], xytext=points[-2], zorder=1,
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.2, "shrinkA": 0, "shrinkB": 0})


def _block_edges(name: str) -> tuple[float, float, float]:
    """(x_centre, y_bottom, y_top) of a block."""
    _, column, y, h, *_ = next(b for b in _BLOCKS if b[0] == name)
    return _CENTRE[column], y, y + h


def draw_transformer(
    highlight: str | Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    lang: str = "both",
    *,
    mark_note_error: bool = False,
) -> plt.Figure:
    """Draw the paper's Figure 1 (the encoder-decoder Transformer), optionally highlighting parts.

    Args:
        highlight: one part name or several, from ``FIGURE1_PARTS`` ("embeddings", "positional",
            "encoder_self_attention", "encoder_ffn", "decoder_self_attention", "cross_attention",
            "decoder_ffn", "add_norm", "output", "encoder", "decoder"); the rest is drawn faded.
        ax: axes to draw into (a new figure when None).
        lang: "en", "ko" or "both" (English above Korean in each block).
        mark_note_error: point at the block the concept note mislabels (it calls the decoder's
            masked self-attention the encoder-decoder attention).
    Returns the figure.
    """
    if lang not in ("en", "ko", "both"):
        raise ValueError(f"draw_transformer: lang must be 'en', 'ko' or 'both', got {lang!r}")
    marked = _parts_to_highlight(highlight)
    use_hangul_font()
    if ax is None:
        width = (14.6 if mark_note_error else 11.4) * 0.62  # inches: the data range times a fixed scale
        _, ax = plt.subplots(figsize=(width, 12.5 * 0.62))
    fade = 0.3 if marked else 1.0
    small = 7.5 if lang == "both" else 8.5

    def alpha(element: str) -> float:
        return 1.0 if not marked or element in marked else fade

    def edge(element: str) -> tuple[str, float]:
        return (HIGHLIGHT_COLOUR, 2.8) if element in marked else ("0.2", 1.0)

    # The N× frames around the stacked layers.
    for column, side in (("enc", -1), ("dec", 1)):
        bottom, top = _FRAME[column]
        colour, lw = edge(f"{column}_frame")
        x0 = _CENTRE[column] - _WIDTH / 2 - 0.45
        ax.add_patch(patches.FancyBboxPatch((x0, bottom), _WIDTH + 0.9, top - bottom, zorder=0,
                                            boxstyle="round,pad=0,rounding_size=0.25", facecolor="#f2f2f2",
                                            edgecolor=colour, lw=lw, alpha=alpha(f"{column}_frame")))
        nx = x0 - 0.15 if side < 0 else x0 + _WIDTH + 1.05
        ax.text(nx, (bottom + top) / 2, "N×", ha="right" if side < 0 else "left", va="center", fontsize=11)
    # Blocks.
    for name, column, y, h, english, korean, face in _BLOCKS:
        colour, lw = edge(name)
        ax.add_patch(patches.FancyBboxPatch((_CENTRE[column] - _WIDTH / 2, y), _WIDTH, h, zorder=2,
                                            boxstyle="round,pad=0,rounding_size=0.1", facecolor=face,
                                            edgecolor=colour, lw=lw, alpha=alpha(name)))
        ax.text(_CENTRE[column], y + h / 2, _label(english, korean, lang), ha="center", va="center",
                fontsize=small, zorder=3, alpha=max(alpha(name), 0.45), linespacing=1.15)
    # Positional encodings: a ⊕ on each stream, with a label outside the columns.
    for column, side in (("enc", -1), ("dec", 1)):
        x = _CENTRE[column]
        colour, lw = edge(f"{column}_positional")
        ax.add_patch(patches.Circle((x, _PE_Y), 0.17, facecolor="white", edgecolor=colour, lw=lw + 0.2,
                                    zorder=2, alpha=alpha(f"{column}_positional")))
        ax.plot([x - 0.11, x + 0.11], [_PE_Y, _PE_Y], color="0.2", lw=1, zorder=3)
        ax.plot([x, x], [_PE_Y - 0.11, _PE_Y + 0.11], color="0.2", lw=1, zorder=3)
        tx = x + side * 0.35
        ax.text(tx, _PE_Y, _label("Positional\nEncoding", "위치 인코딩", lang), fontsize=small, va="center",
                ha="left" if side > 0 else "right", color=colour if colour == HIGHLIGHT_COLOUR else "0.1",
                alpha=max(alpha(f"{column}_positional"), 0.45), linespacing=1.1)
    # The data flow: inputs up through each column.
    for column in ("enc", "dec"):
        x = _CENTRE[column]
        names = [b[0] for b in _BLOCKS if b[1] == column]
        _arrow(ax, [(x, 0.75), (x, 1.2)])
        _arrow(ax, [(x, 2.0), (x, _PE_Y - 0.17)])
        _arrow(ax, [(x, _PE_Y + 0.17), (x, 3.3)])
        for lower, upper in itertools.pairwise(names[1:]):
            _arrow(ax, [(x, _block_edges(lower)[2]), (x, _block_edges(upper)[1])])
    # Residual connections: around each sub-layer into its Add & Norm.
    for sub, norm in (("enc_attention", "enc_norm1"), ("enc_ffn", "enc_norm2"), ("dec_attention", "dec_norm1"),
                      ("dec_cross", "dec_norm2"), ("dec_ffn", "dec_norm3")):
        x, y_sub, _ = _block_edges(sub)
        _, y_norm, y_norm_top = _block_edges(norm)
        x_side = x - _WIDTH / 2 - 0.25
        _arrow(ax, [(x, y_sub - 0.15), (x_side, y_sub - 0.15), (x_side, (y_norm + y_norm_top) / 2),
                    (x - _WIDTH / 2, (y_norm + y_norm_top) / 2)])
    # The encoder's output (memory) into the decoder's encoder-decoder attention.
    x_enc, _, enc_top = _block_edges("enc_norm2")
    x_dec, y_cross, _ = _block_edges("dec_cross")
    x_mid = (_CENTRE["enc"] + _CENTRE["dec"]) / 2 + 0.1
    _arrow(ax, [(x_enc, enc_top), (x_enc, _FRAME["enc"][1] + 0.3), (x_mid, _FRAME["enc"][1] + 0.3),
                (x_mid, y_cross - 0.2), (x_dec - 0.6, y_cross - 0.2), (x_dec - 0.6, y_cross)])
    _arrow(ax, [(x_dec, _block_edges("dec_norm3")[2]), (x_dec, 10.0)])
    _arrow(ax, [(x_dec, 10.6), (x_dec, 10.95)])
    _arrow(ax, [(x_dec, 11.55), (x_dec, 11.9)])
    # Inputs and outputs.
    ax.text(_CENTRE["enc"], 0.55, _label("Inputs", "입력 (원문 토큰)", lang), ha="center", va="center", fontsize=small + 0.5)
    ax.text(_CENTRE["dec"], 0.55, _label("Outputs (shifted right)", "출력 (오른쪽으로 한 칸 이동)", lang),
            ha="center", va="center", fontsize=small + 0.5)
    ax.text(_CENTRE["dec"], 12.2, _label("Output Probabilities", "출력 확률", lang), ha="center", va="center",
            fontsize=small + 0.5)
    if mark_note_error:
        _mark_note_error(ax, lang, small)
    ax.set_xlim(-0.8, 13.8 if mark_note_error else 10.6)
    ax.set_ylim(0.1, 12.6)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax.figure  # type: ignore[return-value]  # a SubFigure only if the caller passed an axes of one


def _mark_note_error(ax: plt.Axes, lang: str, fontsize: float) -> None:
    """Ring the decoder's masked self-attention, which the concept note calls the encoder-decoder attention."""
    x, y0, y1 = _block_edges("dec_attention")
    ax.add_patch(patches.FancyBboxPatch((x - _WIDTH / 2 - 0.12, y0 - 0.12), _WIDTH + 0.24, y1 - y0 + 0.24, zorder=4,
                                        boxstyle="round,pad=0,rounding_size=0.15", facecolor="none",
                                        edgecolor=HIGHLIGHT_COLOUR, lw=1.8, linestyle="--"))
    english = ("The concept note calls this block\nthe encoder-decoder attention.\nIt is the decoder's masked\n"
               "self-attention; the encoder-decoder\nattention is the block above.")
    korean = ("개념 노트는 이 블록을 인코더-디코더\n어텐션이라 부르지만, 실제로는 디코더의\n"
              "마스크드 셀프 어텐션입니다.\n인코더-디코더 어텐션은 위쪽 블록입니다.")
    text = {"en": english, "ko": korean, "both": f"{english}\n\n{korean}"}[lang]
    ax.annotate(text, xy=(x + _WIDTH / 2 + 0.12, (y0 + y1) / 2), xytext=(x + _WIDTH / 2 + 0.75, 1.0), fontsize=fontsize - 0.5,
                color=HIGHLIGHT_COLOUR, va="bottom", ha="left", zorder=5,
                arrowprops={"arrowstyle": "-|>", "color": HIGHLIGHT_COLOUR, "lw": 1.2})
