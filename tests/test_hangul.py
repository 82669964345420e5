"""Korean labels in plots render with a Hangul font: no missing-glyph boxes, no warnings.

Every notebook with Hangul in its code calls ``use_hangul_font()`` in its setup cell.

The drawing is rendered for real (Agg, the backend behind Jupyter's inline PNGs) and every
warning and log record is captured. Negative controls show the test can fail: the same drawing
with DejaVu Sans alone, or with NanumGothic alone and the unicode minus, warns.
"""
from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from course_lib import viz  # noqa: E402

MISSING = re.compile(r"missing from (current )?font|Glyph \d+ .*missing", re.IGNORECASE)
WORDS = ["나는", "학교에", "간다", "순이는", "창문을", "닫았다"]


def _draw_and_render(caplog) -> list[str]:
    """Draw a heatmap with Korean labels, a Korean title and negative ticks; return the messages."""
    weights = np.linspace(-1.0, 1.0, len(WORDS) * len(WORDS)).reshape(len(WORDS), len(WORDS))
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, logger="matplotlib"):
        warnings.simplefilter("always")
        ax = viz.heatmap(weights, WORDS, WORDS, title="어텐션 가중치 (쿼리 × 키)", annotate=True,
                         cmap="RdBu", vmin=-1, vmax=1)
        ax.set_xlabel("키 (key)")
        ax.set_ylabel("쿼리 (query)")
        buffer = io.BytesIO()
        ax.figure.savefig(buffer, format="png", dpi=60)
        plt.close(ax.figure)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    return [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _missing(messages: list[str]) -> list[str]:
    return [m for m in messages if MISSING.search(m)]


def test_korean_heatmap_renders_without_missing_glyphs(caplog):
    with matplotlib.rc_context():
        assert viz.use_hangul_font() == "NanumGothic"
        font = font_manager.findfont(font_manager.FontProperties(family="NanumGothic"), fallback_to_default=False)
        assert font.endswith("NanumGothic.ttf"), font
        messages = _draw_and_render(caplog)
    assert not _missing(messages), f"missing glyphs: {_missing(messages)}"


def test_use_hangul_font_is_idempotent():
    with matplotlib.rc_context():
        viz.use_hangul_font()
        count = [f.name for f in font_manager.fontManager.ttflist].count("NanumGothic")
        family = list(matplotlib.rcParams["font.family"])
        viz.use_hangul_font()
        assert [f.name for f in font_manager.fontManager.ttflist].count("NanumGothic") == count >= 1
        assert list(matplotlib.rcParams["font.family"]) == family
        assert "NanumGothic" in family


def test_heatmap_draws_hangul_without_changing_global_settings(caplog):
    """heatmap's own labels and title get the Hangul font; rcParams are the same after the call."""
    with matplotlib.rc_context():
        matplotlib.rcParams["font.family"] = ["DejaVu Sans"]
        before = dict(matplotlib.rcParams)
        weights = np.linspace(0.0, 1.0, len(WORDS) * len(WORDS)).reshape(len(WORDS), len(WORDS))
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, logger="matplotlib"):
            warnings.simplefilter("always")
            ax = viz.heatmap(weights, WORDS, WORDS, title="어텐션 가중치", annotate=True)
            ax.figure.savefig(io.BytesIO(), format="png", dpi=60)
            plt.close(ax.figure)
        assert dict(matplotlib.rcParams) == before
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not _missing(messages), f"missing glyphs: {_missing(messages)}"


def test_without_a_hangul_font_the_same_drawing_warns(caplog, monkeypatch):
    """The negative control: with DejaVu Sans only, Hangul glyphs are missing and it is caught."""
    with matplotlib.rc_context():
        viz.use_hangul_font()  # registers the font; then take it away again
        monkeypatch.setattr(viz, "hangul_rc", lambda: {})  # heatmap draws with it
        matplotlib.rcParams["font.family"] = ["DejaVu Sans"]
        messages = _draw_and_render(caplog)
    missing = _missing(messages)
    assert missing, f"expected missing-glyph warnings with DejaVu Sans only, got {messages}"
    assert any("DejaVu Sans" in m for m in missing)


def test_nanumgothic_alone_lacks_the_unicode_minus(caplog, monkeypatch):
    """Why use_hangul_font keeps DejaVu Sans in the font list: NanumGothic has no U+2212 minus."""
    with matplotlib.rc_context():
        viz.use_hangul_font()
        monkeypatch.setattr(viz, "hangul_rc", lambda: {})
        matplotlib.rcParams["font.family"] = ["NanumGothic"]
        matplotlib.rcParams["axes.unicode_minus"] = True
        messages = _draw_and_render(caplog)
    missing = _missing(messages)
    assert missing and all("8722" in m or "MINUS" in m.upper() for m in missing), messages


# --- every notebook that shows Korean sets the font up front ------------------------------------

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "solutions", "exercises") for p in (ROOT / folder).glob("*.ipynb"))
HANGUL = re.compile(r"[\uac00-\ud7a3]")
CALL = re.compile(r"\buse_hangul_font\(\)")


def hangul_font_problem(nb: nbformat.NotebookNode) -> str | None:
    """Why this notebook may draw Korean in the wrong font (None when its setup cell is right)."""
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    if not any(HANGUL.search(src) for src in code):
        return None
    setup = next((c.source for c in nb.cells if c.cell_type == "code"), "")
    if not CALL.search("\n".join(line.split("#", 1)[0] for line in setup.splitlines())):  # comments don't count
        return "it has Hangul in its code but its setup (first code) cell does not call use_hangul_font()"
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_with_hangul_call_use_hangul_font_in_their_setup_cell(path):
    problem = hangul_font_problem(nbformat.read(path, as_version=4))
    assert problem is None, f"{path.relative_to(ROOT)}: {problem}"


def test_the_notebook_rule_can_fail():
    good = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 09 · 제목"),
        nbformat.v4.new_code_cell("from course_lib.viz import use_hangul_font\nset_seed(0)\nuse_hangul_font()"),
        nbformat.v4.new_code_cell("plt.title('나는 학교에 간다')")])
    assert hangul_font_problem(good) is None
    bad = nbformat.from_dict(good)
    bad.cells[1].source = "from course_lib.viz import use_hangul_font\nset_seed(0)\n# use_hangul_font()"
    assert "does not call use_hangul_font()" in hangul_font_problem(bad)
    bad.cells[1].source = "set_seed(0)"
    bad.cells[2].source += "\nuse_hangul_font()"  # too late: the setup cell is where it belongs
    assert "does not call use_hangul_font()" in hangul_font_problem(bad)
    no_korean = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    assert hangul_font_problem(no_korean) is None
