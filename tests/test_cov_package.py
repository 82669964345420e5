"""The package's small helpers (``set_seed``, ``show_source``), ``python -m course_lib check``'s path errors,
and the exercise generator's rarer cases (a broken solution, an exercise path that is a folder, a failed write)."""
from __future__ import annotations

import os
import random
import sys

import nbformat
import numpy as np
import pytest
import torch

from course_lib import set_seed, show_source
from course_lib.course import cli, exercises
from course_lib.hangul import final_index


def test_set_seed_seeds_python_numpy_and_torch_alike():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    set_seed(7)
    first = draws()
    set_seed(7)
    assert draws() == first
    set_seed(8)
    assert all(a != b for a, b in zip(draws(), first))
    set_seed(2**40)  # beyond NumPy's 32-bit range: reduced, not an error
    for bad, name in (("7", "str"), (7.0, "float"), (None, "NoneType")):
        with pytest.raises(TypeError, match=f"set_seed expects an int, got {name}"):
            set_seed(bad)


def test_show_source_displays_highlighted_code_in_jupyter(monkeypatch, capsys):
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())  # as inside a kernel
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    show_source(final_index)
    assert capsys.readouterr().out == ""
    (code,) = shown
    assert isinstance(code, IPython.display.Code) and "def final_index(word: str) -> int:" in code.data
    assert code._repr_html_().count("final_index") >= 1  # highlighted as HTML


def test_show_source_prints_when_ipython_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "IPython", None)  # `from IPython import ...` raises ImportError
    show_source(final_index)
    assert capsys.readouterr().out.startswith("def final_index(word: str) -> int:")


def test_check_names_a_missing_or_unreadable_notebook_in_one_line(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "missing.ipynb")]) == 2
    assert capsys.readouterr().err == f"error: no such notebook: {tmp_path / 'missing.ipynb'}\n"
    bad = tmp_path / "bad.ipynb"
    bad.write_bytes(b"\xff\xfe not utf-8")
    assert cli.main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad} is not a Jupyter notebook (.ipynb JSON): not valid UTF-8 at byte 0")
    assert cli.main(["check", str(tmp_path / "notes.txt")]) == 2
    assert "expected a Jupyter notebook (.ipynb)" in capsys.readouterr().err


# --- the exercise generator -------------------------------------------------------------------------

def _solution(path, body: str = "    ### BEGIN SOLUTION write f\n    return 2\n    ### END SOLUTION"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Ex"), nbformat.v4.new_code_cell("def f():\n" + body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_a_broken_solution_is_skipped_and_the_other_chapters_are_written(tmp_path):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    _solution(sol / "01_a.ipynb", "    ### BEGIN SOLUTION\n    return 2")  # never closed
    _solution(sol / "02_b.ipynb")
    lines = exercises.write_exercises(sol, ex)
    assert lines[0] == (f"SKIPPED    {ex / '01_a.ipynb'} (its solution {sol / '01_a.ipynb'} cannot be read: "
                        "ValueError: '### BEGIN SOLUTION' is never closed by '### END SOLUTION')")
    assert lines[1] == f"written    {ex / '02_b.ipynb'}" and not (ex / "01_a.ipynb").exists()
    code = nbformat.read(ex / "02_b.ipynb", as_version=4).cells[1].source
    assert code == "def f():\n    raise NotImplementedError('write f')"
    assert cli.main(["make-exercises", "--solutions", str(sol), "--exercises", str(ex)]) == 1  # a SKIPPED line


def test_an_exercise_path_that_is_a_folder_is_kept_not_replaced(tmp_path):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    _solution(sol / "01_a.ipynb")
    (ex / "01_a.ipynb").mkdir(parents=True)
    (ex / "01_a.ipynb" / "mine.txt").write_text("kept", encoding="utf-8")
    (line,) = exercises.write_exercises(sol, ex, force=False)
    assert line.startswith(f"KEPT       {ex / '01_a.ipynb'} (cannot be read (Is a directory)")
    assert (ex / "01_a.ipynb" / "mine.txt").read_text(encoding="utf-8") == "kept"
    assert exercises.unreadable_reason(ex / "01_a.ipynb") == "cannot be read (Is a directory)"


def test_a_failed_write_leaves_the_old_notebook_and_no_temporary_file(tmp_path, monkeypatch):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    _solution(sol / "01_a.ipynb")
    exercises.write_exercises(sol, ex)
    before = (ex / "01_a.ipynb").read_bytes()
    _solution(sol / "01_a.ipynb", "    ### BEGIN SOLUTION now write g\n    return 3\n    ### END SOLUTION")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exercises.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        exercises.write_exercises(sol, ex)
    monkeypatch.undo()
    assert (ex / "01_a.ipynb").read_bytes() == before
    assert sorted(os.listdir(ex)) == ["01_a.ipynb"]
