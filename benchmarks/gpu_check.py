"""One command that checks the course's GPU path and measures it, within a time limit it enforces.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu-h100.md  # one CUDA GPU (< 8 min)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-dry-run.md   # every step at toy sizes on the CPU

Steps, each a child process in its own process group (killed, with everything it started, when the
time runs out):

1. ``train07``: chapter 07's translator trained on CUDA in bf16 autocast (``training.autocast_context``,
   the same as ``python -m course_lib.training --bf16``) until the chapter's targets on the held-out
   test split (greedy BLEU >= 95 and exact match >= 90 %), scored after every epoch; reports the time to
   target (training time only, the scoring excluded).
2. ``nb08``: notebooks/08_beyond.ipynb under nbval on the GPU, so the cells a CPU run skips really run.
3. ``bench``: ``bench_model.py`` at the paper's base size (bf16 autocast, fused Adam, ~25k source + 25k
   target tokens a step) at lengths 512 and 128, one child per length: ours hand-written and fused, each
   eager and with ``torch.compile``, ours fused + compiled with the chunked loss (``fused_loss.py``), and
   ``nn.Transformer`` eager and compiled, interleaved in one run: step time, ratio, MFU, step peak memory.
4. A markdown report at ``--out`` naming the device, torch and CUDA versions: one summary table (a
   row per step, with its status) and each step's details. A step that fails or runs out of time is
   marked so, with the tail of its log, and the report is still written.

A dry run sends every step through the same code at toy sizes on the CPU: a tiny model on a slice
of the corpus, the setup cell of chapter 08 under nbval, ``bench_model.py --dry-run``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_beyond.ipynb"
BLEU_TARGET, EXACT_TARGET = 95.0, 0.90
STEPS = ("train07", "nb08", "bench")


@dataclass
class StepResult:
    """What one step reported: its status (ok, failed, timeout, interrupted, skipped), seconds, its JSON result."""

    name: str
    status: str = "skipped"
    seconds: float = 0.0
    data: dict = field(default_factory=dict)
    log_tail: str = ""


# --- running children in their own process group -------------------------------------------------

def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc; empty where there is none): a Jupyter kernel
    starts its own session, so killing the child's process group alone would leave it running."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGTERM, then (5 s later, for whatever still runs) SIGKILL, to the child's process group and to every
    process it started. The tree is read before the first signal: once the child is gone its orphans
    belong to init and can no longer be found from it."""
    pids = {proc.pid, *_descendants(proc.pid)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids |= set(_descendants(proc.pid))
        for pid in pids:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM and not any(_running(pid) for pid in pids - {proc.pid}):
            return


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def run_child(cmd: list[str], timeout: float, log: Path) -> tuple[str, float]:
    """Run ``cmd`` in a new process group with its output in ``log``; (status, seconds)."""
    start = time.perf_counter()
    if timeout <= 1:
        return "timeout", 0.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            status = "ok" if proc.wait(timeout=timeout) == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            status = "timeout"
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see main): leave nothing behind, report what ran
            _kill_tree(proc)
            status = "interrupted"
    return status, time.perf_counter() - start


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --- step 1 (runs in the child): chapter 07 to its targets in bf16 autocast ----------------------

class _TargetReached(Exception):
    pass


