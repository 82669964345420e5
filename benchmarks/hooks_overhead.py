"""What chapter 11's hook points cost when nobody uses them: chapter 07's training step with and without them.

Two copies of chapter 07's translator (``training.chapter07_config``, the same weights) on real batches of the
course corpus: one as the library builds it, with a ``HookPoint`` at every hook name, and one with every hook
point bypassed (swapped for a plain Python identity function, so what is left of it is a function call of some
tens of nanoseconds, the cost of the code before hook points existed), and a second bypassed copy as a control
(the same work timed twice: its ratio shows the run's noise). Each step is forward + label-smoothed
loss + backward + Adam. The two steps are timed alternately with ``torch.utils.benchmark``
(``benchmarks/timing.py``: the order rotates every round, and the ratio is also taken round by round), so load
from other processes hurts both alike. Not a test: timings depend on the machine. Writes the table to
``benchmarks/results/hooks_overhead.md``.

    python benchmarks/hooks_overhead.py                    # batch 128 (the chapter's), 2 threads, 7 rounds
    python benchmarks/hooks_overhead.py --rounds 15 --threads 1 --no-write
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo's course_lib
sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py
from timing import compare_table, interleaved, ratios  # noqa: E402

from course_lib.batches import build_vocabs, encode_pairs, make_batches  # noqa: E402
from course_lib.corpus import make_splits  # noqa: E402
from course_lib.hooks import HookPoint, hook_names  # noqa: E402
from course_lib.model import Transformer  # noqa: E402
from course_lib.objective import label_smoothing_loss, make_optimizer  # noqa: E402
from course_lib.training import chapter07_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "hooks_overhead.md"


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def bypass_hook_points(model: torch.nn.Module) -> int:
    """Replace every HookPoint of ``model`` (in place) by a plain identity function; returns how many."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, HookPoint):
                del module._modules[name]  # no longer a submodule ...
                object.__setattr__(module, name, _identity)  # ... but a plain function the forward calls
                count += 1
    return count


def per_call_cost(threads: int, repeats: int = 200_000) -> tuple[float, float]:
    """Seconds per call of an unused ``HookPoint`` and of the plain identity function, on a small tensor."""
    from torch.utils.benchmark import Timer  # noqa: PLC0415
    x, point = torch.zeros(4, 8), HookPoint()
    hook = Timer("point(x)", globals={"point": point, "x": x}, num_threads=threads).timeit(repeats).median
    plain = Timer("f(x)", globals={"f": _identity, "x": x}, num_threads=threads).timeit(repeats).median
    return hook, plain


def count_calls(model: torch.nn.Module, batch) -> int:
    """How many hook-point calls one forward pass makes (counted with a forward hook, outside the timing)."""
    calls = [0]
    handles = [m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
               for m in model.modules() if isinstance(m, HookPoint)]
    with torch.no_grad():
        model(batch.src, batch.tgt_in, batch.src_mask)
    for h in handles:
        h.remove()
    return calls[0]


def make_step(model: Transformer, batch, label_smoothing: float = 0.1):
    optimizer, schedule = make_optimizer(model, model.config.d_model, warmup=400)

    def step() -> None:
        logits = model(batch.src, batch.tgt_in, batch.src_mask)  # (B, T, V)
        loss = label_smoothing_loss(logits, batch.tgt_out, label_smoothing, model.config.pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per timed block")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = make_splits(0)
    src_vocab, tgt_vocab = build_vocabs(splits.train)
    batch = make_batches(encode_pairs(splits.train, src_vocab, tgt_vocab), args.batch_size, seed=0)[0]
    torch.manual_seed(0)
    base = Transformer(chapter07_config(len(src_vocab), len(tgt_vocab))).train()
    hooked, bypassed, control = (copy.deepcopy(base) for _ in range(3))  # three copies made alike
    n_points, n_bypassed = len(hook_names(hooked)), bypass_hook_points(bypassed)
    assert n_points == n_bypassed == bypass_hook_points(control) and not hook_names(bypassed)
    with torch.no_grad():  # they compute the same thing, bit for bit
        assert torch.equal(hooked(batch.src, batch.tgt_in, batch.src_mask), bypassed(batch.src, batch.tgt_in, batch.src_mask))
    steps = {"hook points": make_step(hooked, batch), "bypassed": make_step(bypassed, batch),
             "bypassed, a second copy": make_step(control, batch)}  # the same work twice: the noise of this run
    timings = interleaved(steps, args.rounds, args.min_run_time, args.threads, "chapter 07 training step",
                          f"batch {args.batch_size}, {args.threads} threads")
    print(compare_table(timings))
    of_medians, per_round = ratios(timings, "bypassed")["hook points"]
    noise_medians, noise_rounds = ratios(timings, "bypassed")["bypassed, a second copy"]
    rounds = [round(a / b, 3) for a, b in zip(timings["hook points"].rounds, timings["bypassed"].rounds)]
    calls = count_calls(hooked, batch)
    hook_cost, plain_cost = per_call_cost(args.threads)
    bound = calls * (hook_cost - plain_cost) / timings["bypassed"].median
    lines = [
        "# Hook points: chapter 07's training step with and without them",
        "",
        f"Written by `python benchmarks/hooks_overhead.py` (batch {args.batch_size}, {args.threads} threads, "
        f"{args.rounds} interleaved rounds of at least {args.min_run_time} s each), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}. The model has {n_points} hook points; the bypassed copy "
        "calls a plain identity function at each instead.",
        "",
        "| variant | median step (ms) |",
        "|---|---|",
        *(f"| {name} | {t.median * 1e3:.1f} |" for name, t in timings.items()),
        "",
        f"Ratio hook points / bypassed: {of_medians:.3f} (of the medians), {per_round:.3f} (median of the per-round "
        f"ratios; each round: {', '.join(map(str, rounds))}).",
        "",
        f"The control, the same bypassed model timed twice (second copy / first): {noise_medians:.3f} (of the medians), "
        f"{noise_rounds:.3f} (per round). That is what this run's noise alone makes of a ratio.",
        "",
        f"The same cost counted instead of timed: one forward pass makes {calls} hook-point calls; an unused "
        f"`HookPoint` call takes {hook_cost * 1e6:.2f} µs and the plain function {plain_cost * 1e6:.2f} µs, so the hook "
        f"points add about {calls * (hook_cost - plain_cost) * 1e6:.0f} µs to a step, {bound:.2%} of the bypassed "
        "median (backward adds nothing: an identity that returns its input adds no autograd node). A timed ratio "
        "further from 1 than that measures the load from other processes, not the hook points.",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.write_text("\n".join(lines), encoding="utf-8")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
