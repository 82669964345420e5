"""Interleaved timing on ``torch.utils.benchmark``: every variant is timed in every round, the order rotating.

``torch.utils.benchmark.Timer`` does the warm-up (``blocked_autorange`` first runs the statement to
choose its block size), sets the thread count for the measurement, and synchronises CUDA around each
block; ``Measurement`` keeps the statistics and ``Compare`` prints the table. What it does not do is
interleave: timed one after the other, a variant measured while a neighbour process was busy looks
slower than one measured a minute later. So each round times every variant once, in a rotated order,
and the ratio to the reference is taken both of the medians and round by round (the median of the
per-round ratios), which is steadier when the load drifts.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.benchmark import Compare, Measurement, Timer


@dataclass
class Timing:
    """One variant's merged measurement and its per-round medians (seconds per step)."""

    name: str
    merged: Measurement
    rounds: list[float]

    @property
    def median(self) -> float:
        return self.merged.median


def interleaved(steps: dict[str, Callable[[], object]], rounds: int, min_run_time: float, threads: int,
                label: str, sub_label: str = "") -> dict[str, Timing]:
    """Time every ``steps[name]()`` in ``rounds`` rounds, the order rotating each round; one ``Timing`` each.

    Each round is one ``Timer.blocked_autorange(min_run_time)`` per variant: at least one warm-up call
    (the block-size estimate) and one timed block.
    """
    if rounds < 1 or not steps:
        raise ValueError(f"need at least one round and one variant, got rounds={rounds}, {len(steps)} variants")
    names = list(steps)
    per_round: dict[str, list[Measurement]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order every round
            timer = Timer("step()", globals={"step": steps[name]}, label=label, sub_label=sub_label,
                          description=name, num_threads=threads)
            per_round[name].append(timer.blocked_autorange(min_run_time=min_run_time))
    return {name: Timing(name, Measurement.merge(ms)[0], [m.median for m in ms]) for name, ms in per_round.items()}


def ratios(timings: dict[str, Timing], reference: str) -> dict[str, tuple[float, float]]:
    """name -> (ratio of the medians, median of the per-round ratios) against ``timings[reference]``."""
    ref = timings[reference]
    return {name: (t.median / ref.median, statistics.median(a / b for a, b in zip(t.rounds, ref.rounds, strict=True)))
            for name, t in timings.items()}


def compare_table(timings: dict[str, Timing]) -> str:
    """``torch.utils.benchmark.Compare``'s table of the merged measurements (median and spread)."""
    return str(Compare([t.merged for t in timings.values()]))
