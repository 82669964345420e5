"""The corpus's word alignment (chapter 11 scores cross-attention against it): golden links, full coverage."""
from __future__ import annotations

import pytest

from course_lib.corpus import Pair, align, generate, words_of
from course_lib.grammar import ADJECTIVES, NOUNS, TIMES, VERBS, build_sentence
from course_lib.tokens import word_tokenize

N, V = NOUNS, VERBS


def _pair(built: tuple) -> Pair:
    return Pair(built[0], built[1], "test", (), "", built[2])


def _word_links(pair: Pair) -> list[tuple[str, str]]:
    en, ko = words_of(pair.en), words_of(pair.ko)
    return [(en[i], ko[j]) for i, j in align(pair)]


def test_the_notes_sentences_have_their_golden_links():
    school = _pair(build_sentence((N["I"],), V["go"], N["school"], tense="present"))
    assert (school.en, school.ko) == ("I go to school.", "나는 학교에 간다.")
    assert align(school) == [(0, 0), (1, 2), (2, 1), (3, 1), (4, 3)]  # I-나는, go-간다, to/school-학교에, .-.
    window = _pair(build_sentence((N["Suni"],), V["close"], N["window"], art=("the",)))
    assert (window.en, window.ko) == ("Suni closed the window.", "순이는 창문을 닫았다.")
    assert _word_links(window) == [("Suni", "순이는"), ("closed", "닫았다"), ("window", "창문을"), (".", ".")]  # "the": none
    ball = _pair(build_sentence((N["boy"],), V["hold"], N["ball"], tense="present", prog=True, art=("a",),
                                adj=ADJECTIVES["blue"]))
    assert (ball.en, ball.ko) == ("The boy is holding a blue ball.", "소년은 파란 공을 들고 있다.")
    assert _word_links(ball) == [("boy", "소년은"), ("is", "들고"), ("is", "있다"), ("holding", "들고"), ("holding", "있다"),
                                 ("blue", "파란"), ("ball", "공을"), (".", ".")]


def test_a_because_clause_a_time_phrase_and_a_coordination():
    tired = _pair(build_sentence((N["Minsu"],), V["go"], N["home"], tense="past", reason="tired",
                                 time=TIMES["past"][0]))
    assert (tired.en, tired.ko) == ("Minsu went home yesterday because he was tired.", "민수는 어제 피곤해서 집에 갔다.")
    clause = [(w, "피곤해서") for w in ("because", "he", "was", "tired")]  # the -해서 ending is "because"
    assert _word_links(tired) == [("Minsu", "민수는"), ("went", "갔다"), ("home", "집에"), ("yesterday", "어제"), *clause,
                                  (".", ".")]
    both = _pair(build_sentence((N["Suni"],), V["eat"], (N["bread"], N["apple"]), art=("", "a")))
    assert (both.en, both.ko) == ("Suni ate bread and an apple.", "순이는 빵과 사과를 먹었다.")
    assert _word_links(both) == [("Suni", "순이는"), ("ate", "먹었다"), ("bread", "빵과"), ("and", "빵과"), ("apple", "사과를"),
                                 (".", ".")]
    negated = _pair(build_sentence((N["I"],), V["eat"], N["apple"], neg=True, art=("a",)))
    assert negated.ko == "나는 사과를 안 먹었다."  # not ↔ 안, did ↔ the ending: the whole predicate
    assert ("not", "안") in _word_links(negated) and ("did", "먹었다") in _word_links(negated)


def test_every_word_of_the_corpus_is_aligned_in_the_translators_tokens():
    for pair in generate(seed=3, n_pairs=3000):
        en, ko = words_of(pair.en), words_of(pair.ko)
        assert (en, ko) == (word_tokenize(pair.en), word_tokenize(pair.ko))
        links = align(pair)
        assert links == sorted(set(links)) and all(0 <= i < len(en) and 0 <= j < len(ko) for i, j in links)
        unlinked_en = [w for i, w in enumerate(en) if all(i != a for a, _ in links)]
        assert set(w.lower() for w in unlinked_en) <= {"a", "an", "the", "his"}, (pair.en, unlinked_en)
        assert {j for _, j in links} == set(range(len(ko))), (pair.ko, links)


def test_align_needs_a_generated_pair():
    with pytest.raises(TypeError, match="needs a corpus.Pair"):
        align(("I go to school.", "나는 학교에 간다."))  # type: ignore[arg-type]
