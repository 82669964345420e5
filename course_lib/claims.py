"""Claims: a number the prose states about a run is checked by the run itself.

A markdown cell that states a measured number gives the range it stands for ("between 10× and
20×"), and the next code cell calls ``claim`` with the same bounds. When a later change moves
the measurement outside the range, the cell fails under nbval and the text must be updated.
``tests/test_claims.py`` checks that every ``claim`` call's bounds are written in the markdown
cell just above it, so the text and the assertion cannot drift apart either.
"""
from __future__ import annotations

import math


class ClaimError(AssertionError):
    """A number the text states no longer holds for this run."""


def claim(what: str, value: float, low: float, high: float) -> float:
    """Check that ``value`` (what the run measured) lies in ``[low, high]``, the range the text states.

    Prints one line with the measured value and returns it; raises ``ClaimError`` otherwise.
    """
    if not isinstance(what, str) or not what:
        raise TypeError("claim needs a short description of the number as its first argument")
    if not low <= high:
        raise ValueError(f"claim {what!r}: low ({low}) must not exceed high ({high})")
    value = float(value)
    if math.isnan(value) or not low <= value <= high:
        raise ClaimError(
            f"The text says {what} lies between {low:g} and {high:g}, but this run measured {value:.4g}. "
            "Either the code changed what it measures or the text is out of date: fix the one that is wrong."
        )
    print(f"✓ {what}: {value:.4g} (the text says {low:g} to {high:g})")
    return value
