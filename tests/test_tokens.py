"""Chapter 01 · tokens.py: word tokens, jamo, Vocab, BPE (golden merges, exact round trip, errors)."""
from __future__ import annotations

import json
import random

import pytest
import torch

from course_lib import corpus
from course_lib.tokens import BPE, LITERAL_SPACE_MARK, SPACE, Vocab, decompose, detokenize, pretokenize, word_tokenize


@pytest.fixture(scope="module")
def splits():
    return corpus.make_splits(0)


# --- words ------------------------------------------------------------------------------------

def test_word_tokenize_the_note_sentence():
    assert word_tokenize("순이는 창문을 닫았다.") == ["순이는", "창문을", "닫았다", "."]
    assert word_tokenize("Hello, how are you?") == ["Hello", ",", "how", "are", "you", "?"]
    assert word_tokenize("안녕하세요, 어떻게 지내세요?") == ["안녕하세요", ",", "어떻게", "지내세요", "?"]
    assert word_tokenize("I don't know.") == ["I", "don't", "know", "."]
    assert word_tokenize("") == [] and word_tokenize("  \n ") == []


def test_detokenize_inverts_word_tokenize_on_the_whole_corpus(splits):
    for pair in splits.train + splits.valid + splits.test:
        for text in (pair.en, pair.ko):
            assert detokenize(word_tokenize(text)) == text


def test_word_functions_reject_wrong_types():
    with pytest.raises(TypeError, match="expects a str"):
        word_tokenize(["순이는"])
    with pytest.raises(TypeError, match="list of tokens"):
        detokenize("순이는 창문을")


# --- Hangul -----------------------------------------------------------------------------------

@pytest.mark.parametrize("syllable, jamo", [
    ("가", ("ㄱ", "ㅏ", "")), ("닫", ("ㄷ", "ㅏ", "ㄷ")), ("는", ("ㄴ", "ㅡ", "ㄴ")), ("를", ("ㄹ", "ㅡ", "ㄹ")),
    ("교", ("ㄱ", "ㅛ", "")), ("힣", ("ㅎ", "ㅣ", "ㅎ")), ("갃", ("ㄱ", "ㅏ", "ㄳ")), ("쀍", ("ㅃ", "ㅞ", "ㄺ")),
])
def test_decompose_golden(syllable, jamo):
    assert decompose(syllable) == jamo


def test_decompose_agrees_with_unicode_normalisation_on_all_11172_syllables():
    import unicodedata

    for code in range(0xAC00, 0xD7A4):
        syllable = chr(code)
        nfd = unicodedata.normalize("NFD", syllable)  # conjoining jamo U+1100.., U+1161.., U+11A8..
        initial, medial, final = decompose(syllable)
        assert len(nfd) == (3 if final else 2)
        assert (ord(nfd[0]) - 0x1100, ord(nfd[1]) - 0x1161) == ("ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ".index(initial),
                                                               "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ".index(medial))
        assert bool(final) == corpus.has_batchim(syllable)


@pytest.mark.parametrize("bad, "
                         "err", [("a", ValueError), ("ㄱ", ValueError), ("가나", TypeError), ("", TypeError), (44032, TypeError)])
def test_decompose_rejects_non_syllables(bad, err):
    with pytest.raises(err):
        decompose(bad)


# --- Vocab ------------------------------------------------------------------------------------

def test_vocab_special_ids_and_order():
    v = Vocab.build([["b", "a", "b"], ["c", "b", "a"]])
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert v.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "b", "a", "c"]  # by count, ties A-Z
    assert len(v) == 7 and "a" in v and "z" not in v
    assert Vocab.build([["b", "a", "b"], ["c", "b", "a"]], min_freq=2).itos[4:] == ["b", "a"]
    assert Vocab.build([["b", "a", "b"], ["c", "b", "a"]], max_size=5).itos[4:] == ["b"]


def test_vocab_encode_decode_and_unknown_words():
    v = Vocab.build([word_tokenize("순이는 창문을 닫았다.")])
    ids = v.encode(word_tokenize("순이는 서랍을 닫았다."), add_bos=True, add_eos=True)
    assert ids[0] == v.bos_id and ids[-1] == v.eos_id and ids[2] == v.unk_id
    assert v.decode(ids) == ["순이는", "<unk>", "닫았다", "."]
    assert v.decode(ids, skip_special=False)[:2] == ["<bos>", "순이는"]
    assert v.decode(ids + [v.pad_id, 4]) == v.decode(ids)  # stops at <eos>
    assert v.decode(torch.tensor(ids)) == v.decode(ids)


