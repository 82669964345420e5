"""The course as a learner sees it: JupyterLab in headless Chromium, widgets, plots, a checker.

Starts JupyterLab from this virtualenv on 127.0.0.1 (free port, random token) over a temporary
copy of notebooks/, exercises/ and solutions/ with throwaway settings, runtime and workspace
folders, so the repository is never written. Drives it with Debian's ``chromium`` through the
``playwright`` package (``executable_path``, a fresh profile; ``playwright install`` is never
needed). Screenshots go to ``artifacts/screenshots/`` (git-ignored).

Without chromium the tests are skipped with the reason, unless chromium could be installed here
(root with apt-get, as in CI) or ``CI`` is set: then that is a failure, since
``python3 course.py test`` installs it.
"""
from __future__ import annotations

import base64
import io
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

try:
    from playwright.sync_api import expect
except ImportError:  # require_chromium() fails with a clear message
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "screenshots"


def course_file(relpath: str) -> str:
    """``relpath`` if that notebook exists in the checkout; a missing or renamed one fails the test
    (no fallback to another chapter, no skip)."""
    if not (ROOT / relpath).is_file():
        pytest.fail(f"{relpath} is missing (renamed?): the browser test drives it; update the test with the notebook")
    return relpath


# The chapter with the attention explorer (a slider over a heatmap).
# COURSE_BROWSER_CHAPTER=notebooks/NN_x.ipynb drives another one.
CHAPTER = os.environ.get("COURSE_BROWSER_CHAPTER") or "notebooks/03_attention.ipynb"
EXERCISE = "exercises/01_tokens.ipynb"
SOLUTION = ROOT / "solutions" / "01_tokens.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
INSTALL_HINT = ("install Debian's chromium to run the browser test: `sudo apt-get install chromium` "
                "(`python3 course.py test` does it when run as root)")
RUN_TIMEOUT_MS = 420_000  # a whole chapter; generous for a loaded 2-core machine
CONTROLS = ".widget-slider, .widget-dropdown"
_CHECK_CALL = re.compile(r"checks\.ch\d\d\.\w+\(")

# Has the current notebook finished running? Kernel idle, no cell running, and either every code
# cell has an execution count or a cell shows an error (Run All stops at the first error).
_FINISHED_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model || !panel.sessionContext) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  if (Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'))
        .some(p => p.textContent.includes('[*]'))) return false;
  const cells = panel.content.model.cells;
  let allRun = true, error = false;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    if (cell.executionState === 'running') return false;
    if (cell.executionCount === null && cell.sharedModel.getSource().trim()) allRun = false;
    if (cell.outputs.toJSON().some(o => o.output_type === 'error')) error = true;
  }
  return allRun || error;
}"""

_ERRORS_JS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const found = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    for (const o of cell.outputs.toJSON())
      if (o.output_type === 'error') found.push({index: i, ename: o.ename, evalue: o.evalue});
  }
  return found;
}"""

# The first code cell whose source contains `text` and whose output shows an image; -1 if none.
_CELL_WITH_IMAGE_JS = """(text) => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const dom = document.querySelectorAll('.jp-Notebook .jp-Cell');
  for (let i = 0; i < cells.length; i++)
    if (cells.get(i).type === 'code' && cells.get(i).sharedModel.getSource().includes(text)
        && dom[i] && dom[i].querySelector('.jp-OutputArea-output img')) return i;
  return -1;
}"""

# What a widget cell shows below its controls: the images and text of its output widget.
_WIDGET_OUTPUT_JS = """(index) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
  const out = cell && cell.querySelector('.widget-output');
  if (!out) return null;
  const imgs = Array.from(out.querySelectorAll('img'));
  if (imgs.some(img => !img.complete || img.naturalWidth === 0)) return null;
  return imgs.map(img => img.src).join('|') + '||' + out.textContent;
}"""


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _chromium() -> str | None:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def _could_install_chromium() -> bool:
    """Root on a system with apt-get: `python3 course.py test` would have installed chromium."""
    return shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0


def require_chromium() -> str:
    """Chromium's path. Without it: skip with how to install it; fail where it could be there."""
    if expect is None:
        pytest.fail("the playwright package is missing: pip install -e '.[test]' (or python3 course.py setup)")
    path = _chromium()
    if path is None:
        if _ci() or _could_install_chromium():
            pytest.fail(f"chromium is missing although it can be installed here: {INSTALL_HINT}")
        pytest.skip(f"chromium not found; {INSTALL_HINT}")
    return path


