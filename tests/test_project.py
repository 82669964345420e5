"""Project rules: import order between chapters, dependency lists in step, the README's commands."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "course_lib"

# Chapter rank of every module: a module may import only modules of a lower rank
# (within chapter 07, in the order listed). Shared helpers have rank 0.
RANK = {
    "grammar": 0.0, "corpus": 0.1, "viz": 0.0, "exercises": 0.0, "checks": 0.0,
    "gpt": 9.1, "llama": 9.2, "sampling": 9.3, "gpt_translate": 9.4,  # chapter 09 (after kvcache 8.0)
    "tokens": 1.0, "embeddings": 2.0, "attention": 3.0, "multihead": 4.0,
    "encoder": 5.0, "decoder": 6.0, "model": 7.0, "checkpoint": 7.05, "batches": 7.06, "objective": 7.07,
    "progress": 7.08, "training": 7.1, "decoding": 7.2,
    "kvcache": 8.0, "doctor": 9.0, "__main__": 10.0, "__init__": -1.0, "claims": 0.0, "chapters": 0.0, "validate": 0.0,
    "scorecard": 0.05, "webpages": 0.2, "website": 0.25, "generalisation": 8.5,
    "hangul": -0.5,  # hangul: shared by grammar (rank 0) and tokens
    "files": -0.5,  # the one atomic writer: shared by checkpoints and training (model) and exercises and check
    "lens": 11.0,  # chapter 11
    "hooks": 0.0,  # chapter 11's hook points, placed in the models of chapters 04-09: torch and the standard library only
}
MODEL_MODULES = {"tokens", "embeddings", "attention", "multihead", "encoder", "decoder", "model", "checkpoint", "batches",
                 "objective", "progress", "training", "decoding", "kvcache", "generalisation"}


def _package_name(name: str) -> str:
    """``from course_lib import X``: the module X, or ``__init__`` when X is a function of the package itself."""
    return name if (PKG / f"{name}.py").exists() or (PKG / name).is_dir() else "__init__"


def _course_imports(path: Path) -> set[str]:
    """Names of course_lib modules imported by a file (absolute or relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "course_lib" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            if node.level == 0 and parts[0] == "course_lib":
                found.update([parts[1]] if len(parts) > 1 else [_package_name(a.name) for a in node.names])
            elif node.level == 1 and path.parent == PKG:
                found.update([parts[0]] if parts[0] else [_package_name(a.name) for a in node.names])
            elif node.level >= 1 and path.parent.name == "checks":
                if node.level == 2:
                    found.update([parts[0]] if parts[0] else [a.name for a in node.names])
    return found


def _modules():
    return sorted(p for p in PKG.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_modules_import_only_earlier_chapters(path):
    name = path.stem
    assert name in RANK, f"course_lib/{path.name} is not in the chapter order of tests/test_project.py"
    for imported in _course_imports(path) - {"checks"}:
        assert imported in RANK, f"{path.name} imports unknown course_lib module {imported}"
        if name in ("corpus", "viz", "exercises"):
            assert imported not in MODEL_MODULES, f"{path.name} is shared and must not import {imported}"
        assert RANK[imported] < RANK[name], (
            f"course_lib/{path.name} (chapter rank {RANK[name]}) imports {imported} (rank {RANK[imported]}): "
            "a module may import only earlier chapters"
        )


MODEL_MODULES |= {"gpt", "llama", "sampling", "gpt_translate"}  # chapter 09


def test_checkers_import_no_model_module():
    for path in sorted((PKG / "checks").glob("*.py")):
        bad = _course_imports(path) & MODEL_MODULES
        assert not bad, f"checks/{path.name} imports model modules {bad}: references must be independent"


def _pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"]["optional-dependencies"].values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*([^;]*)", requirement)
    assert m, requirement
    name = m.group(1).lower().replace("_", "-")
    return ("torch" if name == "pytorch" else name), m.group(2).replace(" ", "")


def _environment_requirements() -> dict[str, str]:
    conda, pip, in_pip = [], [], False
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    for line in text.split("\ndependencies:", 1)[1].splitlines():
        stripped = line.split("#")[0].rstrip()
        if re.match(r"^\s+- pip:\s*$", stripped):
            in_pip = True
            continue
        m = re.match(r"^(\s+)- (.+)$", stripped)
        if not m:
            in_pip = in_pip and stripped.startswith(" ") and not stripped.startswith("  - ")
            continue
        (pip if in_pip and len(m.group(1)) > 2 else conda).append(m.group(2).strip())
    entries = [c for c in conda if not re.match(r"^(python|pip)\b", c)]
    entries += [p for p in pip if not p.startswith("-e")]
    return dict(_split(e) for e in entries)


def test_environment_yml_lists_the_same_packages_as_pyproject():
    pyproject, environment = _pyproject_requirements(), _environment_requirements()
    assert pyproject == environment, (
        f"environment.yml and pyproject.toml disagree: only in pyproject {sorted(set(pyproject) - set(environment))}, "
        f"only in environment.yml {sorted(set(environment) - set(pyproject))}, "
        f"different versions {sorted(k for k in set(pyproject) & set(environment) if pyproject[k] != environment[k])}"
    )
    assert pyproject["torch"] == "==2.13.0", "torch must stay pinned (an unpinned torch pulls a CUDA build)"


def test_readme_gives_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python3 course.py lab" in readme and "python3 course.py test" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^python3 course\.py test\s*$", ci, re.M), ".ci/run must run the README's test command"


def test_readme_chapter_map_names_existing_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.name}" in readme, f"README's chapter map misses notebooks/{nb.name}"
    for nb in sorted((ROOT / "exercises").glob("*.ipynb")):
        assert f"exercises/{nb.name}" in readme, f"README's chapter map misses exercises/{nb.name}"
    for path in re.findall(r"\((?:notebooks|exercises|solutions)/[^)]+\.ipynb\)", readme):
        assert (ROOT / path[1:-1]).exists(), f"README links {path[1:-1]}, which does not exist"
