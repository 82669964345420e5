"""``course.py site`` without kernels or Sphinx: what ``prepare`` writes for a small course tree.

`test_site.py` builds the real site in a browser test (slow); these tests check the steps in between
on a course of two notebooks in a temporary folder, with a stand-in for nbclient's kernel.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.course import website


class _FakeClient:
    """Stands in for nbclient.NotebookClient: 'executes' by printing each code cell's source."""

    runs: list[list[str]] = []

    def __init__(self, nb, timeout, kernel_name, store_widget_state, resources):  # noqa: ANN001
        self.nb, self.kw = nb, dict(timeout=timeout, kernel_name=kernel_name, resources=resources)
        assert store_widget_state is True  # the site's widget snapshots need the saved widget state

    def execute(self):
        _FakeClient.runs.append([c.source for c in self.nb.cells if c.cell_type == "code"])
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"out: {cell.source}\n")]
        return self.nb


@pytest.fixture
def fake_kernel(monkeypatch):
    import nbclient

    _FakeClient.runs = []
    monkeypatch.setattr(nbclient, "NotebookClient", _FakeClient)

    def in_process(path, target, timeout, key, deadline):  # the child process, here, so the stand-in is used
        website.run_notebook(path, target, timeout, key)
        return True

    monkeypatch.setattr(website, "_run_in_child", in_process)
    return _FakeClient


def _write_nb(path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A two-chapter course tree, set as the site's ROOT."""
    root = tmp_path / "course"
    _write_nb(root / "notebooks" / "00_intro.ipynb", [
        md("# Chapter 00 · Intro <!-- a comment -->\n\n**Glossary**\n\n| English | 한국어 | meaning |\n|---|---|---|\n"
           "| token | 토큰 | a piece of text |\n"), code("print(1)")])
    _write_nb(root / "notebooks" / "01_more.ipynb", [md("# Chapter 01 · More\n\nA token again."), code("x = 2")])
    _write_nb(root / "solutions" / "01_more.ipynb", [
        md("# Exercises 01\n\nWrite f."), code("def f():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION"),
        code("checks.ch01.f(f)")])
    _write_nb(root / "exercises" / "01_more.ipynb", [md("# Exercises 01"), code("def f():\n    raise NotImplementedError")])
    (root / "docs").mkdir()
    (root / "docs" / "troubleshooting.md").write_text(
        "# Troubleshooting\n\nSee [chapter 01](../notebooks/01_more.ipynb#masks), [the timer](../benchmarks/timing.py),\n"
        "[`course.py`](../course.py), [the web](https://example.org/a_(b)) and [above](#top).\n"
        "![a figure](images/fig.png)\n", encoding="utf-8")
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "README.md").write_text("# Benchmarks\n\nNumbers.\n", encoding="utf-8")
    (root / "README.md").write_text("# The Course\n\nWhat it is.\n\n## Tests\n\nnot on the site\n", encoding="utf-8")
    (root / "course_lib" / "course").mkdir(parents=True)
    (root / "course_lib" / "model.py").write_text("X = 1\n", encoding="utf-8")
    (root / "course_lib" / "course" / "website.py").write_text("# the site's own code\n", encoding="utf-8")
    monkeypatch.setattr(website, "ROOT", root)
    return root


# --- execute: run once, then from the cache until the notebook or course_lib changes ---------------------

def test_execute_runs_with_the_thread_policy_first_and_caches_by_source_hash(course, tmp_path, fake_kernel, capsys):
    path, target = course / "notebooks" / "00_intro.ipynb", tmp_path / "executed" / "00_intro.ipynb"
    nb = website.execute(path, target, timeout=7)
    assert fake_kernel.runs == [[website._SETUP, "print(1)"]]  # the thread policy ran first ...
    assert [c.source for c in nb.cells if c.cell_type == "code"] == ["print(1)"]  # ... and is not on the page
    assert nb.cells[1].outputs[0]["text"] == "out: print(1)\n"
    assert nb.metadata["course_site"]["source_hash"] == website._source_hash(path)
    assert nbformat.read(target, as_version=4) == nb and not target.with_suffix(".tmp").exists()
    assert "executing notebooks/00_intro.ipynb" in capsys.readouterr().out

    assert website.execute(path, target) == nb and len(fake_kernel.runs) == 1  # cached: no kernel
    (course / "course_lib" / "course" / "website.py").write_text("# the site's code changed\n", encoding="utf-8")
    assert website.execute(path, target) == nb and len(fake_kernel.runs) == 1  # the site's own code is not hashed
    (course / "course_lib" / "model.py").write_text("X = 2\n", encoding="utf-8")
    website.execute(path, target)
    assert len(fake_kernel.runs) == 2  # the library changed: run again


