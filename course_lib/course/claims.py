"""Claims: a number the prose states about a run is checked by the run itself.

The markdown cell states the number as a teacher would ("69 merges", "about 14× here",
"exactly zero"), and the next code cell checks the run with
``claim(what, value, low, high, said="14×")``: ``value`` is what this run measured, ``[low, high]``
is the tolerance (it lives only in the code), and ``said`` is the number exactly as the prose
writes it. ``claim`` refuses a ``said`` outside ``[low, high]``; ``tests/test_claims.py`` checks that
every call's ``said`` appears in the markdown cell just above it. So when a change moves the
measurement, the cell fails under nbval; when the text changes its number, the test fails.

How ``said`` is read (:func:`stated_number`): the first number in it, with thousands commas
("1,256"), a decimal point, an exponent ("3.3e18") and a leading minus; ``%`` or "percent" after
it means the number may also be read as a fraction ("99.2 %" is 99.2 or 0.992); a ×, "x" or
"times" after it changes nothing ("14×" is 14). Without digits, a number word counts: "zero"
(also "no", as in "no change") to "ten", "twice" (2), "half" (0.5), "a quarter" (0.25).

A chapter whose training stopped at its time limit goes on with the learner's partly trained model, and
the text's numbers describe a fully trained one: ``claim(..., applies=trained_fully)`` with
``trained_fully`` False prints the measured value marked "not checked" (:data:`NOT_CHECKED`) instead of
raising. The arguments are checked all the same, so the text and the tolerance still agree.
"""
from __future__ import annotations

import math
import re

_NUMBER = re.compile(r"(?<![\w.])([-−]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)(\s*(?:%|percent))?",
                     re.IGNORECASE)
_WORDS = {"zero": 0.0, "no": 0.0, "one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0, "six": 6.0,
          "seven": 7.0, "eight": 8.0, "nine": 9.0, "ten": 10.0, "twice": 2.0, "half": 0.5, "quarter": 0.25}


NOT_CHECKED = "not checked: your model stopped early; the text describes a fully trained one"


class ClaimError(AssertionError):
    """A number the text states no longer holds for this run."""


def stated_number(said: str) -> tuple[float, ...]:
    """The values a phrase of prose may stand for: ``"14×"`` -> (14,), ``"99.2 %"`` -> (99.2, 0.992), ``"zero"`` -> (0,).

    Raises ValueError when the phrase holds no number.
    """
    if not isinstance(said, str):
        raise TypeError(f"said must be the number as the text writes it, a str such as '69' or '14×', "
                        f"got {type(said).__name__} {said!r}")
    match = _NUMBER.search(said)
    if match:
        number = float(match.group(1).replace(",", "").replace("−", "-"))
        return (number, number / 100) if match.group(2) else (number,)
    for word in re.findall(r"[a-z]+", said.lower()):
        if word in _WORDS:
            return (_WORDS[word],)
    raise ValueError(f"said={said!r} holds no number: write it as the prose does, e.g. '69', '14×', '99.2 %' or 'zero'")


def claim(what: str, value: float, low: float, high: float, *, said: str | None = None, applies: bool = True) -> float:
    """Check that ``value`` (what the run measured) lies in ``[low, high]``, the tolerance of the number the text states.

    Args:
        what: a short description of the number.
        value: this run's measurement.
        low, high: the tolerance; the number the text states (``said``) must lie inside it.
        said: that number, written as the markdown above writes it ("69", "about 14×", "99.2 %", "exactly zero").
        applies: whether the text's number describes this run; False (the learner's training stopped early, the
            text describes a fully trained model) prints the value marked ``NOT_CHECKED`` and never raises.

    Prints one line with the measured value and returns it; raises ``ClaimError`` when it is outside.
    """
    if not isinstance(what, str) or not what:
        raise TypeError("claim needs a short description of the number as its first argument")
    if not isinstance(applies, bool):
        raise TypeError(f"claim {what!r}: applies must be True or False (e.g. whether the model trained fully), "
                        f"got {type(applies).__name__} {applies!r}")
    if not low <= high:
        raise ValueError(f"claim {what!r}: low ({low}) must not exceed high ({high})")
    if said is not None and not any(low <= x <= high for x in stated_number(said)):
        raise ValueError(f"claim {what!r}: the text's number said={said!r} is outside the tolerance [{low:g}, {high:g}]")
    value = float(value)
    stated = f"the text says {said}; " if said is not None else ""
    if not applies:
        print(f"– {what}: {value:.4g} ({NOT_CHECKED}: {f'it says {said}, ' if said is not None else ''}"
              f"allowed {low:g} to {high:g})")
        return value
    if math.isnan(value) or not low <= value <= high:
        raise ClaimError(
            f"The text says {what} is {said if said is not None else 'in a range'}, which allows {low:g} to {high:g}, "
            f"but this run measured {value:.4g}. "
            "Either the code changed what it measures or the text is out of date: fix the one that is wrong."
        )
    print(f"✓ {what}: {value:.4g} ({stated}allowed {low:g} to {high:g})")
    return value
