"""Fault injection (issue 12): kills during a save, concurrent saves, Ctrl-C and resume, flipped bits,
malformed checkpoints and bad command-line arguments. Each must end in the old file, one whole file,
the same weights as an uninterrupted run, or a named error; never a silent wrong answer."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from course_lib import training
from course_lib.checkpoint import (
    FORMAT,
    PRETRAINED_PATH,
    CheckpointError,
    atomic_save,
    checkpoint_payload,
    content_digest,
    load_checkpoint,
    load_pretrained,
    save_checkpoint,
    verified_load,
    weights_fingerprint,
)
from course_lib.model import Transformer, TransformerConfig
from course_lib.training import (
    TrainConfig,
    TrainingError,
    TrainingInterrupted,
    build_vocabs,
    encode_pairs,
    label_smoothing_loss,
    make_batches,
    make_optimizer,
    noam_lr,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("I go to school.", "나는 학교에 간다."), ("Suni closed the window.", "순이는 창문을 닫았다."),
         ("She closed the drawer.", "그녀는 서랍을 닫았다."), ("I like cats.", "나는 고양이가 좋다."),
         ("I was born in Paris.", "나는 파리에서 태어났다."), ("He closed his heart.", "그는 마음을 닫았다.")]
SHIPPED_FP16_FINGERPRINT = "62510af127835d6db998f307051edef313d48e778aa32c74ede8f951d13e948c"  # as trained (--epochs 8)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vocabs():
    return build_vocabs(PAIRS)


def model_of(vocabs, seed: int = 0, **changes) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig.tiny(len(vocabs[0]), len(vocabs[1]), **changes))


def _fork(work) -> int:
    """A child process that runs ``work()`` and exits (fork: no second torch import). It only writes files."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


# --- 1. kills during a save, concurrent saves ------------------------------------------------

def test_sigkill_at_random_moments_of_an_overwrite_always_leaves_a_loadable_checkpoint(tmp_path, vocabs):
    path = tmp_path / "model.pt"
    payloads = [checkpoint_payload(model_of(vocabs, s, d_model=64, d_ff=1024), *vocabs, meta={"version": s})
                for s in range(3)]  # ~0.5 MB each: a save takes long enough to be hit
    atomic_save(payloads[0], path)
    allowed, mid_save, rng = {p["sha256"] for p in payloads}, 0, random.Random(12)
    for trial in range(10):
        def overwrite_forever() -> None:
            for i in range(10**6):
                atomic_save(payloads[i % 3], path)
        pid = _fork(overwrite_forever)
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        leftovers = list(tmp_path.glob(".model.pt.*.tmp"))
        mid_save += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        data = verified_load(path)  # whole, and its digest matches
        assert data["sha256"] in allowed, trial
        assert load_checkpoint(path).meta["version"] in (0, 1, 2)
    assert mid_save >= 1, "no kill landed inside a save: the test did not exercise the window"


def test_an_exception_during_a_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, vocabs, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", model_of(vocabs, 1), *vocabs, meta={"v": 1})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model_of(vocabs, 2), *vocabs, meta={"v": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_two_concurrent_savers_leave_one_writers_whole_file(tmp_path, vocabs):
    path = tmp_path / "shared.pt"
    payloads = [checkpoint_payload(model_of(vocabs, s, d_model=64, d_ff=1024), *vocabs, meta={"writer": s})
                for s in (0, 1)]
    digests = {payloads[0]["sha256"]: 0, payloads[1]["sha256"]: 1}
    atomic_save(payloads[0], path)
    for round_ in range(3):
        go = tmp_path / f"go{round_}"

        def writer(payload: dict, go: Path = go) -> None:
            while not go.exists():
                time.sleep(0.001)
            for _ in range(15):
                atomic_save(payload, path)
        pids = [_fork(lambda p=p: writer(p)) for p in payloads]
        go.touch()
        running, reads, codes = set(pids), 0, []
        while running:
            assert verified_load(path)["sha256"] in digests  # every read, mid-race, is one writer's whole file
            reads += 1
            for pid in list(running):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    running.discard(pid)
                    codes.append(os.waitstatus_to_exitcode(status))
        assert reads >= 1 and codes == [0, 0]  # both writers saved 15 times without an error
        final = verified_load(path)
        assert final["sha256"] in digests
        model = load_checkpoint(path).model
        expected = checkpoint_payload(model, *vocabs, meta=final["meta"])
        written = payloads[digests[final["sha256"]]]["state_dict"]
        assert weights_fingerprint(expected["state_dict"]) == weights_fingerprint(written)
    assert not list(tmp_path.glob("*.tmp"))