def test_the_source_hash_follows_the_notebook_and_the_library_data(course):
    path = course / "notebooks" / "00_intro.ipynb"
    before = website._source_hash(path)
    (course / "course_lib" / "data").mkdir()
    (course / "course_lib" / "data" / "pairs.tsv").write_text("a\tb\n", encoding="utf-8")
    after_data = website._source_hash(path)
    (course / "course_lib" / "notes.md").write_text("not code, not data\n", encoding="utf-8")
    assert len({before, after_data}) == 2 and website._source_hash(path) == after_data


# --- prepare: the book's sources ---------------------------------------------------------------------

def test_prepare_writes_pages_toc_config_and_downloads(course, tmp_path, fake_kernel, monkeypatch):
    fonts: list[Path] = []
    monkeypatch.setattr(website, "subset_font", lambda d: fonts.append(d))  # its own (slow) test is below
    src = tmp_path / "site_src"
    (src / "stale").mkdir(parents=True)  # a previous build's leftovers are removed
    pages = website.prepare(src, tmp_path / "executed")
    assert pages == ["exercises/01_more", "notebooks/00_intro", "notebooks/01_more",
                     "glossary", "troubleshooting", "benchmarks"]
    assert not (src / "stale").exists() and fonts == [src / "_static" / "fonts"]

    chapter = nbformat.read(src / "notebooks" / "00_intro.ipynb", as_version=4)
    assert chapter.cells[1].source == "{download}`⬇ Download this notebook </files/notebooks/00_intro.ipynb>`"
    assert chapter.cells[2].outputs[0]["text"] == "out: print(1)\n"  # executed outputs are on the page
    exercise = nbformat.read(src / "exercises" / "01_more.ipynb", as_version=4)
    assert [c.source for c in exercise.cells[1:3]] == [
        "{download}`⬇ Download the exercise notebook </files/exercises/01_more.ipynb>`",
        "{download}`⬇ Download the exercises with solutions </files/solutions/01_more.ipynb>`"]
    assert exercise.cells[3].source == "def f():\n    return 2" and "hide-input" in exercise.cells[3].metadata.tags
    for copied in ("notebooks/00_intro.ipynb", "solutions/01_more.ipynb", "exercises/01_more.ipynb"):
        assert (src / "files" / copied).read_bytes() == (course / copied).read_bytes()

    toc = (src / "_toc.yml").read_text(encoding="utf-8")
    assert toc == ("format: jb-book\nroot: index\nparts:\n"
                   "  - caption: Chapters\n    chapters:\n      - file: notebooks/00_intro\n      - file: notebooks/01_more\n"
                   "  - caption: Exercises, with solutions\n    chapters:\n      - file: exercises/01_more\n"
                   "  - caption: Reference\n    chapters:\n      - file: glossary\n      - file: troubleshooting\n"
                   "      - file: benchmarks\n")
    config = (src / "_config.yml").read_text(encoding="utf-8")
    assert config.startswith('title: "The Course"\n') and "execute_notebooks: \"off\"" in config
    index = (src / "index.md").read_text(encoding="utf-8")
    assert index.startswith("# The Course\n\nWhat it is.\n") and "not on the site" not in index
    glossary = (src / "glossary.md").read_text(encoding="utf-8")
    assert "| token | 토큰 | a piece of text | [Chapter 00](notebooks/00_intro.ipynb), " \
           "[Chapter 01](notebooks/01_more.ipynb) |" in glossary  # the title without " · Intro <!-- -->"
    css = (src / "_static" / "course.css").read_text(encoding="utf-8")
    assert 'font-family: "CourseHangul"' in css and "unicode-range: U+1100-11FF, U+3130-318F" in css
    assert (src / "benchmarks.md").read_text(encoding="utf-8") == "# Benchmarks\n\nNumbers.\n"


