"""``python -m course_lib.training`` in process, on a small corpus: what each ending leaves on disk
and prints (a finished run, Ctrl-C and --resume, a training error, a mismatched resume, an early Ctrl-C)."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from course_lib import training
from course_lib.checkpoint import atomic_save, content_digest, load_checkpoint, weights_fingerprint
from course_lib.corpus import make_splits
from course_lib.progress import progress_path

pytestmark = pytest.mark.usefixtures("one_thread")

_SPLITS = {}


def _small(seed: int):
    if seed not in _SPLITS:
        _SPLITS[seed] = make_splits(seed, n_train=300, n_valid=20, n_test=20)
    return _SPLITS[seed]


@pytest.fixture(autouse=True)
def small_corpus(monkeypatch):
    monkeypatch.setattr(training, "make_splits", _small)


def _argv(out, *extra: str) -> list[str]:
    return ["--out", str(out), "--tiny", "--epochs", "1", "--batch-size", "64", "--quiet", "--float32", *extra]


def test_a_finished_run_writes_the_checkpoint_and_its_meta(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert training.main(_argv(out, "--max-steps", "2", "--seed", "3")) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.meta["steps"] == 2 and ckpt.meta["seed"] == 3 and ckpt.meta["world_size"] == 1
    assert ckpt.meta["train_config"]["max_steps"] == 2 and ckpt.meta["train_config"]["batch_size"] == 64
    assert len(ckpt.meta["valid_loss"]) == 1 and ckpt.meta["valid_loss"][0] > 0
    assert ckpt.model.config == training.model_config("tiny", len(ckpt.src_vocab), len(ckpt.tgt_vocab))
    assert ckpt.model.generator.weight.dtype == torch.float32  # --float32
    assert not progress_path(out).exists()
    printed = capsys.readouterr().out
    assert "training (from step 0)" in printed and f"wrote {out}: 2 steps" in printed


def _ctrl_c_at_call(monkeypatch, n: int):
    """Press Ctrl-C (a real SIGINT to this process) while the n-th loss is computed."""
    real, calls = training.label_smoothing_loss, {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "label_smoothing_loss", loss)


def test_ctrl_c_saves_the_progress_beside_out_and_resume_finishes_the_same_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.pt"
    out.write_bytes(b"the learner's earlier model")
    assert training.main(_argv(out, "--max-steps", "3")) == 0  # the uninterrupted run, for comparison
    straight = load_checkpoint(out)
    out.write_bytes(b"the learner's earlier model")
    capsys.readouterr()

    _ctrl_c_at_call(monkeypatch, 2)
    assert training.main(_argv(out, "--max-steps", "3")) == 130
    printed = capsys.readouterr().out
    saved = progress_path(out)
    assert f"interrupted after step 2: progress saved to {saved}" in printed
    assert saved.is_file() and out.read_bytes() == b"the learner's earlier model"

    monkeypatch.undo()
    monkeypatch.setattr(training, "make_splits", _small)
    assert training.main(_argv(out, "--max-steps", "3", "--resume")) == 0
    assert "training (resumed at step 2)" in capsys.readouterr().out
    resumed = load_checkpoint(out)
    assert resumed.meta["steps"] == 3 and not saved.exists()
    assert weights_fingerprint(resumed.model) == weights_fingerprint(straight.model)


def test_resume_with_other_options_is_refused_naming_them(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.pt"
    _ctrl_c_at_call(monkeypatch, 1)
    assert training.main(_argv(out, "--max-steps", "3")) == 130
    monkeypatch.undo()
    monkeypatch.setattr(training, "make_splits", _small)
    capsys.readouterr()
    assert training.main(_argv(out, "--max-steps", "4", "--resume")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m course_lib.training: error: --resume needs the options of the interrupted run; "
                   "these differ (saved, now): {'max_steps': (3, 4)}"]
    assert progress_path(out).is_file() and not out.exists()  # nothing lost, nothing written


def test_a_progress_file_of_something_else_is_refused(tmp_path, capsys):
    out = tmp_path / "m.pt"

    payload = {"format": "something else", "run": {}}
    atomic_save({**payload, "sha256": content_digest(payload)}, progress_path(out))
    assert training.main(_argv(out, "--resume")) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m course_lib.training: error: ") and "is not a progress file of" in err


def test_a_training_error_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training, "label_smoothing_loss",
                        lambda logits, *a, **k: logits.sum() * float("nan"))  # a loss that is not finite
    out = tmp_path / "m.pt"
    assert training.main(_argv(out, "--max-steps", "2")) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("python -m course_lib.training: error: the loss became nan at step 1")
    assert "Traceback" not in err
    assert not out.exists() and not progress_path(out).exists()


def test_ctrl_c_before_training_saves_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    def interrupted(seed):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "make_splits", interrupted)
    out = tmp_path / "m.pt"
    assert training.main(_argv(out)) == 130
    assert "interrupted; nothing was saved" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
