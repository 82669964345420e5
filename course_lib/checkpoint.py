"""Chapter 07 · Checkpoints: a trained translator saved with its config and vocabularies.

A checkpoint is a plain dict of tensors, lists, numbers and strings, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). Saving is atomic (a temporary file in
the same folder, flushed to disk, then renamed over the target), so a crash mid-save leaves the
previous file intact. The file records a SHA-256 of exactly what it stores (the weights as stored,
float16 or float32, the config, the vocabularies, the metadata); loading recomputes it. Every way
loading can go wrong (no file, not a checkpoint, a changed byte, a config or special id that makes
no sense, weights that do not fit the config) raises ``CheckpointError`` saying which, before any
model is built. ``training`` re-exports these names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import NamedTuple

import torch

from .files import atomic_write
from .model import Transformer, TransformerConfig
from .tokens import Vocab

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "PRETRAINED_PATH", "load_pretrained",
           "weights_fingerprint", "average_state_dicts", "atomic_save", "verified_load", "content_digest",
           "checkpoint_payload"]

FORMAT = "course_lib.translator/2"  # /2: the "sha256" of the stored content and the "special_ids" entry
PRETRAINED_PATH = Path(__file__).resolve().parent / "data" / "translator_en_ko.pt"
TRAIN_COMMAND = "python -m course_lib.training --out course_lib/data/translator_en_ko.pt --seed 0 --threads 1 --epochs 8"
SPECIAL_IDS = {"pad": Vocab.pad_id, "bos": Vocab.bos_id, "eos": Vocab.eos_id, "unk": Vocab.unk_id}
# Sizes above these are refused before anything is built (chapter 08's paper_base uses 37000 / 512 / 2048 / 6 / 8).
LIMITS = {"src_vocab_size": 2**20, "tgt_vocab_size": 2**20, "d_model": 2**14, "n_heads": 2**10, "d_ff": 2**16,
          "n_layers": 2**7, "max_len": 2**16}


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, changed since it was written, or does not match its own config."""


class Checkpoint(NamedTuple):
    model: Transformer  # in eval mode
    src_vocab: Vocab
    tgt_vocab: Vocab
    meta: dict


# --- plain values, their digest, atomic writes ------------------------------------------------

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
        keys = [k for k in value if not isinstance(k, str)]
        if keys:  # str(k) would merge 1 and "1" into one entry
            raise TypeError(f"{where} has the key {keys[0]!r} ({type(keys[0]).__name__}): checkpoint meta keys "
                            "must be str (write str(key) yourself if that is what you mean)")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{where} is a {type(value).__name__}: checkpoint meta may hold only str, numbers, None, "
                    "tensors, lists and dicts (it must load with weights_only=True)")


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's bytes as stored, any dtype (bfloat16 included, which numpy lacks)."""
    t = tensor.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _feed(digest: hashlib._Hash, value: object) -> None:
    """Feed ``value`` to ``digest`` in one canonical, type-tagged byte form (dict keys sorted)."""
    if isinstance(value, torch.Tensor):
        digest.update(f"T{value.dtype}{tuple(value.shape)}:".encode())
        digest.update(_raw_bytes(value))
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value) if not isinstance(value, float) else value.hex()
        digest.update(f"{type(value).__name__}{len(text)}:{text}".encode())
    else:
        raise TypeError(f"cannot digest a {type(value).__name__}")


