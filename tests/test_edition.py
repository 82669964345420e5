"""The Korean edition (``ko/``) against the English one: the same cells, the same code, the same numbers.

The Korean notebooks' code cells are the English code cells exactly (one documented line added in solutions and
exercises, :data:`edition.LANGUAGE_LINE`), so they run exactly as the English ones do: nbval executes only the
English notebooks, and these tests check that the Korean ones cannot drift from them. Cell by cell they compare
the type, the code, the headings, the solution markers and the model-answer line; every claim's number must be in
the Korean text above it, as in English; every English prose cell has Korean text.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

import course_lib.course.checks.i18n as lang
from course_lib.course import checks, edition
from course_lib.course.exercises import make_exercise

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(en, ko) for en, ko in edition.pairs()]
KOREAN = [ko for _, ko in PAIRS]
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _id(path: Path) -> str:
    return "/".join(path.parts[-2:])


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_every_english_notebook_has_a_korean_edition_and_back():
    assert len(PAIRS) >= 30
    missing = [f"{p.relative_to(ROOT)}" for pair in PAIRS for p in pair if not p.exists()]
    assert missing == []


@pytest.mark.parametrize("english, korean", PAIRS, ids=[_id(k) for k in KOREAN])
def test_the_korean_notebook_has_the_english_cells_and_code(english, korean):
    assert edition.drift(json.loads(english.read_text(encoding="utf-8")), json.loads(korean.read_text(encoding="utf-8"))) == []


def _nb(*cells: tuple[str, str]) -> dict:
    return {"cells": [{"cell_type": kind, "source": text} for kind, text in cells], "metadata": {}}


def test_drift_names_an_added_cell_changed_code_and_a_changed_heading():
    en = _nb(("markdown", "# 03 · Attention"), ("code", "x = 1"), ("markdown", "## Open questions"))
    assert edition.drift(en, _nb(("markdown", "# 03 · 어텐션"), ("code", "x = 1"), ("markdown", "## 생각해 볼 질문"))) == []
    added = edition.drift(en, _nb(("markdown", "# 03 · 어텐션"), ("markdown", "덧붙인 셀"), ("code", "x = 1"),
                                  ("markdown", "## 생각해 볼 질문")))
    assert len(added) == 1 and "added or dropped in one edition only" in added[0]
    dropped = edition.drift(en, _nb(("markdown", "# 03 · 어텐션"), ("code", "x = 1")))
    assert dropped == ["cell 2: only the English edition has it (markdown: '## Open questions'); add or drop it in both"]
    assert "the code differs" in edition.drift(en, _nb(("markdown", "# 03 · 어텐션"), ("code", "x = 2"),
                                                       ("markdown", "## 생각해 볼 질문")))[0]
    assert "headings" in edition.drift(en, _nb(("markdown", "# 03 · 어텐션"), ("code", "x = 1"),
                                               ("markdown", "### 생각해 볼 질문")))[0]
    answer = _nb(("markdown", "**Model answer.**\nbecause"))
    assert edition.drift(answer, _nb(("markdown", "**모범 답안.**\n왜냐하면"))) == []
    assert edition.drift(answer, _nb(("markdown", "모범 답안: 왜냐하면"))) != []


def test_the_language_line_is_the_one_difference_and_only_where_checkers_run():
    code = "import torch\nfrom course_lib.course import checks\nx = 1"
    korean = edition.korean_code(code)
    assert korean.split("\n") == ["import torch", "from course_lib.course import checks", edition.LANGUAGE_LINE, "x = 1"]
    assert edition.korean_code(korean) == korean and edition.english_code(korean) == code
    assert edition.korean_code("import torch") == "import torch"
    for english_nb, korean_nb in PAIRS:
        count = sum(_text(c).split("\n").count(edition.LANGUAGE_LINE) for c in _cells(korean_nb))
        imports = sum(_text(c).split("\n").count(edition.CHECKS_IMPORT) for c in _cells(english_nb))
        assert count == min(imports, 1), korean_nb
        assert imports or english_nb.parent.name == "notebooks", english_nb  # every exercise notebook has checkers


def test_sync_copies_english_code_and_keeps_korean_text(tmp_path, monkeypatch):
    monkeypatch.setattr(edition, "ROOT", tmp_path)
    (tmp_path / "solutions").mkdir()
    en = _nb(("markdown", "# Exercises 03 · Attention"), ("code", "from course_lib.course import checks\nx = 1"))
    (tmp_path / "solutions" / "03_a.ipynb").write_text(json.dumps(en), encoding="utf-8")
    korean = edition.assemble(tmp_path / "solutions" / "03_a.ipynb", ["# 연습 문제 03 · 어텐션"])
    assert korean == tmp_path / "ko" / "solutions" / "03_a.ipynb"
    en["cells"][1]["source"] = "from course_lib.course import checks\nx = 2"
    (tmp_path / "solutions" / "03_a.ipynb").write_text(json.dumps(en), encoding="utf-8")
    assert edition.sync(korean) == 1 and edition.sync(korean) == 0
    cells = _cells(korean)
    assert _text(cells[0]) == "# 연습 문제 03 · 어텐션"
    assert _text(cells[1]) == f"from course_lib.course import checks\n{edition.LANGUAGE_LINE}\nx = 2"
    with pytest.raises(ValueError, match="2 markdown cells|1 markdown cells"):
        edition.assemble(tmp_path / "solutions" / "03_a.ipynb", ["하나", "둘"])


@pytest.mark.parametrize("english, korean", PAIRS, ids=[_id(k) for k in KOREAN])
def test_every_english_prose_cell_is_translated(english, korean):
    untranslated = [i for i, (a, b) in enumerate(zip(_cells(english), _cells(korean)))
                    if a["cell_type"] == "markdown" and len(re.findall(r"\b[a-z]{3,}\b", _text(a))) >= 5
                    and not HANGUL.search(_text(b))]
    assert untranslated == [], f"cells with English prose and no Korean: {untranslated}"


# --- headers: the same fields as in English, in Korean ---------------------------------------------------------

@pytest.mark.parametrize("english, korean", [p for p in PAIRS if p[0].parent.name != "exercises"],
                         ids=[_id(k) for e, k in PAIRS if e.parent.name != "exercises"])
def test_the_korean_header_has_its_fields_and_the_same_glossary_terms(english, korean):
    head = next(_text(c) for c in _cells(korean) if c["cell_type"] == "markdown")
    for label in ("**배울 내용**", "**선수 지식:**", "**실행 시간(랩톱 CPU):**", "**용어집**", "| English | 한국어 | 뜻 |"):
        assert label in head, f"{_id(korean)}: the first cell needs {label}"
    title = r"# \d\d · \S" if korean.parent.name == "notebooks" else r"# 연습 문제 \d\d · \S"
    assert re.match(title, head), head.split("\n")[0]

    def terms(text: str) -> list[str]:
        table = re.split(r"\*\*(?:Glossary|용어집)\*\*", text, maxsplit=1)[1].strip().split("\n")[2:]
        return [row.strip("|").split("|")[0].strip() for row in table if row.startswith("|")]

    english_head = next(_text(c) for c in _cells(english) if c["cell_type"] == "markdown")
    assert terms(head) == terms(english_head)


# --- exercises, hints and the checkers' own words ----------------------------------------------------------------

@pytest.mark.parametrize("solution", sorted((ROOT / "ko" / "solutions").glob("*.ipynb")), ids=_id)
def test_korean_exercises_are_generated_from_korean_solutions(solution):
    expected = nbformat.writes(make_exercise(nbformat.read(solution, as_version=4))) + "\n"
    target = ROOT / "ko" / "exercises" / solution.name
    assert target.read_text(encoding="utf-8") == expected, (
        "run `python -m course_lib make-exercises --solutions ko/solutions --exercises ko/exercises`")
    assert json.loads(expected)["metadata"]["course"]["language"] == "ko"


def test_every_chapter_with_hints_has_korean_hints_with_the_same_exercises():
    hints = Path(checks.__file__).parent / "hints"
    for english in sorted(hints.glob("ch*.md")):
        korean = hints / "ko" / english.name
        source = Path(checks.__file__).parent / f"{english.stem}.py"
        en, ko = checks.read_hints(english, source), checks.read_hints(korean, source)
        assert list(en) == list(ko), english.name
        for name in en:
            assert all(HANGUL.search(text) for text in ko[name][:2]), f"{korean.name}: {name} is not in Korean"


def test_every_message_a_checker_gives_has_a_korean_translation_and_none_is_left_over():
    wanted = lang.all_static_messages()
    have = lang.catalog()
    assert [t for t in wanted if t not in have] == []
    assert [t for t in have if t not in wanted] == []
    assert [t for t, k in have.items() if not HANGUL.search(k)] == []


@pytest.fixture
def korean_checkers():
    before = checks.language()
    checks.language("ko")
    yield
    checks.language(before)


def test_a_checker_in_the_korean_edition_gives_its_verdict_and_hints_in_korean(korean_checkers, capsys):
    import torch

    def stable(x, dim=-1):
        e = torch.exp(x - x.max(dim, keepdim=True).values)
        return e / e.sum(dim, keepdim=True)

    checks.ch03.softmax(stable)
    passed = capsys.readouterr().out
    assert passed.startswith("✓ ") and HANGUL.search(passed)

    def naive(x, dim=-1):
        e = torch.exp(x)
        return e / e.sum(dim, keepdim=True)

    with pytest.raises(checks.CheckFailed) as failed:
        checks.ch03.softmax(naive)
    message = str(failed.value)
    for word in ("시도:", "기대:", "결과:", "힌트:", "힌트 더 보기: checks.hint('ch03.softmax')"):
        assert word in message
    assert "인 텐서: [" in message.split("기대:", 1)[1].split("\n")[0]  # the expected tensor described in Korean
    hint_line = message.split("힌트:", 1)[1].split("\n")[0]
    assert HANGUL.search(hint_line), hint_line
    checks.hint("ch03.softmax", level=1)
    shown = capsys.readouterr().out
    assert shown.startswith("힌트 1/3, 아이디어") and HANGUL.search(shown.split("\n", 1)[1])


def test_the_language_is_checked_and_english_stays_the_default():
    assert checks.language() == "en"
    with pytest.raises(ValueError, match="'en', 'ko'"):
        checks.language("kr")
    assert checks.language() == "en"


def test_the_scorecard_speaks_korean_for_a_korean_notebook(tmp_path):
    from course_lib.course.scorecard import Result, format_scorecard, notebook_language

    results = [Result("ch03.softmax", "passed"), Result("ch03.causal_mask", "failed", "대각선 위를 막으세요"),
               Result("ch03.padding_mask", "not attempted"), Result("ch03.x", "not run", "timed out after 600 s (cell 9)")]
    text = format_scorecard("ko/exercises/03_attention.ipynb", results, ["cell 9 timed out after 600 s"], "ko")
    assert text.split("\n") == [
        "ko/exercises/03_attention.ipynb 채점표 (사본에서 실행했습니다. 원래 파일은 바뀌지 않았습니다)",
        "  참고: 셀 9 시간 초과(600초)",
        f"  ✓ {'ch03.softmax':<40} 통과",
        f"  ✗ {'ch03.causal_mask':<40} 실패: 대각선 위를 막으세요",
        f"  · {'ch03.padding_mask':<40} 시도 안 함",
        f"  - {'ch03.x':<40} 실행 안 됨: 시간 초과(600초) (셀 9)",
        "  연습 문제 4개 중 1개 통과"]
    assert "Scorecard for" in format_scorecard("x.ipynb", results)
    korean = tmp_path / "k.ipynb"
    korean.write_text(json.dumps({"cells": [], "metadata": {"course": {"language": "ko"}}}), encoding="utf-8")
    assert notebook_language(korean) == "ko"
    assert notebook_language(ROOT / "exercises" / "03_attention.ipynb") == "en"
    assert notebook_language(tmp_path / "missing.ipynb") == "en"


def test_check_on_a_korean_exercise_notebook_answers_in_korean(tmp_path):
    """The whole path a Korean learner takes: a wrong softmax in ko/exercises/03, then `python -m course_lib check`."""
    import subprocess
    import sys

    nb = json.loads((ROOT / "ko" / "exercises" / "03_attention.ipynb").read_text(encoding="utf-8"))
    stub = next(c for c in nb["cells"] if c["cell_type"] == "code" and _text(c).startswith("def softmax"))
    stub["source"] = "def softmax(x, dim=-1):\n    e = torch.exp(x)\n    return e / e.sum(dim, keepdim=True)\n"
    mine = tmp_path / "03_attention.ipynb"
    mine.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "course_lib", "check", str(mine)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    lines = run.stdout.strip().split("\n")
    assert run.returncode == 1 and "채점표" in lines[0], run.stdout + run.stderr
    softmax = next(line for line in lines if "ch03.softmax" in line)
    assert "실패: " in softmax and HANGUL.search(softmax.split("실패: ", 1)[1]), softmax
    assert any("시도 안 함" in line for line in lines) and lines[-1].startswith("  연습 문제 ")


def test_a_case_named_inside_a_longer_tried_text_is_translated_too(korean_checkers):
    case = "x of shape (3, 4, 5), dim=-1"
    assert case in lang.catalog()
    with pytest.raises(checks.CheckFailed) as failed:
        checks.fail(f"softmax({case})", "a result", "nothing", "run your function on this input yourself and read the error")
    tried = str(failed.value).split("시도:", 1)[1].split("\n")[0]
    assert tried.strip() == f"softmax({lang.catalog()[case]})" and HANGUL.search(tried)
    assert HANGUL.search(str(failed.value).split("힌트:", 1)[1])
    checks.language("en")
    with pytest.raises(checks.CheckFailed, match=r"tried:    softmax\(x of shape"):
        checks.fail(f"softmax({case})", "a result", "nothing", "hint")