# --- 2. flipped bits ---------------------------------------------------------------------------

def _tensor_data_spans(path: Path) -> list[tuple[int, int]]:
    """(offset, size) in the file of each stored tensor's bytes (torch.save writes them uncompressed)."""
    spans = []
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size:
                f.seek(info.header_offset + 26)
                name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
                spans.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return spans


@pytest.mark.parametrize("seed", range(5))
def test_flipped_bytes_in_the_weights_are_rejected(tmp_path, vocabs, seed):
    path = save_checkpoint(tmp_path / "m.pt", model_of(vocabs, seed), *vocabs, half=bool(seed % 2))
    raw, rng = bytearray(path.read_bytes()), random.Random(seed)
    spans = _tensor_data_spans(path)
    for _ in range(64 if seed < 4 else 1):  # 64 flipped bytes, or one flipped bit
        start, size = rng.choice(spans)
        raw[start + rng.randrange(size)] ^= 0xFF if seed < 4 else 0x01
    (tmp_path / "flipped.pt").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="changed or damaged"):
        load_checkpoint(tmp_path / "flipped.pt")


def test_flipped_bytes_anywhere_are_a_checkpoint_error(tmp_path, vocabs):
    path = save_checkpoint(tmp_path / "m.pt", model_of(vocabs), *vocabs, meta={"note": "x" * 50})
    good, rng = path.read_bytes(), random.Random(0)
    for trial in range(10):
        raw = bytearray(good)
        for _ in range(8):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        (tmp_path / "bad.pt").write_bytes(bytes(raw))
        try:
            load_checkpoint(tmp_path / "bad.pt")
        except CheckpointError:
            continue
        pytest.fail(f"trial {trial}: 8 flipped bits loaded without error")  # pragma: no cover


def test_the_shipped_checkpoint_verifies_and_keeps_its_trained_weights():
    data = verified_load(PRETRAINED_PATH)
    assert data["format"] == FORMAT and data["sha256"] == content_digest(data)
    assert {v.dtype for v in data["state_dict"].values()} == {torch.float16}
    assert weights_fingerprint(data["state_dict"]) == SHIPPED_FP16_FINGERPRINT  # bit for bit the trained weights
    meta = load_pretrained().meta
    assert "replica_sha256" not in meta and len(meta["replica_float32_sha256"]) == 1  # float32, not the file's float16


# --- 3. malformed checkpoints: each a named CheckpointError ------------------------------------

def _edit(data: dict, key: str, value) -> None:
    where = data
    *path, last = key.split(".", 1)  # "state_dict.src_embed.weight": the entry "src_embed.weight" of state_dict
    for part in path:
        where = where[part]
    if value is KeyError:
        del where[last]
    else:
        where[last] = value


