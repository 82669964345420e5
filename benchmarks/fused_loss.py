"""The output projection and the cross-entropy in one chunked step, for the GPU benchmark's MFU attempt.

At the paper's base size a step of 25,000 target tokens over a 37,000-token vocabulary makes a
(25,000 × 37,000) logits tensor: 1.85 GB in bf16, 3.7 GB as the float32 copy the loss works on, and
log-softmax keeps another float32 copy for the backward pass. Those passes over memory do no
multiply-adds, so they lower the model FLOPs utilisation. ``linear_cross_entropy`` never holds more
than one chunk of logits: for each chunk of positions it computes the logits, the loss and, right away,
the gradients with respect to the hidden states and the projection (softmax minus the smoothed
target, times the chunk's inputs); the backward pass only scales them. Its value and gradients
equal ``F.cross_entropy(hidden @ weight.T, target, ignore_index=, label_smoothing=)``
(``tests/test_benchmarks.py``). ``chunk_grad`` (the element-wise part of one chunk) can be handed
to ``torch.compile`` so that its half-dozen element-wise passes become one or two kernels.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ChunkGrad = Callable[[Tensor, Tensor, Tensor, float, Tensor], tuple[Tensor, Tensor]]


def chunk_grad(logits: Tensor, target: Tensor, keep: Tensor, smoothing: float, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Summed loss of one chunk and d(loss * scale)/d(logits).

    Per position: loss = logsumexp(z) - (1 - s)·z_target - s·mean(z) (cross-entropy against 1 - s on the
    target plus s spread over all V tokens); its gradient is softmax(z) - (1 - s)·onehot - s / V.

    Shape:
        logits (N, V) float, target (N,) long (any valid id where ignored), keep (N,) bool, scale () -> (), (N, V)
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (N, V) at least float32
    lse = z.logsumexp(dim=-1)  # (N,)
    z_target = z.gather(1, target[:, None]).squeeze(1)  # (N,)
    per_token = lse - (1.0 - smoothing) * z_target - smoothing * z.mean(dim=-1)  # (N,)
    grad = (z - lse[:, None]).exp() - smoothing / z.shape[-1]  # (N, V) softmax - s / V
    grad = grad.scatter_add(1, target[:, None], torch.full_like(z_target[:, None], smoothing - 1.0))  # - (1 - s) onehot
    grad = grad * (keep[:, None] * scale)  # ignored positions get no gradient
    return (per_token * keep).sum(), grad


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, target: Tensor, ignore_index: int, smoothing: float,
                chunk: int, grad_fn: ChunkGrad) -> Tensor:
        keep = target != ignore_index  # (N,)
        count = keep.sum().clamp(min=1)
        scale = 1.0 / count.to(torch.promote_types(hidden.dtype, torch.float32))  # the mean over kept positions
        safe = target.masked_fill(~keep, 0)  # (N,)
        total = hidden.new_zeros((), dtype=scale.dtype)
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None  # (N, D)
        grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32)) \
            if ctx.needs_input_grad[1] else None  # (V, D)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk]  # (n, D)
            logits = h @ weight.T  # (n, V): under autocast a bf16 matmul
            loss, g = grad_fn(logits, safe[start:start + chunk], keep[start:start + chunk], smoothing, scale)
            total = total + loss
            g = g.to(logits.dtype)  # (n, V) back to the matmul's dtype
            if grad_h is not None:
                grad_h[start:start + chunk] = g @ weight.to(g.dtype)  # (n, D)
            if grad_w is not None:
                grad_w += g.T @ h.to(g.dtype)  # (V, D)
        ctx.save_for_backward(*(t for t in (grad_h, grad_w) if t is not None))
        ctx.has = (grad_h is not None, grad_w is not None)
        return total * scale

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        saved = iter(ctx.saved_tensors)
        grad_h = next(saved) * grad_out if ctx.has[0] else None
        grad_w = next(saved) * grad_out if ctx.has[1] else None
        return grad_h, grad_w, None, None, None, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, target: Tensor, ignore_index: int = -100,
                         label_smoothing: float = 0.0, chunk: int = 4096, grad_fn: ChunkGrad = chunk_grad) -> Tensor:
    """``F.cross_entropy(hidden @ weight.T, target, ignore_index=, label_smoothing=)`` (mean over the kept
    positions), one chunk of ``chunk`` positions at a time, the gradients computed in the forward pass.

    Shape:
        hidden (..., D), weight (V, D), target (...) long -> scalar
    """
    if hidden.shape[:-1] != target.shape or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"hidden (..., D), weight (V, D) and target (...) must agree: got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)} and {tuple(target.shape)}")
    if chunk < 1 or not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"chunk must be >= 1 and label_smoothing in [0, 1), got {chunk!r} and {label_smoothing!r}")
    return _LinearCrossEntropy.apply(hidden.flatten(0, -2), weight, target.flatten(), ignore_index,
                                     float(label_smoothing), chunk, grad_fn)
