"""Chapter 07 · What training minimises and how fast: label smoothing, the paper's schedule, the settings.

``training`` re-exports these names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["label_smoothing_loss", "noam_lr", "cooled_lr", "make_optimizer", "TrainConfig"]


def label_smoothing_loss(logits: Tensor, target: Tensor, epsilon: float = 0.1, ignore_index: int = 0) -> Tensor:
    """Cross-entropy against a smoothed target: 1 - epsilon on the right token plus epsilon spread
    evenly over all V tokens (the definition of ``F.cross_entropy(label_smoothing=epsilon)``).
    The mean is over the positions whose target is not ``ignore_index``.

    Shape:
        logits (..., V) float, target (...) long -> scalar
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits (..., V) and target (...) must agree: got {tuple(logits.shape)} and {tuple(target.shape)}")
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon!r}")
    real = target[target != ignore_index]
    if real.numel() and (real.min() < 0 or real.max() >= logits.shape[-1]):
        raise ValueError(f"target ids must lie in 0..{logits.shape[-1] - 1} (V = {logits.shape[-1]} logits), got values "
                         f"from {int(real.min())} to {int(real.max())}: was the model built for this target vocabulary?")
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))  # (..., V)
    keep = target != ignore_index  # (...)
    safe = target.masked_fill(~keep, 0)  # (...) any valid id where ignored; zeroed below
    nll = -log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (...) -log p(right token)
    uniform = -log_probs.mean(dim=-1)  # (...) cross-entropy with the uniform distribution
    per_token = (1.0 - epsilon) * nll + epsilon * uniform  # (...)
    return (per_token * keep).sum() / keep.sum().clamp(min=1)


def noam_lr(step: int, d_model: int, warmup: int = 4000, factor: float = 1.0) -> float:
    """The paper's schedule: factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step from 1.

    It rises linearly for ``warmup`` steps, peaks at ``factor / sqrt(d_model * warmup)``, then
    decays as 1/sqrt(step)."""
    if step < 1:
        raise ValueError(f"steps are counted from 1, got step={step}")
    _check_schedule(d_model, warmup, factor)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def cooled_lr(step: int, total: int, d_model: int, warmup: int = 4000, factor: float = 1.0, cooldown: float = 0.0) -> float:
    """``noam_lr``, except over the last ``cooldown`` share of the ``total`` planned steps, where the rate falls in a
    straight line from its value at the start of that stretch to zero at step ``total + 1``.

    The paper's schedule never comes down to zero: after 4 epochs its rate is still half its peak, and the weights
    keep jumping around the minimum. A short cool-down at the end lets them settle (chapter 07 measures what it buys).
    ``cooldown=0`` is ``noam_lr`` exactly, at every step; with a cool-down, steps past ``total`` get 0.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"total must be the number of planned steps, a positive int, got {total!r}")
    if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or not 0.0 <= cooldown < 1.0:
        raise ValueError(f"cooldown must be the share of the steps that cool down, in [0, 1), got {cooldown!r}")
    start = total - round(cooldown * total)  # the last step of the paper's schedule
    if step <= start or not cooldown:
        return noam_lr(step, d_model, warmup, factor)
    return noam_lr(start, d_model, warmup, factor) * max(0.0, (total + 1 - step) / (total + 1 - start))


def _check_schedule(d_model: int, warmup: int, factor: float) -> None:
    for name, value in (("d_model", d_model), ("warmup", warmup)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int (the schedule divides by it), got {value!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"the learning-rate factor must be a finite number > 0, got {factor!r}")


def make_optimizer(model: nn.Module, d_model: int, warmup: int = 4000, factor: float = 1.0, total: int | None = None,
                   cooldown: float = 0.0):
    """Adam with the paper's betas (0.9, 0.98) and eps 1e-9; the scheduler sets lr = ``noam_lr`` of step 1, 2, ...
    (``cooled_lr`` when ``cooldown`` > 0, which needs the ``total`` planned steps)."""
    _check_schedule(d_model, warmup, factor)
    if cooldown and total is None:
        raise ValueError(f"cooldown={cooldown!r} needs total, the number of planned steps (the cool-down ends there)")
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    n = total or 1  # only read when cooling down (then total was given)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: cooled_lr(i + 1, n, d_model, warmup, factor, cooldown))
    return optimizer, schedule


# --- the settings of a run ---------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``max_seconds`` / ``max_steps`` stop early (a safety limit), ``device="auto"`` picks
    CUDA when present, ``average_last=N`` ends with the mean of the weights of the last N epochs (the
    paper averaged its last 5 checkpoints: it smooths out the noise of the last steps), ``cooldown=c`` ends the
    paper's schedule with a straight fall to zero over the last share ``c`` of the planned steps (``cooled_lr``)."""

    epochs: int = 10
    batch_size: int = 64
    warmup: int = 400
    lr_factor: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"
    max_seconds: float | None = None
    max_steps: int | None = None
    average_last: int = 1
    cooldown: float = 0.0

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ValueError:
            return ValueError(f"TrainConfig.{name} must be {want}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "warmup", "average_last") + (("max_steps",) if self.max_steps is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive int" + (" (the schedule divides by it)" if name == "warmup" else ""))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise bad("seed", "an int")
        if not isinstance(self.lr_factor, (int, float)) or not math.isfinite(self.lr_factor) or self.lr_factor <= 0:
            raise bad("lr_factor", "a finite number > 0")
        if not isinstance(self.label_smoothing, (int, float)) or not 0.0 <= self.label_smoothing < 1.0:
            raise bad("label_smoothing", "in [0, 1)")
        if isinstance(self.cooldown, bool) or not isinstance(self.cooldown, (int, float)) or not 0.0 <= self.cooldown < 1.0:
            raise bad("cooldown", "the share of the planned steps that cool down, in [0, 1)")
        if self.max_seconds is not None and (not isinstance(self.max_seconds, (int, float))
                                             or not self.max_seconds >= 0 or self.max_seconds == math.inf):
            raise bad("max_seconds", "None or a finite number >= 0")
