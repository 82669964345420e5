"""The course website (``python3 course.py site``) from a small subset, read in headless Chromium.

Builds chapters 00 and 03 and the exercise page 03 into a temporary folder (execution about
10-20 s per notebook on idle cores), serves it from 127.0.0.1 and opens it in Debian's chromium
through playwright, with a fresh profile and WITHOUT the course's font in fontconfig, so Hangul
can come only from the font the site bundles. Screenshots go to ``artifacts/screenshots/``.
``COURSE_SITE_DIR=_build/site`` checks a site built before instead (e.g. the whole course).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest
from test_browser import ARTIFACTS, CHROMIUM_FLAGS, _free_port, require_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

# Marks each visible element whose own text nodes hold Hangul; returns how many Hangul letters
# each holds (the letters the bundled font must draw).
_MARK_HANGUL_JS = r"""() => {
  const hangul = /[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]/g;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const counts = new Map();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement, n = (node.textContent.match(hangul) || []).length;
    if (!n || !el || el.closest('mjx-container, script, style, title')) continue;
    const range = document.createRange(); range.selectNodeContents(node);
    if (!range.getClientRects().length || getComputedStyle(el).visibility !== 'visible') continue;
    counts.set(el, (counts.get(el) || 0) + n);
  }
  let i = 0; const out = [];
  for (const [el, n] of counts) { el.setAttribute('data-hangul', String(i++)); out.push(n); }
  return out;
}"""

# Text outside code, outputs and rendered math: where a stray `$` means math was not rendered.
_PROSE_JS = """() => {
  const main = document.querySelector('main') || document.body;
  const copy = main.cloneNode(true);
  copy.querySelectorAll('pre, code, .cell_output, mjx-container, script, .output').forEach(e => e.remove());
  return copy.textContent;
}"""


def _build_subset(build_root: Path) -> Path:
    from course_lib.course import website

    saved = os.environ.get("PYTHONPATH")
    started = time.perf_counter()
    try:
        index = website.build(build_root, chapters=["00", "03"], exercises=["03"])
    finally:
        os.environ.pop("PYTHONPATH", None)  # build() prepends the repository for the kernels
        if saved is not None:
            os.environ["PYTHONPATH"] = saved
    print(f"site subset built in {time.perf_counter() - started:.0f} s")
    return index


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, folder) of a subset of the site (or of COURSE_SITE_DIR), served on 127.0.0.1."""
    require_chromium()
    if os.environ.get("COURSE_SITE_DIR"):  # check a site built before, e.g. the whole course
        index = Path(os.environ["COURSE_SITE_DIR"]).resolve() / "index.html"
        assert index.exists(), f"COURSE_SITE_DIR has no index.html: {index}"
    else:
        index = _build_subset(tmp_path_factory.mktemp("site"))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(index.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(100):
        try:
            direct.open(url, timeout=2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url, index.parent
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def context(site, tmp_path_factory):
    """A fresh chromium profile that records every request it makes."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=require_chromium(),
            headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(60_000)
        ctx.requests, ctx.failures = [], []
        ctx.on("request", lambda r: ctx.requests.append(r.url))
        ctx.on("response", lambda r: r.status >= 400 and ctx.failures.append(f"{r.status} {r.url}"))
        ctx.on("requestfailed", lambda r: ctx.failures.append(f"failed {r.url}"))
        yield ctx
        ctx.close()


def _open(context, url: str):
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.evaluate("() => document.fonts.ready")
    page.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }")
    return page


def test_every_page_link_and_figure_answers_from_localhost_only(site, context):
    url, _ = site
    seen, queue, pages = set(), deque([url]), 0
    while queue:
        target = queue.popleft()
        page = _open(context, target)
        pages += 1
        broken = page.evaluate("() => Array.from(document.images).filter(i => !i.complete || !i.naturalWidth)"
                               ".map(i => i.src)")
        assert not broken, f"{target}: images that did not load: {broken}"
        for href in page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
            link = urldefrag(href)[0]
            if urlparse(link).netloc != urlparse(url).netloc or link in seen:
                continue
            seen.add(link)
            if link.endswith((".html", "/")):
                queue.append(link)
            else:
                assert context.request.get(link).ok, f"{target} links {link}, which does not answer"
        page.close()
    assert pages >= 7, f"only {pages} pages reached from the index"
    assert not context.failures, f"requests that failed: {context.failures}"
    foreign = sorted({u for u in context.requests if urlparse(u).hostname != "127.0.0.1" and not u.startswith("data:")})
    assert not foreign, f"the site asked other hosts: {foreign}"


@pytest.mark.parametrize("path", ["notebooks/00_introduction.html", "notebooks/03_attention.html",
                                  "exercises/03_attention.html", "ko/notebooks/03_attention.html"])
def test_math_is_rendered_by_the_bundled_mathjax(site, context, path):
    page = _open(context, site[0] + path)
    formulas = page.locator(".math").count()
    assert formulas >= 1, f"{path} has no formula to check"
    assert page.locator(".math mjx-container").count() == formulas, f"{path}: MathJax left formulas unrendered"
    stray = [m.group(0) for m in re.finditer(r".{0,30}\$.{0,30}", page.evaluate(_PROSE_JS))]
    assert not stray, f"{path}: unrendered math: {stray[:3]}"
    page.close()


def test_chapter_shows_figures_and_a_labelled_widget_snapshot(site, context):
    page = _open(context, site[0] + "notebooks/03_attention.html")
    figures = page.locator(".cell_output img")
    assert figures.count() >= 5, "chapter 03 shows fewer than 5 figures"
    label = page.get_by_text(re.compile(r"Interactive in JupyterLab; a snapshot for scale = 1\.0, causal mask = False"))
    assert label.count() == 1, "the attention explorer's snapshot label is missing"
    output = page.locator(".cell_output", has=label)
    assert output.locator("img").count() == 1, "the snapshot shows no figure"
    assert page.get_by_text(re.compile(r"Download this notebook")).first.is_visible()
    label.scroll_into_view_if_needed()
    page.evaluate("() => window.scrollBy(0, 250)")  # the label near the top, the figure below it
    page.screenshot(path=str(ARTIFACTS / "site-chapter.png"))
    page.close()


# Each edition's words on an exercise page: the page, its ✓ line, download link, solution and model-answer labels.
EXERCISE_PAGES = {
    "en": ("exercises/03_attention.html", re.compile("✓ softmax"), "Download the exercise notebook", "Show the solution",
           "Hide the solution", "Model answer"),
    "ko": ("ko/exercises/03_attention.html", re.compile("✓ softmax: .*[가-힣]"), "연습 문제 노트북 내려받기", "풀이 보기",
           "풀이 숨기기", "모범 답안"),
}


@pytest.mark.parametrize("edition", EXERCISE_PAGES)
def test_exercise_solution_hidden_until_clicked_and_checks_visible(site, context, edition):
    path, tick, download, show, hide, model_answer = EXERCISE_PAGES[edition]
    page = _open(context, site[0] + path)
    solution = page.locator("pre", has_text="keepdim=True").first
    assert not solution.is_visible(), "the solution shows before a click"
    assert page.get_by_text(tick).first.is_visible(), f"the checker's ✓ line ({tick.pattern}) is not visible"
    assert page.get_by_text(download).first.is_visible()
    page.get_by_text(show).first.click()
    solution.wait_for(state="visible", timeout=5_000)
    answer = page.locator(".dropdown", has_text=model_answer).first
    assert answer.count(), "no model answer behind a click"
    body = answer.locator("p:not(.admonition-title)").first
    assert not body.is_visible(), "the model answer shows before a click"
    answer.get_by_text(model_answer).first.click()
    body.wait_for(state="visible", timeout=5_000)
    page.get_by_text(hide).first.scroll_into_view_if_needed()  # the opened one
    page.evaluate("() => window.scrollBy(0, 300)")  # the opened solution and the checker's ✓ below it
    page.screenshot(path=str(ARTIFACTS / ("site-exercise.png" if edition == "en" else "site-exercise-ko.png")))
    page.close()


@pytest.mark.parametrize("path", ["glossary.html", "exercises/03_attention.html", "notebooks/00_introduction.html",
                                  "ko/notebooks/03_attention.html", "ko/exercises/03_attention.html"])
def test_hangul_is_drawn_with_the_bundled_font(site, context, path):
    page = _open(context, site[0] + path)
    counts = page.evaluate(_MARK_HANGUL_JS)
    assert len(counts) >= 3, f"{path}: too few Hangul text nodes ({len(counts)}) to check"
    cdp = context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    nodes = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "[data-hangul]"})["nodeIds"]
    wrong = []
    for node in nodes:
        attributes = cdp.send("DOM.getAttributes", {"nodeId": node})["attributes"]  # [name, value, ...]
        index = int(dict(zip(attributes[::2], attributes[1::2]))["data-hangul"])
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        drawn = sum(f["glyphCount"] for f in fonts if f["familyName"] == "CourseHangul" and f["isCustomFont"])
        if drawn < counts[index]:
            wrong.append((counts[index], fonts))
    assert not wrong, f"{path}: {len(wrong)} of {len(nodes)} Hangul text nodes not drawn with CourseHangul: {wrong[:3]}"
    if path == "glossary.html":
        page.screenshot(path=str(ARTIFACTS / "site-glossary.png"))
    page.close()


def test_glossary_links_chapters_and_search_finds_korean(site, context):
    page = _open(context, site[0] + "glossary.html")
    row = page.locator("tr", has_text="어텐션").first
    assert row.locator("a[href*='03_attention']").count() >= 1, "the glossary's 어텐션 does not link chapter 03"
    page.close()
    page = _open(context, site[0] + "search.html?q=" + urllib.request.quote("어텐션"))
    page.locator("#search-results .search-summary", has_text="found").wait_for(timeout=60_000)  # results come one by one
    found = page.locator("#search-results li a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert any("glossary" in h for h in found) and any("03_attention" in h for h in found), found
    assert any("ko/notebooks/03_attention" in h for h in found), f"search finds no Korean page: {found}"
    page.close()


def test_a_korean_chapter_shows_the_english_runs_figures_and_switches_language(site, context):
    page = _open(context, site[0] + "ko/notebooks/03_attention.html")
    assert page.locator("h1").first.inner_text().startswith("03 · "), page.locator("h1").first.inner_text()
    assert "어텐션" in page.locator("main").inner_text()
    assert page.locator(".cell_output img").count() >= 5, "the Korean chapter 03 shows fewer than 5 figures"
    assert page.get_by_text("이 노트북 내려받기").first.is_visible()
    page.get_by_text("English edition").first.click()
    page.wait_for_url("**/notebooks/03_attention.html")
    assert "/ko/" not in page.url and page.get_by_text("Download this notebook").first.is_visible()
    page.get_by_text("한국어판으로").first.click()
    page.wait_for_url("**/ko/notebooks/03_attention.html")
    page.screenshot(path=str(ARTIFACTS / "site-chapter-ko.png"))
    page.close()
