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
PKG = ROOT / "course_lib"  # the model wing: the Transformer a learner builds, one module per chapter, with its data
COURSE = PKG / "course"  # the course's machinery: checks, exercises, scorecard, claims, chapters, doctor, website, cli
DOOR = PKG / "__main__.py"  # ``python -m course_lib``: the one model-wing file that imports the machinery (its cli)

# Chapter rank of every module of the model wing: a module may import only modules of a lower rank
# (within chapter 07, in the order listed). Shared helpers have rank 0.
RANK = {
    "grammar": 0.0, "corpus": 0.1, "viz": 0.0,
    "gpt": 9.1, "llama": 9.2, "sampling": 9.3, "gpt_translate": 9.4,  # chapter 09 (after kvcache 8.0)
    "tokens": 1.0, "embeddings": 2.0, "attention": 3.0, "multihead": 4.0,
    "encoder": 5.0, "decoder": 6.0, "model": 7.0, "checkpoint": 7.05, "batches": 7.06, "objective": 7.07,
    "progress": 7.08, "training": 7.1, "decoding": 7.2,
    "kvcache": 8.0, "__main__": 10.0, "__init__": -1.0, "validate": 0.0, "generalisation": 8.5,
    "hangul": -0.5,  # hangul: shared by grammar (rank 0) and tokens
    "files": -0.5,  # the one atomic writer: shared by checkpoints and training (model) and exercises and check
    "lens": 11.0,  # chapter 11
    "hooks": 0.0,  # chapter 11's hook points, placed in the models of chapters 04-09: torch and the standard library only
}
MODEL_MODULES = {"tokens", "embeddings", "attention", "multihead", "encoder", "decoder", "model", "checkpoint", "batches",
                 "objective", "progress", "training", "decoding", "kvcache", "generalisation"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every course_lib name a file of the package imports, fully qualified, with its line: ``from ..files import
    atomic_write`` in ``course_lib/course/exercises.py`` is ``course_lib.files.atomic_write``. Absolute and relative
    imports, and ``importlib.import_module`` / ``__import__`` of a constant string."""
    package = list(path.relative_to(ROOT).parent.parts)  # e.g. ["course_lib", "course", "checks"]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("import_module", "__import__"):
            found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if name.split(".")[0] == "course_lib"]


def _course_imports(path: Path) -> set[str]:
    """The top-level course_lib modules a file imports (``__init__`` for a name of the package itself, like set_seed)."""
    found = set()
    for _, name in _imports(path):
        parts = name.split(".")
        top = parts[1] if len(parts) > 1 else ""
        found.add(top if (PKG / f"{top}.py").exists() or (PKG / top / "__init__.py").exists() else "__init__")
    return found


def _model_wing() -> list[Path]:
    """Every Python file of course_lib outside course/: the Transformer and its helpers."""
    return sorted(p for p in PKG.rglob("*.py") if COURSE not in p.parents)


@pytest.mark.parametrize("path", _model_wing(), ids=lambda p: p.stem)
def test_modules_import_only_earlier_chapters(path):
    name = path.stem
    assert name in RANK, f"{path.relative_to(ROOT)} is not in the chapter order of tests/test_project.py"
    for imported in _course_imports(path) - {"course"}:  # the machinery: test_the_model_wing_never_imports_the_course
        assert imported in RANK, f"{path.name} imports unknown course_lib module {imported}"
        if name in ("corpus", "viz"):
            assert imported not in MODEL_MODULES, f"{path.name} is shared and must not import {imported}"
        assert RANK[imported] < RANK[name], (
            f"course_lib/{path.name} (chapter rank {RANK[name]}) imports {imported} (rank {RANK[imported]}): "
            "a module may import only earlier chapters"
        )


def test_the_model_wing_never_imports_the_course():
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in _model_wing() if path != DOOR
           for line, name in _imports(path) if name == "course_lib.course" or name.startswith("course_lib.course.")]
    assert not bad, ("the Transformer (course_lib/*.py) must not import the course's machinery (course_lib/course/); "
                     "move the shared part into the model wing or the importer into course/: " + "; ".join(bad))


def test_python_m_course_lib_only_runs_the_course_cli():
    assert [name for _, name in _imports(DOOR)] == ["course_lib.course.cli.main"], (
        "course_lib/__main__.py is the door of `python -m course_lib`: the commands belong in course_lib/course/cli.py")


MODEL_MODULES |= {"gpt", "llama", "sampling", "gpt_translate"}  # chapter 09


@pytest.mark.parametrize("path", sorted(COURSE.rglob("*.py")), ids=lambda p: str(p.relative_to(COURSE)))
def test_the_course_machinery_imports_no_model_module(path):
    bad = sorted({name for _, name in _imports(path) if name.split(".")[1] in MODEL_MODULES})
    assert not bad, (f"{path.relative_to(ROOT)} imports {bad}: the machinery uses only the model wing's shared helpers "
                     "(files, validate, viz), so that a checker's reference is independent of the model it checks")


def test_every_package_folder_is_installed():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    folders = [".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py")]
    assert sorted(folders) == sorted(packages), "pyproject.toml's [tool.setuptools] packages must list every package folder"


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
