"""Hangul syllable arithmetic, shared by ``tokens`` (chapter 01) and ``grammar`` (the corpus).

Every precomposed syllable is ``0xAC00 + (initial * 21 + medial) * 28 + final``: 19 initials,
21 medials and 28 finals (index 0 = no final consonant, 받침).
"""
from __future__ import annotations

__all__ = ["HANGUL_FIRST", "HANGUL_LAST", "INITIALS", "MEDIALS", "FINALS", "RIEUL", "decompose", "final_index"]

HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3  # 가 ... 힣: 19 initials x 21 medials x 28 finals = 11172
INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"  # 19
MEDIALS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"  # 21
FINALS = ("", *"ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ")  # 28, index 0 = no final
RIEUL = FINALS.index("ㄹ")  # 8: the final that takes 로, not 으로


def decompose(syllable: str) -> tuple[str, str, str]:
    """Split one Hangul syllable into (initial, medial, final) jamo; final is "" without batchim.

    ``code = 0xAC00 + (initial * 21 + medial) * 28 + final``, so ``decompose("닫") == ("ㄷ", "ㅏ", "ㄷ")``.
    """
    if not isinstance(syllable, str) or len(syllable) != 1:
        raise TypeError(f"decompose expects one character, got {syllable!r}")
    offset = ord(syllable) - HANGUL_FIRST
    if not 0 <= offset <= HANGUL_LAST - HANGUL_FIRST:
        raise ValueError(f"{syllable!r} (U+{ord(syllable):04X}) is not a Hangul syllable (U+AC00..U+D7A3)")
    initial, rest = divmod(offset, 21 * 28)
    medial, final = divmod(rest, 28)
    return INITIALS[initial], MEDIALS[medial], FINALS[final]


def final_index(word: str) -> int:
    """Index in FINALS of the final consonant of the LAST Hangul syllable of ``word`` (0: none)."""
    for ch in reversed(word):
        if HANGUL_FIRST <= ord(ch) <= HANGUL_LAST:
            return (ord(ch) - HANGUL_FIRST) % 28
    raise ValueError(f"expected a word containing a Hangul syllable, got {word!r}")
