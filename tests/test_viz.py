"""The paper's Figure 1 drawn by ``viz.draw_transformer``: a real figure, clear errors, no missing glyphs."""
from __future__ import annotations

import io
import logging
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib import patches

from course_lib import viz

PARTS = ["embeddings", "positional", "encoder_self_attention", "encoder_ffn", "decoder_self_attention",
         "cross_attention", "decoder_ffn", "add_norm", "output", "encoder", "decoder"]


def _render(fig: plt.Figure, caplog) -> list[str]:
    """Render to PNG (as Jupyter's inline backend does); return every warning and log message."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="matplotlib"):
        warnings.simplefilter("always")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=50)
    plt.close(fig)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    return [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]


def _highlighted(fig: plt.Figure) -> int:
    """How many shapes carry the highlight colour."""
    red = matplotlib.colors.to_rgba(viz.HIGHLIGHT_COLOUR)
    return sum(1 for p in fig.axes[0].patches if isinstance(p, patches.Patch) and p.get_edgecolor() == red)


def test_the_public_part_names_are_the_documented_ones():
    assert sorted(viz.FIGURE1_PARTS) == sorted(PARTS)


@pytest.mark.parametrize("lang", ["en", "ko", "both"])
def test_figure1_renders_in_every_language_without_warnings(lang, caplog):
    with matplotlib.rc_context():
        fig = viz.draw_transformer(lang=lang, mark_note_error=True)
        assert isinstance(fig, matplotlib.figure.Figure)
        texts = " ".join(t.get_text() for t in fig.axes[0].texts)
        assert ("Multi-Head Attention" in texts) == (lang != "ko")
        assert ("멀티 헤드 어텐션" in texts) == (lang != "en")
        assert "개념 노트" in texts or lang == "en"
        assert _render(fig, caplog) == []


@pytest.mark.parametrize("part", PARTS)
def test_each_part_highlights_its_own_blocks(part):
    with matplotlib.rc_context():
        fig = viz.draw_transformer(part)
        expected = {"add_norm": 5, "encoder": 5, "decoder": 7, "embeddings": 2, "positional": 2, "output": 2}
        assert _highlighted(fig) == expected.get(part, 1)
        plt.close(fig)


def test_no_highlight_draws_everything_plainly_and_note_mark_adds_one_ring():
    with matplotlib.rc_context():
        plain, marked = viz.draw_transformer(), viz.draw_transformer(mark_note_error=True)
        assert _highlighted(plain) == 0 and _highlighted(marked) == 1
        assert all(p.get_alpha() in (None, 1.0) for p in plain.axes[0].patches)
        plt.close(plain), plt.close(marked)


def test_draws_into_a_given_axes():
    with matplotlib.rc_context():
        fig, (left, right) = plt.subplots(1, 2)
        assert viz.draw_transformer(["encoder", "decoder"], ax=right, lang="en") is fig
        assert not left.patches and right.patches
        plt.close(fig)


@pytest.mark.parametrize("bad", ["attention", ["encoder", "ffn"]])
def test_an_unknown_part_name_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"unknown part.*choose from.*cross_attention"):
        viz.draw_transformer(bad)


def test_an_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="lang must be 'en', 'ko' or 'both'"):
        viz.draw_transformer(lang="kr")
