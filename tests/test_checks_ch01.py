"""Checkers of chapter 01: the solutions pass, stubs propagate NotImplementedError, classic mistakes get their hint."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch

from course_lib.course import checks
from course_lib.course.checks import CheckFailed

ch01 = checks.ch01


def stub(*args, **kwargs):
    raise NotImplementedError("write it")


@pytest.mark.parametrize("name", ch01.__all__)
def test_stubs_propagate_not_implemented(name):
    with pytest.raises(NotImplementedError):
        getattr(ch01, name)(stub)


# --- Exercise 1: jamo indices -------------------------------------------------------------------

def jamo_solution(syllable):
    offset = ord(syllable) - 0xAC00
    if not 0 <= offset < 19 * 21 * 28:
        raise ValueError(f"{syllable!r} is not a Hangul syllable")
    return offset // (21 * 28), (offset // 28) % 21, offset % 28


def jamo_other_style(syllable):  # divmod, and a list instead of a tuple
    if not "가" <= syllable <= "힣":
        raise ValueError("not a syllable")
    rest, final = divmod(ord(syllable) - 0xAC00, 28)
    initial, medial = divmod(rest, 21)
    return [initial, medial, final]


def jamo_by_normalisation(syllable):  # via Unicode NFD: another correct route
    import unicodedata

    if len(syllable) != 1 or not 0xAC00 <= ord(syllable) <= 0xD7A3:
        raise ValueError("not a syllable")
    nfd = unicodedata.normalize("NFD", syllable)
    final = ord(nfd[2]) - 0x11A7 if len(nfd) == 3 else 0
    return ord(nfd[0]) - 0x1100, ord(nfd[1]) - 0x1161, final


def test_jamo_solutions_pass(capsys):
    for fn in (jamo_solution, jamo_other_style, jamo_by_normalisation):
        ch01.jamo_indices(fn)
    assert capsys.readouterr().out.count("✓ jamo_indices") == 3


@pytest.mark.parametrize("wrong, hint", [
    (lambda s: (ord(s) // 588, ord(s) // 28 % 21, ord(s) % 28), "subtract 0xAC00"),
    (lambda s: ((o := ord(s) - 0xAC00) // (21 * 27), o // 27 % 21, o % 27), "28 finals"),
    (lambda s: ((o := ord(s) - 0xAC00) // 588, o % 21, o % 28), r"medial = \(offset // 28\) % 21"),
    (lambda s: tuple(reversed(jamo_solution(s))), r"order \(initial, medial, final\)"),
    (lambda s: tuple(i + 1 for i in jamo_solution(s)), "start at 0"),
    (lambda s: ((o := ord(s) - 0xAC00) // 532, o // 28 % 21, o % 28), "21 \\* 28 = 588"),
    (lambda s: "ㄷㅏㄷ", "INDICES as ints"),
    (lambda s: ord(s) - 0xAC00, "INDICES as ints"),
    (lambda s: ((o := ord(s) - 0xAC00) // 588, o // 28 % 21, o % 28), "raise ValueError"),
    (lambda s: jamo_solution(s) if "가" <= s <= "힣" else (0, 0, 0)[5], "raise ValueError \\(with a message\\)"),
])
def test_jamo_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch01.jamo_indices(wrong)


# --- Exercise 2: particles ----------------------------------------------------------------------

AFTER_CONSONANT = {"은/는": "은", "이/가": "이", "을/를": "을", "와/과": "과"}
AFTER_VOWEL = {"은/는": "는", "이/가": "가", "을/를": "를", "와/과": "와"}


def particle_solution(word, pair):
    has_final = (ord(word[-1]) - 0xAC00) % 28 != 0
    table = {"은/는": ("은", "는"), "이/가": ("이", "가"), "을/를": ("을", "를"), "와/과": ("과", "와")}
    after_consonant, after_vowel = table[pair]
    return after_consonant if has_final else after_vowel


def particle_other_style(word, pair):  # decides by which form starts with a silent ㅇ ... except 와/과
    a, b = pair.split("/")
    if pair == "와/과":
        a, b = b, a
    return a if jamo_solution(word[-1])[2] else b


def test_particle_solutions_pass(capsys):
    ch01.choose_particle(particle_solution)
    ch01.choose_particle(particle_other_style)
    assert capsys.readouterr().out.count("✓ choose_particle") == 2


@pytest.mark.parametrize("wrong, hint", [
    (lambda w, p: (AFTER_VOWEL if (ord(w[-1]) - 0xAC00) % 28 else AFTER_CONSONANT)[p], "swapped"),
    (lambda w, p: particle_solution(w[0], p), "LAST syllable"),
    (lambda w, p: p.split("/")[0] if (ord(w[-1]) - 0xAC00) % 28 else p.split("/")[1], "와/과 lists the vowel form first"),
    (lambda w, p: (AFTER_CONSONANT if (ord(w[-1]) - 0xAC00) % 27 else AFTER_VOWEL)[p], "not 27"),
    (lambda w, p: (AFTER_CONSONANT if ord(w[-1]) % 28 else AFTER_VOWEL)[p], "subtract 0xAC00"),
    (lambda w, p: "를", "last syllable has a final consonant"),
    (lambda w, p: (AFTER_CONSONANT if (ord(w[-1]) - 0xAC00) // 28 % 21 else AFTER_VOWEL)[p], "from the medial vowel"),
    (lambda w, p: (AFTER_CONSONANT if (ord(w[-1]) - 0xAC00) // 588 else AFTER_VOWEL)[p], "from the initial consonant"),
])
def test_particle_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch01.choose_particle(wrong)


def test_a_particle_chosen_from_the_medial_vowel_is_not_called_swapped():
    with pytest.raises(CheckFailed) as err:
        ch01.choose_particle(lambda w, p: (AFTER_CONSONANT if (ord(w[-1]) - 0xAC00) // 28 % 21 else AFTER_VOWEL)[p])
    assert "swapped" not in str(err.value)


# --- Exercise 3: encode ---------------------------------------------------------------------------

def encode_solution(tokens, stoi, add_bos=False, add_eos=False):
    ids = [stoi.get(token, stoi["<unk>"]) for token in tokens]
    if add_bos:
        ids = [stoi["<bos>"]] + ids
    if add_eos:
        ids = ids + [stoi["<eos>"]]
    return ids


def encode_other_style(tokens, stoi, add_bos=False, add_eos=False):  # a tensor, built with a loop
    ids = [stoi["<bos>"]] if add_bos else []
    for token in tokens:
        ids.append(stoi[token] if token in stoi else stoi["<unk>"])
    ids += [stoi["<eos>"]] * int(add_eos)
    return torch.tensor(ids, dtype=torch.long)


def test_encode_solutions_pass(capsys):
    ch01.encode(encode_solution)
    ch01.encode(encode_other_style)
    assert capsys.readouterr().out.count("✓ encode") == 2


def encode_keyerror(tokens, stoi, add_bos=False, add_eos=False):
    return [stoi["<bos>"]] * add_bos + [stoi[t] for t in tokens] + [stoi["<eos>"]] * add_eos


def encode_mutates(tokens, stoi, add_bos=False, add_eos=False):
    if add_bos:
        tokens.insert(0, "<bos>")
    if add_eos:
        tokens.append("<eos>")
    return [stoi.get(t, stoi["<unk>"]) for t in tokens]


@pytest.mark.parametrize("wrong, hint", [
    (encode_keyerror, "must become the id of '<unk>'"),
    (lambda t, s, b=False, e=False: encode_solution([x for x in t if x in s], s, b, e), "do not drop unknown tokens"),
    (lambda t, s, b=False, e=False: [s["<bos>"]] * b + [s.get(x, 0) for x in t] + [s["<eos>"]] * e, "not the id of '<pad>'"),
    (lambda t, s, b=False, e=False: [1] * b + [s.get(x, 3) for x in t] + [2] * e, "instead of writing 1, 2, 3"),
    (lambda t, s, b=False, e=False: [s["<eos>"]] * b + [s.get(x, s["<unk>"]) for x in t] + [s["<bos>"]] * e, "swapped"),
    (lambda t, s, b=False, e=False: [s["<bos>"]] + [s.get(x, s["<unk>"]) for x in t] + [s["<eos>"]], "only when add_bos is True"),
    (lambda t, s, b=False, e=False: [s.get(x, s["<unk>"]) for x in t] + [s["<bos>"]] * b + [s["<eos>"]] * e, "at the START"),
    (encode_mutates, "do not modify the list"),
    (lambda t, s, b=True, e=True: encode_solution(t, s, b, e), "default to False"),
])
def test_encode_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch01.encode(wrong)


# --- Exercise 4: the most frequent pair -----------------------------------------------------------

def pair_solution(word_freqs):
    counts = Counter()
    for word, freq in word_freqs.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    if not counts:
        return None
    best = max(counts.values())
    return min(pair for pair, count in counts.items() if count == best)


def pair_other_style(word_freqs):  # defaultdict, one sort with a key
    counts = defaultdict(int)
    for word, freq in word_freqs.items():
        for i in range(len(word) - 1):
            counts[word[i], word[i + 1]] += freq
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return list(ranked[0][0]) if ranked else None


def test_most_frequent_pair_solutions_pass(capsys):
    ch01.most_frequent_pair(pair_solution)
    ch01.most_frequent_pair(pair_other_style)
    assert capsys.readouterr().out.count("✓ most_frequent_pair") == 2


def pair_first_max(word_freqs):  # max(counts, key=counts.get): the first pair counted wins a tie
    counts = Counter()
    for word, freq in word_freqs.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return max(counts, key=counts.get) if counts else None


def pair_unweighted(word_freqs):
    counts = Counter(pair for word in word_freqs for pair in zip(word, word[1:]))
    return min(p for p in counts if counts[p] == max(counts.values())) if counts else None


def pair_once_per_word(word_freqs):
    counts = Counter()
    for word, freq in word_freqs.items():
        for pair in set(zip(word, word[1:])):
            counts[pair] += freq
    return min(p for p in counts if counts[p] == max(counts.values())) if counts else None


def pair_largest_on_tie(word_freqs):
    counts = Counter()
    for word, freq in word_freqs.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else None


def pair_str_count(word_freqs):
    """Counts with str.count, which skips past a match: 'a a a' holds ('a', 'a') once for it."""
    counts = Counter()
    for word, freq in word_freqs.items():
        for a, b in set(zip(word, word[1:])):
            counts[(a, b)] += freq * " ".join(word).count(f"{a} {b}")
    if not counts:
        return None
    best = max(counts.values())
    return min(pair for pair, count in counts.items() if count == best)


def pair_crashes_on_empty(word_freqs):
    counts = Counter()
    for word, freq in word_freqs.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    best = max(counts.values())
    return min(pair for pair, count in counts.items() if count == best)


@pytest.mark.parametrize("wrong, hint", [
    (pair_first_max, "not the first one counted"),
    (pair_unweighted, "weight each pair by the frequency"),
    (pair_once_per_word, "count EVERY occurrence"),
    (pair_largest_on_tie, "SMALLEST pair"),
    (pair_crashes_on_empty, "run your function on this input"),
    (pair_str_count, "overlapping occurrences too"),
])
def test_most_frequent_pair_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch01.most_frequent_pair(wrong)


# --- Exercise 5: merge one pair ----------------------------------------------------------------

def merge_solution(symbols, pair):
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def merge_other_style(symbols, pair):  # a for loop with a "skip next" flag, returns a tuple
    out, skip = [], False
    for i, s in enumerate(symbols):
        if skip:
            skip = False
        elif tuple(symbols[i:i + 2]) == tuple(pair):
            out.append(pair[0] + pair[1])
            skip = True
        else:
            out.append(s)
    return tuple(out)


def test_merge_pair_solutions_pass(capsys):
    ch01.merge_pair(merge_solution)
    ch01.merge_pair(merge_other_style)
    assert capsys.readouterr().out.count("✓ merge_pair") == 2


def merge_first_only(symbols, pair):
    for i in range(len(symbols) - 1):
        if (symbols[i], symbols[i + 1]) == tuple(pair):
            return symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return list(symbols)


def merge_overlapping(symbols, pair):
    out = []
    for i in range(len(symbols)):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == tuple(pair):
            out.append(symbols[i] + symbols[i + 1])
        elif not (i > 0 and (symbols[i - 1], symbols[i]) == tuple(pair)):
            out.append(symbols[i])
    return out


def merge_right_to_left(symbols, pair):
    out, i = [], len(symbols) - 1
    while i >= 0:
        if i > 0 and (symbols[i - 1], symbols[i]) == tuple(pair):
            out.insert(0, symbols[i - 1] + symbols[i])
            i -= 2
        else:
            out.insert(0, symbols[i])
            i -= 1
    return out


def merge_by_text(symbols, pair):
    return " ".join(symbols).replace(f"{pair[0]} {pair[1]}", pair[0] + pair[1]).split(" ")


def merge_in_place(symbols, pair):
    i = 0
    while i < len(symbols) - 1:
        if (symbols[i], symbols[i + 1]) == tuple(pair):
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        i += 1
    return symbols


@pytest.mark.parametrize("wrong, hint", [
    (merge_first_only, "EVERY occurrence"),
    (merge_overlapping, "must not overlap"),
    (merge_right_to_left, "scan left to right"),
    (merge_by_text, "not on joined text"),
    (merge_in_place, "do not modify the list"),
])
def test_merge_pair_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch01.merge_pair(wrong)


# --- Exercise 6: pad a batch ------------------------------------------------------------------

def pad_solution(id_lists, pad_id):
    length = max(len(ids) for ids in id_lists)
    batch = torch.full((len(id_lists), length), pad_id, dtype=torch.long)
    for b, ids in enumerate(id_lists):
        batch[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return batch


def pad_other_style(id_lists, pad_id):  # pure Python, then one tensor
    length = max(map(len, id_lists))
    return torch.tensor([ids + [pad_id] * (length - len(ids)) for ids in id_lists])


def test_pad_batch_solutions_pass(capsys):
    ch01.pad_batch(pad_solution)
    ch01.pad_batch(pad_other_style)
    ch01.pad_batch(lambda ids, p: torch.nn.utils.rnn.pad_sequence([torch.tensor(x, dtype=torch.long) for x in ids],
                                                                  batch_first=True, padding_value=p))
    assert capsys.readouterr().out.count("✓ pad_batch") == 3


def pad_mutates(id_lists, pad_id):
    length = max(map(len, id_lists))
    for ids in id_lists:
        ids.extend([pad_id] * (length - len(ids)))
    return torch.tensor(id_lists)


@pytest.mark.parametrize("wrong, hint", [
    (lambda ids, p: torch.tensor([[p] * (max(map(len, ids)) - len(x)) + x for x in ids]), "pad on the RIGHT"),
    (lambda ids, p: torch.tensor([x + [0] * (max(map(len, ids)) - len(x)) for x in ids]), "not 0"),
    (lambda ids, p: pad_solution(ids, p).float(), "dtype=torch.long"),
    (lambda ids, p: torch.tensor([(x + [p] * 8)[:8] for x in ids]), "LONGEST sequence"),
    (lambda ids, p: [x + [p] * (max(map(len, ids)) - len(x)) for x in ids], "return a torch tensor"),
    (pad_mutates, "do not modify"),
])
def test_pad_batch_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch01.pad_batch(wrong)
