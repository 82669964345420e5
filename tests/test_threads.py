"""The course's one thread policy: one thread for small work; for training, one thread per free physical core, capped."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import course_lib
from course_lib import TRAINING_THREAD_CAP, set_threads, thread_count, usable_cores


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, load", [(1, 0.0), (2, 0.0), (8, 0.0), (2, 9.0), (64, 100.0), (16, 0.3)])
def test_small_work_always_gets_one_thread(cores, load):
    assert thread_count("small", cores, load) == 1


@pytest.mark.parametrize("cores, load, expected", [
    (2, 0.0, 2), (2, 0.5, 2),  # an idle 2-core laptop: 2 threads (63 vs 98 ms a step, measured)
    (2, 1.0, 2), (2, 1.5, 2),  # the load of this kernel's own previous cells (about 1) still leaves a core
    (2, 1.6, 1), (2, 1.8, 1), (2, 1.9, 1), (2, 10.0, 1),  # another program takes a core: a 2nd thread waits for it
    (1, 0.0, 1), (1, 5.0, 1),  # one usable core (taskset, a container limit)
])
def test_two_core_rows_are_the_measured_rule_unchanged(cores, load, expected):
    assert thread_count("training", cores, load) == expected


@pytest.mark.parametrize("load", [x / 20 for x in range(0, 80)])
def test_on_two_cores_the_rule_is_exactly_the_old_one(load):
    assert thread_count("training", 2, load) == (2 if 2 - load >= 0.5 else 1)


@pytest.mark.parametrize("cores, load, expected", [
    # Changed by issue 22: these rows used to be capped at 2 ((8, 1.0) → 2); now free cores are used.
    (8, 0.0, 8), (8, 1.0, 8),  # an idle 8-core laptop (the load of our own kernel is about 1)
    (8, 3.0, 6), (8, 6.4, 3),  # other programs take about load - 1 cores
    (8, 7.5, 2), (8, 7.6, 1), (8, 30.0, 1),  # no core left free: one thread, as on 2 cores
    (4, 0.0, 4), (4, 2.5, 3), (3, 0.0, 3),
    (16, 3.0, TRAINING_THREAD_CAP), (16, 0.3, TRAINING_THREAD_CAP), (64, 0.0, TRAINING_THREAD_CAP),
    (16, 10.0, 7), (16, 16.0, 1),
])
def test_training_gets_one_thread_per_free_core_up_to_the_cap(cores, load, expected):
    assert thread_count("training", cores, load) == expected


def test_idle_eight_cores_get_at_least_four_and_the_cap_is_eight():
    assert thread_count("training", 8, 0.0) >= 4 and thread_count("training", 8, 1.0) >= 4
    assert TRAINING_THREAD_CAP == 8
    assert max(thread_count("training", c, 0.0) for c in range(1, 200)) == TRAINING_THREAD_CAP


def test_bad_workload_is_named():
    with pytest.raises(ValueError, match="'small' or 'training'"):
        thread_count("big", 2, 0.0)
    with pytest.raises(ValueError, match="'small' or 'training'"):
        set_threads(1)


def _fake_sys(root: Path, topology: dict[int, tuple[int, int] | None], cpu_max: str | None = None) -> Path:
    """A /sys tree: CPU n → (physical_package_id, core_id), or None for a CPU without topology files."""
    for n, ids in topology.items():
        folder = root / "devices" / "system" / "cpu" / f"cpu{n}" / "topology"
        folder.mkdir(parents=True)
        if ids is not None:
            (folder / "physical_package_id").write_text(f"{ids[0]}\n")
            (folder / "core_id").write_text(f"{ids[1]}\n")
    if cpu_max is not None:
        (root / "fs" / "cgroup").mkdir(parents=True)
        (root / "fs" / "cgroup" / "cpu.max").write_text(cpu_max + "\n")
    return root


def test_usable_cores_counts_physical_cores_of_the_allowed_cpus(tmp_path):
    # 4 logical CPUs on 2 physical cores (hyper-threading: CPUs 0 and 2 share core 0, 1 and 3 core 1)
    root = _fake_sys(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    assert usable_cores({0, 1, 2, 3}, sys_root=root) == 2
    assert usable_cores({0, 2}, sys_root=root) == 1  # taskset to one core's two hyper-threads
    assert usable_cores({0, 1}, sys_root=root) == 2


def test_usable_cores_tells_packages_apart(tmp_path):
    # two sockets whose cores have the same core_id: 4 physical cores
    root = _fake_sys(tmp_path, {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)})
    assert usable_cores(range(4), sys_root=root) == 4


def test_usable_cores_falls_back_to_logical_cpus_without_topology(tmp_path):
    assert usable_cores({0, 1, 2, 3, 4, 5}, sys_root=tmp_path / "missing") == 6  # macOS, Windows, no /sys
    root = _fake_sys(tmp_path, {0: (0, 0), 1: (0, 0), 2: None})  # one CPU unreadable: count logical
    assert usable_cores({0, 1, 2}, sys_root=root) == 3


@pytest.mark.parametrize("cpu_max, expected", [
    ("max 100000", 4),  # no quota
    ("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1),  # quota / period, rounded up
    ("800000 100000", 4),  # a quota above the cores does not add any
    ("garbage", 4), ("", 4),  # unreadable: ignored
])
def test_usable_cores_respects_the_cgroup_quota(tmp_path, cpu_max, expected):
    root = _fake_sys(tmp_path, {n: (0, n) for n in range(4)}, cpu_max=cpu_max)
    assert usable_cores(range(4), sys_root=root) == expected


def test_usable_cores_reads_this_machine():
    cores = usable_cores()
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    assert 1 <= cores <= logical


def test_set_threads_reads_affinity_and_load_and_sets_torch(monkeypatch, restore_threads):
    monkeypatch.setattr(course_lib, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0), raising=False)
    assert set_threads("training") == 2 and torch.get_num_threads() == 2
    assert set_threads("small") == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 0.0, 0.0), raising=False)
    assert set_threads("training") == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(course_lib, "usable_cores", lambda: 6)
    assert set_threads("training") == 4 and torch.get_num_threads() == 4
    monkeypatch.setattr(course_lib, "usable_cores", lambda: 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    assert set_threads("training") == 1


def test_set_threads_counts_physical_cores_of_the_affinity(monkeypatch, tmp_path, restore_threads):
    # 4 logical CPUs on 2 cores, idle: 2 threads, not 4
    root = _fake_sys(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    real = usable_cores
    monkeypatch.setattr(course_lib, "usable_cores", lambda: real(sys_root=root))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    assert set_threads("training") == 2 and torch.get_num_threads() == 2


def test_without_getloadavg_the_machine_counts_as_idle(monkeypatch, restore_threads):
    monkeypatch.delattr(os, "getloadavg", raising=False)
    monkeypatch.setattr(course_lib, "usable_cores", lambda: 4)
    assert set_threads("training") == 4


def test_course_threads_overrides_training_only(monkeypatch, restore_threads):
    monkeypatch.setattr(course_lib, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0), raising=False)  # the rule would say 1
    monkeypatch.setenv("COURSE_THREADS", "3")
    assert set_threads("training") == 3 and torch.get_num_threads() == 3
    assert set_threads("small") == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("COURSE_THREADS", " 1 ")
    assert set_threads("training") == 1
    monkeypatch.setenv("COURSE_THREADS", "")  # empty: the rule
    assert set_threads("training") == 1


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", "²", "4x"])
def test_a_bad_course_threads_is_named_before_anything_changes(monkeypatch, restore_threads, bad):
    torch.set_num_threads(1)
    monkeypatch.setenv("COURSE_THREADS", bad)
    for workload in ("training", "small"):
        with pytest.raises(ValueError, match=r"COURSE_THREADS must be a positive integer.*got") as caught:
            set_threads(workload)
        assert repr(bad.strip()) in str(caught.value)
    assert torch.get_num_threads() == 1


def test_the_policy_is_documented_in_the_troubleshooting_page():
    text = (Path(course_lib.__file__).resolve().parents[1] / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert "set_threads" in text and "training" in text
    assert "COURSE_THREADS" in text and "physical" in text and f"{TRAINING_THREAD_CAP} threads" in text
    assert "63 ms" in text and "98 ms" in text and "1.4–5.5 s" in text
