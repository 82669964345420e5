"""Hook points: read or replace any activation of the course's models by name (chapter 11, chapter-independent).

Every model of the course calls a ``HookPoint`` wherever an activation is worth looking at
(``q = self.hook_q(q)``). With nothing registered a hook point returns its input, the same tensor
object, so outputs are bit-identical and the cost is one Python call. ``run_with_cache`` records the
activations of one forward pass; ``run_with_hooks`` lets a function read or replace them (ablation,
patching). Both remove what they registered when the call ends, even when it raises.

The names follow TransformerLens, so that what a learner learns here transfers:

- ``hook_embed``, ``hook_pos_embed`` (GPT), then per block ``blocks.{i}.`` + ``hook_resid_pre``,
  ``attn.hook_q`` / ``hook_k`` / ``hook_v`` (B, T, H, Dh) (Llama: (B, T, H_kv, Dh) for k and v, and
  ``attn.hook_rot_q`` / ``hook_rot_k`` after the rotation), ``attn.hook_attn_scores`` (B, H, T_q, T_k:
  scaled and masked with -inf, before softmax), ``attn.hook_pattern`` (B, H, T_q, T_k), ``attn.hook_z``
  (B, T, H, Dh: each head's output before W_O), ``hook_attn_out`` (B, T, D), ``hook_resid_mid``,
  ``hook_mlp_out``, ``hook_resid_post``; and ``ln_final.hook_normalized`` for a stack that ends with a norm:
  the norm's output, after its gain and bias, what the unembedding reads (TransformerLens 4 names that
  ``ln_final.hook_out`` and hooks ``hook_normalized`` before the gain and bias; tests/test_hooks.py).
- The encoder-decoder ``Transformer`` (chapter 07): ``encoder.hook_embed`` / ``decoder.hook_embed`` (token
  vectors times sqrt(D), before the positions are added; ``blocks.0.hook_resid_pre`` is the sum), the same
  block names under ``encoder.blocks.{i}.`` and ``decoder.blocks.{i}.``, and in a decoder block
  ``cross_attn.hook_q`` .. ``hook_z`` (keys and values from the memory), ``hook_cross_attn_out``, and
  ``hook_resid_mid2``, the stream between cross-attention and the feed-forward network.
- Where a residual hook sits: pre-LN (GPT, Llama, ``norm_first=True``) ``hook_resid_*`` is the raw sum
  ``x + branch``; post-LN (the paper, the shipped translator) it is the normalised stream the next
  sub-layer reads, ``norm(x + branch)``, and ``hook_resid_post`` is the block's output.
- ``hook_attn_out``, ``hook_mlp_out`` and ``hook_cross_attn_out`` are the branches added to the stream
  (after their dropout, which eval mode switches off).

Model attributes need not be named like the hooks (chapter 07 says ``encoder.layers.0.self_attn``);
``hook_names`` translates (``layers`` → ``blocks``, ``self_attn`` → ``attn``). A fused attention
(``multihead.set_fused``) never forms the scores or the pattern, so their hook points do not run there:
asking for them raises. Chapter 08's incremental decoding (``kvcache``) computes the decoder piece by piece:
only the attention's scores, pattern and z and the feed-forward output run there, once per step, so
``run_with_cache`` refuses a decoding loop (a name that runs twice); ``run_with_hooks`` may act on every step.
(GPT and Llama with a ``KVCache`` run every hook point at each call.)
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from torch import Tensor, nn

__all__ = ["HookPoint", "Cache", "UnknownHookError", "hook_names", "hook_points", "run_with_cache", "run_with_hooks"]

HookFn = Callable[[Tensor, str], "Tensor | None"]  # fn(activation, hook name) -> a replacement, or None to keep it
Names = Sequence[str] | Callable[[str], bool] | None  # hook names, a predicate on names, or None for all

_RENAMES = {"layers": "blocks", "self_attn": "attn"}  # model attribute -> TransformerLens hook path segment
_ORDER = ["hook_embed", "hook_pos_embed", "encoder", "decoder", "blocks", "hook_resid_pre", "attn", "hook_q", "hook_k",
          "hook_v", "hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_pattern", "hook_z", "hook_attn_out",
          "hook_resid_mid", "cross_attn", "hook_cross_attn_out", "hook_resid_mid2", "hook_mlp_out", "hook_resid_post",
          "ln_final", "hook_normalized"]  # the order in which a forward pass reaches them
_RANK = {name: i for i, name in enumerate(_ORDER)}
_NEED_WEIGHTS = ("hook_attn_scores", "hook_pattern")  # formed by the hand-written attention only


class HookPoint(nn.Module):
    """An identity placed in a forward pass: ``x = self.hook_q(x)``; registered functions may read or replace x.

    Args:
        name: the hook's name relative to its parent module when it differs from the attribute
            (e.g. ``"ln_final.hook_normalized"``); None uses the attribute name.
    """

    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return x  # the same object: nothing is computed unless a hook is registered


class UnknownHookError(KeyError):
    """A hook name the model does not have; the message lists the valid names, closest first."""

    def __str__(self) -> str:
        return str(self.args[0])


class Cache(NamedTuple):
    """What ``run_with_cache`` returns: the forward's output and the activations, name -> detached tensor."""

    output: Any
    cache: dict[str, Tensor]


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook point of ``model`` by its TransformerLens-style name, in forward order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"hook_points expects a torch.nn.Module (a course model), got {type(model).__name__}")
    found: dict[str, HookPoint] = {}
    for path, module in model.named_modules():
        if isinstance(module, HookPoint):
            parent, _, attribute = path.rpartition(".")
            segments = [_RENAMES.get(s, s) for s in parent.split(".") if s] + [module.name or attribute]
            found[".".join(segments)] = module
    return dict(sorted(found.items(), key=lambda item: _order_key(item[0])))


