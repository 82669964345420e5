"""The pass marker a checker emits for ``python -m course_lib check``: only inside a kernel of a check
run (a token in the environment), only on success, carrying the checker's name and the run's token."""
from __future__ import annotations

import pytest
import torch

from course_lib.course import checks


def pad_batch(id_lists, pad_id):
    longest = max(map(len, id_lists))
    return torch.tensor([x + [pad_id] * (longest - len(x)) for x in id_lists])


@pytest.fixture
def shown(monkeypatch):
    import IPython
    import IPython.display

    seen: list = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())  # as inside a kernel
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, metadata=None: seen.append((obj, raw, metadata)))
    return seen


def test_a_passing_check_in_a_check_run_emits_its_name_and_the_token(monkeypatch, shown, capsys):
    monkeypatch.setattr(checks, "_RUN_TOKEN", "t0k3n")
    checks.ch01.pad_batch(pad_batch)
    assert shown == [({"text/plain": ""}, True, {"course_check": {"name": "ch01.pad_batch", "token": "t0k3n"}})]
    assert "✓" in capsys.readouterr().out  # the learner still sees the tick


def test_a_failing_check_emits_nothing(monkeypatch, shown):
    monkeypatch.setattr(checks, "_RUN_TOKEN", "t0k3n")
    with pytest.raises(checks.CheckFailed):
        checks.ch01.pad_batch(lambda ids, pad: torch.tensor([x[:1] for x in ids]))
    assert shown == []


def test_no_marker_outside_a_check_run_or_outside_a_kernel(monkeypatch, shown):
    import IPython

    monkeypatch.setattr(checks, "_RUN_TOKEN", "")
    checks.ch01.pad_batch(pad_batch)
    assert shown == []
    monkeypatch.setattr(checks, "_RUN_TOKEN", "t0k3n")
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # a plain Python process
    checks.ch01.pad_batch(pad_batch)
    assert shown == []
