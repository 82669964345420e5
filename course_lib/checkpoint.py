"""Chapter 07 · Checkpoints: a trained translator saved with its config and vocabularies.

A checkpoint is a plain dict of tensors, lists, numbers and strings, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). Every way loading can go wrong (no
file, not a checkpoint, weights that do not fit the config or the vocabularies) raises
``CheckpointError`` with a message that says which. ``training`` re-exports these names.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import torch

from .model import Transformer, TransformerConfig
from .tokens import Vocab

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "PRETRAINED_PATH", "load_pretrained",
           "weights_fingerprint", "average_state_dicts"]

FORMAT = "course_lib.translator/1"
PRETRAINED_PATH = Path(__file__).resolve().parent / "data" / "translator_en_ko.pt"
TRAIN_COMMAND = "python -m course_lib.training --out course_lib/data/translator_en_ko.pt --seed 0"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match its own config."""


class Checkpoint(NamedTuple):
    model: Transformer  # in eval mode
    src_vocab: Vocab
    tgt_vocab: Vocab
    meta: dict


def _plain(value: object, where: str = "meta") -> object:
    """``value`` made of plain types only (what ``torch.load(weights_only=True)`` accepts)."""
    if value is None or isinstance(value, bool):
        return value
    for kind in (int, float, str):  # also turns subclasses (numpy floats, torch.__version__) into the plain type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{where} is a {type(value).__name__}: checkpoint meta may hold only str, numbers, None, "
                    "tensors, lists and dicts (it must load with weights_only=True)")


def save_checkpoint(path: str | Path, model: Transformer, src_vocab: Vocab, tgt_vocab: Vocab,
                    meta: dict | None = None, half: bool = False) -> Path:
    """Write the model's weights, config and vocabularies to ``path`` (folders are created).

    ``half=True`` stores the floating weights as float16 (half the size; loading turns them back
    to float32). ``meta`` must hold only plain values (str, numbers, lists, dicts).
    """
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper holds the model in .module
    if not isinstance(model, Transformer):
        raise TypeError(f"save_checkpoint expects a course_lib Transformer, got {type(model).__name__}")
    sizes = (len(src_vocab), len(tgt_vocab)), (model.config.src_vocab_size, model.config.tgt_vocab_size)
    if sizes[0] != sizes[1]:
        raise ValueError(f"the vocabularies have sizes {sizes[0]} but the model was built for {sizes[1]}")
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "config": model.config.to_dict(), "state_dict": state,
                "src_vocab": src_vocab.to_dict(), "tgt_vocab": tgt_vocab.to_dict(), "meta": _plain(dict(meta or {}))}, path)
    return path


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one with `{TRAIN_COMMAND}` "
                              "(or pass the path of a file written by save_checkpoint)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file fails in many ways (pickle, zip, EOF, ...)
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt, truncated or another format): "
                              f"{type(err).__name__}: {str(err)[:200]}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a course_lib translator checkpoint (format {found!r}, "
                              f"expected {FORMAT!r}); write it with save_checkpoint")
    missing = {"config", "state_dict", "src_vocab", "tgt_vocab"} - set(data)
    if missing:
        raise CheckpointError(f"{path} lacks the entries {sorted(missing)}")
    if not isinstance(data["config"], dict) or not isinstance(data["state_dict"], dict):
        raise CheckpointError(f"{path}: 'config' and 'state_dict' must be dicts (as save_checkpoint writes them)")
    return data


def load_checkpoint(path: str | Path, device: torch.device | str | None = None) -> Checkpoint:
    """Rebuild the model (in eval mode, float32) and the vocabularies saved by ``save_checkpoint``.

    ``device=None`` loads on the CPU.
    """
    path, device = Path(path), torch.device(device or "cpu")
    data = _read(path)
    try:
        config = TransformerConfig(**data["config"])
        src_vocab, tgt_vocab = Vocab.from_dict(data["src_vocab"]), Vocab.from_dict(data["tgt_vocab"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has an invalid config or vocabulary: {err}") from err
    if (len(src_vocab), len(tgt_vocab)) != (config.src_vocab_size, config.tgt_vocab_size):
        raise CheckpointError(f"{path} does not match itself: vocabularies of {len(src_vocab)} and {len(tgt_vocab)} "
                              f"tokens, but the config says {config.src_vocab_size} and {config.tgt_vocab_size}")
    model = Transformer(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the saved weights do not fit the saved config "
                              f"(missing, unexpected or differently shaped tensors): {str(err)[:300]}") from err
    return Checkpoint(model.to(device).eval(), src_vocab, tgt_vocab, dict(data.get("meta", {})))


def load_pretrained(device: torch.device | str | None = None) -> Checkpoint:
    """The translator that ships with the course (trained by ``TRAIN_COMMAND``)."""
    return load_checkpoint(PRETRAINED_PATH, device)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A SHA-256 of every tensor of the state dict (names and bytes): equal fingerprints, identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def average_state_dicts(states: list[dict]) -> dict:
    """The element-wise mean of several state dicts of one model (the paper averaged its last 5 checkpoints)."""
    if not states or any(s.keys() != states[0].keys() for s in states):
        raise ValueError("average_state_dicts needs one or more state dicts with the same keys")
    return {k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype) for k in states[0]}