def test_prepare_picks_only_the_chapters_asked_for(course, tmp_path, fake_kernel, monkeypatch):
    monkeypatch.setattr(website, "subset_font", lambda d: None)
    pages = website.prepare(tmp_path / "src", tmp_path / "executed", chapters=["01"], exercises=[])
    assert pages == ["notebooks/01_more", "glossary", "troubleshooting", "benchmarks"]
    assert fake_kernel.runs == [[website._SETUP, "x = 2"]]
    assert "Exercises" not in (tmp_path / "src" / "_toc.yml").read_text(encoding="utf-8")  # no empty part


def test_markdown_pages_keep_links_to_book_pages_and_show_other_files_as_paths(course):
    text = website._markdown_page(course / "docs" / "troubleshooting.md", {"notebooks/01_more"})
    assert text == ("# Troubleshooting\n\nSee [chapter 01](notebooks/01_more.ipynb), the timer (`benchmarks/timing.py`),\n"
                    "`course.py`, [the web](https://example.org/a_(b)) and [above](#top).\n"
                    "![a figure](images/fig.png)\n")


def test_title_is_the_first_heading_or_untitled():
    nb = nbformat.v4.new_notebook()
    nb.cells = [code("# a comment, not a title"), md("Some text\n# Real title <!-- hidden --> \n")]
    assert website._title(nb) == "Real title"
    nb.cells = [md("no heading")]
    assert website._title(nb) == "untitled"


# --- build and main: the two commands, in order --------------------------------------------------------

def test_build_prepares_then_runs_jupyter_book_config_and_sphinx(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setattr(website, "prepare",
                        lambda src, executed, ch, ex, deadline: calls.append(("prepare", src, executed, ch, ex)))
    monkeypatch.setattr(website.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw.get("check"))))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "old.html").write_text("stale", encoding="utf-8")
    index = website.build(tmp_path, ["03"], None)
    assert index == tmp_path / "site" / "index.html"
    src = tmp_path / "site_src"
    assert calls[0] == ("prepare", src, tmp_path / "site_executed", ["03"], None)
    assert calls[1] == ([sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "config", "sphinx",
                         str(src)], True)
    assert calls[2] == ([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", str(src), str(tmp_path / "site")],
                        True)
    assert not (tmp_path / "site").exists()  # the old site was removed before Sphinx wrote the new one
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(website.ROOT), "/elsewhere"]  # for the kernels


def test_main_passes_the_options_and_prints_the_page_to_open(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(website, "build", lambda root, ch, ex: seen.append((root, ch, ex)) or tmp_path / "index.html")
    assert website.main(["--chapters", "00", "03", "--exercises", "--build-dir", str(tmp_path)]) == 0
    assert seen == [(tmp_path, ["00", "03"], [])]
    out = capsys.readouterr().out
    assert out.startswith("built in ") and out.rstrip().endswith(f"s; open {tmp_path / 'index.html'}")
    website.main([])
    assert seen[-1] == (None, None, None)


@pytest.mark.slow
def test_the_font_subset_has_every_hangul_syllable_under_the_course_name(tmp_path):
    from fontTools.ttLib import TTFont

    out = website.subset_font(tmp_path / "fonts")
    font = TTFont(out)
    assert out.name == "CourseHangul.woff" and font.flavor == "woff"
    assert {r.toUnicode() for r in font["name"].names if r.nameID in (1, 16)} == {"CourseHangul"}
    cmap = font.getBestCmap()
    assert all(ord(c) in cmap for c in "한국어나는학교에간다") and 0xD7A3 in cmap
    assert ord("A") not in cmap  # Latin text keeps the theme's font
    assert (tmp_path / "fonts" / "OFL.txt").read_text(encoding="utf-8").startswith(
        (website.ROOT / "website" / "OFL.txt").read_text(encoding="utf-8")[:40])


def test_a_stalled_execution_is_killed_at_its_deadline_and_tried_once_more(course, tmp_path, monkeypatch, capsys):
    import time

    monkeypatch.setattr(website, "_CHILD", "import time; time.sleep(60)")  # a run that never finishes
    path = course / "notebooks" / "00_intro.ipynb"
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="stalled twice"):
        website.execute(path, tmp_path / "executed" / "00_intro.ipynb", deadline=1)
    assert time.perf_counter() - started < 30
    assert capsys.readouterr().out.count("did not finish within 1 s") == 2
    monkeypatch.setattr(website, "_CHILD", "import sys; sys.exit(3)")
    with pytest.raises(RuntimeError, match="exit status 3"):
        website.execute(path, tmp_path / "executed" / "00_intro.ipynb", deadline=30)