MALFORMED = [  # (what to change, value, the error must say)
    ("config.attention_dropout", "0.1", "config attention_dropout must be a float"),
    ("config.ffn_dropout", 1.5, r"ffn_dropout must be a float in \[0, 1\)"),
    ("config.d_ff", 2**40, r"d_ff=1099511627776 is outside 1\.\.65536"),
    ("config.d_model", 2**30, "d_model=.* is outside"),
    # in bounds, but not this file:
    ("config.d_ff", 60000, "a model of at least 15,386,560 weights, the file stores 44,736 numbers"),
    ("config.src_vocab_size", 0, "src_vocab_size=0 is outside"),
    ("config.pad_id", 5, "pad_id=5.*mask real tokens"),
    ("config.pad_id", -1, "pad_id.*-1"),
    ("config.d_model", "32", "d_model must be a int, got str"),
    ("config.n_layers", True, "n_layers must be a int, got bool"),
    ("config.dropout", float("nan"), "dropout must be a float"),
    ("config.n_heads", 5, "invalid config: d_model .* divisible by n_heads"),
    ("config.src_vocab_size", KeyError, r"missing \['src_vocab_size'\]"),
    ("config.flash", True, r"unknown \['flash'\]"),
    ("special_ids.bos", 3, "special_ids .* differ"),
    ("special_ids", [0, 1, 2, 3], "'special_ids' must be a dict .*got a list"),
    ("src_vocab.itos", ["<pad>", "<bos>", "<eos>", "<unk>", 7], "list of str tokens"),
    ("tgt_vocab.itos", ["<bos>", "<pad>", "<eos>", "<unk>"], "tgt_vocab: a Vocab starts with"),
    ("state_dict.generator.weight", [1.0, 2.0], r"must be tensors; \['generator.weight'\] are list"),
    ("state_dict.src_embed.weight", torch.zeros(3, 3), "do not fit the saved config.*src_embed.weight"),
    ("state_dict.src_embed.weight", None, "must be tensors"),
    ("meta", ["a", "list"], "'meta' must be a dict .*got a list"),
    ("meta", KeyError, r"lacks the entries \['meta'\]"),
    ("state_dict", KeyError, r"lacks the entries \['state_dict'\]"),
    ("format", "course_lib.translator/9", "not a course_lib translator checkpoint"),
]


@pytest.mark.parametrize("key,value,message", MALFORMED, ids=[f"{k}={str(v)[:20]}" for k, v, _ in MALFORMED])
def test_each_malformed_checkpoint_is_a_named_error(tmp_path, vocabs, key, value, message):
    data = checkpoint_payload(model_of(vocabs), *vocabs)
    _edit(data, key, value)
    data["sha256"] = content_digest(data)  # a well-formed file says what it holds: the checks must still refuse it
    torch.save(data, tmp_path / "bad.pt")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "bad.pt")
    assert time.perf_counter() - start < 10  # refused before any large allocation


@pytest.mark.parametrize("case", ["text", "truncated", "empty", "folder", "missing", "no digest", "format 1",
                                  "a tensor", "wrong digest"])
def test_files_that_are_not_checkpoints_are_named_errors(tmp_path, vocabs, case):
    good = save_checkpoint(tmp_path / "good.pt", model_of(vocabs), *vocabs)
    bad = tmp_path / "bad.pt"
    data = torch.load(good, weights_only=True)
    make = {"text": lambda: bad.write_text("not a checkpoint"), "truncated": lambda: bad.write_bytes(good.read_bytes()[:3000]),
            "empty": lambda: bad.write_bytes(b""), "folder": lambda: bad.mkdir(), "missing": lambda: None,
            "no digest": lambda: torch.save({k: v for k, v in data.items() if k != "sha256"}, bad),
            "format 1": lambda: torch.save({**data, "format": "course_lib.translator/1"}, bad),
            "a tensor": lambda: torch.save(torch.zeros(3), bad),
            "wrong digest": lambda: torch.save({**data, "meta": {"edited": True}}, bad)}
    make[case]()
    message = {"text": "not a readable", "truncated": "not a readable", "empty": "not a readable",
               "folder": "it is a folder", "missing": "no checkpoint at", "no digest": "no 'sha256'",
               "format 1": "older course_lib", "a tensor": "no 'sha256'", "wrong digest": "changed or damaged"}[case]
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)


# --- 4. training: interrupted and resumed equals uninterrupted ----------------------------------

def _interrupt_at(monkeypatch, call: int) -> None:
    """Send ourselves SIGINT (a Ctrl-C) during the loss of training step ``call``: deterministic."""
    calls = {"n": 0}
    real = training.label_smoothing_loss

    def loss(*args, **kwargs):
        calls["n"] += torch.is_grad_enabled()  # training steps only, not the validation (no_grad)
        if calls["n"] == call and torch.is_grad_enabled():
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "label_smoothing_loss", loss)


