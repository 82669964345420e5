"""Tests for course_lib.corpus: Korean particles, verb table, grammar sanity, splits, files, statistics."""
from __future__ import annotations

import dataclasses
import random
import re

import pytest

from course_lib import corpus, grammar
from course_lib.corpus import (
    ADJECTIVES,
    KOREAN_NOUNS,
    NOTE_EXAMPLES,
    NOUNS,
    VERBS,
    Pair,
    has_batchim,
    load_pairs,
    make_splits,
    particle,
    statistics,
)

PARTICLE_PAIRS = {"은": "은/는", "는": "은/는", "이": "이/가", "가": "이/가", "을": "을/를", "를": "을/를",
                  "와": "와/과", "과": "와/과", "으로": "으로/로", "로": "으로/로"}
HANGUL = re.compile("[가-힣]")


@pytest.fixture(scope="module")
def splits():
    return make_splits(0)


@pytest.fixture(scope="module")
def all_pairs(splits):
    return splits.train + splits.valid + splits.test


def _words(s: str) -> list[str]:
    return [w.strip(".") for w in s.split()]


# ---------------------------------------------------------------- Hangul and particles
@pytest.mark.parametrize("word, pair, expected", [
    ("학교", "을/를", "를"), ("책", "을/를", "을"), ("사과", "와/과", "와"), ("물", "와/과", "과"),
    ("집", "으로/로", "으로"), ("서울", "으로/로", "로"), ("연필", "으로/로", "로"), ("버스", "으로/로", "로"),
    ("소년", "은/는", "은"), ("나", "은/는", "는"), ("고양이", "이/가", "가"), ("선생님", "이/가", "이"),
    ("닭", "을/를", "을"), ("학교", "를/을", "를"), ("순이", "과/와", "와"),
])
def test_particle_golden(word, pair, expected):
    assert particle(word, pair) == expected


def test_has_batchim_from_code_points():
    assert has_batchim("책") and has_batchim("소년") and has_batchim("서울") and has_batchim("파리에서") is False
    assert not has_batchim("사과") and not has_batchim("나")
    assert has_batchim("책.")  # the last Hangul syllable counts, punctuation is skipped
    # every syllable 0xAC00..0xD7A3: final = (code - 0xAC00) % 28
    assert sum(has_batchim(chr(c)) for c in range(0xAC00, 0xD7A4)) == 11172 * 27 // 28


def test_particle_bad_input():
    with pytest.raises(ValueError, match="Hangul"):
        particle("bus", "을/를")
    with pytest.raises(ValueError, match="unknown particle pair"):
        particle("학교", "에/에서")
    with pytest.raises(ValueError, match="Hangul"):
        has_batchim("")


def test_particles_agree_with_batchim_on_every_pair(all_pairs):
    attributive = {a.attr for a in ADJECTIVES.values()}
    attributive |= {w for v in VERBS.values() for f in v.prog for w in f.split()}  # 도착하는 중이다
    checked = 0
    for p in all_pairs:
        first = p.ko.split()[0]
        assert first[:-1] in KOREAN_NOUNS and first[-1] in "은는와과", p.ko  # the topic is always recognised
        for word in _words(p.ko):
            match = None
            for ending in sorted(PARTICLE_PAIRS, key=len, reverse=True):  # 으로 before 로
                stem = word[: -len(ending)]
                if word.endswith(ending) and stem in KOREAN_NOUNS:
                    match = (stem, ending)
                    break
            if match is None:
                # a word ending in a particle syllable that is not noun+particle must be an adjective form
                if word[-1:] in "은는이가을를와과" and word[-2:] != "으로":
                    assert word in attributive, f"unrecognised word {word!r} in {p.ko!r}"
                continue
            stem, ending = match
            assert particle(stem, PARTICLE_PAIRS[ending]) == ending, f"{stem}+{ending} in {p.ko!r}"
            checked += 1
    assert checked > 1.5 * len(all_pairs)  # subject and object/companion particles were really checked


def test_wrong_particle_would_be_caught():
    # the check above is able to fail: 소년는 / 학교을 break the batchim rule
    assert particle("소년", "은/는") != "는" and particle("학교", "을/를") != "을"