def content_digest(payload: dict) -> str:
    """SHA-256 of everything in ``payload`` except its own ``"sha256"`` entry (tensors by dtype, shape and bytes)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


def atomic_save(obj: object, path: str | Path) -> Path:
    """``torch.save(obj, path)`` that never leaves a half-written ``path`` (``files.atomic_write``: a temporary
    file in the same folder, flushed and fsynced, then renamed over ``path``; Ctrl-C waits for the rename). A kill
    at any moment leaves the old file or the new one; two writers leave one writer's whole file; a full disk is
    an OSError saying so."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def verified_load(path: str | Path, what: str = "checkpoint") -> dict:
    """Load a dict written with a ``"sha256"`` of its content (``torch.load(weights_only=True)``) and check it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file fails in many ways (pickle, zip, EOF, ...)
        raise CheckpointError(f"{path} is not a readable {what} (corrupt, truncated or another format): "
                              f"{type(err).__name__}: {str(err)[:200]}") from err
    if isinstance(data, dict) and data.get("format") == "course_lib.translator/1":
        raise CheckpointError(f"{path} was written by an older course_lib (format 1, without a SHA-256 of its "
                              f"content); retrain it with `{TRAIN_COMMAND}` (with your --out)")
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
        raise CheckpointError(f"{path} is not a course_lib {what}: it has no 'sha256' of its content")
    try:
        actual = content_digest(data)
    except TypeError as err:
        raise CheckpointError(f"{path} holds a value a {what} never holds: {err}") from err
    if actual != data["sha256"]:
        raise CheckpointError(f"{path} was changed or damaged after it was written: its content has SHA-256 "
                              f"{actual[:16]}…, the file records {data['sha256'][:16]}…")
    return data


# --- save -------------------------------------------------------------------------------------

def checkpoint_payload(model: Transformer, src_vocab: Vocab, tgt_vocab: Vocab, meta: dict | None = None,
                       half: bool = False) -> dict:
    """What ``save_checkpoint`` writes: the model's weights (float16 with ``half``), config, special ids,
    vocabularies and ``meta``, plus ``"sha256"``, the ``content_digest`` of all of it."""
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper holds the model in .module
    if not isinstance(model, Transformer):
        raise TypeError(f"save_checkpoint expects a course_lib Transformer, got {type(model).__name__}")
    sizes = (len(src_vocab), len(tgt_vocab)), (model.config.src_vocab_size, model.config.tgt_vocab_size)
    if sizes[0] != sizes[1]:
        raise ValueError(f"the vocabularies have sizes {sizes[0]} but the model was built for {sizes[1]}")
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": model.config.to_dict(), "special_ids": dict(SPECIAL_IDS),
               "state_dict": state, "src_vocab": src_vocab.to_dict(), "tgt_vocab": tgt_vocab.to_dict(),
               "meta": _plain(dict(meta or {}))}
    payload["sha256"] = content_digest(payload)
    return payload


def save_checkpoint(path: str | Path, model: Transformer, src_vocab: Vocab, tgt_vocab: Vocab,
                    meta: dict | None = None, half: bool = False) -> Path:
    """Write the model's weights, config and vocabularies to ``path`` atomically (folders are created).

    ``half=True`` stores the floating weights as float16 (half the size; loading turns them back
    to float32). ``meta`` must hold only plain values (str, numbers, lists, dicts).
    """
    payload = checkpoint_payload(model, src_vocab, tgt_vocab, meta, half)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(payload, path)


# --- load: check everything, then build -------------------------------------------------------

def _read(path: Path) -> dict:
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: train one with `{TRAIN_COMMAND}` "
                              "(or pass the path of a file written by save_checkpoint)")
    data = verified_load(path, "translator checkpoint")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a course_lib translator checkpoint (format {data.get('format')!r}, "
                              f"expected {FORMAT!r}); write it with save_checkpoint")
    missing = {"config", "special_ids", "state_dict", "src_vocab", "tgt_vocab", "meta"} - set(data)
    if missing:
        raise CheckpointError(f"{path} lacks the entries {sorted(missing)}")
    for key in ("config", "special_ids", "state_dict", "src_vocab", "tgt_vocab", "meta"):
        if not isinstance(data[key], dict):
            raise CheckpointError(f"{path}: {key!r} must be a dict (as save_checkpoint writes it), "
                                  f"got a {type(data[key]).__name__}")
    bad = [k for k, v in data["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries must be tensors; {bad[:3]} are "
                              f"{type(data['state_dict'][bad[0]]).__name__}")
    return data


def _check_config(cfg: dict) -> TransformerConfig:
    """A TransformerConfig from a saved dict, refusing wrong keys, wrong types and absurd sizes."""
    fields = {f.name: f for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(cfg) - set(fields))
    missing = sorted(n for n, f in fields.items() if n not in cfg and f.default is dataclasses.MISSING)
    if unknown or missing:
        raise CheckpointError(f"config keys: unknown {unknown}, missing {missing}")
    optional = {"attention_dropout", "ffn_dropout"}  # None = the same as dropout
    for name, value in cfg.items():
        if name in optional and value is None:
            continue
        kind = {"dropout": float, "attention_dropout": float, "ffn_dropout": float, "norm_first": bool,
                "share_embeddings": bool, "tie_output": bool}.get(name, int)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            raise CheckpointError(f"config {name} must be a {kind.__name__}, got {type(value).__name__} {value!r:.40}")
        if name in LIMITS and not 1 <= value <= LIMITS[name]:
            raise CheckpointError(f"config {name}={value} is outside 1..{LIMITS[name]}: refused before building the model")
    try:
        return TransformerConfig(**cfg)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid config: {err}") from err


def _check_vocabs(data: dict, config: TransformerConfig) -> tuple[Vocab, Vocab]:
    specials = data["special_ids"]
    if specials != SPECIAL_IDS:
        raise CheckpointError(f"special_ids {specials!r:.120} differ from the course's {SPECIAL_IDS} "
                              "(distinct ids 0-3 for <pad> <bos> <eos> <unk>, which decoding relies on)")
    if isinstance(config.pad_id, bool) or config.pad_id != SPECIAL_IDS["pad"]:
        raise CheckpointError(f"config pad_id={config.pad_id!r}, but the vocabularies pad with id "
                              f"{SPECIAL_IDS['pad']} (<pad>); another id would mask real tokens")
    vocabs = []
    for side in ("src_vocab", "tgt_vocab"):
        itos = data[side].get("itos")
        if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
            raise CheckpointError(f"{side} must hold 'itos', a list of str tokens")
        try:
            vocabs.append(Vocab(itos))
        except ValueError as err:
            raise CheckpointError(f"{side}: {err}") from err
    src_vocab, tgt_vocab = vocabs
    if (len(src_vocab), len(tgt_vocab)) != (config.src_vocab_size, config.tgt_vocab_size):
        raise CheckpointError(f"the file does not match itself: vocabularies of {len(src_vocab)} and {len(tgt_vocab)} "
                              f"tokens, but the config says {config.src_vocab_size} and {config.tgt_vocab_size}")
    return src_vocab, tgt_vocab


def _check_size(state: dict, config: TransformerConfig) -> None:
    """Refuse a config whose model would hold more numbers than the file stores, before building it
    (the weight matrices alone, a lower bound, must fit in what the file holds)."""
    c = config
    D, L, V_src, V_tgt = c.d_model, c.n_layers, c.src_vocab_size, c.tgt_vocab_size
    tables = V_src * D + (0 if c.share_embeddings else V_tgt * D) + (0 if c.tie_output else V_tgt * D)
    matrices = tables + L * (4 * D * D + 2 * D * c.d_ff) + L * (8 * D * D + 2 * D * c.d_ff)  # encoder + decoder
    stored = sum(t.numel() for t in state.values())
    if matrices > stored:
        raise CheckpointError(f"the saved weights do not fit the saved config: it describes a model of at least "
                              f"{matrices:,} weights, the file stores {stored:,} numbers")
    if c.max_len * D > 2**26:
        raise CheckpointError(f"config max_len * d_model = {c.max_len * D:,} positions x dims is too large (> 2**26)")


def _check_shapes(state: dict, model: Transformer) -> None:
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = [f"{k} {tuple(state[k].shape)} {state[k].dtype} != {tuple(v.shape)}" for k, v in expected.items()
                if k in state and (state[k].shape != v.shape or state[k].is_floating_point() != v.is_floating_point())]
    if missing or unexpected or reshaped:
        raise CheckpointError(f"the saved weights do not fit the saved config: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, differently shaped {reshaped[:3]}")


def _check_finite(state: dict) -> None:
    """Refuse weights that are NaN or infinite (a run that diverged, or a damaged file with a recomputed digest)."""
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()}
    if bad:
        name, count = next(iter(bad.items()))
        raise CheckpointError(f"the saved weights are not all finite: {len(bad)} tensors hold NaN or inf, e.g. {name} "
                              f"({count:,} of {state[name].numel():,} values); such a model can only output nonsense")


def _device(device: object) -> torch.device:
    """``device`` as a torch.device this machine has (None: the CPU), checked before anything is read."""
    if device is not None and (isinstance(device, bool) or not isinstance(device, (str, int, torch.device))):
        raise TypeError(f"device must be a torch.device, a name such as 'cpu' or 'cuda', or None, "
                        f"got {type(device).__name__} {device!r:.60}")
    try:
        dev = torch.device("cpu" if device is None else device)
    except RuntimeError:
        raise ValueError(f"device={device!r:.60} is not a device name; expected e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                         "use device='cpu' (or None)")
    return dev


def load_checkpoint(path: str | Path, device: torch.device | str | None = None) -> Checkpoint:
    """Rebuild the model (in eval mode, float32) and the vocabularies saved by ``save_checkpoint``.

    ``device=None`` loads on the CPU. Weights that are NaN or infinite are refused (``CheckpointError``).
    """
    path, device = Path(path), _device(device)
    data = _read(path)
    try:
        config = _check_config(data["config"])
        src_vocab, tgt_vocab = _check_vocabs(data, config)
        _check_size(data["state_dict"], config)  # now building the model allocates about what the file holds
        model = Transformer(config)
        _check_shapes(data["state_dict"], model)
        _check_finite(data["state_dict"])
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # after _check_shapes, only something stranger than a wrong shape
        raise CheckpointError(f"{path}: the saved weights do not fit the saved config: {str(err)[:300]}") from err
    return Checkpoint(model.to(device).eval(), src_vocab, tgt_vocab, dict(data["meta"]))


def load_pretrained(device: torch.device | str | None = None) -> Checkpoint:
    """The translator that ships with the course (trained by ``TRAIN_COMMAND``)."""
    return load_checkpoint(PRETRAINED_PATH, device)


def weights_fingerprint(weights: torch.nn.Module | dict) -> str:
    """A SHA-256 of every tensor of a model's state dict (or of a state dict), names and bytes, in the
    dtype they have: the float32 weights in memory and their float16 copy in a file differ."""
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode() + _raw_bytes(tensor))
    return digest.hexdigest()


def average_state_dicts(states: list[dict]) -> dict:
    """The element-wise mean of several state dicts of one model (the paper averaged its last 5 checkpoints)."""
    if not states or any(s.keys() != states[0].keys() for s in states):
        raise ValueError("average_state_dicts needs one or more state dicts with the same keys")
    return {k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype) for k in states[0]}
