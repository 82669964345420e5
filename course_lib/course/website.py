"""The course as a static website with every output, built offline: ``python3 course.py site``.

1. Executes ``notebooks/`` and ``solutions/`` in fresh kernels (nbclient; the course's thread
   policy ``set_threads("small")`` first, the notebooks' own seeds), caching each executed
   notebook under ``_build/site_executed/`` by a hash of the notebook and ``course_lib``.
2. Prepares a Jupyter Book (1.x) in ``_build/site_src/``: chapters with a download link, exercise
   pages (solutions behind a click), the glossary, troubleshooting and benchmarks; widgets become
   static snapshots (:mod:`course_lib.course.webpages`); MathJax and a Hangul subset of NanumGothic
   (renamed CourseHangul, OFL, licence beside it) are bundled, so nothing loads from the network.
3. Builds it with Sphinx into ``_build/site/`` and prints the page to open.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat

from . import webpages

ROOT = Path(__file__).resolve().parents[2]
HANGUL_RANGES = [(0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF)]
FONT_FAMILY = "CourseHangul"  # "Nanum"/"NanumGothic" are Reserved Font Names: a subset must be renamed
_SETUP = 'from course_lib import set_threads as _set_threads\n_set_threads("small")'


def _source_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes())
    for dep in sorted((ROOT / "course_lib").rglob("*")):
        if dep.is_file() and dep.suffix in (".py", ".pt", ".json", ".txt", ".tsv") and "__pycache__" not in dep.parts \
                and dep.stem not in ("website", "webpages"):  # the site's own code does not change outputs
            digest.update(str(dep.relative_to(ROOT)).encode() + dep.read_bytes())
    return digest.hexdigest()


def execute(path: Path, target: Path, timeout: int = 900, deadline: int = 1200) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel (cached by :func:`_source_hash`).

    It runs in a child process with a hard ``deadline`` (seconds): a run that stalls (once seen: nbclient idle
    after a widget cell, no cell timeout firing) is killed with its kernel and tried once more, then fails.
    """
    key = _source_hash(path)
    if target.exists():
        cached = nbformat.read(target, as_version=4)
        if cached.metadata.get("course_site", {}).get("source_hash") == key:
            return cached
    for attempt in (1, 2):
        if _run_in_child(path, target, timeout, key, deadline):
            return nbformat.read(target, as_version=4)
        print(f"{path.relative_to(ROOT)} did not finish within {deadline} s (attempt {attempt} of 2)", flush=True)
    raise RuntimeError(f"{path.relative_to(ROOT)} stalled twice (over {deadline} s each): the site was not built")


_CHILD = ("import sys; from pathlib import Path; from course_lib.course.website import run_notebook as r; "
          "r(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])")


def _run_in_child(path: Path, target: Path, timeout: int, key: str, deadline: int) -> bool:
    """:func:`run_notebook` in a child process group; False if it was killed at ``deadline`` (kernel included)."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(target), str(timeout), key],
                             start_new_session=True)
    try:
        status = child.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)
        child.wait()
        return False
    if status != 0:
        raise RuntimeError(f"executing {path.relative_to(ROOT)} failed (exit status {status}): see the error above")
    return True


def run_notebook(path: Path, target: Path, timeout: int, key: str) -> None:
    """The child of :func:`execute`: run ``path`` with the site's thread policy and save it to ``target``."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_SETUP))
    started = time.perf_counter()
    print(f"executing {path.relative_to(ROOT)} ...", flush=True)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nb.cells.pop(0)
    nb.metadata["course_site"] = {"source_hash": key, "seconds": round(time.perf_counter() - started, 1)}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)  # atomic: a killed build leaves no half-written cache entry
    print(f"  done in {nb.metadata['course_site']['seconds']} s", flush=True)