def test_vocab_encode_batch_pads_on_the_right():
    v = Vocab.build([["a", "b", "c"]])
    batch = v.encode_batch([["a"], ["a", "b", "c"], []], add_bos=True, add_eos=True)
    assert batch.dtype == torch.long and batch.shape == (3, 5)
    a, b, c = v.encode(["a", "b", "c"])
    assert batch.tolist() == [[1, a, 2, 0, 0], [1, a, b, c, 2], [1, 2, 0, 0, 0]]
    assert v.encode_batch([["x"]]).tolist() == [[v.unk_id]]


def test_vocab_round_trips_through_json(splits):
    v = Vocab.build(word_tokenize(p.ko) for p in splits.train)
    back = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert back.itos == v.itos and back.stoi == v.stoi


def test_vocab_bad_input_gets_clear_errors():
    v = Vocab.build([["a"]])
    with pytest.raises(IndexError, match="vocabulary of size 5"):
        v.decode([0, 5])
    with pytest.raises(IndexError, match="size 5"):
        v.decode([-1])
    with pytest.raises(TypeError, match="list of tokens"):
        v.encode("a b")
    with pytest.raises(TypeError, match="int ids"):
        v.decode([1.0])
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build([["a"]], min_freq=0)
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build([["a"]], max_size=2)
    with pytest.raises(ValueError, match="non-empty"):
        v.encode_batch([])
    with pytest.raises(ValueError, match="special tokens"):
        Vocab(["a", "<pad>", "<bos>", "<eos>", "<unk>"])
    with pytest.raises(ValueError, match="itos"):
        Vocab.from_dict({"tokens": []})


# --- BPE --------------------------------------------------------------------------------------

CLASSIC = ["low"] * 5 + ["lower"] * 2 + ["newest"] * 6 + ["widest"] * 3


def test_bpe_learns_the_hand_computed_merges():
    # By hand, with every word one chunk "▁word": (e,s)=9 ties with (s,t)=9 -> (e,s) (string order);
    # then (es,t)=9; then (l,o), (o,w), (▁,l) tie at 7 -> (l,o), since "l" < "o" < "▁" (U+2581 sorts
    # after letters); and so on down to the pairs seen twice.
    bpe = BPE.train(CLASSIC, num_merges=100)
    assert bpe.merges == [
        ("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w"), ("▁", "low"),  # 9, 9, 7, 7, 7
        ("e", "w"), ("ew", "est"), ("n", "ewest"), ("▁", "newest"),  # 6 (e,w)<(n,e)<(w,est)<(▁,n)
        ("d", "est"), ("i", "dest"), ("w", "idest"), ("▁", "widest"),  # 3
        ("e", "r"), ("▁low", "er"),  # 2: (e,r) < (▁low,e); then done
    ]
    assert BPE.train(CLASSIC, num_merges=4).merges == bpe.merges[:4]
    assert BPE.train(CLASSIC, num_merges=100, min_freq=3).merges == bpe.merges[:13]
    assert bpe.tokenize("lowest newer") == ["▁low", "est", "▁", "n", "ew", "er"]


def test_bpe_overlapping_pair_merges_left_to_right():
    bpe = BPE.train(["aaaa"] * 3 + ["aaa"], num_merges=2, min_freq=1)
    # (a,a): 3*3 + 2 = 11 -> "aa aa" and "aa a"; then (aa,aa)=3 vs (▁,aa)=4 -> (▁,aa)
    assert bpe.merges == [("a", "a"), ("▁", "aa")]
    assert bpe.tokenize("aaaaa") == ["▁aa", "aa", "a"]


def test_bpe_applies_merges_in_learned_order():
    bpe = BPE([("y", "z"), ("x", "yz"), ("xyz", "w"), ("x", "y"), ("xy", "z")])
    assert bpe.tokenize("xyzw") == ["▁", "xyzw"]
    # here "xyz" is made by the last merge, after (xyz, w) had its turn: merges are applied in the
    # learned order, one after the other, so (xyz, w) does not apply (a lowest-rank-first loop would)
    bpe2 = BPE([("x", "y"), ("xyz", "w"), ("xy", "z")])
    assert bpe2.tokenize("xyzw") == ["▁", "xyz", "w"]  # (xyz,w) comes before (xy,z): too late


def test_bpe_round_trip_is_exact_on_the_corpus(splits):
    texts = [p.ko for p in splits.train[:3000]] + [p.en for p in splits.train[:3000]]
    bpe = BPE.train(texts, num_merges=400)
    assert len(bpe.merges) == 400
    for pair in splits.test:
        for text in (pair.ko, pair.en):
            assert bpe.detokenize(bpe.tokenize(text)) == text
    assert bpe.detokenize(bpe.tokenize(" ".join(p.ko for p in splits.valid[:50]))) == " ".join(p.ko for p in splits.valid[:50])


ODD = ["", " ", "  ", "\t", "\n\n", " lead", "trail ", "a  b", "a\tb\nc", "▁", "▁▁ ▁", "a▁b", "<U+2581>",
       " <U+2581>▁", "ö e\u0301 😀 中文 ", "순이는  창문을\t닫았다 .", "..!?", "don't-stop", "\u00a0nbsp\u00a0", "\r\n"]


