"""Checkers for chapter 01 (tokens): jamo indices, particles, encoding with <unk>, one BPE step, padding.

References are small formulas written here (Hangul arithmetic, pair counting with ``Counter``);
no course model module is imported. Each classic mistake is modelled by a wrong function: when the
learner's answers equal a wrong function's answers, the checker names that mistake.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from . import CheckFailed, call, checker, describe, fail, load_hints, ok

__all__ = ["jamo_indices", "choose_particle", "encode", "most_frequent_pair", "merge_pair", "pad_batch"]

HINTS = load_hints("ch01")

_ERR = object()  # what a wrong function "returns" when it raises


def _outputs(fn: Callable[..., Any], cases: list[tuple]) -> list[Any]:
    out = []
    for args in cases:
        try:
            out.append(fn(*args))
        except NotImplementedError:
            raise
        except Exception:
            out.append(_ERR)
    return out


def _diagnose(fn: Callable[..., Any], cases: list[tuple], reference: Callable[..., Any],
              mistakes: list[tuple[str, Callable[..., Any]]], show: Callable[[tuple], str], hint: str,
              normalise: Callable[[Any], Any] = lambda x: x) -> None:
    """Compare ``fn`` with ``reference`` on every case; on a difference, name the matching mistake."""
    for args in cases:  # first a call that reports a crash with its input
        call(fn, *args, tried=show(args))
    got = [normalise(g) for g in _outputs(fn, cases)]
    expected = [reference(*args) for args in cases]
    if got == expected:
        return
    k = next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)
    for mistake_hint, wrong in mistakes:  # a mistake that explains every answer ...
        if [normalise(w) for w in _outputs(wrong, cases)] == got:
            fail(show(cases[k]), expected[k], got[k], mistake_hint)
    for mistake_hint, wrong in mistakes:  # ... or at least the first wrong one
        w = _outputs(wrong, [cases[k]])[0]
        if w is not _ERR and normalise(w) == got[k]:
            fail(show(cases[k]), expected[k], got[k], mistake_hint)
    fail(show(cases[k]), expected[k], got[k], hint)


# --- Exercise 1: jamo indices -------------------------------------------------------------------

def _jamo(ch: str) -> tuple[int, int, int]:
    offset = ord(ch) - 0xAC00
    if not 0 <= offset < 11172:
        raise ValueError(ch)
    return offset // 588, offset // 28 % 21, offset % 28


def _as_ints(value: Any) -> Any:
    ints = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if ints and len(value) == 3:
        return tuple(value)
    return value


@checker("ch01.jamo_indices")
def jamo_indices(fn: Callable[[str], tuple[int, int, int]]) -> None:
    """Check ``jamo_indices(syllable) -> (initial, medial, final)`` on all 11 172 syllables."""
    golden = ["가", "닫", "는", "를", "힣", "각", "갛", "쀍", "학", "교"]
    cases = [(ch,) for ch in golden] + [(chr(c),) for c in range(0xAC00, 0xD7A4, 7)]
    got = call(fn, "닫", tried="jamo_indices('닫')")
    if not isinstance(_as_ints(got), tuple):
        fail("jamo_indices('닫')", "(3, 0, 7): three ints, the positions in the initial, medial and final tables",
             got, "return the three INDICES as ints (a tuple), not jamo letters or one number")
    mistakes: list[tuple[str, Callable[..., Any]]] = [
        ("subtract 0xAC00 (the code of 가, the first syllable) before dividing: ord(syllable) - 0xAC00",
            lambda ch: (ord(ch) // 588, ord(ch) // 28 % 21, ord(ch) % 28)),
        ("there are 28 finals (index 0 means 'no final' and 27 consonants follow), so divide by 28 and 21 * 28 = 588, not 27",
            lambda ch: ((ord(ch) - 0xAC00) // (21 * 27), (ord(ch) - 0xAC00) // 27 % 21, (ord(ch) - 0xAC00) % 27)),
        ("the block of one initial holds 21 * 28 = 588 syllables: initial = offset // 588 (you used another size)",
            lambda ch: ((ord(ch) - 0xAC00) // (19 * 28), (ord(ch) - 0xAC00) // 28 % 21, (ord(ch) - 0xAC00) % 28)),
        ("divide out the final first: medial = (offset // 28) % 21, not offset % 21",
            lambda ch: ((ord(ch) - 0xAC00) // 588, (ord(ch) - 0xAC00) % 21, (ord(ch) - 0xAC00) % 28)),
        ("return them in the order (initial, medial, final)",
            lambda ch: tuple(reversed(_jamo(ch)))),
        ("indices start at 0 (가 is (0, 0, 0)); do not add 1",
            lambda ch: tuple(i + 1 for i in _jamo(ch))),
        ("the final index is offset % 28 and 0 means 'no final'; do not subtract 1",
            lambda ch: (*_jamo(ch)[:2], _jamo(ch)[2] - 1)),
    ]
    _diagnose(fn, cases, _jamo, mistakes, lambda a: f"jamo_indices({a[0]!r})",
              "the syllables are numbered from 가 in the order initial, then medial, then final (28 finals, 0 = none): "
              "read the three indices off that number",
              normalise=_as_ints)
    for bad in ["a", "ㄱ", chr(0xD7A4), "."]:
        try:
            value = fn(bad)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as err:
            fail(f"jamo_indices({bad!r}) (not a Hangul syllable)", "ValueError", f"{type(err).__name__}: {err}",
                 "raise ValueError (with a message) for a character outside 가..힣 (0xAC00..0xD7A3)")
        fail(f"jamo_indices({bad!r}) (not a Hangul syllable)", "ValueError", value,
             "check 0 <= offset < 11172 (19 * 21 * 28 syllables) and raise ValueError otherwise")
    ok("jamo_indices: right on all 11 172 syllables, and non-syllables raise ValueError")


# --- Exercise 2: particles ------------------------------------------------------------------------

_AFTER_CONSONANT = {"은/는": "은", "이/가": "이", "을/를": "을", "와/과": "과"}
_AFTER_VOWEL = {"은/는": "는", "이/가": "가", "을/를": "를", "와/과": "와"}


def _particle(word: str, pair: str, syllable: int = -1, modulus: int = 28, offset: int = 0xAC00) -> str:
    has_final = (ord(word[syllable]) - offset) % modulus != 0
    return (_AFTER_CONSONANT if has_final else _AFTER_VOWEL)[pair]


@checker("ch01.choose_particle")
def choose_particle(fn: Callable[[str, str], str]) -> None:
    """Check ``choose_particle(word, pair)`` on the four particle pairs and many nouns."""
    words = ["학교", "창문", "순이", "서랍", "고양이", "선생님", "할아버지", "공", "마음", "책", "사과", "물",
             "서울", "바다", "강아지", "빵", "의자", "컴퓨터", "밥", "노트북", "연필", "지우개", "파리", "소년"]
    cases = [(w, p) for w in words for p in _AFTER_CONSONANT]
    mistakes: list[tuple[str, Callable[..., Any]]] = [
        ("a final consonant (batchim) is the syllable's THIRD part, offset % 28 (0 = none); you decided from the medial "
         "vowel, (offset // 28) % 21. Use (ord(word[-1]) - 0xAC00) % 28 != 0",
            lambda w, p: (_AFTER_CONSONANT if (ord(w[-1]) - 0xAC00) // 28 % 21 else _AFTER_VOWEL)[p]),
        ("a final consonant (batchim) is the syllable's THIRD part, offset % 28 (0 = none); you decided from the initial "
         "consonant, offset // 588. Use (ord(word[-1]) - 0xAC00) % 28 != 0",
            lambda w, p: (_AFTER_CONSONANT if (ord(w[-1]) - 0xAC00) // 588 else _AFTER_VOWEL)[p]),
        ("swapped: after a final consonant (batchim) use 은, 이, 을, 과; after a vowel use 는, 가, 를, 와",
            lambda w, p: (_AFTER_VOWEL if (ord(w[-1]) - 0xAC00) % 28 else _AFTER_CONSONANT)[p]),
        ("look at the LAST syllable of the word (word[-1]): the particle is attached to it",
            lambda w, p: _particle(w, p, syllable=0)),
        ("와/과 lists the vowel form first, unlike 은/는, 이/가, 을/를: do not pick by position in the pair, use the table",
            lambda w, p: p.split("/")[0 if (ord(w[-1]) - 0xAC00) % 28 else 1]),
        ("a syllable has a final consonant when (ord(ch) - 0xAC00) % 28 != 0: 28 finals, not 27",
            lambda w, p: _particle(w, p, modulus=27)),
        ("subtract 0xAC00 before taking % 28",
            lambda w, p: _particle(w, p, offset=0)),
    ]
    _diagnose(fn, cases, _particle, mistakes, lambda a: f"choose_particle({a[0]!r}, {a[1]!r})",
              "find whether the last syllable has a final consonant ((ord(word[-1]) - 0xAC00) % 28 != 0), then use the table")
    ok("choose_particle: 은/는, 이/가, 을/를, 와/과 right after every noun tried")


# --- Exercise 3: encode with special tokens ------------------------------------------------------

_STOI = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "순이는": 4, "창문을": 5, "닫았다": 6, ".": 7, "나는": 8, "학교에": 9}


def _encode(tokens: list[str], stoi: dict[str, int], add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = [stoi.get(t, stoi["<unk>"]) for t in tokens]
    return [stoi["<bos>"]] * add_bos + ids + [stoi["<eos>"]] * add_eos


def _as_list(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 1 and not value.is_floating_point():
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


@checker("ch01.encode")
def encode(fn: Callable[..., list[int]]) -> None:
    """Check ``encode(tokens, stoi, add_bos=False, add_eos=False)``: unknown -> <unk>, bos first, eos last."""
    shuffled = {"<pad>": 5, "<bos>": 7, "<eos>": 0, "<unk>": 2, "a": 1, "b": 3, "c": 4, "d": 6}
    cases = [
        (["순이는", "창문을", "닫았다", "."], _STOI, False, False),
        (["순이는", "창문을", "닫았다", "."], _STOI, True, True),
        (["순이는", "서랍을", "닫았다", "."], _STOI, False, False),
        (["그녀는", "서랍을", "닫았다", "."], _STOI, True, True),
        (["나는", "학교에", "간다", "."], _STOI, True, False),
        (["나는"], _STOI, False, True),
        ([], _STOI, True, True),
        (["a", "z", "d", "c"], shuffled, True, True),
    ]
    def show(a):
        stoi_text = "" if a[1] is _STOI else f" with stoi = {a[1]}"
        return f"encode({a[0]}, stoi, add_bos={a[2]}, add_eos={a[3]})" + stoi_text

    for args in cases:
        tokens = list(args[0])
        try:
            fn(tokens, dict(args[1]), args[2], args[3])
        except KeyError as err:
            fail(show(args), _encode(*args), f"KeyError: {err}",
                 "a token that is not in the vocabulary must become the id of '<unk>': stoi.get(token, stoi['<unk>'])")
        except (NotImplementedError, CheckFailed):
            raise
        except Exception:
            pass  # reported with its input by _diagnose
        if tokens != list(args[0]):
            fail(show(args), f"tokens left as {args[0]}", f"tokens changed to {tokens}", "do not modify the list you were given; "
                                                                                         "build a new list of ids")
    mistakes: list[tuple[str, Callable[..., Any]]] = [
        ("do not drop unknown tokens: each one becomes the id of '<unk>', so the sentence keeps its length",
            lambda t, s, b, e: _encode([x for x in t if x in s], s, b, e)),
        ("unknown tokens get the id of '<unk>' (stoi['<unk>']), not the id of '<pad>'",
            lambda t, s, b, e: [s["<bos>"]] * b + [s.get(x, s["<pad>"]) for x in t] + [s["<eos>"]] * e),
        ("look the special ids up in stoi (stoi['<bos>'], stoi['<eos>'], stoi['<unk>']) instead of writing 1, 2, 3",
            lambda t, s, b, e: [1] * b + [s.get(x, 3) for x in t] + [2] * e),
        ("<bos> goes first and <eos> last: you swapped them",
            lambda t, s, b, e: [s["<eos>"]] * b + [s.get(x, s["<unk>"]) for x in t] + [s["<bos>"]] * e),
        ("add <bos> only when add_bos is True and <eos> only when add_eos is True",
            lambda t, s, b, e: [s["<bos>"]] + [s.get(x, s["<unk>"]) for x in t] + [s["<eos>"]]),
        ("add_bos puts <bos> at the START and add_eos puts <eos> at the END",
            lambda t, s, b, e: [s.get(x, s["<unk>"]) for x in t] + [s["<bos>"]] * b + [s["<eos>"]] * e),
    ]
    _diagnose(lambda t, s, b, e: fn(list(t), dict(s), b, e), cases, _encode, mistakes, show,
              "ids = [stoi.get(t, stoi['<unk>']) for t in tokens], with stoi['<bos>'] in front if add_bos and stoi['<eos>'] at "
              "the end if add_eos",
              normalise=_as_list)
    got = call(fn, ["순이는"], _STOI, tried="encode(['순이는'], stoi) with the default add_bos, add_eos")
    if _as_list(got) != [4]:
        fail("encode(['순이는'], stoi) with the default add_bos, add_eos", [4], got, "add_bos and add_eos default to False")
    ok("encode: known tokens, <unk> for unknown ones, <bos>/<eos> where asked")


# --- Exercise 4: the most frequent pair ----------------------------------------------------------

def _non_overlapping(word: tuple[str, ...], pair: tuple[str, str]) -> int:
    """How often ``pair`` occurs in ``word`` when a match is skipped past (as str.count does): 'a a a' holds ('a', 'a') once."""
    count, i = 0, 0
    while i < len(word) - 1:
        hit = (word[i], word[i + 1]) == pair
        count, i = count + hit, i + (2 if hit else 1)
    return count


def _best(word_freqs: dict[tuple[str, ...], int], weighted: bool = True, per_word_once: bool = False,
          tie: str = "smallest", overlapping: bool = True) -> tuple[str, str] | None:
    counts: Counter[tuple[str, str]] = Counter()
    for word, freq in word_freqs.items():
        pairs = list(zip(word, word[1:]))
        if not overlapping:
            pairs = [pair for pair in dict.fromkeys(pairs) for _ in range(_non_overlapping(word, pair))]
        for pair in (dict.fromkeys(pairs) if per_word_once else pairs):
            counts[pair] += freq if weighted else 1
    if not counts:
        return None
    top = max(counts.values())
    tied = [p for p in counts if counts[p] == top]  # in first-seen order
    return {"smallest": min(tied), "largest": max(tied), "first": tied[0]}[tie]


@checker("ch01.most_frequent_pair")
def most_frequent_pair(fn: Callable[[dict], Any]) -> None:
    """Check ``most_frequent_pair(word_freqs)``: adjacent pairs counted with word frequencies, ties -> smallest pair."""
    def W(s):
        return tuple(s.split())

    cases = [
        ({W("l o w"): 5, W("l o w e r"): 2, W("n e w e s t"): 6, W("w i d e s t"): 3},),
        ({W("a b"): 1, W("c d"): 5, W("a b x a b"): 2},),
        ({W("a a a a"): 1, W("b a"): 2},),
        ({W("a a a"): 3, W("b c"): 5},),
        ({W("z y"): 3, W("b c"): 3, W("x b c"): 0},),
        ({W("▁ 학 교 에"): 4, W("▁ 학 교 를"): 3, W("▁ 집 에"): 9},),
        ({W("p q"): 1, W("r s"): 1, W("q p"): 1},),
        ({W("ab c"): 2, W("a bc"): 2, W("a b"): 3},),
        ({W("x"): 10, W("y"): 3},),
        ({},),
    ]
    mistakes: list[tuple[str, Callable[..., Any]]] = [
        ("weight each pair by the frequency of its word: counts[pair] += freq, not += 1",
            lambda wf: _best(wf, weighted=False)),
        ("count EVERY occurrence of a pair in a word (a word with the pair twice adds 2 * freq), not once per word",
            lambda wf: _best(wf, per_word_once=True)),
        ("count overlapping occurrences too: 'a a a' holds the pair ('a', 'a') twice, at positions 0 and 1. Counting "
         "zip(word, word[1:]) sees both; str.count or jumping past a match sees one",
            lambda wf: _best(wf, overlapping=False)),
        ("ties go to the SMALLEST pair in string order (min over the tied pairs), not the largest",
            lambda wf: _best(wf, tie="largest")),
        ("ties go to the smallest pair in string order (min over the tied pairs), not the first one counted",
            lambda wf: _best(wf, tie="first")),
    ]
    def show(a):
        return f"most_frequent_pair({a[0]!r})"

    _diagnose(fn, cases, _best, mistakes, show,
              "count zip(word, word[1:]) over every word, adding its frequency; return the pair with the highest count "
              "(smallest pair on a tie), or None when no word has two symbols",
              normalise=lambda g: tuple(g) if isinstance(g, list) else g)
    ok("most_frequent_pair: weighted counts, every occurrence, ties to the smallest pair, None when nothing is left")


# --- Exercise 5: merge one pair ------------------------------------------------------------------

def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == tuple(pair):
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _merge_first_only(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    for i in range(len(symbols) - 1):
        if (symbols[i], symbols[i + 1]) == tuple(pair):
            return symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return list(symbols)


def _merge_right_to_left(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    return [s[::-1] for s in _merge([s[::-1] for s in symbols][::-1], (pair[1][::-1], pair[0][::-1]))][::-1]


def _merge_overlapping(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out = list(symbols)
    for i in range(len(symbols) - 1):
        if (symbols[i], symbols[i + 1]) == tuple(pair):
            out[i] = symbols[i] + symbols[i + 1]
            out[i + 1] = ""
    return [s for s in out if s]


def _merge_by_text(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    text = " ".join(symbols).replace(f"{pair[0]} {pair[1]}", pair[0] + pair[1])
    return text.split(" ")


@checker("ch01.merge_pair")
def merge_pair(fn: Callable[[list[str], tuple[str, str]], list[str]]) -> None:
    """Check ``merge_pair(symbols, pair)``: every occurrence, left to right, never overlapping."""
    cases = [
        (["▁", "학", "교", "에"], ("학", "교")),
        (["l", "o", "w", "l", "o", "w"], ("l", "o")),
        (["a", "a", "a"], ("a", "a")),
        (["a", "a", "a", "a", "a"], ("a", "a")),
        (["e", "s", "t"], ("s", "e")),
        (["x", "ab", "c"], ("b", "c")),
        (["a", "bc", "ab", "c"], ("ab", "c")),
        (["x"], ("x", "x")),
        ([], ("a", "b")),
        (["n", "ew", "est", "n", "ew"], ("n", "ew")),
    ]
    def show(a):
        return f"merge_pair({a[0]}, {a[1]})"

    for symbols, pair in cases:
        given = list(symbols)
        call(fn, given, pair, tried=show((symbols, pair)))
        if given != symbols:
            fail(show((symbols, pair)), f"symbols left as {symbols}", f"symbols changed to {given}",
                 "do not modify the list you were given: build and return a new list")
    mistakes: list[tuple[str, Callable[..., Any]]] = [
        ("merge EVERY occurrence of the pair, not only the first one", _merge_first_only),
        ("scan left to right: in ['a', 'a', 'a'] the pair ('a', 'a') merges the first two, giving ['aa', "
         "'a']", _merge_right_to_left),
        ("occurrences must not overlap: after a merge, skip past both symbols (i += 2)", _merge_overlapping),
        ("work on the list of symbols, not on joined text: the pair must be two WHOLE adjacent symbols", _merge_by_text),
    ]
    _diagnose(lambda s, p: fn(list(s), p), cases, _merge, mistakes, show,
              "walk i from 0: if symbols[i], symbols[i + 1] is the pair, append their concatenation and jump 2; else append "
              "symbols[i] and step 1",
              normalise=lambda g: list(g) if isinstance(g, tuple) else g)
    ok("merge_pair: every occurrence, left to right, no overlaps, input untouched")


# --- Exercise 6: pad a batch ----------------------------------------------------------------------

def _pad(id_lists: list[list[int]], pad_id: int, left: bool = False, value: int | None = None,
         dtype: torch.dtype = torch.long) -> torch.Tensor:
    length = max(len(ids) for ids in id_lists)
    out = torch.full((len(id_lists), length), pad_id if value is None else value, dtype=dtype)  # (B, L)
    for b, ids in enumerate(id_lists):
        start = length - len(ids) if left else 0
        out[b, start: start + len(ids)] = torch.tensor(ids, dtype=dtype)
    return out


@checker("ch01.pad_batch")
def pad_batch(fn: Callable[[list[list[int]], int], torch.Tensor]) -> None:
    """Check ``pad_batch(id_lists, pad_id) -> LongTensor (B, L)``: right padding to the longest sequence."""
    cases = [
        ([[1, 4, 5, 2], [1, 6, 2], [1, 2]], 0),
        ([[7, 8], [9, 10, 11, 12, 13]], 3),
        ([[5], [], [6, 6]], 9),
        ([[4, 4, 4]], 0),
    ]
    for id_lists, pad_id in cases:
        tried = f"pad_batch({id_lists}, pad_id={pad_id})"
        given = [list(x) for x in id_lists]
        got = call(fn, given, pad_id, tried=tried)
        expected = _pad(id_lists, pad_id)
        if not isinstance(got, torch.Tensor):
            fail(tried, expected, f"{type(got).__name__}: "
                                  f"{describe(got)}", "return a torch tensor: torch.full(...) or torch.tensor(rows)")
        if got.dtype != torch.long:
            fail(tried, "dtype torch.int64 (a LongTensor: embedding lookups need integer ids)", f"dtype {got.dtype}",
                 "create it with dtype=torch.long; token ids are integers, not floats")
        if tuple(got.shape) != tuple(expected.shape):
            fail(tried, f"shape {tuple(expected.shape)} = (number of sequences, longest length)", f"shape {tuple(got.shape)}",
                 "L is the length of the LONGEST sequence in the batch: nothing is cut, nothing extra is added")
        if given != id_lists:
            fail(tried, f"id_lists left as {id_lists}", f"changed to {given}", "do not modify the lists you were given")
        if torch.equal(got, expected):
            continue
        if torch.equal(got, _pad(id_lists, pad_id, left=True)):
            fail(tried, expected, got, "pad on the RIGHT: each row starts with its ids and ends with pad_id")
        if torch.equal(got, _pad(id_lists, pad_id, value=0)):
            fail(tried, expected, got, "fill with the pad_id you are given, not 0")
        fail(tried, expected, got, "row b holds id_lists[b] from column 0, then pad_id up to the longest length")
    ok("pad_batch: (B, L) int64, padded on the right with pad_id")