@pytest.fixture(scope="module")
def chromium_path() -> str:
    return require_chromium()


@pytest.mark.parametrize("ci, root, outcome", [
    ("true", False, pytest.fail.Exception), ("", True, pytest.fail.Exception), ("", False, pytest.skip.Exception)])
def test_missing_chromium_fails_where_it_can_be_installed_and_skips_elsewhere(monkeypatch, ci, root, outcome):
    monkeypatch.setattr(sys.modules[__name__], "_chromium", lambda: None)
    monkeypatch.setattr(sys.modules[__name__], "_could_install_chromium", lambda: root)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install chromium"):
        require_chromium()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_settings(folder: Path) -> None:
    """Offline and quiet (no news, no update check, no toasts); every cell attached to the page."""
    for plugin, text in (("apputils-extension/notification",
                          '{"fetchNews": "false", "checkForUpdates": false, "doNotDisturbMode": true}'),
                         ("notebook-extension/tracker", '{"windowingMode": "none"}')):
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium_path):
    """A JupyterLab server over a temporary copy of the course; yields (base_url, token, root)."""
    base = tmp_path_factory.mktemp("lab")
    course = base / "course"
    for folder in ("notebooks", "exercises", "solutions"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, course / folder)
    (course / "selfmade").mkdir(parents=True)
    _lab_settings(base / "settings")
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
               JUPYTER_DATA_DIR=str(base / "data"), JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), IPYTHONDIR=str(base / "ipython"),
               JUPYTER_PREFER_ENV_PATH="1", PYTHONUNBUFFERED="1")
    port, token = _free_port(), secrets.token_hex(16)
    log = open(base / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={course}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while True:
        try:
            with direct.open(f"{url}/api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail("JupyterLab did not start:\n" + (base / "jupyterlab.log").read_text()[-3000:])
        time.sleep(0.5)
    yield url, token, course
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(base / "jupyterlab.log", ARTIFACTS.parent / "jupyterlab.log")


def _fontconfig_with_hangul(folder: Path) -> Path:
    """The system's fonts plus the course's NanumGothic, so that Korean markdown renders in
    Chromium (as in a learner's browser) even where no CJK font is installed."""
    from course_lib.viz import hangul_font_path

    conf = folder / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{hangul_font_path().parent}</dir>\n  <cachedir>{folder / 'cache'}</cachedir>\n</fontconfig>\n")
    return conf


@pytest.fixture(scope="module")
def browser(tmp_path_factory, chromium_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("*-FAILED.png"):  # from an earlier run
        stale.unlink()
    fonts = _fontconfig_with_hangul(tmp_path_factory.mktemp("fontconfig"))
    with sync_playwright() as p:
        # A persistent context on a fresh folder = chromium's --user-data-dir, a new profile each run.
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium_path,
            headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900},
            env=dict(os.environ, FONTCONFIG_FILE=str(fonts)))
        context.set_default_timeout(60_000)
        yield context
        context.close()


@pytest.fixture
def page(browser, request):
    page = browser.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)  # set by tests/conftest.py
    if report is None or report.failed:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-FAILED.png"))
    page.close()


# --- driving JupyterLab ---------------------------------------------------------------------

def open_notebook(page, lab, relpath: str) -> None:
    url, token, _ = lab
    page.goto(f"{url}/lab/tree/{relpath}?reset&token={token}")
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(state="visible")
    page.wait_for_function(
        """(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
           return !!(w && w.context && w.context.path.endsWith(name) && w.sessionContext
                     && w.sessionContext.session && w.sessionContext.session.kernel
                     && w.sessionContext.session.kernel.status === 'idle'); }""",
        arg=relpath.rsplit("/", 1)[-1], timeout=90_000)