def subset_font(target_dir: Path) -> Path:
    """The Hangul glyphs of koreanize-matplotlib's NanumGothic as a WOFF named CourseHangul."""
    import logging

    from fontTools import subset  # type: ignore[import-untyped]
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    from ..viz import hangul_font_path

    font = TTFont(hangul_font_path())
    options = subset.Options()
    options.flavor, options.name_IDs, options.name_languages = "woff", ["*"], ["*"]
    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)  # "TSI0 NOT subset": hinting sources, dropped
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[u for lo, hi in HANGUL_RANGES for u in range(lo, hi + 1)])
    subsetter.subset(font)
    for record in font["name"].names:
        if record.nameID in (1, 3, 4, 6, 16, 17, 21):
            record.string = FONT_FAMILY if record.nameID != 17 else "Regular"
    target_dir.mkdir(parents=True, exist_ok=True)
    out = target_dir / "CourseHangul.woff"
    font.flavor = "woff"
    font.save(out)
    shutil.copy(ROOT / "website" / "OFL.txt", target_dir / "OFL.txt")
    return out


def _css() -> str:
    ranges = ", ".join(f"U+{lo:04X}-{hi:04X}" for lo, hi in HANGUL_RANGES)
    return (f'@font-face {{ font-family: "{FONT_FAMILY}"; src: url("fonts/CourseHangul.woff") format("woff");\n'
            f"  unicode-range: {ranges}; font-display: block; }}\n"
            f':root {{ --pst-font-family-base: "{FONT_FAMILY}", var(--pst-font-family-base-system);\n'
            f'  --pst-font-family-heading: "{FONT_FAMILY}", var(--pst-font-family-base-system);\n'
            f'  --pst-font-family-monospace: "{FONT_FAMILY}", var(--pst-font-family-monospace-system); }}\n'
            f'body, input, button, pre, code, kbd, samp {{ font-family: "{FONT_FAMILY}", var(--pst-font-family-base-system); }}\n'
            f'pre, code, kbd, samp {{ font-family: "{FONT_FAMILY}", var(--pst-font-family-monospace-system); }}\n')


def _title(nb: nbformat.NotebookNode) -> str:
    for cell in nb.cells:
        m = re.search(r"^# (.+)$", cell.source, re.MULTILINE) if cell.cell_type == "markdown" else None
        if m:
            return re.sub(r"<!--.*?-->", "", m.group(1)).strip()
    return "untitled"


def _markdown_page(source: Path, pages: set[str]) -> str:
    """A repository markdown file as a book page: links to book pages kept, other repository
    files shown as their path (they are not part of the site)."""
    def link(m: re.Match) -> str:
        text, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:|^#", target):
            return m.group(0)
        rel = os.path.normpath(source.parent.relative_to(ROOT) / target.split("#")[0]).replace(os.sep, "/")
        if rel.removesuffix(".ipynb") in pages:
            return f"[{text}]({rel})"
        return f"{text} (`{rel}`)" if text.strip("`") != rel else f"`{rel}`"
    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", link, source.read_text(encoding="utf-8"))


def _first_section(readme: Path) -> str:
    """A README up to its first ``##`` heading, without the lines that link the other README (the site has
    its own language switch)."""
    text = readme.read_text(encoding="utf-8").split("\n## ", 1)[0]
    return "\n".join(line for line in text.split("\n") if not re.search(r"\]\(README(\.ko)?\.md\)", line)).strip()


def _config(title: str) -> str:
    return f"""title: "{title}"
author: the course's authors
only_build_toc_files: true
execute:
  execute_notebooks: "off"
html:
  use_download_button: true
  use_repository_button: false
  home_page_in_navbar: true
launch_buttons:
  notebook_interface: classic
  thebe: false
parse:
  myst_enable_extensions: [dollarmath, amsmath, colon_fence]
sphinx:
  extra_extensions: [sphinx-mathjax-offline]
  config:
    nb_ipywidgets_js: {{}}
    html_static_path: [_static]
    html_css_files: [course.css]
    html_js_files: []
    language: en
    html_theme_options:
      use_download_button: true
      use_fullscreen_button: false
      search_bar_text: "Search (English or 한국어)…"
"""


def _copy_into(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder / path.name)


def _switch(page: str, other: str, language: str) -> nbformat.NotebookNode:
    """The language switch at the top of a page: a link to the same page in the other edition."""
    up = "../" * page.count("/")
    text = f"[🌐 한국어판으로]({up}{other}.ipynb)" if language == "en" else f"[🌐 English edition]({up}{other}.ipynb)"
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": ["language-switch"]})


