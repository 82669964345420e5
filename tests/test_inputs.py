"""Bad input gets a named error (issue 12 §4), and the translator says what it does not know (§3).

``PROBES`` lists every bad input tried: each must raise the expected exception type (TypeError for a
wrong type, ValueError for a wrong value) with a message that names what was expected. The probes
touch course_lib only through module attributes at call time, so the same list can be run against
an older checkout to count how many gave a named error there (see the report of issue 12).
"""
from __future__ import annotations

import math
import re
import tempfile
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from course_lib import (
    attention,
    checkpoint,
    corpus,
    decoder,
    decoding,
    embeddings,
    encoder,
    kvcache,
    model,
    multihead,
    tokens,
    training,
)

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PAIRS = [("I go to school.", "나는 학교에 간다."), ("I like cats.", "나는 고양이가 좋다."),
         ("Suni closed the window.", "순이는 창문을 닫았다."), ("She closed the drawer.", "그녀는 서랍을 닫았다.")]


def _randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


def _tiny(max_len: int = 64, src_size: int = 32, tgt_size: int = 32) -> model.Transformer:
    torch.manual_seed(0)
    return model.Transformer(model.TransformerConfig.tiny(src_size, tgt_size, max_len=max_len)).eval()


def _translator(max_len: int = 64) -> tuple[model.Transformer, tokens.Vocab, tokens.Vocab]:
    """An untrained tiny model with the vocabularies of PAIRS (its output is arbitrary but deterministic)."""
    src_vocab, tgt_vocab = training.build_vocabs(PAIRS)
    return _tiny(max_len, len(src_vocab), len(tgt_vocab)), src_vocab, tgt_vocab


def _config(**changes) -> model.TransformerConfig:
    return model.TransformerConfig.tiny(64, 64, **changes)


