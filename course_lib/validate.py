"""What every chapter does to its inputs at the boundary: argument checks and Unicode normalisation.

A wrong type raises ``TypeError`` and a wrong value ``ValueError``; both name the argument and what
was expected. They run once, when a module is built (or at the boundary of a call), never per step.
Text is compared in Unicode NFC (``nfc``) wherever it enters: files, tokenizers, vocabularies, scores.
"""
from __future__ import annotations

import math
import numbers
import unicodedata

import torch

__all__ = ["MAX_PARAMETERS", "check_dropout", "check_features", "check_ids", "check_int", "check_model_size", "check_number",
           "check_same_dtype", "nfc", "TokenIdError"]

MAX_PARAMETERS = 10**10
"""The most numbers (parameters and position tables) a model config may ask for: 10 billion, 40 GB in float32.

Above any model this course builds or loads (a 7B Llama through ``from_hf`` fits); a config beyond it is
a size off by some zeros, refused before the allocator is asked for terabytes."""

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class TokenIdError(ValueError, IndexError):
    """A token id outside the vocabulary. A ValueError (a wrong value) that ``except IndexError`` also catches."""


def nfc(text: str) -> str:
    """``text`` in Unicode NFC: a Hangul syllable typed as separate jamo (NFD, as macOS stores file
    names) becomes the one precomposed character the corpus uses, so both spellings are one token."""
    return unicodedata.normalize("NFC", text)


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum`` (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_number(value: object, name: str, minimum: float | None = None, maximum: float | None = None, *,
                 above: bool = False, hint: str = "") -> float:
    """``value`` as a float if it is a finite real number >= ``minimum`` (> when ``above``) and <= ``maximum``.

    Bools, strings and tensors raise a TypeError; NaN, infinities and values out of range a ValueError.
    """
    low = "" if minimum is None else f"{'>' if above else '>='} {minimum:g}"
    bounds = (f"in {'(' if above else '['}{minimum:g}, {maximum:g}]" if minimum is not None and maximum is not None
              else low or f"<= {maximum:g}")
    expected = f"{name} must be {bounds} (a finite number{'; ' + hint if hint else ''})"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{expected}, got {type(value).__name__} {value!r:.60}")
    number = float(value)
    if (not math.isfinite(number) or (minimum is not None and (number <= minimum if above else number < minimum))
            or (maximum is not None and number > maximum)):
        raise ValueError(f"{expected}, got {value!r}")
    return number


def check_dropout(p: object, name: str = "dropout") -> float:
    """``p`` if it is a probability in [0, 1) (1 would zero every unit)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(p).__name__} {p!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1) (the probability of zeroing a unit), got {p!r}")
    return float(p)


def check_same_dtype(x: torch.Tensor, expected: torch.dtype, name: str, what: str) -> None:
    """Raise a TypeError unless ``x`` has dtype ``expected`` (skipped under autocast, which mixes dtypes on purpose)."""
    if x.dtype != expected and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but {what} is {expected}: convert one of them, e.g. "
                        f"x.to({expected}) or module.to({x.dtype})")


def check_features(x: object, d_model: int, where: str) -> torch.Tensor:
    """``x`` if it is a floating tensor of token vectors (..., D) with D = ``d_model`` (what a norm takes)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where} expects a floating-point tensor of token vectors (..., D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{where} expects floating-point token vectors (..., D), got dtype {x.dtype}")
    if x.shape[-1:] != (d_model,):
        raise ValueError(f"{where} expects (..., D) with D = {d_model}, got {tuple(x.shape)}")
    return x


def check_model_size(where: str, parts: dict[str, int], limit: int = MAX_PARAMETERS) -> None:
    """Raise a ValueError when a config asks for more than ``limit`` numbers in all, naming its largest part.

    ``parts`` maps each part, written with the config fields it comes from (``"src_vocab_size = 37000 ×
    d_model = 512"``), to its count; it is called from the config, before anything is allocated.
    """
    total = sum(parts.values())
    if total > limit:
        name, count = max(parts.items(), key=lambda part: part[1])
        raise ValueError(f"{where} would hold about {total:.2g} numbers ({4 * total / 2**30:,.0f} GiB in float32), more than "
                         f"the course's limit of {limit:.0e} (validate.MAX_PARAMETERS); the largest part is {name} "
                         f"({count:.2g} numbers): is a size off by some zeros?")


def check_ids(ids: object, vocab_size: int, where: str, ignore_index: int | None = None) -> torch.Tensor:
    """``ids`` as torch.long if it is an integer tensor with every value in 0..vocab_size-1.

    The one place token ids are range-checked (it reads min and max: one host synchronisation on a GPU).
    Values equal to ``ignore_index`` (a loss's ignored targets, e.g. -100) are not checked.
    Wrong type or dtype: TypeError; an id out of range: TokenIdError.
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{where} expects a tensor of token ids (torch.long), got {type(ids).__name__}")
    if ids.dtype not in _INT_DTYPES:
        raise TypeError(f"{where} expects integer token ids (torch.long), got dtype {ids.dtype}; "
                        "ids come from Vocab.encode / encode_batch (use .long() if you built them yourself)")
    counted = ids if ignore_index is None else ids[ids != ignore_index]
    if counted.numel():
        low, high = (int(v) for v in torch.aminmax(counted))
        if low < 0 or high >= vocab_size:
            bad = high if high >= vocab_size else low
            raise TokenIdError(f"{where}: token id {bad} is out of range for a vocabulary of size {vocab_size} "
                               f"(valid ids 0..{vocab_size - 1}); was the vocabulary built from other data?")
    return ids.long()