_DOWNLOADS = {"en": ("Download this notebook", "Download the exercises with solutions", "Download the exercise notebook"),
              "ko": ("이 노트북 내려받기", "풀이가 있는 연습 문제 내려받기", "연습 문제 노트북 내려받기")}


def _page(nb: nbformat.NotebookNode, path: Path, folder: str, language: str, other: str | None,
          src: Path) -> tuple[str, nbformat.NotebookNode]:
    """Write one chapter or exercise page of ``language`` into ``src``; returns (page name, page)."""
    base = "ko/" if language == "ko" else ""
    kind = "notebooks" if folder == "notebooks" else "exercises"
    page = f"{base}{kind}/{path.stem}"
    webpages.freeze_widgets(nb)
    _copy_into(path, src / "files" / base / folder)
    this, solutions, exercise = _DOWNLOADS[language]
    if folder == "notebooks":
        downloads = [webpages.download_cell(f"/files/{base}notebooks/{path.name}", this)]
    else:
        webpages.exercise_page(nb, language)
        downloads = [webpages.download_cell(f"/files/{base}solutions/{path.name}", solutions)]
        stub = ROOT / base / "exercises" / path.name
        if stub.exists():
            _copy_into(stub, src / "files" / base / "exercises")
            downloads.insert(0, webpages.download_cell(f"/files/{base}exercises/{path.name}", exercise))
    if other is not None:
        downloads.insert(0, _switch(page, other, language))
    heading = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
    nb.cells[heading + 1:heading + 1] = downloads
    (src / page).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, src / f"{page}.ipynb")
    return page, nb


