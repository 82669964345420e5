"""The website's page transforms (course_lib/course/webpages.py), on small hand-made notebooks."""
from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_lib.course import webpages
from course_lib.course.exercises import make_exercise


def _view(model_id: str):
    return new_output("display_data", {webpages.WIDGET_VIEW: {"model_id": model_id, "version_major": 2},
                                       "text/plain": "Widget"})


def _with_widgets(states: dict[str, dict], *outputs) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell("interact(f)", outputs=list(outputs))])
    nb.metadata["widgets"] = {webpages.WIDGET_STATE: {"state": {k: {"state": v} for k, v in states.items()}}}
    return nb


def test_an_interact_becomes_a_labelled_snapshot_of_what_it_drew():
    png = new_output("display_data", {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    nb = _with_widgets({
        "box": {"_model_name": "VBoxModel", "children": ["IPY_MODEL_s", "IPY_MODEL_c", "IPY_MODEL_d", "IPY_MODEL_o"]},
        "s": {"_model_name": "FloatLogSliderModel", "description": "scale", "value": 1.0, "base": 10, "min": -1.5},
        "c": {"_model_name": "CheckboxModel", "description": "causal mask", "value": False},
        "d": {"_model_name": "DropdownModel", "description": "word", "index": 1, "_options_labels": ["a", "빵을"]},
        "o": {"_model_name": "OutputModel", "outputs": [png]},
    }, _view("box"))
    assert webpages.freeze_widgets(nb) == 1
    label, figure = nb.cells[0].outputs
    assert label.data["text/markdown"] == (
        "*Interactive in JupyterLab; a snapshot for scale = 1.0, causal mask = False, word = 빵을:*")
    assert figure.data["image/png"] == "iVBORw0KGgo="
    assert "widgets" not in nb.metadata


def test_a_tqdm_bar_becomes_its_final_line_and_an_unknown_widget_a_note():
    nb = _with_widgets({
        "bar": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]},
        "l": {"_model_name": "HTMLModel", "value": "post-LN&nbsp;"},
        "p": {"_model_name": "FloatProgressModel", "value": 80, "max": 80},
        "r": {"_model_name": "HTMLModel", "value": " 80/80 [00:02&lt;00:00, 39.1it/s]"},
        "btn": {"_model_name": "ButtonModel"},
    }, _view("bar"), _view("btn"))
    assert webpages.freeze_widgets(nb) == 0
    line, note = nb.cells[0].outputs
    assert line.text.startswith("post-LN|██████████| 80/80")
    assert "run this notebook in JupyterLab" in note.data["text/markdown"]


def test_exercise_page_hides_solutions_and_model_answers_behind_a_click():
    solution = new_notebook(cells=[
        new_markdown_cell("# Exercises 03<!-- BEGIN SOLUTION --> (solutions)<!-- END SOLUTION -->"),
        new_code_cell("def f(x):\n    ### BEGIN SOLUTION return x doubled\n    return 2 * x\n    ### END SOLUTION"),
        new_code_cell("checks.ch03.f(f)"),
        new_markdown_cell("**Question 1.** Why?\n\n*Your answer:* "),
        new_markdown_cell("**Model answer.**\n\nBecause."),
    ])
    make_exercise(solution)  # the page and the exercise notebook come from the same source
    page = webpages.exercise_page(solution)
    assert page.cells[0].source == "# Exercises 03 (solutions)"
    assert page.cells[1].source == "def f(x):\n    return 2 * x"
    assert "hide-input" in page.cells[1].metadata["tags"]
    assert page.cells[1].metadata["mystnb"]["code_prompt_show"] == "Show the solution"
    assert "hide-input" not in page.cells[2].metadata.get("tags", [])  # the checker's ✓ stays visible
    assert page.cells[4].source == "````{admonition} Model answer\n:class: dropdown\nBecause.\n````"


def test_glossary_gathers_every_chapter_and_links_the_chapters_that_use_a_term():
    table = "**Glossary**\n\n| English | 한국어 | meaning |\n|---|---|---|\n"
    chapters = {
        "notebooks/01_tokens": new_notebook(
            cells=[new_markdown_cell("# 01 · Tokens\n\n" + table + "| token | 토큰 | a piece |\n")]),
        "notebooks/03_attention": new_notebook(cells=[new_markdown_cell(
            "# 03 · Attention\n\nEach token looks.\n\n" + table + "| attention | 어텐션 | a weighted average |\n"
            "| query / key | 쿼리 / 키 | |\n")]),
    }
    terms = {t.english: t for t in webpages.gather_glossary(chapters)}
    assert sorted(terms) == ["attention", "query / key", "token"]
    assert terms["token"].chapters == ["notebooks/01_tokens", "notebooks/03_attention"]  # 03 mentions it
    assert terms["attention"].korean == "어텐션" and terms["attention"].chapters == ["notebooks/03_attention"]
    page = webpages.glossary_page(list(terms.values()), {p: nb.cells[0].source[2:].split("\n")[0] for p, nb in chapters.items()})
    assert "| attention | 어텐션 | a weighted average | [03](notebooks/03_attention.ipynb) |" in page