def train07(result_path: Path, dry_run: bool) -> int:
    """Train chapter 07's model in bf16 autocast, score the test split after every epoch, stop at the targets;
    the exit status: 0 when reached (or in a dry run, where nobody expects it), 3 when not."""
    import torch

    from course_lib import corpus, training
    from course_lib.decoding import evaluate
    from course_lib.model import Transformer, TransformerConfig

    device = torch.device("cpu" if dry_run else "cuda")
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("train07: CUDA is not available (use --dry-run on a CPU)")
    torch.set_num_threads(1 if dry_run else torch.get_num_threads())
    splits = corpus.make_splits(0)
    train_pairs, test_pairs = splits.train, splits.test
    if dry_run:  # toy sizes: the same code path in seconds
        train_pairs, test_pairs = train_pairs[:256], test_pairs[:32]
    src_vocab, tgt_vocab = training.build_vocabs(train_pairs)
    pairs = training.chapter07_pairs(train_pairs)
    batches = training.make_batches(training.encode_pairs(pairs, src_vocab, tgt_vocab),
                                    training.CHAPTER07_TRAIN.batch_size, seed=0)
    build = TransformerConfig.tiny if dry_run else training.chapter07_config
    torch.manual_seed(0)
    model = Transformer(build(len(src_vocab), len(tgt_vocab)))
    config = replace(training.CHAPTER07_TRAIN, device=device.type, max_seconds=None,
                     epochs=1 if dry_run else training.CHAPTER07_TRAIN.epochs)
    epochs: list[dict] = []
    report = {"device": device.type, "bf16": True, "config": model.config.to_dict(), "epochs": epochs,
              "targets": {"bleu": BLEU_TARGET, "exact": EXACT_TARGET}, "reached": False, "time_to_target": None}
    start, scoring = time.perf_counter(), 0.0

    def record(label: str, history: dict) -> bool:
        """Score the test split (float32, untimed), add the row; True when the targets are reached."""
        nonlocal scoring
        train_seconds = time.perf_counter() - start - scoring
        t0 = time.perf_counter()
        with torch.autocast(device.type, enabled=False):
            scores = evaluate(model, test_pairs, src_vocab, tgt_vocab)
        scoring += time.perf_counter() - t0
        epochs.append({"epoch": label, "seconds": round(train_seconds, 2), "steps": history["steps"],
                       "bleu": round(scores["bleu"], 2), "exact": round(scores["exact"], 4),
                       "valid_loss": round(history["valid_loss"][-1], 4)})
        print(f"epoch {label}: {train_seconds:.1f} s training, BLEU {scores['bleu']:.2f}, exact {scores['exact']:.1%}")
        reached = scores["bleu"] >= BLEU_TARGET and scores["exact"] >= EXACT_TARGET
        if reached:
            report.update(reached=True, time_to_target=round(train_seconds, 2))
        _write_json(result_path, report)
        return reached

    def on_epoch(epoch: int, history: dict) -> None:
        if record(str(epoch), history):
            raise _TargetReached
        model.train()

    valid = training.make_batches(training.encode_pairs(splits.valid[:256], src_vocab, tgt_vocab), 256, shuffle=False)
    with training.autocast_context(device, bf16=True):
        try:  # after the last epoch train() averages the last epochs' weights: that model is scored too
            history = training.train(model, batches, valid, config, progress=False, on_epoch=on_epoch)
            record(f"{len(epochs)}, averaged last {history['averaged_epochs']}", history)
        except _TargetReached:
            pass
    return 0 if report["reached"] or dry_run else 3


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# --- the parent: the steps, their time limits, the report -----------------------------------------

def nb08_command(dry_run: bool, workdir: Path) -> list[str]:
    """pytest --nbval-lax on chapter 08 (a dry run: on a copy of its setup cell only, in ``workdir``)."""
    notebook = NOTEBOOK
    if dry_run:
        nb = json.loads(NOTEBOOK.read_text())
        setup = next(c for c in nb["cells"] if c["cell_type"] == "code")
        notebook = workdir / "08_setup_only.ipynb"
        notebook.write_text(json.dumps({**nb, "cells": [setup]}))
    return [sys.executable, "-m", "pytest", str(notebook), "-q", "-o", "addopts=", "--nbval-lax",
            "--nbval-cell-timeout=600", "-p", "no:cacheprovider", "--rootdir", str(notebook.parent)]


def bench_command(lengths: list[int], dry_run: bool, json_path: Path, rounds: int) -> list[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_model.py"), "--compile", "--fused-adam", "--chunked-loss",
           "--lengths", *map(str, lengths), "--json", str(json_path)]
    return cmd + (["--dry-run", "--threads", "1"] if dry_run else ["--gpu-only", "--rounds", str(rounds)])


