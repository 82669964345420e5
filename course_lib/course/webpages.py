"""Pages of the course website, made from executed notebooks (used by :mod:`course_lib.course.website`).

Widgets do not survive a static page, so each ``interact`` output becomes a labelled snapshot of
what it drew (from the saved widget state) and each tqdm bar its final line. Exercise pages show
the task with the solution and the model answers behind a click. The glossary page gathers every
chapter's EN/한국어 table.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import nbformat

from .exercises import BEGIN, END, is_model_answer

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SNAPSHOT_LABEL = "Interactive in JupyterLab; a snapshot for"
_MD_SOLUTION_MARK = re.compile(r"<!-- (BEGIN|END) SOLUTION -->")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")


def _widget_states(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """model id → the widget's saved state (nbclient's ``store_widget_state``)."""
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return {model_id: entry.get("state", {}) for model_id, entry in saved.items()}


def _children(state: dict, states: dict[str, dict]) -> list[dict]:
    return [states.get(ref.removeprefix("IPY_MODEL_"), {}) for ref in state.get("children", [])]


def _control_value(state: dict) -> str:
    """What a control shows: a dropdown's chosen label, a slider's number, a text box's text."""
    if "index" in state and "_options_labels" in state:
        index = state["index"]
        return state["_options_labels"][index] if isinstance(index, int) else str(index)
    value = state.get("value")  # a FloatLogSlider's value is the number itself, not its exponent
    if isinstance(value, float):
        return str(round(value, 4))  # 1.0, 0.3162
    return repr(value) if isinstance(value, str) else str(value)


def _tqdm_line(state: dict, states: dict[str, dict]) -> str | None:
    """tqdm's notebook bar is an HBox(HTML, progress, HTML): its final text line, else None."""
    kids = _children(state, states)
    if len(kids) != 3 or not kids[1].get("_model_name", "").endswith("ProgressModel"):
        return None
    left, right = (html.unescape(re.sub(r"<[^>]+>", "", kid.get("value", ""))).strip() for kid in (kids[0], kids[2]))
    bar = kids[1]
    done = bar.get("value", 0) / (bar.get("max") or 1)
    cells = "█" * round(10 * done) + " " * (10 - round(10 * done))
    return f"{left}|{cells}| {right}".strip()


def _snapshot(state: dict, states: dict[str, dict]) -> list[nbformat.NotebookNode] | None:
    """An interact VBox (controls, then an Output widget): a label with the controls' values,
    then what the function drew. None when the widget is not an interact."""
    kids = _children(state, states)
    if not kids or kids[-1].get("_model_name") != "OutputModel":
        return None
    controls = [f"{kid.get('description') or 'value'} = {_control_value(kid)}" for kid in kids[:-1]
                if "value" in kid or "index" in kid]
    label = f"*{SNAPSHOT_LABEL} {', '.join(controls) or 'its first values'}:*"
    shown = [nbformat.from_dict(out) for out in kids[-1].get("outputs", [])]
    return [nbformat.v4.new_output("display_data", {"text/markdown": label, "text/plain": label})] + shown


def freeze_widgets(nb: nbformat.NotebookNode) -> int:
    """Replace widget outputs by static ones, in place (see the module's docstring); returns how
    many interacts became snapshots. Drops the saved widget state afterwards."""
    states, snapshots = _widget_states(nb), 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(out)
                continue
            state = states.get(view.get("model_id", ""), {})
            line, frozen = _tqdm_line(state, states), _snapshot(state, states)
            if line is not None:
                outputs.append(nbformat.v4.new_output("stream", name="stderr", text=line + "\n"))
            elif frozen is not None:
                outputs += frozen
                snapshots += 1
            else:
                text = "*An interactive widget: run this notebook in JupyterLab to use it.*"
                outputs.append(nbformat.v4.new_output("display_data", {"text/markdown": text, "text/plain": text}))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return snapshots


def download_cell(relpath: str, label: str) -> nbformat.NotebookNode:
    """A markdown cell with a download link (Sphinx copies the file into ``_downloads/``)."""
    return nbformat.v4.new_markdown_cell(f"{{download}}`⬇ {label} <{relpath}>`", metadata={"tags": ["download"]})


def exercise_page(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """An executed solutions notebook as an exercise page: the task shows, every solution cell's
    code and every model answer opens on a click, the checkers' ✓ lines stay visible."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and is_model_answer(cell):
            body = cell.source.split("\n", 1)[1] if "\n" in cell.source else ""
            cell.source = f"````{{admonition}} Model answer\n:class: dropdown\n{body.strip()}\n````"
        elif cell.cell_type == "markdown":
            cell.source = _MD_SOLUTION_MARK.sub("", cell.source)
        elif cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = "\n".join(line for line in cell.source.splitlines()
                                    if not line.strip().startswith((BEGIN, END)))
            cell.metadata.setdefault("tags", []).append("hide-input")
            cell.metadata["mystnb"] = {"code_prompt_show": "Show the solution", "code_prompt_hide": "Hide the solution"}
    return nb


@dataclass
class Term:
    english: str
    korean: str
    meaning: str = ""
    chapters: list[str] = field(default_factory=list)  # page names, in course order


def glossary_rows(nb: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """(English, 한국어, meaning) rows of the table under a notebook's ``**Glossary**`` heading."""
    rows: list[tuple[str, str, str]] = []
    for cell in nb.cells:
        if cell.cell_type != "markdown" or "**Glossary**" not in cell.source:
            continue
        table = cell.source.split("**Glossary**", 1)[1].strip().splitlines()
        for line in table[2:]:
            if not line.startswith("|"):
                break
            parts = [p.strip() for p in line.strip().strip("|").split("|")]
            rows.append((parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""))
    return rows


def _mentions(nb: nbformat.NotebookNode, term: str) -> bool:
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    words = [w.strip().lower() for w in re.split(r"[/(),]", term) if len(w.strip()) > 2]
    return any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text) for w in words)


def gather_glossary(chapters: dict[str, nbformat.NotebookNode]) -> list[Term]:
    """Every chapter's glossary in one list (first definition wins), each term with the chapters
    (page names, in the given order) that define or mention it."""
    terms: dict[str, Term] = {}
    for nb in chapters.values():
        for english, korean, meaning in glossary_rows(nb):
            terms.setdefault(english.lower(), Term(english, korean, meaning))
    for term in terms.values():
        term.chapters = [page for page, nb in chapters.items()
                         if _mentions(nb, term.english) or term.english.lower() in
                         (e.lower() for e, _, _ in glossary_rows(nb))]
    return sorted(terms.values(), key=lambda t: t.english.lower())


def glossary_page(terms: list[Term], titles: dict[str, str]) -> str:
    """The glossary as a MyST page: one row per term, links to the chapters that use it."""
    lines = ["# Glossary · 용어집", "",
             "Every term of the chapters' glossary tables, English and 한국어, with the chapters that use it.", "",
             "| English | 한국어 | meaning | chapters |", "|---|---|---|---|"]
    for t in terms:
        links = ", ".join(f"[{titles[p].split(' ·')[0]}]({p}.ipynb)" for p in t.chapters)
        lines.append(f"| {t.english} | {t.korean} | {t.meaning} | {links} |")
    return "\n".join(lines) + "\n"


def has_hangul(text: str) -> bool:
    return bool(_HANGUL.search(text))
