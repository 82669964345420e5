"""What every chapter does to its inputs at the boundary: argument checks and Unicode normalisation.

A wrong type raises ``TypeError`` and a wrong value ``ValueError``; both name the argument and what
was expected. They run once, when a module is built (or at the boundary of a call), never per step.
Text is compared in Unicode NFC (``nfc``) wherever it enters: files, tokenizers, vocabularies, scores.
"""
from __future__ import annotations

import unicodedata

import torch

__all__ = ["check_dropout", "check_ids", "check_int", "check_same_dtype", "nfc", "TokenIdError"]

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


def check_ids(ids: object, vocab_size: int, where: str) -> torch.Tensor:
    """``ids`` as torch.long if it is an integer tensor with every value in 0..vocab_size-1.

    The one place token ids are range-checked (it reads min and max: one host synchronisation on a GPU).
    Wrong type or dtype: TypeError; an id out of range: TokenIdError.
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{where} expects a tensor of token ids (torch.long), got {type(ids).__name__}")
    if ids.dtype not in _INT_DTYPES:
        raise TypeError(f"{where} expects integer token ids (torch.long), got dtype {ids.dtype}; "
                        "ids come from Vocab.encode / encode_batch (use .long() if you built them yourself)")
    if ids.numel():
        low, high = (int(v) for v in torch.aminmax(ids))
        if low < 0 or high >= vocab_size:
            bad = high if high >= vocab_size else low
            raise TokenIdError(f"{where}: token id {bad} is out of range for a vocabulary of size {vocab_size} "
                               f"(valid ids 0..{vocab_size - 1}); was the vocabulary built from other data?")
    return ids.long()
