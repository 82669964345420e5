"""benchmarks/ stays runnable and right: gpu_check.py's dry run takes every GPU step's code path on the CPU
and writes its report; bench_model.py's FLOP formula (the MFU numerator) equals PyTorch's own count of our
model's matmuls; the chunked loss equals F.cross_entropy in value and gradient; the interleaved timer
rotates its order; and ``python -m course_lib.training --config paper_base --bf16`` builds what it says."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from course_lib import checkpoint, training
from course_lib.model import Transformer, TransformerConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("bench_model")


@pytest.fixture(scope="module")
def fused_loss(bench):  # bench_model put benchmarks/ on sys.path: the same module it uses
    import fused_loss
    return fused_loss


pytestmark = pytest.mark.usefixtures("one_thread")


# --- gpu_check.py --dry-run: every step on the CPU, the report it writes -------------------------

@pytest.fixture(scope="module")
def dry_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu-dry.md"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=BENCHMARKS.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out.read_text()


def _table(text: str, header: str) -> list[list[str]]:
    """The rows (cells) of the markdown table whose header line starts with ``header``."""
    lines = text[text.index(header):].splitlines()[2:]  # below the header and its |---| line
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_dry_run_report_names_the_setup_and_has_every_section(dry_report):
    assert dry_report.startswith("# GPU check: CPU")
    assert re.search(r"torch \*\*2\.\d+", dry_report) and "CUDA **none**" in dry_report
    for section in ("## 1. Chapter 07 training to target", "## 2. Chapter 08 under nbval", "## 3. bench_model.py"):
        assert section in dry_report
    summary = _table(dry_report, "| step |")
    assert [row[0] for row in summary[:3]] == ["train07", "nb08", "bench"]
    for row in summary[:3]:
        assert row[2] == "ok" and float(row[3]) > 0, row
    assert "Log tail" not in dry_report  # only failed steps get one


def test_dry_run_trains_scores_and_runs_the_notebook(dry_report):
    epochs = _table(dry_report, "| epoch |")
    assert [row[0] for row in epochs] == ["1", "1, averaged last 1"]  # each epoch, then the final (averaged) model
    for row in epochs:
        assert int(row[1]) >= 1 and float(row[2]) > 0 and 0 <= float(row[3]) <= 100 and row[4].endswith("%")
        assert 0 <= float(row[4].rstrip("%")) <= 100 and float(row[5]) > 0
    assert "targets not reached (epoch 1, averaged last 1)" in dry_report  # a tiny model after one epoch: the truth
    assert re.search(r"\| nb08 \|.*\| 1 passed in [0-9.]+s", dry_report)


def test_dry_run_times_every_variant_against_nn_transformer(dry_report):
    rows = _table(dry_report, "| case | device | variant |")
    variants = ["ours (hand-written)", "ours (fused)", "nn.Transformer", "ours (hand-written) + compile",
                "ours (fused) + compile", "nn.Transformer + compile", "ours (fused) + compile + chunked loss"]
    assert [r[2] for r in rows] == variants * 2
    assert [r[0] for r in rows] == ["tiny (dry run) L16"] * 7 + ["tiny (dry run) L32"] * 7
    for r in rows:
        assert float(r[3]) > 0 and float(r[4].rstrip("x")) > 0 and float(r[5].rstrip("x")) > 0 and float(r[6]) > 0
        assert r[7] == r[8] == "n/a"  # a CPU has no bf16 peak and no CUDA memory counter
        assert (r[4] == "1.00x") or r[2] != "nn.Transformer"


def _alive(pid: int) -> bool:
    return _load("gpu_check")._running(pid)


def test_a_step_that_runs_out_of_time_is_killed_with_its_children_and_marked(tmp_path):
    gpu_check = _load("gpu_check")
    script = tmp_path / "sleepy.py"  # a child that starts a grandchild in a new session, as a Jupyter kernel does
    script.write_text("import subprocess, sys, time\n"
                      "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
                      "                     start_new_session=True)\n"
                      "print(p.pid, flush=True); time.sleep(60)\n")
    status, seconds = gpu_check.run_child([sys.executable, str(script)], 3, tmp_path / "log")
    assert status == "timeout" and seconds < 30
    grandchild = int((tmp_path / "log").read_text().split()[0])
    for _ in range(50):
        if not _alive(grandchild):
            break
        subprocess.run(["sleep", "0.1"])
    assert not _alive(grandchild)
    results = [gpu_check.StepResult("train07", "timeout", 3.0, {}, "started"), gpu_check.StepResult("nb08"),
               gpu_check.StepResult("bench", "L512 ok; L128 timeout", 9.0, {"rows": []})]
    args = gpu_check.parse_args(["--dry-run"])
    text = gpu_check.report(results, {"device": "X", "torch": "2", "cuda": None}, args, 12.0)
    assert "| timeout | 3.0 | no epoch finished |" in text
    assert "| nb08 |" in text and "| skipped |" in text and "L128 timeout" in text
    assert "### Log tail: train07 (timeout)" in text and "No rows." in text


@pytest.mark.slow
def test_a_sigterm_ends_the_run_kills_the_kernel_and_still_writes_the_report(tmp_path):
    out = tmp_path / "report.md"
    parent = subprocess.Popen([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--dry-run", "--out", str(out),
                               "--skip", "train07"], cwd=BENCHMARKS.parent, stdout=subprocess.PIPE, text=True)
    descendants = _load("gpu_check")._descendants
    try:
        kernel = None
        for _ in range(600):  # wait (up to a minute) for nbval's kernel: a grandchild in its own session
            kernel = next((pid for pid in descendants(parent.pid) if b"ipykernel" in _cmdline(pid)), None)
            if kernel or parent.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"])
        assert kernel is not None, "no kernel started"
        parent.terminate()
        parent.wait(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
    for _ in range(50):
        if not _alive(kernel):
            break
        subprocess.run(["sleep", "0.1"])
    assert not _alive(kernel)
    text = out.read_text()
    assert "| nb08 |" in text and "| interrupted |" in text and "| not run (interrupted) |" in text
    assert parent.returncode == 1


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_the_two_models_are_the_same_size_apart_from_pytorchs_final_norms(bench):
    config = TransformerConfig.tiny(50, 50, share_embeddings=True, tie_output=True)
    ours, theirs = Transformer(config), bench.TorchSeq2Seq(config)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (tied tables once)
    assert count(theirs) - count(ours) == 2 * 2 * config.d_model  # nn.Transformer's two final LayerNorms
    assert theirs.generator.weight is theirs.src_embed.weight  # tied like ours
    src, tgt_in, _ = bench.make_batch(config, 4, 9, "cpu")
    assert theirs(src, tgt_in).shape == ours(src, tgt_in).shape == (4, 9, 50)


@pytest.mark.parametrize("config", [TransformerConfig.tiny(50, 50, share_embeddings=True, tie_output=True),
                                    TransformerConfig.tiny(40, 60, d_ff=48, n_layers=3)], ids=["tied", "untied"])
def test_model_flops_equals_pytorchs_count_of_our_hand_written_step(bench, config):
    model = Transformer(config)
    src, tgt_in, tgt_out = bench.make_batch(config, 6, 10, "cpu")
    with FlopCounterMode(display=False) as counter:  # counts every matmul, forward and backward
        loss = F.cross_entropy(model(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=0)
        loss.backward()
    assert counter.get_total_flops() == bench.model_flops(config, 6, 10, 10)


def test_paper_base_flops_and_peak_table(bench):
    c = TransformerConfig.paper_base()
    flops = bench.model_flops(c, batch=49, src_len=512, tgt_len=512)
    tokens = 49 * 512
    per_token = 12 * 512**2 * 6 + 2 * 512 * 2048 * 6 * 2 + 512 * 37000  # attention + FF matrices, both stacks, + output
    dense = 6 * tokens * per_token
    attention = 12 * 49 * 6 * 512 * 3 * 512**2
    assert flops == dense + attention
    assert 0.12 < attention / flops < 0.14  # at length 512 the attention term is already 13% of the work
    # the README: 30% MFU on an H100 is 10.68 TFLOP a step at 48 x 512 in 36.0 ms, 9.79 at 195 x 128 in 33.0 ms
    for batch, length, tflop, ms, output_share in ((48, 512, 10.68, 36.0, 0.26), (195, 128, 9.79, 33.0, 0.29)):
        f = bench.model_flops(c, batch, length, length)
        assert round(f / 1e12, 2) == tflop and round(f / (0.3 * 989e12) * 1e3, 1) == ms
        assert round(6 * batch * length * 512 * 37000 / f, 2) == output_share
    assert bench.peak_flops("cpu") == ("CPU", None)
    assert bench.PEAK_BF16["H100"] == 989e12 and bench.PEAK_BF16["A100"] == 312e12


# --- the chunked loss of the GPU benchmark's MFU attempt ------------------------------------------

@pytest.mark.parametrize("chunk", [1, 4, 7, 100])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_linear_cross_entropy_equals_torch_in_value_and_gradient(fused_loss, chunk, smoothing):
    g = torch.Generator().manual_seed(chunk)
    hidden = torch.randn(3, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)  # (B, T, D)
    weight = torch.randn(11, 6, dtype=torch.float64, generator=g, requires_grad=True)  # (V, D)
    target = torch.randint(0, 11, (3, 5), generator=g)
    target[0, 2:] = 0  # padding, ignored
    ours = fused_loss.linear_cross_entropy(hidden, weight, target, ignore_index=0, label_smoothing=smoothing,
                                           chunk=chunk)
    ref = F.cross_entropy((hidden @ weight.T).flatten(0, 1), target.flatten(), ignore_index=0,
                          label_smoothing=smoothing)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12), (ours.item(), ref.item())
    got, want = torch.autograd.grad(ours * 1.7, (hidden, weight)), torch.autograd.grad(ref * 1.7, (hidden, weight))
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), (a - b).abs().max()
        assert a.abs().max() > 1e-3  # real gradients, not zeros that agree
    assert got[0][0, 2:].abs().max() == 0  # no gradient from ignored positions


def test_linear_cross_entropy_in_bf16_autocast_and_its_errors(fused_loss):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    target = torch.randint(1, 50, (40,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = fused_loss.linear_cross_entropy(hidden, weight, target, chunk=16)
        ref = F.cross_entropy((hidden @ weight.T).float(), target)  # bf16 logits, float32 loss
    assert ours.dtype == torch.float32 and abs(ours.item() - ref.item()) < 1e-3 * ref.item()
    ours.backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    with pytest.raises(ValueError, match="must agree"):
        fused_loss.linear_cross_entropy(hidden, weight, target[:-1])
    with pytest.raises(ValueError, match="label_smoothing"):
        fused_loss.linear_cross_entropy(hidden, weight, target, label_smoothing=1.0)


def test_the_chunked_loss_variant_does_the_same_work_as_the_plain_one(bench):
    config = TransformerConfig.tiny(37, 37, share_embeddings=True, tie_output=True)
    torch.manual_seed(0)
    plain = Transformer(config).double()
    inner = Transformer(config).double()
    inner.load_state_dict(plain.state_dict())
    wrapped = bench.HiddenStates(inner)
    assert wrapped.head.weight is wrapped.model.tgt_embed.weight  # still tied
    batch = bench.make_batch(config, 4, 9, "cpu")
    a, b = bench.logits_loss(plain, batch), bench.chunked_loss()(wrapped, batch)
    assert torch.allclose(a, b, atol=1e-12)
    a.backward(), b.backward()
    got = dict(wrapped.model.named_parameters())
    for name, p in plain.named_parameters():
        assert torch.allclose(p.grad, got[name].grad, atol=1e-10), name


# --- the interleaved timer ---------------------------------------------------------------------

def test_interleaved_rotates_the_order_and_takes_ratios():
    timing = _load("timing")
    calls: list[str] = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    timings = timing.interleaved(steps, rounds=3, min_run_time=0.0, threads=1, label="t")
    runs = [c for i, c in enumerate(calls) if i == 0 or calls[i - 1] != c]  # consecutive calls of one variant, merged
    assert runs == ["a", "b", "a", "b"]  # rounds a b | b a | a b; without the rotation: a b a b a b
    assert set(timings) == {"a", "b"} and all(len(t.rounds) == 3 and t.median > 0 for t in timings.values())
    assert timing.ratios(timings, "a")["a"] == (1.0, 1.0)
    assert "Times are in" in timing.compare_table(timings)
    with pytest.raises(ValueError, match="at least one round"):
        timing.interleaved(steps, rounds=0, min_run_time=0.0, threads=1, label="t")


# --- python -m course_lib.training --config paper_base --bf16 ------------------------------------

def test_model_config_names_each_size():
    assert training.model_config("paper_base", 900, 900) == TransformerConfig.paper_base(900)
    assert training.model_config("chapter07", 30, 40) == training.chapter07_config(30, 40)
    assert training.model_config("tiny", 30, 40) == TransformerConfig.tiny(30, 40)
    with pytest.raises(ValueError, match="shares one vocabulary"):
        training.model_config("paper_base", 30, 40)
    with pytest.raises(ValueError, match="expected one of chapter07, tiny, paper_base"):
        training.model_config("big", 30, 40)


def test_shared_vocab_holds_both_languages():
    pairs = [("I go.", "나는 간다."), ("You go.", "너는 간다.")]
    vocab = training.shared_vocab(pairs)
    assert {"I", "You", "go", "나는", "너는", "간다", "."} <= set(vocab.itos) and len(vocab) == 4 + 7


def test_autocast_context_is_bf16_only_when_asked():
    x = torch.randn(4, 4)
    with training.autocast_context("cpu", bf16=True):
        assert (x @ x).dtype == torch.bfloat16
    with training.autocast_context(torch.device("cpu"), bf16=False):
        assert (x @ x).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_bf16_on_a_cpu_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        training.main(["--out", "unused.pt", "--bf16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert "--bf16 needs a CUDA GPU (on a CPU bf16 autocast is slower than float32); drop --bf16" in err[0]
    with pytest.raises(SystemExit):
        training.main(["--out", "unused.pt", "--tiny", "--config", "paper_base"])
    assert "name two model sizes" in capsys.readouterr().err
    assert not Path("unused.pt").exists()


def test_paper_base_trains_on_the_course_corpus_with_one_vocabulary(tmp_path, monkeypatch):
    from course_lib.corpus import make_splits

    small = lambda seed: make_splits(seed, n_train=300, n_valid=20, n_test=20)  # noqa: E731 (the command, on less data)
    monkeypatch.setattr(training, "make_splits", small)
    out = tmp_path / "base.pt"
    assert training.main(["--out", str(out), "--config", "paper_base", "--max-steps", "1", "--epochs", "1",
                          "--batch-size", "8", "--quiet"]) == 0
    ckpt = checkpoint.load_checkpoint(out)
    vocab = ckpt.src_vocab
    assert vocab.itos == ckpt.tgt_vocab.itos == training.shared_vocab(small(0).train).itos
    assert {"I", "나는"} <= set(vocab.itos)  # English and Korean in one table
    assert ckpt.model.config == TransformerConfig.paper_base(len(ckpt.src_vocab))
    assert ckpt.meta["steps"] == 1


# --- unk_dropout.py (word dropout at chapter 07's size) -------------------------------------------

def test_unk_dropout_script_reuses_the_shipped_run_and_writes_its_table(tmp_path, monkeypatch):
    script = _load("unk_dropout")
    shipped = script.shipped_run(0, training.UNK_DROPOUT)
    assert shipped is not None and shipped.meta["threads"] == 1  # the shipped file is the seed-0 run, on one thread
    assert script.shipped_run(0, 0.0) is None and script.shipped_run(1, training.UNK_DROPOUT) is None
    row = {"bleu": 99.5, "exact": 0.992, "kept": [45, 46, 46], "unk_row": 0.2}
    assert script.table([(0, 0.05, row)]).splitlines()[-1] == "| 0 | 0.05 | 99.50 | 99.2% | 0.2000 | 45 / 46 / 46 |"
    monkeypatch.setattr(training, "main", lambda argv: 1)  # a failed training is a clear exit, not a traceback
    with pytest.raises(SystemExit, match="training seed 1 with --unk-dropout 0.0 failed"):
        script.trained(1, 0.0, tmp_path)


def test_the_unk_dropout_table_chapter_10_prints_is_the_shipped_checkpoints():
    text = (BENCHMARKS / "results" / "unk_dropout.md").read_text(encoding="utf-8")
    shipped = checkpoint.load_pretrained()
    assert f"| 0 | {training.UNK_DROPOUT:g} |" in text and shipped.meta["unk_dropout"] == training.UNK_DROPOUT
    assert "| 0 | 0 |" in text  # the run without word dropout, for comparison


def test_ch07_recipe_table_from_rows_keeps_the_recipes_order_and_writes_atomically(tmp_path):
    """The recipe benchmark's table (no training here): rows merged from two runs come out in RECIPES' order."""
    recipe = _load("ch07_recipe")
    names = list(recipe.RECIPES)
    assert names[0] == "8x128 (before)" and "4x64 cool" in names and "4x64" in names
    shipped = recipe.RECIPES["4x64"].train
    chosen = {k: getattr(training.CHAPTER07_TRAIN, k) for k in shipped}
    assert chosen == shipped, "the chapter's recipe is a row of the benchmark"
    row = {"recipe": "", "cpu": 61.4, "seconds": 70.2, "steps": 1252, "epochs": 4, "batch": 64, "warmup": 300,
           "factor": 1.0, "cooldown": 0.4, "d_ff": 512, "valid": 0.1412, "bleu": 99.171, "exact": 0.983, "notes": "9/9"}
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({**row, "recipe": n}) for n in reversed(names[:2])) + "\n", encoding="utf-8")
    out = tmp_path / "table.md"
    assert recipe.main(["--table-from", str(rows), "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| recipe")]
    assert [line.split(" | ")[0] for line in body] == [f"| {n}" for n in names[:2]]
    assert "| 61 | 70 | 1,252 | 4 × 64 | 300 | 1 | 40% | 512 | 0.141 | 99.17 | 98.3 % | 9/9 |" in body[0]
    assert "BLEU nrefs:1" in lines[0] and sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl", "table.md"]