# ---------------------------------------------------------------- verb table
@pytest.mark.parametrize("verb, present, past, connective", [
    ("open", "연다", "열었다", "열어서"), ("listen", "듣는다", "들었다", "들어서"), ("help", "돕는다", "도왔다", "도와서"),
    ("make", "만든다", "만들었다", "만들어서"), ("play", "논다", "놀았다", "놀아서"), ("go", "간다", "갔다", "가서"),
    ("eat", "먹는다", "먹었다", "먹어서"), ("sing_song", "부른다", "불렀다", "불러서"), ("cut", "자른다", "잘랐다", "잘라서"),
    ("pick_up", "줍는다", "주웠다", "주워서"), ("bake", "굽는다", "구웠다", "구워서"), ("come", "온다", "왔다", "와서"),
])
def test_verb_table_golden(verb, present, past, connective):
    v = VERBS[verb]
    assert (v.ko_present, v.ko_past, v.ko_connective) == (present, past, connective)


def test_present_forms_follow_the_batchim_rule():
    """한다체 present: vowel stem + ㄴ다, ㄹ stem drops ㄹ + ㄴ다, other consonant + 는다 (있다 is the exception)."""
    for v in VERBS.values():
        if v.ko == "있다":
            continue
        stem = v.ko[:-1]
        last = stem[-1]
        final = (ord(last) - 0xAC00) % 28
        if final == 0:
            expected = stem[:-1] + chr(ord(last) + 4) + "다"  # + ㄴ
        elif final == 8:
            expected = stem[:-1] + chr(ord(last) - 8 + 4) + "다"  # ㄹ → ㄴ
        else:
            expected = stem + "는다"
        assert v.ko_present == expected, v.id


def test_connective_matches_past_tense():
    """-아서/-어서 = past form without the ㅆ of 았/었 + 서 (먹었다 → 먹어서, 도왔다 → 도와서)."""
    for v in VERBS.values():
        past_syllable = v.ko_past[-2]
        assert (ord(past_syllable) - 0xAC00) % 28 == 20, v.id  # ㅆ
        assert v.ko_connective == v.ko_past[:-2] + chr(ord(past_syllable) - 20) + "서", v.id


def test_negation_and_progressive_forms():
    assert grammar._verb_ko(VERBS["know"], past=False, prog=False, neg=True) == "모른다"
    assert grammar._verb_ko(VERBS["know"], past=True, prog=False, neg=True) == "몰랐다"
    assert grammar._verb_ko(VERBS["go"], past=True, prog=False, neg=True) == "안 갔다"
    assert grammar._verb_ko(VERBS["study"], past=False, prog=False, neg=True) == "공부를 안 한다"
    assert grammar._verb_ko(VERBS["hold"], past=False, prog=True, neg=False) == "들고 있다"
    assert grammar._verb_ko(VERBS["listen"], past=True, prog=True, neg=False) == "듣고 있었다"


# ---------------------------------------------------------------- the note and the grammar
def test_note_sentences_are_built_by_the_grammar_and_in_train(splits):
    assert [(p.en, p.ko) for p in corpus._note_pairs()] == NOTE_EXAMPLES
    train = {(p.en, p.ko) for p in splits.train}
    for en, ko in [("I go to school.", "나는 학교에 간다."), ("Suni closed the window.", "순이는 창문을 닫았다."),
                   ("She closed the drawer.", "그녀는 서랍을 닫았다."), ("I was born in Paris.", "나는 파리에서 태어났다."),
                   ("The boy is holding a blue ball.", "소년은 파란 공을 들고 있다.")]:
        assert (en, ko) in NOTE_EXAMPLES and (en, ko) in train


def test_sentence_format_and_length(all_pairs):
    for p in all_pairs:
        assert p.en[0].isupper() and p.en.endswith(".") and p.ko.endswith("."), p
        assert "  " not in p.en and "  " not in p.ko and HANGUL.search(p.ko) and not HANGUL.search(p.en)
        n = len(p.en.split())
        assert 3 <= n <= (16 if p.construction in ("because", "it") else 13), p.en
    mostly = sum(4 <= len(p.en.split()) <= 12 for p in all_pairs) / len(all_pairs)
    assert mostly > 0.9