def run_all(page) -> list[dict]:
    """Run ▸ Run All Cells from the menu, wait until it finished; return the error outputs."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
    page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'))"
                           ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")
    page.wait_for_function(_FINISHED_JS, timeout=RUN_TIMEOUT_MS, polling=250)
    return page.evaluate(_ERRORS_JS)


def save(page) -> None:
    """Ctrl+S, as a learner saves; waits until JupyterLab wrote the file."""
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")


def cell(page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index)


def assert_no_error_shown(page, errors: list[dict], name: str) -> None:
    assert not errors, f"{name}: cells show errors: {errors}"
    shown = page.locator(".jp-Notebook .jp-OutputArea-output").filter(
        has_text=re.compile(r"Traceback \(most recent call last\)|Error displaying widget"))
    assert shown.count() == 0, f"{name}: an output shows an error: {shown.first.text_content()[:500]}"


def assert_figure_shown(page, name: str) -> None:
    images = page.locator(".jp-Notebook .jp-OutputArea-output img[src^='data:image/png']")
    assert images.count() >= 1, f"{name} shows no matplotlib figure"
    ok = images.first.evaluate("img => img.complete && img.naturalWidth > 100 && img.naturalHeight > 50")
    assert ok, f"{name}: the first matplotlib figure did not load as an image"


def widget_cell(page, timeout_ms: int = 30_000) -> tuple[int, str]:
    """(index, kind) of the widget cell to drive; fails on 'Loading widget…' or a text repr.

    Prefers a slider whose output is a plot, then any slider, then a dropdown.
    """
    notebook = page.locator(".jp-Notebook")
    try:
        notebook.locator(CONTROLS).first.wait_for(state="visible", timeout=timeout_ms)
    except Exception:
        text = notebook.text_content()
        stuck = [m for m in ("Loading widget", "interactive(children=", "Error displaying widget") if m in text]
        raise AssertionError(f"no ipywidgets control rendered (page shows {stuck or 'no widget'}); "
                             "is jupyterlab_widgets installed in this environment?") from None
    assert "Loading widget" not in notebook.text_content(), "a widget is stuck at 'Loading widget…'"
    found = page.evaluate("""() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell')).map((c, i) => [i,
        !!c.querySelector('.widget-slider'), !!c.querySelector('.widget-output img'), !!c.querySelector('.widget-dropdown')])""")
    for want in ((lambda s, img, d: s and img), (lambda s, img, d: s), (lambda s, img, d: d)):
        for index, slider, image, dropdown in found:
            if want(slider, image, dropdown):
                return index, "slider" if slider else "dropdown"
    raise AssertionError("no cell holds a slider or a dropdown")


def move_slider(page, owner) -> None:
    """Drag the first slider's handle across its track (to 80 %, or to 20 % if it sits right)."""
    handle = owner.locator(".widget-slider .noUi-handle").first
    track = owner.locator(".widget-slider .noUi-target").first
    handle.scroll_into_view_if_needed()
    h, t = handle.bounding_box(), track.bounding_box()
    assert h and t, "the slider has no size on screen"
    x, y = h["x"] + h["width"] / 2, h["y"] + h["height"] / 2
    goal = 0.8 if (x - t["x"]) / t["width"] < 0.6 else 0.2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(t["x"] + goal * t["width"], y, steps=4)
    page.mouse.up()


def choose_other_option(owner) -> None:
    """Pick another option of the first dropdown (by value: labels show spaces as &nbsp;)."""
    select = owner.locator(".widget-dropdown select").first
    select.scroll_into_view_if_needed()
    current = select.input_value()
    options = [v for v in select.locator("option").evaluate_all("os => os.map(o => o.value)") if v != current]
    assert options, "the dropdown has a single option"
    select.select_option(value=options[len(options) // 2])


def wait_until_settled(page, index: int, before: str, quiet_s: float = 2.0, timeout_s: float = 120) -> str:
    """The widget's output once it differs from ``before`` and stayed the same for ``quiet_s``.

    A drag sends intermediate values; each redraws the plot, so the first change is not the last.
    """
    deadline, last, since = time.monotonic() + timeout_s, None, 0.0
    while time.monotonic() < deadline:
        now = page.evaluate(_WIDGET_OUTPUT_JS, index)
        if now is not None and now != before:
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s and page.evaluate(_FINISHED_JS):
                return now
        time.sleep(0.25)
    raise AssertionError("the widget's output did not change (or never settled) after moving the control")


def wait_for_drawn_figure(page, index: int, timeout_s: float = 60) -> str:
    """The widget's output once it shows one figure with something drawn on it (dark pixels), not a
    blank canvas: drawn with pyplot and plt.show() inside a widget callback, chapter 07's translator
    sometimes showed an empty figure; the chapters' widgets now draw on their own Figure."""
    deadline, dark = time.monotonic() + timeout_s, 0.0
    while time.monotonic() < deadline:
        shown = page.evaluate(_WIDGET_OUTPUT_JS, index)
        images = [src.split(",", 1)[1] for src in (shown or "").split("||")[0].split("|") if src.startswith("data:image/png")]
        if len(images) == 1:
            rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0]))).convert("RGB"))
            dark = float((rgb.max(axis=-1) < 128).mean())
            if dark >= 0.002:
                return shown
        time.sleep(0.5)
    raise AssertionError(f"the widget shows no drawn figure (one image expected; dark pixels {dark:.2%})")