def hook_names(model: nn.Module) -> list[str]:
    """The name of every hook point of ``model``, in the order a forward pass reaches them."""
    return list(hook_points(model))


def _order_key(name: str) -> tuple[tuple[int, int], ...]:
    return tuple((_RANK.get(s, len(_RANK)), int(s) if s.isdigit() else 0) for s in name.split("."))


def _unknown(name: object, valid: Sequence[str]) -> Exception:
    if not isinstance(name, str):
        return TypeError(f"a hook name must be a str, got {type(name).__name__} {name!r:.60}")
    close = difflib.get_close_matches(name, valid, n=len(valid), cutoff=0.5)
    rest = [v for v in valid if v not in close]
    return UnknownHookError(f"unknown hook point {name!r}; valid names, closest first: {', '.join(close + rest)}")


def _select(points: dict[str, HookPoint], names: Names) -> list[str]:
    """The requested names (a list, a predicate, or None for all), each checked against ``points``."""
    valid = list(points)
    if names is None:
        return valid
    if callable(names):
        return [n for n in valid if names(n)]
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"names must be a list of hook names, a function str -> bool, or None (all), got {names!r:.80}")
    chosen = list(names)
    for name in chosen:
        if name not in points:
            raise _unknown(name, valid)
    return chosen


def _check_formed(model: nn.Module, points: dict[str, HookPoint], chosen: Iterable[str]) -> None:
    """Refuse scores/pattern hooks of a fused attention: that kernel never forms them, so they would never run."""
    fused = {id(m.hook_attn_scores) for m in model.modules() if getattr(m, "fused", False) and hasattr(m, "hook_attn_scores")}
    fused |= {id(m.hook_pattern) for m in model.modules() if getattr(m, "fused", False) and hasattr(m, "hook_pattern")}
    bad = [n for n in chosen if id(points[n]) in fused]
    if bad:
        raise ValueError(f"{bad[0]} is never formed: this model's attention is fused (F.scaled_dot_product_attention). "
                         "Switch it off with multihead.set_fused(model, False), or ask for other names")


def _register(point: HookPoint, name: str, fn: HookFn) -> Any:
    """A forward hook on ``point`` that calls ``fn(tensor, name)`` and checks a replacement's shape."""
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        new = fn(output, name)
        if new is None:
            return None
        if not isinstance(new, Tensor):
            raise TypeError(f"the hook on {name} returned {type(new).__name__}: return a tensor of shape "
                            f"{tuple(output.shape)} to replace the activation, or None to keep it")
        if new.shape != output.shape:
            raise ValueError(f"the hook on {name} returned shape {tuple(new.shape)}, expected {tuple(output.shape)} "
                             f"(the activation it replaces)")
        return new
    return point.register_forward_hook(hook)


def run_with_hooks(model: nn.Module, *inputs: Any, hooks: Sequence[tuple[str, HookFn]] = (),
                   forward: Callable | None = None, **kwargs: Any) -> Any:
    """``model(*inputs, **kwargs)`` (or ``forward(...)``) with ``fn(tensor, name)`` run at each named hook point.

    ``fn`` returns None to leave the activation as it is, or a tensor of the same shape that replaces it
    (ablation, patching). Several hooks may share a name; they run in the order given. Every hook is
    removed when the call ends, also when it raises. Returns the forward's output.
    """
    points = hook_points(model)
    call = model if forward is None else forward
    if not callable(call):
        raise TypeError(f"forward must be a callable such as model.encode, got {type(call).__name__}")
    pairs: list = [hooks] if isinstance(hooks, tuple) and len(hooks) == 2 and isinstance(hooks[0], str) else list(hooks)
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
            raise TypeError(f"hooks must be a list of (name, fn) pairs with fn(tensor, name) -> tensor or None, got {pair!r:.80}")
    _select(points, [name for name, _ in pairs])
    _check_formed(model, points, [name for name, _ in pairs])
    handles = [_register(points[name], name, fn) for name, fn in pairs]
    try:
        return call(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def run_with_cache(model: nn.Module, *inputs: Any, names: Names = None, forward: Callable | None = None,
                   **kwargs: Any) -> Cache:
    """Run ``model(*inputs, **kwargs)`` (or ``forward(...)``, e.g. ``model.encode``) and record activations.

    Args:
        names: a list of hook names, a predicate ``str -> bool``, or None for every hook point that runs.
    Returns:
        Cache(output, cache): ``cache[name]`` is the activation, detached (the model's mode decides dropout:
        call ``model.eval()`` first for a deterministic record). A name asked for by list that does not run
        (another ``forward``) raises, and so does a hook point that runs twice in one call (a decoding loop).
    """
    points = hook_points(model)
    chosen = _select(points, names)
    _check_formed(model, points, chosen)
    cache: dict[str, Tensor] = {}

    def record(tensor: Tensor, name: str) -> None:
        if name in cache:
            raise RuntimeError(f"{name} ran twice in one call (a decoding loop?): run_with_cache records one forward "
                               "pass; use run_with_hooks to act at every step")
        cache[name] = tensor.detach()

    output = run_with_hooks(model, *inputs, hooks=[(n, record) for n in chosen], forward=forward, **kwargs)
    missing = [n for n in chosen if n not in cache]
    if missing and names is not None and not callable(names):
        raise RuntimeError(f"{missing[0]} did not run in this call ({len(missing)} of the names asked for did not): "
                           "was it the right model, or the right forward (e.g. model.encode runs no decoder)?")
    return Cache(output, {n: cache[n] for n in chosen if n in cache})