def _load_bad_byte(line: int) -> object:
    """load_pairs of a file whose line ``line`` holds a byte that is not UTF-8 (Korean text before it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.tsv"
        good = "I go to school.\t나는 학교에 간다.\n".encode()
        path.write_bytes(good * (line - 1) + b"I go\xff to school.\t\xeb\x82\x98\n" + good)
        return corpus.load_pairs(path)


def _skipgram(**changes) -> object:
    return embeddings.train_skipgram([[4, 5, 6, 7], [5, 6, 4]], 8, **{"d_model": 4, "epochs": 1, **changes})


def _translate(sentence: str, **changes) -> object:
    return decoding.translate_batch(*_translator()[:1], [sentence], *_translator()[1:], **changes)


# (id, the bad input, the exception type expected, a regular expression its message must match)
PROBES: list[tuple[str, Callable[[], object], type, str]] = [
    # attention (chapter 03) and multi-head attention (chapter 04)
    ("sdpa float32 query, float64 key/value", lambda: attention.scaled_dot_product_attention(
        _randn(2, 4, 8), _randn(2, 6, 8, dtype=torch.float64), _randn(2, 6, 8, dtype=torch.float64)), TypeError, "one dtype"),
    ("sdpa float64 value", lambda: attention.scaled_dot_product_attention(
        _randn(2, 4, 8), _randn(2, 6, 8), _randn(2, 6, 8, dtype=torch.float64)), TypeError, "one dtype"),
    ("sdpa query/key batch mismatch", lambda: attention.scaled_dot_product_attention(
        _randn(2, 4, 8), _randn(3, 6, 8), _randn(3, 6, 8)), ValueError, r"leading \(batch, head\) dimensions"),
    ("sdpa d_k = 0", lambda: attention.scaled_dot_product_attention(
        _randn(2, 4, 0), _randn(2, 6, 0), _randn(2, 6, 5)), ValueError, r"d_k >= 1"),
    ("MHA float32 query, float64 key", lambda: multihead.MultiHeadAttention(8, 2)(
        _randn(2, 3, 8), _randn(2, 3, 8, dtype=torch.float64), _randn(2, 3, 8, dtype=torch.float64)), TypeError, "float64"),
    ("MHA query/key batch mismatch", lambda: multihead.MultiHeadAttention(8, 2)(
        _randn(2, 3, 8), _randn(3, 3, 8), _randn(3, 3, 8)), ValueError, "must agree on B"),
    ("MHA float16 input, float32 weights", lambda: multihead.MultiHeadAttention(8, 2)(
        *[_randn(2, 3, 8, dtype=torch.float16)] * 3), TypeError, r"float16 .*weights"),
    ("split_heads of a 2-D tensor", lambda: multihead.split_heads(_randn(3, 8), 2), ValueError, r"\(B, T, D\)"),
    ("merge_heads of a 3-D tensor", lambda: multihead.merge_heads(_randn(2, 3, 8)), ValueError, r"\(B, H, T, Dh\)"),
    ("LayerNorm of integers", lambda: encoder.LayerNorm(8)(torch.ones(2, 3, 8, dtype=torch.long)), TypeError,
     "floating-point"),
    ("LayerNorm float64 input, float32 weights", lambda: encoder.LayerNorm(8)(_randn(2, 3, 8, dtype=torch.float64)),
     TypeError, "float64"),
    ("LayerNorm float16 input, float32 weights", lambda: encoder.LayerNorm(8)(_randn(2, 3, 8, dtype=torch.float16)),
     TypeError, "float16"),
    ("EncoderLayer of integers", lambda: encoder.EncoderLayer(8, 2, 16)(torch.ones(2, 3, 8, dtype=torch.long)),
     TypeError, "floating-point"),
    ("pre-LN EncoderLayer float16 input", lambda: encoder.EncoderLayer(8, 2, 16, norm_first=True)(
        _randn(2, 3, 8, dtype=torch.float16)), TypeError, "float16"),
    ("DecoderLayer float16 input", lambda: decoder.DecoderLayer(8, 2, 16)(
        _randn(2, 3, 8, dtype=torch.float16), _randn(2, 4, 8, dtype=torch.float16)), TypeError, "float16"),
    # TransformerConfig (chapter 07)
    ("config d_model negative", lambda: _config(d_model=-8), ValueError, "d_model must be an int >= 1"),
    ("config d_model 0", lambda: _config(d_model=0), ValueError, "d_model must be an int >= 1"),
    ("config d_model float", lambda: _config(d_model=32.0), TypeError, "d_model must be an int"),
    ("config d_model str", lambda: _config(d_model="32"), TypeError, "d_model must be an int"),
    ("config d_ff 0", lambda: _config(d_ff=0), ValueError, "d_ff must be an int >= 1"),
    ("config d_ff negative", lambda: _config(d_ff=-64), ValueError, "d_ff must be an int >= 1"),
    ("config dropout 1", lambda: _config(dropout=1.0), ValueError, r"dropout must be a float in \[0, 1\)"),
    ("config dropout negative", lambda: _config(dropout=-0.1), ValueError, r"dropout must be a float in \[0, 1\)"),
    ("config dropout NaN", lambda: _config(dropout=math.nan), ValueError, r"dropout must be a float in \[0, 1\)"),
    ("config dropout str", lambda: _config(dropout="0.1"), TypeError, r"dropout must be a float"),
    ("config pad_id = V", lambda: _config(pad_id=64), ValueError, r"pad_id must be an id of both vocabularies, 0..63"),
    ("config pad_id negative", lambda: _config(pad_id=-1), ValueError, "pad_id must be an int >= 0"),
    ("config pad_id float", lambda: _config(pad_id=0.0), TypeError, "pad_id must be an int"),
    # layer constructors (chapters 02, 04, 05, 06)
    ("MHA d_model negative", lambda: multihead.MultiHeadAttention(-8, 2), ValueError, "d_model must be an int >= 1"),
    ("MHA d_model 0", lambda: multihead.MultiHeadAttention(0, 1), ValueError, "d_model must be an int >= 1"),
    ("MHA d_model float", lambda: multihead.MultiHeadAttention(8.0, 2), TypeError, "d_model must be an int"),
    ("MHA n_heads float", lambda: multihead.MultiHeadAttention(8, 2.0), TypeError, "n_heads must be an int"),
    ("MHA dropout 1.5", lambda: multihead.MultiHeadAttention(8, 2, dropout=1.5), ValueError, r"dropout .*\[0, 1\)"),
    ("FeedForward d_ff 0", lambda: encoder.FeedForward(8, 0), ValueError, "d_ff must be an int >= 1"),
    ("FeedForward d_ff negative", lambda: encoder.FeedForward(8, -4), ValueError, "d_ff must be an int >= 1"),
    ("FeedForward dropout 1", lambda: encoder.FeedForward(8, 16, dropout=1.0), ValueError, r"dropout .*\[0, 1\)"),
    ("EncoderLayer d_ff 0", lambda: encoder.EncoderLayer(8, 2, 0), ValueError, "d_ff must be an int >= 1"),
    ("EncoderLayer d_model negative", lambda: encoder.EncoderLayer(-8, 2, 16), ValueError, "d_model must be an int >= 1"),
    ("DecoderLayer dropout 1", lambda: decoder.DecoderLayer(8, 2, 16, dropout=1.0), ValueError, r"dropout .*\[0, 1\)"),
    ("DecoderLayer d_ff negative", lambda: decoder.DecoderLayer(8, 2, -1), ValueError, "d_ff must be an int >= 1"),
    ("LayerNorm d_model 0", lambda: encoder.LayerNorm(0), ValueError, "d_model must be an int >= 1"),
    ("LayerNorm d_model negative", lambda: encoder.LayerNorm(-1), ValueError, "d_model must be an int >= 1"),
    ("TokenEmbedding d_model float", lambda: embeddings.TokenEmbedding(10, 4.0), TypeError, "d_model must be an int"),
    ("sinusoidal table d_model float", lambda: embeddings.sinusoidal_positional_encoding(10, 4.0), TypeError,
     "d_model must be an int"),
    ("PositionalEncoding dropout 1", lambda: embeddings.PositionalEncoding(8, dropout=1.0), ValueError,
     r"dropout .*\[0, 1\)"),
    # tokens and files (chapters 01, 07)
    ("Vocab with an int token", lambda: tokens.Vocab([*SPECIALS, "a", 5]), TypeError, r"str tokens, got int 5 at position 5"),
    ("Vocab with a None token", lambda: tokens.Vocab([*SPECIALS, None]), TypeError, r"str tokens, got NoneType"),
    ("Vocab.encode an int token", lambda: tokens.Vocab([*SPECIALS, "a"]).encode(["a", 5]), TypeError, "str tokens"),
    ("load_pairs bad byte on line 5000", lambda: _load_bad_byte(5000), ValueError, r"not UTF-8 text: line 5000\b"),
    ("load_pairs bad byte on line 1", lambda: _load_bad_byte(1), ValueError, r"not UTF-8 text: line 1\b"),
    ("load_pairs path None", lambda: corpus.load_pairs(None), TypeError, r"file path \(str or pathlib.Path\), got NoneType"),
    ("load_pairs path int", lambda: corpus.load_pairs(42), TypeError, r"file path .*got int"),
    # training, decoding and the cache (chapters 07, 08), skip-gram (chapter 02)
    ("evaluate_loss of no batches", lambda: training.evaluate_loss(_tiny(), []), ValueError, "at least one batch"),
    ("cached greedy decoding, max_len 1", lambda: kvcache.greedy_decode_cached(_tiny(max_len=1), torch.tensor([[5]])),
     ValueError, r"max_len = 1.*max_len >= 2"),
    ("greedy decoding, max_len 1", lambda: decoding.greedy_decode(_tiny(max_len=1), torch.tensor([[5]])),
     ValueError, r"max_len = 1.*max_len >= 2"),
    ("beam search, max_len 1", lambda: decoding.beam_search(_tiny(max_len=1), torch.tensor([[5]]), beam_size=2),
     ValueError, r"max_len = 1.*max_len >= 2"),
    ("skip-gram 0 negatives", lambda: _skipgram(negatives=0), ValueError, "negatives must be an int >= 1"),
    ("skip-gram batch 0", lambda: _skipgram(batch_size=0), ValueError, "batch_size must be an int >= 1"),
    ("skip-gram 0 epochs", lambda: _skipgram(epochs=0), ValueError, "epochs must be an int >= 1"),
    ("skip-gram lr 0", lambda: _skipgram(lr=0.0), ValueError, "lr must be a positive number"),
    # the translator (chapter 07)
    ("translate_batch batch_size 0", lambda: _translate("I go to school.", batch_size=0), ValueError,
     "batch_size must be an int >= 1"),
    ("translate_batch batch_size -1", lambda: _translate("I go to school.", batch_size=-1), ValueError,
     "batch_size must be an int >= 1"),
    ("translate_batch batch_size float", lambda: _translate("I go to school.", batch_size=2.5), TypeError,
     "batch_size must be an int"),
    ("translate only unknown "
     "words", lambda: _translate("Xyzzy plugh"), ValueError, r"knows no word.*unknown words: Xyzzy, plugh"),
    ("translate only punctuation", lambda: _translate("..."), ValueError, r"knows no word.*only punctuation"),
    ("translate unknown punctuation", lambda: _translate("?!"), ValueError, r"knows no word.*unknown words: \?, !"),
    ("translate_batch a non-str sentence", lambda: decoding.translate_batch(
        _translator()[0], ["I go to school.", 5], *training.build_vocabs(PAIRS)), TypeError, r"str, got int 5 at position 1"),
]


def run_probe(fn: Callable[[], object], error: type, pattern: str) -> str:
    """'named' when ``fn`` raises ``error`` with a message matching ``pattern``; else what happened instead."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except error as err:
        return "named" if re.search(pattern, str(err), re.DOTALL) else f"other message: {type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - a probe reports what it got
        return f"raw: {type(err).__name__}: {str(err)[:120]}"
    return "silently accepted"