def _pytest_summary(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|error|skipped).*? in [0-9.]+s.*?)\s*=*$", text, re.MULTILINE)
    return found[-1] if found else "no pytest summary"


def environment(dry_run: bool) -> dict:
    """Device, torch and CUDA versions (asked in a child, so this process never initialises CUDA)."""
    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'cuda': torch.version.cuda, 'device': torch.cuda.get_device_name() if c else 'CPU', "
            "'cuda_available': c}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
        env = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        env = {"torch": "?", "cuda": None, "device": "?", "cuda_available": False}
    if dry_run:
        env["device"] = f"CPU ({platform.processor() or platform.machine()}), dry run"
    return env


def run_bench(args: argparse.Namespace, workdir: Path, log: Path, left) -> tuple[str, float, dict]:
    """bench_model.py, one child per length on a GPU (the target length first; a dry run: one for both), each
    with an equal share of the time left; (status, seconds, {"rows": every row the children wrote})."""
    rows: list[dict] = []
    statuses, seconds = [], 0.0
    groups = [[16, 32]] if args.dry_run else [[512], [128]]
    for i, lengths in enumerate(groups):
        tag = "+".join(map(str, lengths))
        out, child_log = workdir / f"bench{tag}.json", workdir / f"bench{tag}.log"
        status, took = run_child(bench_command(lengths, args.dry_run, out, args.rounds), left() / (len(groups) - i),
                                 child_log)
        with open(log, "a") as whole:
            whole.write(child_log.read_text(errors="replace"))
        seconds += took
        statuses.append(f"L{tag} {status}")
        rows += json.loads(out.read_text()) if out.exists() else []
    return ("ok" if all(s.endswith(" ok") for s in statuses) else "; ".join(statuses)), seconds, {"rows": rows}


RESERVE = 15.0  # seconds kept back from the limit: killing a late step (SIGTERM, 5 s, SIGKILL) and the report


def run_steps(args: argparse.Namespace, workdir: Path, started: float) -> list[StepResult]:
    """Every step in turn, each within its share of what is left of ``args.time_limit`` (counted from
    ``started``, a ``time.monotonic()``, less ``RESERVE``)."""
    deadline = started + args.time_limit - RESERVE
    left = lambda: deadline - time.monotonic()  # noqa: E731
    results = [StepResult(name) for name in STEPS]
    for result in results:
        name = result.name
        if name in args.skip:
            continue
        log = workdir / f"{name}.log"
        if name == "train07":
            out = workdir / "train07.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--step", "train07", "--result", str(out)]
            result.status, result.seconds = run_child(cmd + (["--dry-run"] if args.dry_run else []),
                                                      min(left(), args.time_limit * 0.25), log)
            result.data = json.loads(out.read_text()) if out.exists() else {}
        elif name == "nb08":
            result.status, result.seconds = run_child(nb08_command(args.dry_run, workdir),
                                                      min(left(), args.time_limit * 0.30), log)
            result.data = {"pytest": _pytest_summary(log), "notebook": NOTEBOOK.name if not args.dry_run
                           else f"{NOTEBOOK.name} (setup cell only)"}
        else:
            result.status, result.seconds, result.data = run_bench(args, workdir, log, left)
        if result.status != "ok":
            result.log_tail = _tail(log)
        print(f"{name}: {result.status} ({result.seconds:.0f} s)", flush=True)
        if "interrupted" in result.status:
            for later in results[results.index(result) + 1:]:
                later.status = "not run (interrupted)"
            break
    return results


def _summary(r: StepResult) -> str:
    """One cell: the step's main result."""
    d = r.data
    if r.name == "train07":
        if not d.get("epochs"):
            return "no epoch finished"
        last = d["epochs"][-1]
        reached = (f"targets reached after epoch {last['epoch']}: {d['time_to_target']:.1f} s" if d.get("reached")
                   else f"targets not reached (epoch {last['epoch']})")
        return f"{reached}; BLEU {last['bleu']:.2f}, exact {100 * last['exact']:.1f}%"
    if r.name == "nb08":
        return d.get("pytest", "not run") if r.status != "skipped" else "not run"
    rows = d.get("rows", [])
    best = [x for x in rows if x["variant"] != "nn.Transformer" and x["mfu"] is not None]
    if best:
        top = max(best, key=lambda x: x["mfu"])
        return f"{len(rows)} rows; best MFU {100 * top['mfu']:.1f}% ({top['variant']}, {top['case']})"
    return f"{len(rows)} rows (MFU n/a: no known peak)" if rows else "no rows"