def test_each_english_sentence_has_one_translation():
    pairs = corpus.generate(3, n_pairs=6000)
    assert len({p.en for p in pairs}) == len(pairs) == 6000 + len(NOTE_EXAMPLES) + len(corpus.IT_EXAMPLES)
    # draw raw sentences (no de-duplication): the same English must always get the same Korean
    rng = random.Random(11)
    seen: dict[str, str] = {}
    for name in list(corpus._BUILDERS) * 1500:
        p = corpus._BUILDERS[name](rng)
        if p is not None:
            assert seen.setdefault(p.en, p.ko) == p.ko, (p.en, seen[p.en], p.ko)
    assert len(seen) > 10000


def test_because_clause_moves_to_the_front_in_korean(all_pairs):
    because = [p for p in all_pairs if p.construction == "because"]
    assert len(because) > 500
    for p in because:
        en, ko = p.en.split(), p.ko.split()
        assert "because" in en[2:] and en.index("because") > 1  # English: main clause first
        reason_at = next(i for i, w in enumerate(ko) if w.endswith("서") and not w.endswith("에서"))
        assert reason_at in (1, 2), p.ko  # Korean: the reason right after the topic (배가 고파서 is two words)
    assert ("The cat drank milk because it was thirsty.", "고양이는 목이 말라서 우유를 마셨다.") == grammar.build_sentence(
        (NOUNS["cat"],), VERBS["drink"], NOUNS["milk"], reason="thirsty")[:2]


def test_constructions_and_korean_grammar(all_pairs):
    stats_constructions = {p.construction for p in all_pairs}
    assert {"transitive", "motion", "location", "adjective", "negation", "progressive", "because",
            "coordination", "description", "dative", "instrument", "like"} <= stats_constructions
    for p in all_pairs:
        ko = p.ko.split()
        if p.construction == "negation":
            assert re.search(r"(^| )(안|못) |지 않|모른다|몰랐다", p.ko), p.ko
            assert p.en.split()[1:3] in (["does", "not"], ["do", "not"], ["did", "not"]) or " not " in p.en
        if p.construction == "progressive":
            assert (ko[-1] in ("있다.", "있었다.") and ko[-2].endswith("고")) or ko[-1] in ("중이다.", "중이었다."), p.ko
            assert re.search(r"\b(is|am|are|was|were) \w+ing\b", p.en), p.en
        if p.construction == "motion":
            assert any(w.endswith("에") or w.endswith("로") for w in ko), p.ko
        if p.construction == "location":
            assert any(w.endswith("에서") or w.endswith("에") for w in ko), p.ko
        if p.construction == "coordination":
            assert any(w[-1] in "와과" for w in ko[:-1]) and " and " in p.en


def test_selectional_restrictions(all_pairs):
    drinks, readable, animals = set(grammar.noun_ids("drink")), set(grammar.noun_ids("readable")), set(grammar.noun_ids("animal"))
    for p in all_pairs:
        subjects, verb, comps = p.key
        for subj in subjects.split("+"):
            for comp in comps.split("+"):
                if verb == "drink":
                    assert comp in drinks, p.en
                if verb in ("read", "write", "open", "buy", "teach", "drive"):
                    assert subj not in animals, p.en
                if verb == "read":
                    assert comp in readable, p.en
                if verb == "eat" and subj in grammar.DIET:
                    assert comp in grammar.noun_ids(grammar.DIET[subj]), p.en
                if verb in ("work", "visit", "teach", "sell", "move", "live"):
                    assert subj not in ("boy", "girl", "children", "student", "baby"), p.en
                if verb == "work" and subj in grammar._JOBS:
                    assert comp in grammar._JOBS[subj].split(), p.en  # the doctor works at the hospital


def test_nobody_drinks_a_book(all_pairs):
    assert not any("drank the book" in p.en or "drank a book" in p.en for p in all_pairs)
    assert not any(p.key[1] in ("read", "write", "open") and p.key[0] in grammar.CLASSES["animal"] for p in all_pairs)


def test_english_agreement_and_articles(all_pairs):
    for p in all_pairs:
        assert not re.search(r"^(He|She|It|Suni|Minsu|The (boy|girl|cat|dog|teacher)) (go|eat|drink|like|play|do) ", p.en), p.en
        assert not re.search(r"\ba [aeiou]", p.en) and not re.search(r"\ban [^aeiou\s]", p.en), p.en
        assert not re.search(r"\b(I|We|They) (is|was not|does)\b", p.en), p.en
        assert not re.search(r"\bit are\b|\bI are\b|\bhe are\b", p.en), p.en
    examples = {p.en for p in all_pairs}
    assert any(e.startswith("I am ") or e.startswith("I was ") for e in examples)


