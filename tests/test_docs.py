"""The README and the docs: every link resolves, and what the README left out is in docs/."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "README.ko.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Links of ``page`` to a file that does not exist, or to a heading its target does not have."""
    problems = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # https:, mailto: (nothing is fetched)
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{page.relative_to(root)}: {target} does not exist")
        elif anchor and file.suffix == ".md":
            headings = re.findall(r"(?m)^#+ (.+)$", file.read_text(encoding="utf-8"))
            if anchor not in {_anchor(h) for h in headings}:
                problems.append(f"{page.relative_to(root)}: {target} names no heading of {file.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.org/x)\n"
                    "[gone](missing.md) [no heading](there.md#another)\n", encoding="utf-8")
    assert broken_links(page, tmp_path) == ["page.md: missing.md does not exist",
                                            "page.md: there.md#another names no heading of there.md"]


def test_the_readme_is_short_and_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 120, "the README is a newcomer's first page: keep it at about 120 lines"
    for doc in ("docs/translator.md", "docs/testing.md", "docs/website.md", "docs/exercises.md",
                "docs/troubleshooting.md", "benchmarks/README.md"):
        assert f"]({doc})" in readme, f"the README does not link {doc}"


@pytest.mark.parametrize("doc, facts", [
    ("docs/translator.md", ["--threads 1", "replica_float32_sha256", "CheckpointError", "OUT.progress.pt", "--resume"]),
    ("docs/testing.md", ["--allow-root", "nbval", "ruff", "--cov=course_lib", "headless", "environment.yml"]),
    ("docs/website.md", ["_build/site_executed/", "CourseHangul", "OFL.txt", "pages.yml", "--chapters"]),
    ("docs/exercises.md", ["--timeout", "--time-limit", "make-exercises", "--force", "checks/hints/"]),
    ("benchmarks/README.md", ["0.97×", "gpu_check.py", "--dry-run"]),
])
def test_what_the_readme_left_out_is_in_docs(doc, facts):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert [f for f in facts if f not in text] == []


def test_the_korean_readme_gives_the_same_commands_and_the_english_one_links_it():
    english, korean = ((ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "README.ko.md"))
    assert "](README.ko.md)" in "\n".join(english.splitlines()[:5]), "README.md links the Korean edition in its first lines"
    assert "](README.md)" in "\n".join(korean.splitlines()[:5])
    commands = set(re.findall(r"(?m)^python3 course\.py \w+(?: --\w+)?", english))
    assert commands <= set(re.findall(r"(?m)^python3 course\.py \w+(?: --\w+)?", korean))
    assert "python3 course.py lab --ko" in korean and "ko/notebooks" in korean


def test_the_korean_readme_states_the_english_readmes_chapter_times_and_modules():
    def rows(name: str) -> dict[str, list[str]]:
        text = (ROOT / name).read_text(encoding="utf-8")
        found = {}
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if re.fullmatch(r"\d\d", cells[0]) and len(cells) >= 6:
                found[cells[0]] = [cells[2], " ".join(re.findall(r"\d+", cells[-1]))]  # modules, CPU-time numbers
        return found

    english, korean = rows("README.md"), rows("README.ko.md")
    assert len(english) == 12 and english == korean