def test_prepare_adds_the_korean_edition_with_the_english_outputs_and_a_switch(course, tmp_path, fake_kernel,
                                                                              monkeypatch):
    monkeypatch.setattr(website, "subset_font", lambda d: None)
    _write_nb(course / "ko" / "notebooks" / "00_intro.ipynb", [
        md("# 00 · 소개\n\n**용어집**\n\n| English | 한국어 | 뜻 |\n|---|---|---|\n| token | 토큰 | 텍스트 조각 |\n"),
        code("print(1)")])
    (course / "README.ko.md").write_text("[English](README.md)\n\n# 강좌\n\n무엇인지.\n\n## 테스트\n\n사이트에 없음\n",
                                         encoding="utf-8")
    src = tmp_path / "site_src"
    pages = website.prepare(src, tmp_path / "executed")
    assert "ko/notebooks/00_intro" in pages and pages[-2:] == ["ko/index", "ko/glossary"]
    assert len(fake_kernel.runs) == 3  # two chapters and one exercise page: the Korean page is not executed
    korean = nbformat.read(src / "ko" / "notebooks" / "00_intro.ipynb", as_version=4)
    assert korean.cells[1].source == "[🌐 English edition](../../notebooks/00_intro.ipynb)"
    assert korean.cells[2].source == "{download}`⬇ 이 노트북 내려받기 </files/ko/notebooks/00_intro.ipynb>`"
    assert korean.cells[3].outputs[0]["text"] == "out: print(1)\n"  # the English run's output
    english = nbformat.read(src / "notebooks" / "00_intro.ipynb", as_version=4)
    assert english.cells[1].source == "[🌐 한국어판으로](../ko/notebooks/00_intro.ipynb)"
    other = nbformat.read(src / "notebooks" / "01_more.ipynb", as_version=4)
    assert "🌐" not in other.cells[1].source  # no Korean counterpart: no switch
    index = (src / "ko" / "index.md").read_text(encoding="utf-8")
    assert index.startswith("# 강좌\n\n무엇인지.") and "README.md" not in index and "[🌐 English edition](../index.md)" in index
    glossary = (src / "ko" / "glossary.md").read_text(encoding="utf-8")
    assert "| token | 토큰 | 텍스트 조각 | [00](notebooks/00_intro.ipynb) |" in glossary
    toc = (src / "_toc.yml").read_text(encoding="utf-8")
    assert "  - caption: 한국어판 · 장 (Korean edition)\n    chapters:\n      - file: ko/index\n" \
           "      - file: ko/notebooks/00_intro\n" in toc and "      - file: ko/glossary\n" in toc
    assert "[🌐 한국어 용어집](ko/glossary.md)" in (src / "glossary.md").read_text(encoding="utf-8")


def test_a_korean_page_refuses_cells_that_do_not_line_up_with_the_english_run():
    from course_lib.course import webpages

    ran = nbformat.v4.new_notebook(cells=[md("# 00"), code("x = 1")])
    ran.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="✓ f: fine\n")]
    with pytest.raises(ValueError, match="do not line up"):
        webpages.korean_page(ran, nbformat.v4.new_notebook(cells=[md("# 00")]))
    with pytest.raises(ValueError, match="differs from the English one"):
        webpages.korean_page(ran, nbformat.v4.new_notebook(cells=[md("# 00"), code("x = 2")]))
    page = webpages.korean_page(ran, nbformat.v4.new_notebook(cells=[md("# 00 · 소개"), code("x = 1")]))
    assert page.cells[1].outputs[0]["text"] == "✓ f: fine\n" and page.cells[0].source == "# 00 · 소개"