def check_widget_reacts(page, index: int, kind: str, name: str) -> str:
    """Move the control like a learner; the output below it (plot or text) must change."""
    owner = cell(page, index)
    page.wait_for_function(f"(i) => ({_WIDGET_OUTPUT_JS})(i) !== null", arg=index, timeout=30_000)
    before = page.evaluate(_WIDGET_OUTPUT_JS, index)
    readout = owner.locator(".widget-readout").first
    value = readout.text_content() if kind == "slider" else None
    area = owner.locator(".jp-Cell-outputArea")
    area.scroll_into_view_if_needed()
    area.screenshot(path=str(ARTIFACTS / f"{name}-widget-before.png"))
    move_slider(page, owner) if kind == "slider" else choose_other_option(owner)
    after = wait_until_settled(page, index, before)
    if "data:image/png" in before:
        after = wait_for_drawn_figure(page, index)
    area.screenshot(path=str(ARTIFACTS / f"{name}-widget-after.png"))
    if "data:image/png" in before:
        assert after.split("||")[0] != before.split("||")[0], f"{name}: moving the {kind} did not redraw the plot"
    assert after != before
    if kind == "slider":
        assert readout.text_content() != value, f"{name}: the slider still reads {value} after the drag"
    return after


# --- the tests ------------------------------------------------------------------------------

def _selfmade_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A slider that drives a plot"),
        nbformat.v4.new_code_cell(
            "import numpy as np\nfrom IPython.display import display\n"
            "from ipywidgets import Dropdown, FloatSlider, interact\nfrom matplotlib.figure import Figure\n"
            "from course_lib.viz import use_hangul_font\n"
            "use_hangul_font()\nx = np.linspace(0, 2 * np.pi, 200)"),
        nbformat.v4.new_code_cell(
            "def plot(frequency=1.0):\n"
            "    fig = Figure(figsize=(4, 2.5))  # as the chapters' widgets draw\n"
            "    ax = fig.add_subplot()\n"
            "    ax.plot(x, np.sin(frequency * x))\n"
            "    ax.set_title(f'사인 곡선 sin({frequency:.1f} x)')\n"
            "    print(f'frequency = {frequency:.1f}')\n"
            "    display(fig)\n\n"
            "interact(plot, frequency=FloatSlider(value=1.0, min=0.5, max=5.0, step=0.5));"),
        nbformat.v4.new_code_cell(
            "interact(lambda word: print(f'{word} has {len(word)} syllables'),\n"
            "         word=Dropdown(options=['학교', '창문을', '나는', '순이는'], value='학교'));"),
        nbformat.v4.new_code_cell("print('done')"),
    ]
    return nb


def test_a_slider_redraws_its_plot_and_a_dropdown_its_text(lab, page):
    """JupyterLab + ipywidgets + matplotlib in this environment: a slider drives a plot."""
    nbformat.write(_selfmade_notebook(), lab[2] / "selfmade" / "slider.ipynb")
    open_notebook(page, lab, "selfmade/slider.ipynb")
    assert_no_error_shown(page, run_all(page), "selfmade/slider.ipynb")
    index, kind = widget_cell(page)
    assert (index, kind) == (2, "slider")
    after = check_widget_reacts(page, index, kind, "selfmade-slider")
    shown = float(cell(page, index).locator(".widget-readout").first.text_content())
    assert f"frequency = {shown:.1f}" in after, f"the plot is not for the slider's final value {shown}"
    after = check_widget_reacts(page, 3, "dropdown", "selfmade-dropdown")
    chosen = cell(page, 3).locator(".widget-dropdown select").first.input_value()
    assert f"{chosen} has {len(chosen)} syllables" in after and chosen != "학교", after
    expect(cell(page, 4).locator(".jp-OutputArea-output")).to_have_text("done")