# ---------------------------------------------------------------- splits
def test_split_sizes_and_disjointness(splits):
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (20000, 1000, 1000)
    en = [{p.en for p in s} for s in (splits.train, splits.valid, splits.test)]
    ko = [{p.ko for p in s} for s in (splits.train, splits.valid, splits.test)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not en[a] & en[b] and not ko[a] & ko[b]
    assert len(en[0]) == 20000


def test_held_out_keys_unseen_in_train(splits):
    train_keys = {p.key for p in splits.train}
    assert not {p.key for p in splits.test} & train_keys
    assert not {p.key for p in splits.valid} & train_keys
    assert not {p.key for p in splits.valid} & {p.key for p in splits.test}


def test_every_valid_test_word_occurs_in_train(splits):
    train_en = {w for p in splits.train for w in _words(p.en)}
    train_ko = {w for p in splits.train for w in _words(p.ko)}
    for p in splits.valid + splits.test:
        assert set(_words(p.en)) <= train_en, p.en
        assert set(_words(p.ko)) <= train_ko, p.ko


def test_determinism_and_seeds(splits):
    again = make_splits(0)
    assert again == splits
    other = make_splits(1)
    assert [p.en for p in other.test] != [p.en for p in splits.test]
    small = make_splits(5, n_train=600, n_valid=50, n_test=40)
    assert (len(small.train), len(small.valid), len(small.test)) == (600, 50, 40)
    assert {(p.en, p.ko) for p in small.train} >= set(NOTE_EXAMPLES)
    assert corpus.generate(7, n_pairs=500) == corpus.generate(7, n_pairs=500)


def test_make_splits_bad_arguments():
    with pytest.raises(ValueError, match="n_valid"):
        make_splits(0, n_valid=-1)
    with pytest.raises(ValueError, match="n_train"):
        make_splits(0, n_train=3)


# ---------------------------------------------------------------- statistics
def test_statistics(splits):
    stats = statistics(splits)
    assert stats["pairs"] == {"train": 20000, "valid": 1000, "test": 1000, "total": 22000}
    assert stats["content_words"]["en"] >= 150 and stats["content_words"]["ko"] >= 150
    assert stats["words"]["ko"] > stats["words"]["en"]  # particles multiply Korean word forms
    constructions = {k: v for k, v in stats["constructions"].items() if k != "note"}
    assert len(constructions) >= 8 and min(constructions.values()) >= 200
    assert stats["constructions"]["note"] == len(NOTE_EXAMPLES)
    assert 4 <= stats["sentence_length"]["en"]["mean"] <= 9 and stats["sentence_length"]["en"]["max"] <= 16
    assert stats["held_out_keys"]["test"] > 100


# ---------------------------------------------------------------- load_pairs
def test_load_pairs_reads_tab_separated_files(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("\ufeffGo.\t가.\tCC-BY 2.0 (France) Attribution: tatoeba.org\n\n"
                    "I go to school.\t나는 학교에 간다.\r\n  \nHi.\t안녕.\n", encoding="utf-8")
    assert load_pairs(path) == [("Go.", "가."), ("I go to school.", "나는 학교에 간다."), ("Hi.", "안녕.")]
    assert load_pairs(str(path), max_pairs=2) == [("Go.", "가."), ("I go to school.", "나는 학교에 간다.")]
    assert load_pairs(path, max_pairs=0) == []


def test_load_pairs_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("Go.\t가.\n\nno tab on this line\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3\b.*no tab"):
        load_pairs(bad)
    empty = tmp_path / "empty_side.tsv"
    empty.write_text("Go.\t가.\nHello.\t \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2\b.*Korean side is empty"):
        load_pairs(empty)
    with pytest.raises(FileNotFoundError, match="no sentence-pair file"):
        load_pairs(tmp_path / "missing.tsv")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("café\tkafe\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_pairs(latin)


def test_pair_is_a_frozen_record():
    p = Pair("I go to school.", "나는 학교에 간다.", "note", ("I", "go", "school"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.en = "x"  # type: ignore[misc]
    assert p.tense == "" and p.words == ()
