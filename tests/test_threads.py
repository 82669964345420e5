"""The course's one thread policy: one thread for small work, two for training only when cores are free."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import course_lib
from course_lib import set_threads, thread_count


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, load", [(1, 0.0), (2, 0.0), (8, 0.0), (2, 9.0), (64, 100.0)])
def test_small_work_always_gets_one_thread(cores, load):
    assert thread_count("small", cores, load) == 1


@pytest.mark.parametrize("cores, load, expected", [
    (2, 0.0, 2), (2, 0.5, 2),  # an idle 2-core laptop: 2 threads (63 vs 98 ms a step, measured)
    (2, 1.0, 2), (2, 1.5, 2),  # the load of this kernel's own previous cells (about 1) still leaves a core
    (2, 1.6, 1), (2, 1.9, 1), (2, 10.0, 1),  # another program takes a core: a 2nd thread waits for it
    (1, 0.0, 1),  # one usable core (taskset, a container limit)
    (8, 1.0, 2), (8, 7.5, 2), (8, 7.6, 1), (8, 30.0, 1),
])
def test_training_gets_two_threads_only_when_about_two_cores_are_free(cores, load, expected):
    assert thread_count("training", cores, load) == expected


def test_bad_workload_is_named():
    with pytest.raises(ValueError, match="'small' or 'training'"):
        thread_count("big", 2, 0.0)
    with pytest.raises(ValueError, match="'small' or 'training'"):
        set_threads(1)


def test_set_threads_reads_affinity_and_load_and_sets_torch(monkeypatch, restore_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0), raising=False)
    assert set_threads("training") == 2 and torch.get_num_threads() == 2
    assert set_threads("small") == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 0.0, 0.0), raising=False)
    assert set_threads("training") == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    assert set_threads("training") == 1


def test_without_getloadavg_the_machine_counts_as_idle(monkeypatch, restore_threads):
    monkeypatch.delattr(os, "getloadavg", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert set_threads("training") == 2


def test_the_policy_is_documented_in_the_troubleshooting_page():
    text = (Path(course_lib.__file__).resolve().parents[1] / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert "set_threads" in text and "training" in text