@pytest.mark.parametrize("stop_at", [1, 4, 6, 9])  # first step, mid-epoch, an epoch's last step, the last step
def test_ctrl_c_then_resume_gives_the_uninterrupted_weights(vocabs, monkeypatch, stop_at):
    batches = make_batches(encode_pairs(PAIRS, *vocabs), batch_size=2)  # 3 batches an epoch
    config = TrainConfig(epochs=4, warmup=3, lr_factor=0.5, device="cpu", seed=3, average_last=2, max_steps=9)
    reference = model_of(vocabs, dropout=0.1)
    expected = train(reference, batches, batches, config, progress=False)
    _interrupt_at(monkeypatch, stop_at)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(model_of(vocabs, dropout=0.1), batches, batches, config, progress=False, interruptible=True)
    progress = stopped.value.progress
    assert progress["history"]["steps"] == stop_at  # the step in progress was finished, nothing more
    monkeypatch.undo()
    resumed_model = model_of(vocabs, seed=99, dropout=0.1)  # any start: the progress replaces it
    history = train(resumed_model, batches, batches, config, progress=False, resume=progress)
    assert history["loss"] == expected["loss"] and history["valid_loss"] == expected["valid_loss"]
    assert history["steps"] == expected["steps"] == 9
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name]), name


def test_a_second_ctrl_c_stops_at_once(vocabs, monkeypatch):
    batches = make_batches(encode_pairs(PAIRS, *vocabs), batch_size=2)
    calls = {"n": 0}
    real = training.label_smoothing_loss

    def loss(*args, **kwargs):
        calls["n"] += 1
        os.kill(os.getpid(), signal.SIGINT)
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "label_smoothing_loss", loss)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(model_of(vocabs), batches, None, TrainConfig(epochs=2, warmup=2, device="cpu"), progress=False,
              interruptible=True)
    assert not isinstance(stopped.value, TrainingInterrupted)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored


def _cli(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return ["--out", str(tmp_path / name), "--tiny", "--max-steps", "12", "--batch-size", "256", "--quiet",
            "--float32", "--threads", "1", *extra]  # one thread: the default policy follows the load, and the last bits too


@pytest.mark.slow
def test_the_command_saves_progress_on_sigint_and_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    out = tmp_path / "run.pt"
    out.write_bytes(b"a previous checkpoint the learner keeps")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "course_lib.training", *_cli(tmp_path, "run.pt")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # printed once Ctrl-C is caught: training has started
    assert "Ctrl-C" in line, line + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stdout + stderr
    assert "progress saved" in stdout and "Traceback" not in stderr
    assert out.read_bytes() == b"a previous checkpoint the learner keeps"  # never over --out
    saved = training.progress_path(out)
    assert saved.is_file() and 1 <= verified_load(saved)["progress"]["history"]["steps"] < 12
    splits = training.make_splits(0)
    monkeypatch.setattr(training, "make_splits", lambda seed: splits)  # made once for both runs below
    threads = torch.get_num_threads()
    try:
        assert training.main(_cli(tmp_path, "run.pt", "--resume")) == 0
        assert training.main(_cli(tmp_path, "straight.pt")) == 0
    finally:
        torch.set_num_threads(threads)
    assert not saved.exists()  # used up
    resumed, straight = load_checkpoint(out), load_checkpoint(tmp_path / "straight.pt")
    assert resumed.meta["steps"] == straight.meta["steps"] == 12
    assert weights_fingerprint(resumed.model) == weights_fingerprint(straight.model)


# --- 5. training errors that name the problem -------------------------------------------------

def test_a_non_finite_loss_stops_training_naming_the_step(vocabs):
    batches = make_batches(encode_pairs(PAIRS, *vocabs), batch_size=2)
    model = model_of(vocabs)
    with torch.no_grad():
        model.generator.weight[5, 3] = float("nan")
    with pytest.raises(TrainingError, match=r"loss became nan at step 1 \(epoch 1"):
        train(model, batches, None, TrainConfig(epochs=2, device="cpu"), progress=False)
    model = model_of(vocabs)  # a learning rate that explodes: stops before the weights turn NaN
    with pytest.raises(TrainingError, match=r"at step [2-9]"):
        train(model, batches, None, TrainConfig(epochs=3, warmup=1, lr_factor=1e36, device="cpu"), progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("changes,message", [
    ({"warmup": 0}, "warmup must be a positive int"), ({"lr_factor": float("nan")}, "lr_factor must be a finite"),
    ({"epochs": 0}, "epochs must be a positive int"), ({"max_steps": 0}, "max_steps must be a positive int"),
    ({"batch_size": -1}, "batch_size"), ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ({"max_seconds": -1.0}, "max_seconds"), ({"average_last": 0}, "average_last")])
def test_bad_train_configs_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_warmup_zero_and_target_ids_beyond_the_vocabulary_are_named(vocabs):
    with pytest.raises(ValueError, match="warmup must be a positive int"):
        noam_lr(1, 512, warmup=0)
    with pytest.raises(ValueError, match="warmup must be a positive int"):
        make_optimizer(torch.nn.Linear(2, 2), 32, warmup=0)
    with pytest.raises(ValueError, match="factor must be a finite number"):
        noam_lr(1, 512, factor=float("nan"))
    with pytest.raises(ValueError, match=r"target ids must lie in 0\.\.4 \(V = 5"):
        label_smoothing_loss(torch.zeros(1, 2, 5), torch.tensor([[1, 7]]))
    src_vocab, tgt_vocab = vocabs
    batches = make_batches(encode_pairs(PAIRS, src_vocab, tgt_vocab), batch_size=2)
    small = Transformer(TransformerConfig.tiny(len(src_vocab), 8))  # built for a smaller target vocabulary
    with pytest.raises(TrainingError, match=r"training batch \d+ has target ids .* 8 tokens \(ids 0\.\.7\)"):
        train(small, batches, None, TrainConfig(epochs=1, device="cpu"), progress=False)


# --- 6. the command line: one-line errors before anything runs ----------------------------------

def _cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "old.pt.progress.pt").write_bytes(b"x")
    out = ["--out", str(tmp_path / "m.pt")]
    return [
        (out + ["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
        (out + ["--epochs", "-2"], "--epochs: expected an integer >= 1"),
        (out + ["--max-steps", "0"], "--max-steps: expected an integer >= 1"),
        (out + ["--batch-size", "0"], "--batch-size: expected an integer >= 1"),
        (out + ["--batch-size", "many"], "--batch-size: expected an integer >= 1, got 'many'"),
        (out + ["--max-seconds", "0"], "--max-seconds: expected a number of seconds > 0"),
        (out + ["--max-seconds", "nan"], "--max-seconds"),
        (out + ["--max-seconds", "inf"], "--max-seconds"),
        (out + ["--note-repeats", "-1"], "--note-repeats: expected an integer in 0..1000"),
        (out + ["--seed", "-1"], "--seed: expected an integer in 0..4294967295"),
        (out + ["--unk-dropout", "1.5"], "--unk-dropout: expected a probability in [0, 1], got 1.5"),
        (out + ["--unk-dropout", "-0.1"], "--unk-dropout: expected a probability in [0, 1]"),
        (out + ["--unk-dropout", "nan"], "--unk-dropout: expected a probability in [0, 1]"),
        ([], "the following arguments are required: --out"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(tmp_path / "file.txt" / "m.pt")], "is a file, not a folder"),
        (["--out", str(tmp_path / "nowhere" / "m.pt")], "does not exist"),
        (["--out", "/proc/course_lib_test.pt"], "cannot write in /proc"),
        (out + ["--resume"], "--resume: no interrupted run to continue"),
        # issue 24: out of range values are refused by the parser, before any work
        (["--out", ""], "--out: expected the path of a file to write, e.g. translator.pt, got an empty string"),
        (["--out", "  "], "--out: expected the path of a file to write"),
        (["--out", str(tmp_path / ("m" * 250 + ".pt"))], "--out: the file name is 253 bytes long; this folder allows 243"),
        (out + ["--seed", str(2**64)], f"--seed: expected an integer in 0..4294967295, got {2**64}"),
        (out + ["--seed", str(2**32)], "--seed: expected an integer in 0..4294967295"),
        (out + ["--note-repeats", "1000000000"], "--note-repeats: expected an integer in 0..1000, got 1000000000"),
        (out + ["--note-repeats", "1e9"], "--note-repeats: expected an integer in 0..1000, got '1e9'"),
        (out + ["--threads", "100000"], "--threads: expected an integer in 1..512, got 100000"),
        (out + ["--threads", "0"], "--threads: expected an integer in 1..512, got 0"),
        (["--out", str(tmp_path / "old.pt")], "holds an interrupted run: add --resume"),
    ]


def test_each_bad_argument_is_a_one_line_error_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training, "make_splits", lambda *a: pytest.fail("training started"))
    for argv, message in _cases(tmp_path):
        with pytest.raises(SystemExit) as exit_:
            training.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, argv
        assert err.count("\n") == 1 and message in err and err.startswith("python -m course_lib.training: error:"), \
            (argv, err)
    assert not (tmp_path / "m.pt").exists()


def test_a_bad_argument_in_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "course_lib.training", "--out", str(tmp_path / "m.pt"), "--epochs", "0"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == ["python -m course_lib.training: error: argument --epochs: "
                                       "expected an integer >= 1, got 0 (see --help)"]


# --- 7. issue 24: the edges of saving and loading, and of the training command ------------------------

def test_weights_that_are_nan_or_inf_are_refused_at_load_even_with_a_recomputed_digest(tmp_path, vocabs):
    for poison, count in ((float("nan"), "all"), (float("inf"), "one")):
        data = checkpoint_payload(model_of(vocabs), *vocabs)
        for name, tensor in data["state_dict"].items():
            if tensor.is_floating_point() and (count == "all" or name == "generator.weight"):
                tensor.view(-1)[0 if count == "one" else slice(None)] = poison
        data["sha256"] = content_digest(data)  # the file is what it says it is: only the values are wrong
        torch.save(data, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="not all finite.*NaN or inf") as err:
            load_checkpoint(tmp_path / "bad.pt")
        if count == "one":
            assert "1 tensors hold NaN or inf, e.g. generator.weight (1 of" in str(err.value)


def test_meta_keys_must_be_strings_so_that_no_entry_is_lost(tmp_path, vocabs):
    for meta, key in (({1: "int", "1": "str"}, "1"), ({"runs": {2.5: "x"}}, "2.5"), ({("a",): 1}, r"\('a',\)")):
        with pytest.raises(TypeError, match=rf"meta.* has the key {key} \(\w+\): checkpoint meta keys must be str"):
            save_checkpoint(tmp_path / "m.pt", model_of(vocabs), *vocabs, meta=meta)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    assert load_checkpoint(save_checkpoint(tmp_path / "m.pt", model_of(vocabs), *vocabs, meta={"1": 1})).meta == {"1": 1}


def test_a_device_that_does_not_exist_is_one_clear_error_before_the_file_is_read(tmp_path):
    missing = tmp_path / "missing.pt"  # not even read: the device is checked first
    with pytest.raises(ValueError, match=r"device='nonsense' is not a device name; expected e.g. 'cpu'") as err:
        load_checkpoint(missing, device="nonsense")
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no torch traceback chained to it
    with pytest.raises(TypeError, match="device must be a torch.device, a name .* got float 3.5"):
        load_checkpoint(missing, device=3.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda:0': this machine has 0 CUDA GPU\(s\)"):
            load_checkpoint(missing, device="cuda:0")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(missing, device=torch.device("cpu"))


def _full_disk_after(limit: int, monkeypatch) -> None:
    """Make torch.save write through a file that fails with ENOSPC after ``limit`` bytes, as a full disk does."""
    import errno
    real = torch.save

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    monkeypatch.setattr(torch, "save", lambda obj, f: real(obj, Full(f)))


def test_a_full_disk_during_a_save_names_the_cause_in_one_line(tmp_path, vocabs, monkeypatch):
    import errno
    path = save_checkpoint(tmp_path / "m.pt", model_of(vocabs, 1), *vocabs)
    before = path.read_bytes()
    _full_disk_after(5000, monkeypatch)
    with pytest.raises(OSError) as err:
        save_checkpoint(path, model_of(vocabs, 2), *vocabs)
    text = str(err.value)
    assert err.value.errno == errno.ENOSPC and "\n" not in text, text
    assert f"could not write {path}: No space left on device (free some space)" in text and "unexpected pos" not in text
    assert isinstance(err.value.__cause__, RuntimeError) and "unexpected pos" in str(err.value.__cause__)  # what torch said
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_file_size_limit_during_a_save_is_named_in_a_real_process(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the write itself (EFBIG), as a too-small quota or file system does."""
    resource = pytest.importorskip("resource")
    if not hasattr(signal, "SIGXFSZ"):
        pytest.skip("no SIGXFSZ here")
    script = f"""
import resource, signal, torch
from course_lib.checkpoint import atomic_save
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed; ignored, the write fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    atomic_save({{"w": torch.zeros(100_000)}}, {str(tmp_path / "big.pt")!r})
except OSError as err:
    print(err.errno, err)
"""
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.startswith(f"27 [Errno 27] could not write {tmp_path / 'big.pt'}: File too large;"), run.stdout
    assert list(tmp_path.iterdir()) == [] and resource  # no temporary file left, no half file


def test_a_file_name_near_the_limit_saves_and_its_temporary_name_fits(tmp_path, vocabs):
    from course_lib.files import name_max, temp_prefix
    limit = name_max(tmp_path)
    for name in ("m" * (limit - 3) + ".pt", "모" * ((limit - 3) // 3) + ".pt"):  # ASCII, and 3-byte UTF-8 characters
        path = tmp_path / name
        assert len(name.encode()) <= limit
        assert len(temp_prefix(path).encode()) + 8 + 1 + 8 + len(".tmp") <= limit  # pid, mkstemp's part, suffix
        assert load_checkpoint(save_checkpoint(path, model_of(vocabs), *vocabs)).model is not None
        assert [p.name for p in tmp_path.iterdir()] == [name]
        path.unlink()
    assert temp_prefix(tmp_path / "m.pt") == ".m.pt."  # short names are kept as they are


def test_the_temporaries_of_killed_saves_are_removed_by_the_next_save_and_no_others(tmp_path, vocabs):
    from course_lib.files import STALE_AFTER
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - STALE_AFTER - 60
        files = {  # name: removed?
            f".m.pt.{dead.pid}.abcd1234.tmp": True,  # its writer is gone
            f".m.pt.{live.pid}.abcd1234.tmp": False,  # a save in progress in another process
            f".m.pt.{live.pid}.old_5678.tmp": True,  # ... but unchanged for longer than any save takes
            ".m.pt.k2j4h5g6.tmp": False,  # no pid in its name (an older course_lib) and recent: maybe writing
            ".m.pt.z9y8x7w6.tmp": True,  # no pid, and old
            f".m.pt.{dead.pid}.abcd1234.tmp.keep": False, f".other.pt.{dead.pid}.abcd1234.tmp": False,  # not ours
            f"m.pt.{dead.pid}.abcd1234.tmp": False, f".m.pt.{dead.pid}.ABCD1234.tmp": False,
            f".m.pt.{10**30}.abcd1234.tmp": False,  # no real pid: left alone (until it is old), and no crash
        }
        for name in files:
            (tmp_path / name).write_bytes(b"half a checkpoint")
        for name in (f".m.pt.{live.pid}.old_5678.tmp", ".m.pt.z9y8x7w6.tmp"):
            os.utime(tmp_path / name, (old, old))
        save_checkpoint(tmp_path / "m.pt", model_of(vocabs), *vocabs)
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {"m.pt"} | {name for name, removed in files.items() if not removed}
    finally:
        live.kill()
        live.wait()


def test_a_save_after_sigkilled_saves_leaves_no_temporary_file(tmp_path, vocabs):
    path = tmp_path / "model.pt"
    payload = checkpoint_payload(model_of(vocabs, 0, d_model=64, d_ff=1024), *vocabs)
    rng, killed_mid_save = random.Random(5), 0
    for _ in range(12):
        pid = _fork(lambda: [atomic_save(payload, path) for _ in range(10**6)])
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        killed_mid_save += bool(list(tmp_path.glob(".model.pt.*.tmp")))
        if killed_mid_save >= 2:
            break
    assert killed_mid_save >= 1, "no kill landed inside a save: the test did not exercise the window"
    atomic_save(payload, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_second_ctrl_c_during_the_progress_save_is_held_until_the_file_is_whole(tmp_path, monkeypatch, capsys):
    """Deterministic: the second SIGINT arrives inside torch.save of the progress file."""
    out = tmp_path / "run.pt"
    out.write_bytes(b"the learner's previous checkpoint")
    _interrupt_at(monkeypatch, 2)
    real = torch.save
    presses = []

    def save_hit_by_ctrl_c(obj, f):
        if isinstance(obj, dict) and obj.get("format") == "course_lib.training-progress/1":
            presses.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the file is being written
        return real(obj, f)

    monkeypatch.setattr(torch, "save", save_hit_by_ctrl_c)
    threads = torch.get_num_threads()
    try:
        code = training.main(_cli(tmp_path, "run.pt"))
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert code == 130 and presses == [1], captured
    assert "Ctrl-C again: the progress is being saved" in captured.err and "progress saved to" in captured.out
    assert out.read_bytes() == b"the learner's previous checkpoint"
    assert verified_load(training.progress_path(out))["progress"]["history"]["steps"] == 2  # whole, and readable
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.progress.pt"]


def test_hold_ctrl_c_delivers_a_held_press_after_the_block_and_nests():
    from course_lib.files import hold_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        with hold_ctrl_c(message=None) as held:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # a handler runs between bytecodes: the press is held, the block goes on
            finished = True
    assert finished and held == [signal.SIGINT]
    with hold_ctrl_c(message=None, deliver=False) as outer:
        with hold_ctrl_c(message=None) as inner:  # inside another hold: the outer one holds it
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert outer == [signal.SIGINT] and inner == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SLOW_SAVE = """
import sys, time, torch
from course_lib import training
real = torch.save
def slow_save(obj, f):  # the progress save takes a second: long enough to be hit
    print('saving', file=sys.stderr, flush=True)
    time.sleep(1.0)
    return real(obj, f)
torch.save = slow_save
sys.exit(training.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_second_ctrl_c_in_a_real_process_always_ends_with_130_and_the_old_out_untouched(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    rng = random.Random(24)
    for trial, when in enumerate(["during the save", "during the save", "at once"]):
        out = tmp_path / f"run{trial}.pt"
        out.write_bytes(b"previous")
        argv = _cli(tmp_path, out.name)
        argv[argv.index("12")] = "100000"  # long enough to be interrupted
        proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert "Ctrl-C" in proc.stderr.readline()  # training has started
            proc.send_signal(signal.SIGINT)
            if when == "during the save":
                lines = [proc.stderr.readline()]  # "Ctrl-C: stopping after this step ...", then "saving"
                while "saving" not in lines[-1] and lines[-1] and len(lines) < 10:
                    lines.append(proc.stderr.readline())
                assert "saving" in lines[-1], lines
                time.sleep(rng.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 130 and "Traceback" not in stderr, (when, stdout, stderr)
        assert out.read_bytes() == b"previous"
        saved = training.progress_path(out)
        if when == "during the save":
            assert "progress is being saved" in stderr and "progress saved to" in stdout
        if saved.exists():  # complete, never half
            assert verified_load(saved)["progress"]["history"]["steps"] >= 1
        else:
            assert "nothing was saved" in stderr
        assert not list(tmp_path.glob(".*.tmp"))