def report(results: list[StepResult], env: dict, args: argparse.Namespace, seconds: float) -> str:
    """The markdown report: the summary table, then each step's details."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_model import markdown_table

    mode = "dry run: toy sizes on the CPU, timings mean nothing" if args.dry_run else "full run"
    lines = [f"# GPU check: {env['device']}", "",
             f"Device **{env['device']}**, torch **{env['torch']}**, CUDA **{env['cuda'] or 'none'}**; {mode}; "
             f"{seconds:.0f} s of the {args.time_limit:.0f} s limit; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Command: `{' '.join(args.argv)}`.", "",
             "| step | what | status | seconds | result |", "|---|---|---|---:|---|"]
    what = {"train07": "1. chapter 07 training, bf16 autocast, to BLEU >= 95 and exact >= 90% (test split)",
            "nb08": "2. notebooks/08_beyond.ipynb under nbval",
            "bench": "3. bench_model.py, paper base, bf16, fused Adam"}
    for r in results:
        lines.append(f"| {r.name} | {what[r.name]} | {r.status} | {r.seconds:.1f} | {_summary(r)} |")
    by_name = {r.name: r for r in results}
    lines += ["", "## 1. Chapter 07 training to target (bf16 autocast)", ""]
    epochs = by_name["train07"].data.get("epochs", [])
    if epochs:
        lines += ["| epoch | steps | training seconds | test BLEU | test exact | valid loss |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {e['epoch']} | {e['steps']} | {e['seconds']:.1f} | {e['bleu']:.2f} | {100 * e['exact']:.1f}% | "
                  f"{e['valid_loss']:.4f} |" for e in epochs]
    else:
        lines.append("No epoch finished.")
    lines += ["", "## 2. Chapter 08 under nbval", "", f"{_summary(by_name['nb08'])}"]
    lines += ["", "## 3. bench_model.py", ""]
    rows = by_name["bench"].data.get("rows", [])
    lines.append(markdown_table(rows) if rows else "No rows.")
    for r in results:
        if r.log_tail:
            lines += ["", f"### Log tail: {r.name} ({r.status})", "", "```", r.log_tail, "```"]
    return "\n".join(lines) + "\n"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="the markdown report (default benchmarks/results/gpu-<device>.md)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds for the whole run, report included (default 480; a dry run 300, "
                        "a cap for busy machines)")
    p.add_argument("--dry-run", action="store_true", help="every step at toy sizes on the CPU")
    p.add_argument("--skip", nargs="*", choices=STEPS, default=[], help="steps to leave out")
    p.add_argument("--rounds", type=int, default=3, help="bench_model.py's interleaved rounds")
    p.add_argument("--step", choices=["train07"], help=argparse.SUPPRESS)  # the child's side
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.time_limit = args.time_limit or (300.0 if args.dry_run else 480.0)
    args.argv = ["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step == "train07":
        return train07(args.result, args.dry_run)
    start, started = time.perf_counter(), time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM from outside ends the steps like Ctrl-C, report written
    env = environment(args.dry_run)
    if not args.dry_run and not env["cuda_available"]:
        print("gpu_check: CUDA is not available here; run it on a machine with a GPU, or use --dry-run",
              file=sys.stderr)
        return 2
    slug = re.sub(r"[^a-z0-9]+", "-", env["device"].lower()).strip("-")
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu-{slug}.md"
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        results = run_steps(args, Path(tmp), started)
        text = report(results, env, args, time.perf_counter() - start)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(text)
    os.replace(tmp_out, out)  # atomically
    print(f"wrote {out}")
    return 0 if all(r.status in ("ok", "skipped") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