def test_chapter_runs_shows_figures_and_its_explorer_reacts(lab, page):
    name = Path(course_file(CHAPTER)).stem
    open_notebook(page, lab, CHAPTER)
    assert_no_error_shown(page, run_all(page), CHAPTER)
    assert_figure_shown(page, CHAPTER)
    heat = page.evaluate(_CELL_WITH_IMAGE_JS, "heatmap(")
    if heat >= 0:  # the nicest picture for the README: an attention map / a heatmap with Hangul labels
        area = cell(page, heat).locator(".jp-OutputArea-output img").first
        area.scroll_into_view_if_needed()
        area.screenshot(path=str(ARTIFACTS / f"{name}-heatmap.png"))
    index, kind = widget_cell(page)
    check_widget_reacts(page, index, kind, name)
    assert_no_error_shown(page, page.evaluate(_ERRORS_JS), CHAPTER)


def _first_exercise(solution: nbformat.NotebookNode) -> tuple[int, str, int]:
    """(index of the first answer cell, the answer code without markers, index of its checker cell)."""
    for i, c in enumerate(solution.cells):
        if c.cell_type == "code" and "### BEGIN SOLUTION" in c.source:
            answer = "\n".join(line for line in c.source.splitlines()
                               if not line.strip().startswith(("### BEGIN SOLUTION", "### END SOLUTION")))
            check = next(j for j in range(i + 1, len(solution.cells))
                         if solution.cells[j].cell_type == "code" and _CHECK_CALL.search(solution.cells[j].source))
            return i, answer, check
    raise AssertionError("the solution notebook has no '### BEGIN SOLUTION' cell")


def test_exercise_filled_in_passes_its_checker_and_is_never_overwritten(lab, page):
    """Type the first answer into exercises/01_tokens.ipynb, Run All, see ✓; save; regenerate: kept."""
    from course_lib.course.exercises import is_untouched, write_exercises

    course = lab[2]
    index, answer, check = _first_exercise(nbformat.read(SOLUTION, as_version=4))
    open_notebook(page, lab, EXERCISE)
    save(page)  # opening and saving in JupyterLab is not an edit
    assert is_untouched(course / EXERCISE), "JupyterLab's save changed the sources of an untouched exercise"
    stub = cell(page, index)
    assert "NotImplementedError" in stub.text_content(), f"cell {index} of {EXERCISE} is not the first stub"
    stub.locator(".cm-content").click()  # as a learner: click into the cell, select all, paste the answer
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(answer)
    page.wait_for_function("([i, text]) => window.jupyterapp.shell.currentWidget.content.model.cells.get(i)"
                           ".sharedModel.getSource() === text", arg=[index, answer])
    errors = run_all(page)
    early = [e for e in errors if e["index"] <= check]
    assert not early, f"{EXERCISE}: cells up to the first checker show errors: {early}"
    assert all(e["ename"] == "NotImplementedError" for e in errors), errors  # Run All stops at the next stub
    checker = cell(page, check)
    checker.scroll_into_view_if_needed()
    expect(checker.locator(".jp-OutputArea-output").first).to_contain_text(re.compile(r"(^|\n)✓ "), timeout=10_000)
    page.evaluate("(i) => document.querySelectorAll('.jp-Notebook .jp-Cell')[i].scrollIntoView({block: 'center'})", index)
    page.locator(".jp-NotebookPanel").screenshot(path=str(ARTIFACTS / f"{Path(EXERCISE).stem}-exercise-check.png"))
    save(page)
    mine = (course / EXERCISE).read_bytes()
    assert nbformat.read(course / EXERCISE, as_version=4).cells[index].source == answer
    assert not is_untouched(course / EXERCISE)
    report = write_exercises(course / "solutions", course / "exercises")
    assert any(line.startswith("KEPT") and line.endswith("(you edited it; --force regenerates it after a backup)")
               and Path(EXERCISE).name in line for line in report), report
    assert (course / EXERCISE).read_bytes() == mine


def test_without_the_widget_extension_the_test_fails_clearly(lab, page):
    """The negative control: JupyterLab without jupyterlab_widgets' extension shows the widget's
    text form instead of a slider, and widget_cell() says so (what a learner would see)."""
    page_config = lab[2].parent / "config" / "labconfig" / "page_config.json"
    page_config.parent.mkdir(parents=True, exist_ok=True)
    page_config.write_text('{"disabledExtensions": {"@jupyter-widgets/jupyterlab-manager": true}}')
    try:
        nbformat.write(_selfmade_notebook(), lab[2] / "selfmade" / "no_widgets.ipynb")
        open_notebook(page, lab, "selfmade/no_widgets.ipynb")  # the page reads the config on load
        assert_no_error_shown(page, run_all(page), "selfmade/no_widgets.ipynb")
        with pytest.raises(AssertionError, match=r"no ipywidgets control rendered .*interactive\(children="):
            widget_cell(page, timeout_ms=3_000)
    finally:
        page_config.unlink()


