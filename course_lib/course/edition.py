"""The Korean edition (한국어판): ``ko/notebooks``, ``ko/solutions`` and ``ko/exercises`` beside the English ones.

English is the source. A Korean notebook has the English notebook's cells one for one: its markdown cells are
translated, its code cells are the English code cells exactly, except for :data:`LANGUAGE_LINE`, the one line a
Korean solution or exercise adds after ``from course_lib.course import checks`` so the checkers answer in Korean.
So the Korean notebooks run as the English ones do and are never executed a second time: tests compare them with
the English edition (:func:`drift`), and the website shows the English run's outputs under the Korean text.

Commands (``python -m course_lib.course.edition ...``):

- ``assemble EN.ipynb KO.json``: build the Korean notebook from the English one and a JSON list of the translated
  markdown cells, in order;
- ``sync``: copy every English code cell into its Korean notebook (after an English code edit), keeping the
  Korean text; refuses a notebook whose cells no longer line up;
- ``check``: list every difference in structure or code between the editions (what the tests check).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ..files import atomic_write

ROOT = Path(__file__).resolve().parents[2]
KO = "ko"
FOLDERS = ("notebooks", "solutions", "exercises")
CHECKS_IMPORT = "from course_lib.course import checks"
LANGUAGE_LINE = 'checks.language("ko")  # 검사 결과와 힌트를 한국어로'
_HEADING = re.compile(r"^(#{1,6}) ", re.MULTILINE)
_MARKERS = ("<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->")


def korean_path(english: Path) -> Path:
    """``notebooks/03_x.ipynb`` -> ``ko/notebooks/03_x.ipynb`` (relative or absolute, under the repository)."""
    english = Path(english)
    rel = english.resolve().relative_to(ROOT)
    if rel.parts[0] not in FOLDERS:
        raise ValueError(f"{english}: expected a notebook in {', '.join(FOLDERS)}/")
    return ROOT / KO / rel


def english_path(korean: Path) -> Path:
    """``ko/notebooks/03_x.ipynb`` -> ``notebooks/03_x.ipynb``."""
    rel = Path(korean).resolve().relative_to(ROOT / KO)
    return ROOT / rel


def korean_code(source: str) -> str:
    """An English code cell as the Korean edition has it: :data:`LANGUAGE_LINE` after the checks import."""
    lines = source.split("\n")
    if CHECKS_IMPORT not in lines or LANGUAGE_LINE in lines:
        return source
    at = lines.index(CHECKS_IMPORT) + 1
    return "\n".join(lines[:at] + [LANGUAGE_LINE] + lines[at:])


def english_code(source: str) -> str:
    """A Korean code cell without :data:`LANGUAGE_LINE`: what the English cell must be."""
    return "\n".join(line for line in source.split("\n") if line != LANGUAGE_LINE)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _write(path: Path, nb: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _shape(text: str) -> tuple:
    """What must match between a markdown cell and its translation: heading levels, solution markers, model answer."""
    first = text.lstrip().split("\n", 1)[0].strip()
    answer = first in ("**Model answer.**", "**모범 답안.**")
    return tuple(_HEADING.findall(text)), tuple(text.count(m) for m in _MARKERS), answer


def drift(english: dict, korean: dict) -> list[str]:
    """Every difference between an English notebook and its Korean edition that the rule forbids, one line each."""
    en, ko = english["cells"], korean["cells"]
    problems = []
    for i in range(max(len(en), len(ko))):
        if i >= len(en) or i >= len(ko):
            side, cell = ("Korean", ko[i]) if i >= len(en) else ("English", en[i])
            problems.append(f"cell {i}: only the {side} edition has it ({cell['cell_type']}: "
                            f"{_source(cell)[:60]!r}); add or drop it in both")
            continue
        a, b = en[i], ko[i]
        if a["cell_type"] != b["cell_type"]:
            problems.append(f"cell {i}: {a['cell_type']} in English, {b['cell_type']} in Korean: a cell was added "
                            f"or dropped in one edition only ({_source(a)[:40]!r} / {_source(b)[:40]!r})")
            return problems  # everything after is shifted: one message says it
        if a["cell_type"] == "code" and english_code(_source(b)) != _source(a):
            problems.append(f"cell {i}: the code differs from the English cell (run `python -m "
                            f"course_lib.course.edition sync`): {_source(a)[:60]!r}")
        elif a["cell_type"] == "markdown" and _shape(_source(a)) != _shape(_source(b)):
            problems.append(f"cell {i}: headings, solution markers or the model-answer line differ: "
                            f"English {_shape(_source(a))}, Korean {_shape(_source(b))}")
    return problems


def assemble(english: Path, texts: list[str]) -> Path:
    """Write the Korean notebook of ``english``: its markdown cells replaced by ``texts`` in order, its code kept."""
    nb = _read(english)
    markdown = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    if len(texts) != len(markdown) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{english} has {len(markdown)} markdown cells; expected a JSON list of that many strings, "
                         f"got {len(texts) if isinstance(texts, list) else type(texts).__name__}")
    for cell, text in zip(markdown, texts):
        cell["source"] = text
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["source"] = korean_code(_source(cell))
    nb["metadata"]["course"] = {"language": "ko"}
    target = korean_path(english)
    _write(target, nb)
    return target


def sync(korean: Path) -> int:
    """Copy the English code cells into the Korean notebook ``korean``; returns how many changed."""
    en, ko = _read(english_path(korean)), _read(korean)
    if [c["cell_type"] for c in en["cells"]] != [c["cell_type"] for c in ko["cells"]]:
        raise ValueError(f"{korean}: its cells no longer line up with the English notebook's "
                         f"({'; '.join(drift(en, ko)[:2])}); add or drop the cell in the Korean edition first")
    changed = 0
    for a, b in zip(en["cells"], ko["cells"]):
        if a["cell_type"] == "code" and _source(b) != korean_code(_source(a)):
            b["source"], changed = korean_code(_source(a)), changed + 1
    if changed:
        _write(korean, ko)
    return changed


def pairs(folders: tuple[str, ...] = FOLDERS) -> list[tuple[Path, Path]]:
    """(English, Korean) paths of every Korean notebook (and of every English one that has none yet)."""
    found = []
    for folder in folders:
        names = {p.name for p in (ROOT / folder).glob("[0-9][0-9]_*.ipynb")}
        names |= {p.name for p in (ROOT / KO / folder).glob("[0-9][0-9]_*.ipynb")}
        found += [(ROOT / folder / n, ROOT / KO / folder / n) for n in sorted(names)]
    return found


def check(folders: tuple[str, ...] = FOLDERS) -> list[str]:
    """Problems of every notebook pair, ``"<path>: <problem>"``; a missing edition is one problem."""
    problems = []
    for en, ko in pairs(folders):
        if not en.exists() or not ko.exists():
            missing = en if not en.exists() else ko
            problems.append(f"{missing.relative_to(ROOT)}: missing (the other edition has it)")
            continue
        problems += [f"{ko.relative_to(ROOT)}: {p}" for p in drift(_read(en), _read(ko))]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.course.edition", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("assemble", help="build ko/<folder>/<name> from the English notebook and translated text")
    make.add_argument("english", type=Path)
    make.add_argument("texts", type=Path, help="a JSON list of the translated markdown cells, in order")
    sub.add_parser("sync", help="copy the English code cells into every Korean notebook")
    sub.add_parser("check", help="list every difference in structure or code between the editions")
    args = parser.parse_args(argv)
    try:
        if args.command == "assemble":
            print(f"wrote {assemble(args.english, json.loads(args.texts.read_text(encoding='utf-8'))).relative_to(ROOT)}")
            return 0
        if args.command == "sync":
            for _, ko in pairs():
                if ko.exists() and (n := sync(ko)):
                    print(f"{ko.relative_to(ROOT)}: {n} code cells copied from English")
            return 0
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problems = check()
    print("\n".join(problems) if problems else "the two editions line up")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