@pytest.mark.parametrize("text", ODD)
def test_bpe_round_trip_is_exact_on_odd_strings(text):
    bpe = BPE.train(["순이는 창문을 닫았다.", "a  b a  b", "▁▁"] * 3, num_merges=30, min_freq=1)
    pieces = bpe.tokenize(text)
    assert bpe.detokenize(pieces) == text
    assert all(isinstance(p, str) and p for p in pieces)


def test_bpe_round_trip_on_random_strings():
    rng = random.Random(0)
    alphabet = "ab 가나 ▁\t\n.,<>U+2581"
    bpe = BPE.train(["".join(rng.choice(alphabet) for _ in range(40)) for _ in range(50)], 50, min_freq=1)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert bpe.detokenize(bpe.tokenize(text)) == text
        assert "".join(pretokenize(text)).replace(LITERAL_SPACE_MARK, "#").count(SPACE) == (text.count(" ") + 1 if text else 0)


def test_bpe_learns_korean_particles_as_pieces(splits):
    ko = [p.ko for p in splits.train]
    bpe = BPE.train(ko, num_merges=300)
    assert ("에", "서") in bpe.merges[:5]
    from collections import Counter

    inside = Counter(p for text in ko for p in bpe.tokenize(text) if not p.startswith(SPACE) and p != ".")
    top = {p for p, _ in inside.most_common(15)}
    assert {"을", "를", "에", "에서", "에게"} <= top
    assert bpe.tokenize("나는 학교에 간다.") == ["▁나는", "▁학교", "에", "▁간다", "."]


def test_bpe_training_is_deterministic_and_updates_only_touched_words(splits, monkeypatch):
    """Order-independent merges, and the incremental update: each merge re-merges only the words that
    contain its pair (counted through tokens._merge), far fewer than every word once per merge."""
    from course_lib import tokens as tokens_module

    ko = [p.ko for p in splits.train]
    calls = []
    real_merge = tokens_module._merge
    monkeypatch.setattr(tokens_module, "_merge", lambda symbols, pair: calls.append(1) or real_merge(symbols, pair))
    a = BPE.train(ko, 1000)
    monkeypatch.undo()
    distinct_words = len({c for text in ko for c in pretokenize(text)})
    assert len(calls) < 0.01 * distinct_words * 1000, (len(calls), distinct_words)  # measured: 2561 of 1069 words
    assert a.merges == BPE.train(list(reversed(ko)), 1000).merges


def test_bpe_training_segmentation_equals_tokenize():
    # the words as segmented at the end of training are what tokenize gives
    bpe = BPE.train(CLASSIC, num_merges=8)
    assert bpe.tokenize("widest") == ["▁", "w", "i", "d", "est"]
    assert bpe.tokenize("newest") == ["▁", "newest"]


def test_bpe_to_dict_round_trip():
    bpe = BPE.train(CLASSIC, 10)
    back = BPE.from_dict(json.loads(json.dumps(bpe.to_dict())))
    assert back.merges == bpe.merges and back.tokenize("lowest") == bpe.tokenize("lowest")
    assert back.alphabet == bpe.alphabet == sorted(set("lowerniestd" + SPACE))


def test_bpe_pieces_cover_every_tokenization(splits):
    bpe = BPE.train([p.ko for p in splits.train], 300)
    assert bpe.pieces[: len(bpe.alphabet)] == bpe.alphabet and len(set(bpe.pieces)) == len(bpe.pieces)
    vocab = Vocab.build([bpe.pieces])
    assert len(vocab) == 4 + len(bpe.alphabet) + 300 + 1  # every merge makes a new piece here
    for pair in splits.test:
        assert vocab.unk_id not in vocab.encode(bpe.tokenize(pair.ko))
    assert vocab.unk_id not in vocab.encode(bpe.tokenize("순이는 현관문을 닫았다.▁"))


def test_bpe_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="num_merges must be an int >= 0"):
        BPE.train(["a"], -1)
    with pytest.raises(ValueError, match="num_merges"):
        BPE.train(["a"], 2.5)
    with pytest.raises(TypeError, match="wrap it in a list"):
        BPE.train("low lower", 3)
    with pytest.raises(TypeError, match="str"):
        BPE.train(["a", 3], 3)
    with pytest.raises(TypeError, match="str"):
        BPE([]).tokenize(None)
    with pytest.raises(TypeError, match="list of tokens"):
        BPE([]).detokenize("▁a")
    with pytest.raises(ValueError, match="pair of two"):
        BPE([("a",)])
    with pytest.raises(ValueError, match="merges"):
        BPE.from_dict({})
    assert BPE.train(["a"], 0).merges == []