TRANSLATION = ROOT / "notebooks" / "07_translation.ipynb"
_TRAIN_CONFIG = "cfg = training.CHAPTER07_TRAIN\n"
_QUICK_CONFIG = "cfg = dataclasses.replace(training.CHAPTER07_TRAIN, max_steps=30)\n"  # the chapter imports dataclasses
_USE_OWN = "USE_SHIPPED = False"


def _quick_translation_chapter() -> nbformat.NotebookNode:
    """Chapter 07 with its training cut to 30 steps, as on a learner's slow CPU, and the learner's explicit
    choice to go on with the shipped checkpoint (``USE_SHIPPED = True``): the rest runs in about a minute."""
    nb = nbformat.read(ROOT / course_file(TRANSLATION.relative_to(ROOT).as_posix()), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and _TRAIN_CONFIG in c.source]
    assert len(cells) == 1, f"{TRANSLATION.name} no longer sets `{_TRAIN_CONFIG.strip()}` in one cell; update this test"
    cells[0].source = cells[0].source.replace(_TRAIN_CONFIG, _QUICK_CONFIG)
    switch = [c for c in nb.cells if c.cell_type == "code" and _USE_OWN in c.source]
    assert len(switch) == 1, f"{TRANSLATION.name} no longer sets `{_USE_OWN}` in one cell; update this test"
    switch[0].source = switch[0].source.replace(_USE_OWN, "USE_SHIPPED = True")
    return nb


def test_the_translator_translates_what_a_learner_types(lab, page):
    """Chapter 07 in the browser, its training cut short so the shipped checkpoint takes over;
    type a sentence into the translator widget and press Enter: its translation and attention map
    appear; pick another layer: the map is redrawn."""
    name = "selfmade/07_translation_quick.ipynb"
    nbformat.write(_quick_translation_chapter(), lab[2] / name)
    open_notebook(page, lab, name)
    assert_no_error_shown(page, run_all(page), name)
    expect(page.locator(".jp-Notebook")).to_contain_text("training stopped at its limit")
    expect(page.locator(".jp-Notebook")).to_contain_text("the chapter describes the shipped checkpoint")
    translator = page.locator(".jp-Notebook .jp-Cell").filter(has=page.locator(".widget-text input"))
    assert translator.count() == 1, "chapter 07 should have exactly one cell with a text box (the translator)"
    index = page.evaluate("() => Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'))"
                          ".findIndex(c => c.querySelector('.widget-text input'))")
    page.wait_for_function(f"(i) => ({_WIDGET_OUTPUT_JS})(i) !== null", arg=index, timeout=30_000)
    before = page.evaluate(_WIDGET_OUTPUT_JS, index)
    assert "translation: 나는 파리에서 태어났다." in before, before[-300:]
    box = translator.locator(".widget-text input").first
    for sentence, korean in (("I like cats.", "나는 고양이가 좋다."), ("Suni closed the window.", "순이는 창문을 닫았다."),
                             ("The cat drank the milk because it was hungry.", "고양이는 배가 고파서 우유를 마셨다.")):
        box.scroll_into_view_if_needed()
        box.click()
        page.keyboard.press("Control+a")
        page.keyboard.type(sentence)
        page.keyboard.press("Enter")
        typed = wait_until_settled(page, index, before)
        assert f"translation: {korean}" in typed, typed[-300:]
        before = typed = wait_for_drawn_figure(page, index)
    translator.locator(".jp-Cell-outputArea").screenshot(path=str(ARTIFACTS / "07_translation-translator.png"))
    choose_other_option(translator)  # the layer dropdown
    wait_until_settled(page, index, typed)
    other = wait_for_drawn_figure(page, index)
    assert other.split("||")[0] != typed.split("||")[0], "choosing another layer did not redraw the attention map"
    assert "translation: 고양이는 배가 고파서 우유를 마셨다." in other
    assert_no_error_shown(page, page.evaluate(_ERRORS_JS), name)
