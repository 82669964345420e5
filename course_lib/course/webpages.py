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


_PAGE_WORDS = {"en": ("Model answer", "Show the solution", "Hide the solution"),
               "ko": ("모범 답안", "풀이 보기", "풀이 숨기기")}


def exercise_page(nb: nbformat.NotebookNode, language: str = "en") -> nbformat.NotebookNode:
    """An executed solutions notebook as an exercise page: the task shows, every solution cell's
    code and every model answer opens on a click, the checkers' ✓ lines stay visible."""
    answer, show, hide = _PAGE_WORDS[language]
    for cell in nb.cells:
        if cell.cell_type == "markdown" and is_model_answer(cell):
            body = cell.source.split("\n", 1)[1] if "\n" in cell.source else ""
            cell.source = f"````{{admonition}} {answer}\n:class: dropdown\n{body.strip()}\n````"
        elif cell.cell_type == "markdown":
            cell.source = _MD_SOLUTION_MARK.sub("", cell.source)
        elif cell.cell_type == "code" and BEGIN in cell.source:
            cell.source = "\n".join(line for line in cell.source.splitlines()
                                    if not line.strip().startswith((BEGIN, END)))
            cell.metadata.setdefault("tags", []).append("hide-input")
            cell.metadata["mystnb"] = {"code_prompt_show": show, "code_prompt_hide": hide}
    return nb


def korean_page(executed: nbformat.NotebookNode, korean: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The Korean edition's notebook with the outputs of the English run (its code cells are the English ones:
    :mod:`course_lib.course.edition`), the checkers' ✓ lines in Korean. Raises ValueError if the cells differ."""
    from .checks.i18n import catalog
    from .edition import english_code

    page = nbformat.from_dict(korean)
    kinds = [c.cell_type for c in executed.cells], [c.cell_type for c in page.cells]
    if kinds[0] != kinds[1]:
        raise ValueError("the Korean notebook's cells do not line up with the English ones: run "
                         "`python -m course_lib.course.edition check`")
    ko = catalog()
    for en, cell in zip(executed.cells, page.cells):
        if cell.cell_type != "code":
            continue
        if english_code(cell.source) != en.source:
            raise ValueError(f"a Korean code cell differs from the English one: {en.source[:60]!r}")
        cell.outputs = nbformat.from_dict(en.get("outputs", []))
        cell.execution_count = en.get("execution_count")
        for out in cell.outputs:
            if out.get("output_type") == "stream":
                out["text"] = "\n".join(f"✓ {ko.get(line[2:], line[2:])}" if line.startswith("✓ ") else line
                                        for line in out["text"].split("\n"))
    if "widgets" in executed.metadata:
        page.metadata["widgets"] = executed.metadata["widgets"]
    return page


@dataclass
class Term:
    english: str
    korean: str
    meaning: str = ""
    chapters: list[str] = field(default_factory=list)  # page names, in course order


GLOSSARY_MARKS = ("**Glossary**", "**용어집**")  # English and Korean editions


def glossary_rows(nb: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """(English, 한국어, meaning) rows of the table under a notebook's ``**Glossary**`` (``**용어집**``) heading."""
    rows: list[tuple[str, str, str]] = []
    for cell in nb.cells:
        mark = next((m for m in GLOSSARY_MARKS if m in cell.source), None) if cell.cell_type == "markdown" else None
        if mark is None:
            continue
        table = cell.source.split(mark, 1)[1].strip().splitlines()
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


def glossary_page(terms: list[Term], titles: dict[str, str], language: str = "en", folder: str = "") -> str:
    """The glossary as a MyST page: one row per term, links to the chapters that use it (``folder``: where the
    page lies, e.g. ``ko/`` for the Korean glossary, whose chapter pages are ``ko/notebooks/...``)."""
    if language == "ko":
        lines = ["# 용어집 · Glossary", "",
                 "각 장의 용어집 표에 나온 모든 용어를 영어와 한국어로, 그 용어를 쓰는 장과 함께 모았습니다.", "",
                 "| English | 한국어 | 뜻 | 장 |", "|---|---|---|---|"]
    else:
        lines = ["# Glossary · 용어집", "",
                 "Every term of the chapters' glossary tables, English and 한국어, with the chapters that use it.", "",
                 "| English | 한국어 | meaning | chapters |", "|---|---|---|---|"]
    for t in terms:
        links = ", ".join(f"[{titles[p].split(' ·')[0]}]({p.removeprefix(folder)}.ipynb)" for p in t.chapters)
        lines.append(f"| {t.english} | {t.korean} | {t.meaning} | {links} |")
    return "\n".join(lines) + "\n"


def has_hangul(text: str) -> bool:
    return bool(_HANGUL.search(text))
