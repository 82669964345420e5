"""Exercise pipeline: exercises/ is generated from solutions/, stubs fail, solutions pass."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_lib.course.exercises import DEFAULT_TODO, is_untouched, make_exercise, strip_code
from course_lib.course.scorecard import format_scorecard, grade

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


def _ids(paths):
    return [p.name for p in paths]


def test_strip_code_replaces_blocks_keeps_indent_and_message():
    src = "def f(x):\n    ### BEGIN SOLUTION compute x squared\n    y = x * x\n    return y\n    ### END SOLUTION\n"
    assert strip_code(src) == "def f(x):\n    raise NotImplementedError('compute x squared')"
    assert strip_code("### BEGIN SOLUTION\nz = 1\n### END SOLUTION") == f"raise NotImplementedError({DEFAULT_TODO!r})"
    assert strip_code("a = 1\nb = 2") == "a = 1\nb = 2"


@pytest.mark.parametrize("bad", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_strip_code_rejects_unbalanced_markers(bad):
    with pytest.raises(ValueError, match="SOLUTION"):
        strip_code(bad)


def test_every_solution_has_an_exercise_and_back():
    assert _ids(SOLUTIONS) == _ids(EXERCISES)
    assert len(SOLUTIONS) >= 1


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_exercises_are_generated_from_solutions(solution):
    expected = nbformat.writes(make_exercise(nbformat.read(solution, as_version=4))) + "\n"
    actual = (ROOT / "exercises" / solution.name).read_text(encoding="utf-8")
    assert actual == expected, (
        f"exercises/{solution.name} is not what solutions/{solution.name} generates: "
        "run `python -m course_lib make-exercises` (never edit exercises/ by hand)"
    )
    nb = json.loads(actual)
    text = json.dumps(nb["cells"], ensure_ascii=False)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert "raise NotImplementedError" in text
    assert is_untouched(ROOT / "exercises" / solution.name)


def _execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("exercise", EXERCISES, ids=_ids(EXERCISES))
def test_untouched_exercise_runs_to_first_stub_and_every_check_is_not_attempted(exercise):
    nb = _execute(exercise)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "raise NotImplementedError" in cell.source:
            break
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{exercise.name}: a cell before the first exercise failed: {errors[0].ename}: {errors[0].evalue}"
    results = grade(nb)
    assert results, f"{exercise.name} has no checker cells (cells calling checks.chNN.name(...))"
    wrong = [r for r in results if r.status != "not attempted"]
    assert not wrong, format_scorecard(exercise, results)


def test_grade_counts_only_the_checkers_own_success_reports():
    nb = nbformat.v4.new_notebook()
    def code(src, outputs):
        cell = nbformat.v4.new_code_cell(src)
        cell.outputs = outputs
        return cell
    def err(name, value):
        return nbformat.v4.new_output("error", ename=name, evalue=value, traceback=[])

    def out(text):
        return nbformat.v4.new_output("stream", name="stdout", text=text)

    def mark(name, token):
        return nbformat.v4.new_output("display_data", data={"text/plain": ""},
                                      metadata={"course_check": {"name": name, "token": token}})
    nb.cells = [
        code("def f(): raise NotImplementedError('x')", []),
        code("checks.ch03.f(f)", [err("NotImplementedError", "x")]),
        code("x = 1", []),
        code("checks.ch03.g(g)", [err("CheckFailed", "\n  tried: t\n  hint:     divide by sqrt(d_k)")]),
        code("checks.ch03.h(h)", [out("✓ h works\n"), mark("ch03.h", "T0KEN")]),
        code("y = stub()", [err("NotImplementedError", "write y")]),
        code("checks.ch03.k(y)", [err("NameError", "name 'y' is not defined")]),
        code("checks.ch03.m(m)", [err("TypeError", "boom")]),
        code("print('✓ n passed')  # checks.ch03.n(n)", [out("✓ n passed\n")]),
        code("checks.ch03.p(p)", [out("✓ p\n"), mark("ch03.p", "forged")]),
        code("checks.ch03.q(q)", [out("✓ q\n"), mark("ch03.other", "T0KEN")]),
        code("while True: pass  # checks.ch03.r(r)", []),
        code("checks.ch03.s(s)", []),
        code("import os; os._exit(1)", []),
        code("checks.ch03.t(t)", []),
    ]
    nb.cells[11:11] = [code("demo = f()  # an earlier exercise's stub, called", [err("NotImplementedError", "x")]),
                       code("def u(x): return x  # the next exercise, answered (wrongly)", []),
                       code("checks.ch03.u(u)", [err("CheckFailed", "\n  힌트: 아래 삼각형")])]
    results = [(r.name, r.status, r.detail) for r in grade(nb, token="T0KEN", stopped={14: "timed out after 5 "
                                                                                           "s", 16: "the kernel died"})]
    never = "the checker never reported success (is the call commented out?)"
    assert results == [
        ("ch03.f", "not attempted", ""),
        ("ch03.g", "failed", "divide by sqrt(d_k)"),
        ("ch03.h", "passed", ""),
        ("ch03.k", "not attempted", ""),
        ("ch03.m", "error", "TypeError: boom"),
        ("ch03.n", "error", never),
        ("ch03.p", "error", never),
        ("ch03.q", "error", never),
        ("ch03.u", "failed", "아래 삼각형"),  # an earlier stub's error does not make a later wrong answer "not attempted"
        ("ch03.r", "not run", "timed out after 5 s (cell 15)"),
        ("ch03.s", "error", never),
        ("ch03.t", "not run", "the kernel died in cell 17"),
    ]
    assert all(status != "passed" for _, status, _ in (
        (r.name, r.status, r.detail) for r in grade(nb, token=None)))  # outside a check run nothing passes


@pytest.mark.slow
def test_check_command_scores_a_solution_notebook_as_all_passed():
    import subprocess
    import sys

    solution = next((p for p in SOLUTIONS if p.name.startswith("03")), SOLUTIONS[0] if SOLUTIONS else None)
    if solution is None:
        pytest.fail("no solution notebooks")
    before = solution.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "course_lib", "check", str(solution)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.strip().splitlines() if "note:" not in line]
    total = len(lines) - 2
    assert total >= 3 and lines[-1].strip() == f"{total}/{total} exercises passed", proc.stdout
    assert solution.read_bytes() == before


# --- issue 11: tasks state the goal, graded hints, difficulty, open questions with model answers ----

import re  # noqa: E402

from course_lib.course import checks  # noqa: E402
from course_lib.course.exercises import MODEL_ANSWER, is_model_answer  # noqa: E402

DIFFICULTY = re.compile(r"^\*\*Difficulty:\*\* ([●○]{3}) \(([123]) of 3\) · \*\*about \d+ minutes\*\*$", re.MULTILINE)
def _chapter_param(path: Path):
    return pytest.param(path, id=path.name)


CHAPTERS_01_08 = [p for p in SOLUTIONS if 1 <= int(p.name[:2]) <= 8]


@pytest.mark.parametrize("solution", [_chapter_param(p) for p in CHAPTERS_01_08])
def test_every_exercise_shows_difficulty_and_has_graded_hints(solution):
    nb = nbformat.read(solution, as_version=4)
    statements = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Exercise")]
    assert len(statements) >= 3, f"{solution.name}: fewer than 3 exercises"
    for text in statements:
        m = DIFFICULTY.search(text)
        assert m, f"{solution.name}: no difficulty line in {text.splitlines()[0]!r}"
        assert m.group(1).count("●") == int(m.group(2))
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    calls = {f"{c}.{n}" for source in code for c, n in re.findall(r"checks\.(ch\d\d)\.(\w+)\(", source)}
    assert len(calls) >= 3, f"{solution.name}: fewer than 3 checked exercises"
    for name in calls:
        assert len(checks.hints_for(name)) == 3, name


@pytest.mark.parametrize("solution", [_chapter_param(p) for p in CHAPTERS_01_08])
def test_every_notebook_ends_with_open_questions_answered_only_in_solutions(solution):
    nb = nbformat.read(solution, as_version=4)
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Open questions")]
    assert len(heads) == 1, f"{solution.name}: needs one '## Open questions' section"
    tail = nb.cells[heads[0] + 1:]
    questions = [c for c in tail if c.source.startswith("**Question ")]
    answers = [c for c in tail if is_model_answer(c)]
    assert 2 <= len(questions) <= 4 and len(answers) == len(questions), solution.name
    assert all(c.cell_type == "markdown" for c in tail), f"{solution.name}: the open questions must be the last cells"
    for q, a in zip(tail[0::2], tail[1::2]):
        assert q.source.startswith("**Question ") and is_model_answer(a) and len(a.source) > 200
    exercise = (ROOT / "exercises" / solution.name).read_text(encoding="utf-8")
    assert MODEL_ANSWER not in exercise and exercise.count("**Question ") == len(questions)


def test_make_exercise_drops_model_answers_only():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("**Question 1.** Why?"),
                nbformat.v4.new_markdown_cell("**Model answer.**\n\nBecause."),
                nbformat.v4.new_markdown_cell("Text that mentions **Model answer.** later on")]
    sources = [c.source for c in make_exercise(nb).cells]
    assert sources == ["**Question 1.** Why?", "Text that mentions **Model answer.** later on"]


@pytest.mark.parametrize("name, giveaways", [
    ("01_tokens.ipynb", ["588", "// 28", "% 28", "0xAC00 +"]),
    ("03_attention.ipynb", ["keepdim=True).values", "key.transpose(-2, -1)"]),
    ("04_multi_head_attention.ipynb", ["transpose(1, 2)", "view(B, T, H, Dh)", "mask.unsqueeze(1)"]),
])
def test_exercises_state_the_goal_not_the_code(name, giveaways):
    """The formulas to derive live in checks.hint(...), not in the exercise notebook's text or stubs."""
    text = (ROOT / "exercises" / name).read_text(encoding="utf-8")
    for code in giveaways:
        assert code not in text, f"exercises/{name} gives away {code!r}"
