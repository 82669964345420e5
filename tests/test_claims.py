"""The drift guard: numbers in the prose are asserted by the run, and the bounds match the text."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from course_lib.claims import ClaimError, claim

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])


def test_claim_passes_inside_the_range(capsys):
    assert claim("the speed-up", 13.7, 10, 20) == 13.7
    assert "13.7" in capsys.readouterr().out


@pytest.mark.parametrize("value", [9.99, 20.01, float("nan")])
def test_claim_fails_when_the_stated_number_no_longer_holds(value):
    with pytest.raises(ClaimError, match="between 10 and 20"):
        claim("the speed-up", value, 10, 20)


def test_claim_rejects_bad_arguments():
    with pytest.raises(ValueError):
        claim("x", 1, 2, 1)
    with pytest.raises(TypeError):
        claim("", 1, 0, 2)


def _number(node: ast.expr) -> float | None:
    """The literal number of an argument (``-3``, ``0.5``), or None when it is computed."""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _claims(source: str) -> list[tuple[str, float | None, float | None]]:
    """(what, low, high) of every ``claim(...)`` call in a code cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: such cells hold no claim
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "claim":
            args = node.args
            what = args[0].value if args and isinstance(args[0], ast.Constant) else "?"
            found.append((what, *(_number(a) for a in args[2:4])))
    return found


def _spellings(x: float) -> set[str]:
    """The ways a bound may be written in prose: 10, 10.0, 0.95, 95 (as a percentage)."""
    out = {f"{x:g}", f"{x:,g}", repr(x)}
    if x == int(x):
        out |= {str(int(x)), f"{int(x):,}"}
    if 0 < abs(x) < 1:
        out.add(f"{x * 100:g}")
    return out


def unmatched_claims(cells: list[dict]) -> list[str]:
    """Claims whose bounds are not literal numbers, or not written in the markdown cell above them."""
    problems = []
    prose = ""
    for cell in cells:
        source = "".join(cell.get("source", []))
        if cell["cell_type"] == "markdown":
            prose = source
            continue
        if cell["cell_type"] != "code":
            continue
        for what, low, high in _claims(source):
            if low is None or high is None:
                problems.append(f"claim {what!r}: bounds must be literal numbers")
                continue
            for bound in (low, high):
                if not any(s in prose for s in _spellings(bound)):
                    problems.append(f"claim {what!r}: the markdown above does not state the bound {bound:g}")
        prose = ""  # only the markdown cell right above a code cell states its claims
    return problems


def test_the_guard_catches_a_text_that_moved():
    cells = [
        {"cell_type": "markdown", "source": ["The fused path is between 10× and 20× faster here."]},
        {"cell_type": "code", "source": ["claim('speed-up', s, 10, 20)"]},
        {"cell_type": "markdown", "source": ["It is about 6× faster."]},
        {"cell_type": "code", "source": ["claim('speed-up', s, 10, 20)"]},
        {"cell_type": "markdown", "source": ["Anything."]},
        {"cell_type": "code", "source": ["claim('x', s, lo, 20)"]},
    ]
    assert unmatched_claims(cells[:2]) == []
    assert len(unmatched_claims(cells[2:4])) == 2
    assert unmatched_claims(cells[4:]) == ["claim 'x': bounds must be literal numbers"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_claim_is_stated_in_the_text_above_it(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert unmatched_claims(cells) == []