@pytest.mark.parametrize("fn, error, pattern", [p[1:] for p in PROBES], ids=[p[0] for p in PROBES])
def test_bad_input_gets_a_named_error(fn, error, pattern):
    assert run_probe(fn, error, pattern) == "named"


def test_the_probes_fail_when_the_error_is_not_raised():
    assert run_probe(lambda: None, ValueError, "x") == "silently accepted"
    assert run_probe(lambda: 1 / 0, ValueError, "x").startswith("raw: ZeroDivisionError")
    assert run_probe(lambda: int("a"), ValueError, "expected phrase").startswith("other message")


# --- checks cost nothing where they must not: autocast still mixes dtypes -------------------------

def test_dtype_checks_stand_aside_under_autocast():
    layer = decoder.DecoderLayer(8, 2, 16, dropout=0.0).eval()
    x, memory = _randn(2, 3, 8), _randn(2, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, memory)
        q, k = _randn(2, 4, 8, dtype=torch.bfloat16), _randn(2, 6, 8)
        attention.scaled_dot_product_attention(q, k, k)  # mixed on purpose: autocast casts inside the matmul
    assert out.shape == (2, 3, 8) and torch.isfinite(out.float()).all()
    m, src = _tiny(src_size=40, tgt_size=40), torch.randint(4, 40, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the cache holds float32 keys, the step's query is bfloat16
        assert m(src, src).dtype == torch.bfloat16
        assert kvcache.greedy_decode_cached(m, src, max_len=6).shape == decoding.greedy_decode(m, src, max_len=6).shape


# --- §3 the translator says what it does not know ---------------------------------------------------

@pytest.fixture(scope="module")
def pretrained():
    return checkpoint.load_pretrained()


def test_unknown_words_lists_each_unknown_token_once_in_order():
    src_vocab, _ = training.build_vocabs(PAIRS)
    assert decoding.unknown_words("I go to Gimhae, to Gimhae!", src_vocab) == ["Gimhae", ",", "!"]
    assert decoding.unknown_words("I go to school.", src_vocab) == []
    assert decoding.unknown_words("", src_vocab) == []
    with pytest.raises(TypeError, match="one sentence"):
        decoding.unknown_words(["I go"], src_vocab)


def test_case_is_resolved_against_what_the_vocabulary_holds(pretrained):
    """The corpus writes ordinary English case and the vocabulary keeps it ("The" and "the" are both
    entries, "I" only capitalised): a word unknown as typed is looked up lower-case, Capitalised, CAPITALS."""
    v = pretrained.src_vocab
    assert "I" in v and "i" not in v and "The" in v and "the" in v and "Seoul" in v and "seoul" not in v
    assert decoding.source_tokens("i go to SCHOOL in seoul.", v) == ["I", "go", "to", "school", "in", "Seoul", "."]
    assert decoding.source_tokens("The the THE", v) == ["The", "the", "the"]  # as typed first, then lower-case
    assert decoding.unknown_words("i go to school.", v) == []
    assert decoding.unknown_words("My mother opened the refrigerator.", v) == ["My", "mother"]  # "my" is not known either
    m, tv = pretrained.model, pretrained.tgt_vocab
    for typed in ("i go to school.", "I GO TO SCHOOL.", "I go to school."):
        assert decoding.translate(m, typed, v, tv) == "나는 학교에 간다.", typed


def test_some_unknown_words_still_translate_and_none_known_is_refused(pretrained):
    m, v, tv = pretrained.model, pretrained.src_vocab, pretrained.tgt_vocab
    out = decoding.translate(m, "My mother opened the refrigerator.", v, tv)  # two unknown words: translated anyway
    assert isinstance(out, str) and out.endswith("냉장고를 열었다.")
    for sentence in ("Xyzzy", "?!", "...", "Zebras!"):
        with pytest.raises(decoding.UntranslatableError, match="knows no word"):
            decoding.translate(m, sentence, v, tv)
    with pytest.raises(decoding.UntranslatableError, match=r"sentence 1 'Xyzzy'"):
        decoding.translate_batch(m, ["I go to school.", "Xyzzy"], v, tv)
    assert issubclass(decoding.UntranslatableError, ValueError)
    assert decoding.translate(m, "", v, tv) == "" and decoding.translate(m, "   ", v, tv) == ""


def test_an_empty_batch_is_an_empty_list():
    m, src_vocab, tgt_vocab = _translator()
    assert decoding.translate_batch(m, [], src_vocab, tgt_vocab) == []


def test_a_sentence_longer_than_the_table_is_truncated_with_a_warning_naming_it():
    m, src_vocab, tgt_vocab = _translator(max_len=12)
    long = "I go to school and I like cats and Suni closed the window."  # 14 tokens > 12 positions
    first12 = " ".join(tokens.word_tokenize(long)[:12])
    with pytest.warns(decoding.TruncatedInputWarning, match=r"sentence 1 has 14 tokens, more than the model's 12 positions"):
        out = decoding.translate_batch(m, ["I like cats.", long, "I go to school."], src_vocab, tgt_vocab)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the short ones and the cut one: no truncation warning, same answers
        warnings.simplefilter("ignore", decoding.UnknownWordWarning)  # "and" is not in the vocabulary of PAIRS
        assert out == [decoding.translate(m, s, src_vocab, tgt_vocab) for s in ("I like cats.", first12, "I go to school.")]
    assert issubclass(decoding.TruncatedInputWarning, UserWarning)


# --- §3 Unicode NFC at the boundaries ---------------------------------------------------------------

def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_nfd_hangul_is_the_same_token_as_nfc():
    text = "순이는 창문을 닫았다."
    assert nfd(text) != text and len(nfd(text)) > len(text)
    assert tokens.word_tokenize(nfd(text)) == tokens.word_tokenize(text) == ["순이는", "창문을", "닫았다", "."]
    vocab = tokens.Vocab.build([tokens.word_tokenize(text)])
    assert vocab.encode([nfd(t) for t in ("순이는", "창문을")]) == vocab.encode(["순이는", "창문을"]) == [6, 7]
    assert nfd("창문을") in vocab
    assert tokens.Vocab.build([[nfd("창문을")]]).itos == tokens.Vocab.build([["창문을"]]).itos
    assert tokens.Vocab([*SPECIALS, nfd("창문을")]).itos[4] == "창문을"
    with pytest.raises(ValueError, match="same token twice"):
        tokens.Vocab([*SPECIALS, "창문을", nfd("창문을")])


def test_load_pairs_returns_nfc_and_counts_lines_exactly(tmp_path):
    path = tmp_path / "pairs.tsv"
    text = f"I go to school.\t{nfd('나는 학교에 간다.')}\r\n\r\nI like cats.\t나는 고양이가 좋다.\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert corpus.load_pairs(path) == [("I go to school.", "나는 학교에 간다."), ("I like cats.", "나는 고양이가 좋다.")]
    assert corpus.load_pairs(path, max_pairs=1) == [("I go to school.", "나는 학교에 간다.")]
    with pytest.raises(ValueError, match=r"line 5000, byte 5 of the line \(b'\\xff'\)"):
        _load_bad_byte(5000)


def test_evaluate_scores_nfd_references_like_nfc():
    m, src_vocab, tgt_vocab = _translator()
    english = [en for en, _ in PAIRS]
    hyps = decoding.translate_batch(m, english, src_vocab, tgt_vocab)
    nfc_result = decoding.evaluate(m, list(zip(english, hyps)), src_vocab, tgt_vocab)
    nfd_result = decoding.evaluate(m, [(en, nfd(h)) for en, h in zip(english, hyps)], src_vocab, tgt_vocab)
    assert nfc_result["exact"] == nfd_result["exact"] == 1.0
    assert nfd_result["bleu"] == pytest.approx(nfc_result["bleu"]) and nfd_result["chrf"] == pytest.approx(100.0)
