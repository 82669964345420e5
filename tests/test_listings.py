"""A chapter's listing that answers an exercise is something a learner opens on purpose (COURSE_DESIGN §5).

Chapters print library source with ``show_source(obj)``. When ``obj`` is the answer to an exercise,
a learner who reads the chapter first would copy it. So, for such a listing:

- the markdown cell right above it announces the exercise by its number and its title as the
  exercise notebook names it ("try exercise 03.2, *scaled dot-product attention*, before you open
  this listing");
- the code cell is collapsed by default: its output (the listing) is hidden in JupyterLab
  (``metadata.jupyter.outputs_hidden``) and classic Jupyter (``metadata.collapsed``), and on the
  website (the myst-nb tag ``hide-output`` gives a toggle).

``ANSWERS`` is the one list of listings that answer an exercise; ``NOT_ANSWERS`` the listings judged
not to (they show machinery no exercise asks for). Every ``show_source`` in notebooks/ must be in
one of them, so a new listing has to be judged. Exercise titles come from ``solutions/`` (the
exercise notebooks are generated from them).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (chapter, the argument of show_source as written) -> the exercise number it answers in that chapter's exercises
ANSWERS: dict[tuple[str, str], int] = {
    ("01", "decompose"): 1, ("01", "Vocab.encode_batch"): 6,
    ("02", "sinusoidal_positional_encoding"): 1, ("02", "TokenEmbedding"): 4,
    ("03", "scaled_dot_product_attention"): 2,
    ("04", "split_heads"): 1, ("04", "merge_heads"): 2, ("04", "MultiHeadAttention._forward"): 3,
    ("04", "MultiHeadAttention._attend"): 3,
    ("05", "LayerNorm"): 1, ("05", "FeedForward"): 2, ("05", "EncoderLayer._forward"): 3,
    ("05", "EncoderLayer._sa_block"): 3, ("05", "attention_branch"): 3,
    ("06", "DecoderLayer._forward"): 1, ("06", "DecoderLayer._sa_block"): 1, ("06", "DecoderLayer._ca_block"): 1,
    ("06", "Decoder._forward"): 3,
    ("07", "training.label_smoothing_loss"): 1, ("07", "decoding.greedy_decode"): 3,
    ("09", "next_token_loss"): 1, ("09", "top_p_filter"): 3,
}
NOT_ANSWERS = {
    ("01", "BPE.train"), ("01", "BPE.tokenize"), ("01", "BPE._encode_chunk"), ("01", "to_hf_tokenizer"),
    ("02", "train_skipgram"), ("02", "offset_matrix"), ("02", "PositionalEncoding"),
    ("04", "MultiHeadAttention.forward"), ("04", "MultiHeadAttention.forward_with_weights"),
    ("04", "MultiHeadAttention.from_torch"),
    ("05", "EncoderLayer.forward"), ("05", "EncoderLayer.forward_with_weights"), ("05", "LayerStack._run"),
    ("07", "Transformer.__init__"), ("08", "set_fused"), ("08", "IncrementalDecoder.step"),
}
HIDE_TAG = "hide-output"
_LISTING = re.compile(r"show_source\(([^()]*)\)")


def exercise_titles(nn: str) -> dict[int, str]:
    """Exercise number -> title, as ``solutions/NN_*.ipynb`` heads them (``## Exercise 2: scaled dot-product attention``)."""
    titles: dict[int, str] = {}
    for path in (ROOT / "solutions").glob(f"{nn}_*.ipynb"):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            m = re.match(r"## Exercise (\d+): (.+)", "".join(cell["source"]))
            if cell["cell_type"] == "markdown" and m:
                titles[int(m.group(1))] = m.group(2).strip()
    return titles


def is_collapsed(cell: dict) -> bool:
    """Output hidden in JupyterLab and classic Jupyter, and a toggle on the website."""
    meta = cell.get("metadata", {})
    return (meta.get("jupyter", {}).get("outputs_hidden") is True and meta.get("collapsed") is True
            and HIDE_TAG in meta.get("tags", []))


def listing_problems(cells: list[dict], nn: str, titles: dict[int, str]) -> list[str]:
    """Every listing of chapter ``nn`` that is unjudged, or answers an exercise and is not announced and collapsed."""
    problems = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        shown = _LISTING.findall("".join(cell["source"]))
        above = "".join(cells[i - 1]["source"]) if i and cells[i - 1]["cell_type"] == "markdown" else ""
        above = re.sub(r"\s+", " ", above)  # a title may wrap across lines
        answered = []
        for arg in shown:
            if (nn, arg) in ANSWERS:
                answered.append(ANSWERS[nn, arg])
            elif (nn, arg) not in NOT_ANSWERS:
                problems.append(f"cell {i}: show_source({arg}) is not judged: add it to ANSWERS or NOT_ANSWERS")
        for k in sorted(set(answered)):
            title = titles.get(k)
            if title is None:
                problems.append(f"cell {i}: exercise {nn}.{k} does not exist in solutions/{nn}_*.ipynb")
            elif not (re.search(rf"\bexercise {nn}\.{k}\b", above, re.IGNORECASE) and title.lower() in above.lower()):
                problems.append(f"cell {i}: the markdown above must announce exercise {nn}.{k} ({title!r}) before the listing")
        if answered and not is_collapsed(cell):
            problems.append(f"cell {i}: a listing that answers an exercise must be collapsed (jupyter.outputs_hidden, "
                            f"collapsed, tag {HIDE_TAG!r})")
    return problems


def _cell(kind: str, text: str, collapsed: bool = False) -> dict:
    meta = {"jupyter": {"outputs_hidden": True}, "collapsed": True, "tags": [HIDE_TAG]} if collapsed else {}
    return {"cell_type": kind, "source": [text], "metadata": meta}


def test_the_guard_accepts_an_announced_collapsed_listing_and_names_each_problem():
    titles = {2: "scaled dot-product attention"}
    announce = "Try exercise 03.2, *scaled dot-product\nattention*, before you open this listing."
    good = [_cell("markdown", announce), _cell("code", "show_source(scaled_dot_product_attention)", collapsed=True)]
    assert listing_problems(good, "03", titles) == []
    not_collapsed = [good[0], _cell("code", "show_source(scaled_dot_product_attention)")]
    assert listing_problems(not_collapsed, "03", titles) == [
        "cell 1: a listing that answers an exercise must be collapsed (jupyter.outputs_hidden, collapsed, tag 'hide-output')"]
    unannounced = [_cell("markdown", "The library's version:"), good[1]]
    assert listing_problems(unannounced, "03", titles) == [
        "cell 1: the markdown above must announce exercise 03.2 ('scaled dot-product attention') before the listing"]
    wrong_number = [_cell("markdown", announce.replace("03.2", "03.1")), good[1]]
    assert len(listing_problems(wrong_number, "03", titles)) == 1
    unjudged = [_cell("code", "show_source(something_new)")]
    assert listing_problems(unjudged, "03", titles) == [
        "cell 0: show_source(something_new) is not judged: add it to ANSWERS or NOT_ANSWERS"]
    assert listing_problems([_cell("code", "show_source(BPE.train)")], "01", {}) == []  # judged: not an answer


def test_every_answer_names_an_existing_exercise():
    for (nn, arg), k in ANSWERS.items():
        assert k in exercise_titles(nn), f"ANSWERS: show_source({arg}) in chapter {nn} points to a missing exercise {nn}.{k}"
    assert not set(ANSWERS) & NOT_ANSWERS


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_listings_that_answer_an_exercise_are_announced_and_collapsed(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    nn = path.name[:2]
    assert listing_problems(cells, nn, exercise_titles(nn)) == []