def prepare(src: Path, executed: Path, chapters: list[str] | None = None, exercises: list[str] | None = None,
            deadline: int = 1200) -> list[str]:
    """Execute what is needed and write the book's sources into ``src``; returns the page names.

    The Korean edition (``ko/``) is not executed: each Korean page gets the outputs of the English run
    (:func:`webpages.korean_page`), and every page links its counterpart in the other edition.
    """
    shutil.rmtree(src, ignore_errors=True)
    (src / "_static").mkdir(parents=True)
    def pick(folder: str, only: Sequence[str] | None) -> list[Path]:
        return [p for p in sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb")) if only is None or p.name[:2] in only]

    chapter_nbs: dict[str, dict[str, nbformat.NotebookNode]] = {"en": {}, "ko": {}}
    titles: dict[str, str] = {}
    toc: dict[tuple[str, str], list[str]] = {(lang, kind): [] for lang in ("en", "ko") for kind in ("notebooks", "solutions")}
    for folder, only in (("notebooks", chapters), ("solutions", exercises)):
        for path in pick(folder, only):
            ran = execute(path, executed / folder / path.name, deadline=deadline)
            korean_path = ROOT / "ko" / folder / path.name
            korean = (webpages.korean_page(ran, nbformat.read(korean_path, as_version=4))
                      if korean_path.exists() else None)
            kind = "notebooks" if folder == "notebooks" else "exercises"
            english_page = f"{kind}/{path.stem}"
            for language, nb, file, other in (("en", nbformat.from_dict(ran), path, f"ko/{english_page}"),
                                              ("ko", korean, korean_path, english_page)):
                if nb is None:
                    continue
                page, nb = _page(nb, file, folder, language, other if korean is not None else None, src)
                titles[page] = _title(nb)
                toc[(language, folder)].append(page)
                if folder == "notebooks":
                    chapter_nbs[language][page] = nb
    pages = set(titles)
    (src / "glossary.md").write_text(webpages.glossary_page(webpages.gather_glossary(chapter_nbs["en"]), titles),
                                     encoding="utf-8")
    (src / "troubleshooting.md").write_text(_markdown_page(ROOT / "docs" / "troubleshooting.md", pages), encoding="utf-8")
    (src / "benchmarks.md").write_text(_markdown_page(ROOT / "benchmarks" / "README.md", pages), encoding="utf-8")
    readme = _first_section(ROOT / "README.md")
    korean_site, extra = bool(toc[("ko", "notebooks")] or toc[("ko", "solutions")]), []
    (src / "index.md").write_text(
        readme + "\n\nThis site shows every chapter with its outputs, run offline on a CPU. Widgets are interactive "
        "in JupyterLab; here each shows a snapshot of what it drew.\n"
        + ("\n[🌐 한국어판 (the Korean edition)](ko/index.md)\n" if korean_site else ""), encoding="utf-8")
    reference = ["glossary", "troubleshooting", "benchmarks"]
    parts = [("Chapters", toc[("en", "notebooks")]), ("Exercises, with solutions", toc[("en", "solutions")]),
             ("Reference", reference)]
    if korean_site:
        parts += _korean_front(src, toc, chapter_nbs["ko"], titles)
        extra = ["ko/index", "ko/glossary"]
    subset_font(src / "_static" / "fonts")
    (src / "_static" / "course.css").write_text(_css(), encoding="utf-8")
    (src / "_config.yml").write_text(_config(readme.splitlines()[0].lstrip("# ")), encoding="utf-8")
    toc_text = "format: jb-book\nroot: index\nparts:\n" + "".join(
        f"  - caption: {caption}\n    chapters:\n" + "".join(f"      - file: {p}\n" for p in files)
        for caption, files in parts if files)
    (src / "_toc.yml").write_text(toc_text, encoding="utf-8")
    return sorted(pages) + reference + extra


def _korean_front(src: Path, toc: dict[tuple[str, str], list[str]], chapters: dict[str, nbformat.NotebookNode],
                  titles: dict[str, str]) -> list[tuple[str, list[str]]]:
    """The Korean index and glossary, a way to them from the English-only reference pages, and the Korean parts
    of the table of contents."""
    (src / "ko").mkdir(exist_ok=True)
    (src / "ko" / "index.md").write_text(
        _first_section(ROOT / "README.ko.md") + "\n\n이 사이트는 모든 장을 CPU에서 오프라인으로 실행한 출력과 함께 보여 "
        "줍니다. 한국어판의 출력은 영어판을 실행한 결과입니다(코드가 같으므로 다시 실행하지 않습니다). 위젯은 "
        "JupyterLab에서 움직이고, 여기서는 그린 그림의 스냅숏을 보여 줍니다.\n\n[🌐 English edition](../index.md)\n",
        encoding="utf-8")
    (src / "ko" / "glossary.md").write_text(webpages.glossary_page(
        webpages.gather_glossary(chapters), titles, "ko", folder="ko/")
        + "\n[🌐 English glossary](../glossary.md)\n", encoding="utf-8")
    switches = {"glossary.md": "[🌐 한국어 용어집](ko/glossary.md)", "troubleshooting.md": "[🌐 한국어판](ko/index.md)",
                "benchmarks.md": "[🌐 한국어판](ko/index.md)"}
    for name, switch in switches.items():  # the reference pages exist in English only: a way to the Korean side
        (src / name).write_text((src / name).read_text(encoding="utf-8") + f"\n{switch}\n", encoding="utf-8")
    return [("한국어판 · 장 (Korean edition)", ["ko/index", *toc[("ko", "notebooks")]]),
            ("한국어판 · 연습 문제와 풀이", toc[("ko", "solutions")]), ("한국어판 · 참고", ["ko/glossary"])]


def build(build_root: Path | None = None, chapters: list[str] | None = None,
          exercises: list[str] | None = None, deadline: int = 1200) -> Path:
    """Execute, prepare and build the site; returns ``<build_root>/site/index.html``."""
    build_root = build_root or ROOT / "_build"
    src, out = build_root / "site_src", build_root / "site"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    prepare(src, build_root / "site_executed", chapters, exercises, deadline)
    book = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    subprocess.run([*book, "config", "sphinx", str(src)], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", str(src), str(out)], check=True)
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course.py site", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="*", metavar="NN", help="only these chapters (default: all)")
    parser.add_argument("--exercises", nargs="*", metavar="NN", help="only these exercise pages (default: all)")
    parser.add_argument("--build-dir", type=Path, default=None, help="default: _build/ beside course.py")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    index = build(args.build_dir, args.chapters, args.exercises)
    print(f"built in {time.perf_counter() - started:.0f} s; open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
