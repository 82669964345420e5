"""Chapter 07 decoding: greedy equals the naive loop, beam search is exact when wide, translate, evaluate."""
from __future__ import annotations

import itertools
import math

import pytest
import sacrebleu
import torch

from course_lib.decoding import (
    UntranslatableError,
    beam_search,
    beam_step,
    evaluate,
    greedy_decode,
    length_penalty,
    translate,
    translate_batch,
)
from course_lib.model import Transformer, TransformerConfig
from course_lib.training import build_vocabs

PAIRS = [("I go to school.", "나는 학교에 간다."), ("Suni closed the window.", "순이는 창문을 닫았다."),
         ("She closed the drawer.", "그녀는 서랍을 닫았다."), ("I like cats.", "나는 고양이가 좋다.")]


def peaky_model(src_V: int = 12, tgt_V: int = 9, seed: int = 0, sharpness: float = 6.0, **changes) -> Transformer:
    """A random tiny model whose next-token distributions are far from uniform (no near-ties)."""
    torch.manual_seed(seed)
    model = Transformer(TransformerConfig.tiny(src_V, tgt_V, **changes))
    with torch.no_grad():
        model.generator.weight.mul_(sharpness)
    return model.eval()


def sources(rows: list[list[int]]) -> torch.Tensor:
    src = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)  # (B, S), right padding
    for b, row in enumerate(rows):
        src[b, :len(row)] = torch.tensor(row)
    return src


ROWS = [[4, 5, 6, 7, 8], [9, 4], [10, 11, 5, 6]]


def naive_greedy(model: Transformer, row: list[int], max_len: int, bos: int = 1, eos: int = 2) -> list[int]:
    """Re-run the whole model on (source, prefix) for every new token, one sentence at a time."""
    ys = [bos]
    with torch.no_grad():
        for _ in range(max_len):
            logits = model(torch.tensor([row]), torch.tensor([ys]))  # (1, t, V)
            ys.append(int(logits[0, -1].argmax()))
            if ys[-1] == eos:
                break
    return ys[1:]


@pytest.mark.parametrize("seed", range(4))
def test_greedy_decode_equals_a_naive_recompute_loop(seed):
    model = peaky_model(seed=seed)
    out = greedy_decode(model, sources(ROWS), max_len=9)  # (B, L)
    assert out.dim() == 2 and out.shape[0] == 3 and out.shape[1] <= 9 and out.dtype == torch.long
    for b, row in enumerate(ROWS):
        expected = naive_greedy(model, row, 9)
        got = out[b].tolist()
        assert got[:len(expected)] == expected
        assert all(t == 0 for t in got[len(expected):])  # padded after <eos>
    finished = (out == 2).any(dim=1)
    if out.shape[1] < 9:
        assert finished.all()  # it stops early only when every row has produced <eos>


def with_eos_bias(model: Transformer, bias: float) -> Transformer:
    """The same model with a bias on the <eos> logit (+: always ends at once, -: never ends)."""
    old = model.generator
    model.generator = torch.nn.Linear(old.in_features, old.out_features)
    with torch.no_grad():
        model.generator.weight.copy_(old.weight)
        model.generator.bias.zero_()
        model.generator.bias[2] = bias
    return model


def test_greedy_decode_stops_when_all_rows_end_and_respects_max_len():
    assert greedy_decode(with_eos_bias(peaky_model(), 1e4), sources(ROWS)).tolist() == [[2], [2], [2]]
    model = with_eos_bias(peaky_model(), -1e4)
    with torch.no_grad():
        model.generator.bias[0] = -1e4  # and no <pad> either: every row runs to its limit with real tokens
    assert greedy_decode(model, sources(ROWS), max_len=4).shape == (3, 4)
    assert greedy_decode(model, sources([[4, 5]])).shape == (1, 2 * 2 + 10)  # default: 2 S + 10
    out = greedy_decode(model, sources(ROWS))  # each row stops at its own 2 S + 10
    assert [int((row != 0).sum()) for row in out] == [2 * len(r) + 10 for r in ROWS]
    assert [len(h) for h in beam_search(model, sources(ROWS), 2)] == [2 * len(r) + 10 for r in ROWS]
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model, sources(ROWS), max_len=0)


def test_decoding_uses_eval_mode_and_restores_the_mode():
    model = peaky_model(dropout=0.5).train()
    a, b = greedy_decode(model, sources(ROWS)), greedy_decode(model, sources(ROWS))
    assert torch.equal(a, b) and model.training  # no dropout inside, the training flag is back
    assert beam_search(model, sources(ROWS), 3) == beam_search(model.eval(), sources(ROWS), 3)


def test_beam_step_golden_example():
    log_probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]).log()  # (K=2, V=3)
    scores = torch.tensor([0.4, 0.6]).log()  # (K,)
    new_scores, beam_idx, token_idx = beam_step(log_probs, scores, 3)
    # continuations: beam 0 -> 0.20, 0.12, 0.08; beam 1 -> 0.06, 0.36, 0.18
    assert new_scores.exp().tolist() == pytest.approx([0.36, 0.20, 0.18], abs=1e-6)
    assert beam_idx.tolist() == [1, 0, 1] and token_idx.tolist() == [1, 0, 2]
    batched = beam_step(log_probs.expand(4, 2, 3), scores.expand(4, 2), 3)  # leading dims are kept
    assert all(t.shape == (4, 3) for t in batched) and batched[1][2].tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"\(\.\.\., K, V\)"):
        beam_step(log_probs, scores[:1], 2)


@pytest.mark.parametrize("seed", range(3))
def test_beam_search_with_beam_1_equals_greedy(seed):
    model = peaky_model(seed=seed)
    greedy = greedy_decode(model, sources(ROWS), max_len=8).tolist()
    beams = beam_search(model, sources(ROWS), beam_size=1, max_len=8)
    assert beams == [row[:row.index(2)] if 2 in row else [t for t in row if t] for row in greedy]


def exhaustive_best(model: Transformer, row: list[int], max_len: int, alpha: float) -> list[int]:
    """Score every possible output of at most max_len tokens; keep the best log P / lp."""
    V = model.config.tgt_vocab_size
    prefixes = list(itertools.product(range(V), repeat=max_len - 1))  # every decoder input after <bos>
    with torch.no_grad():
        tgt = torch.tensor([[1, *p] for p in prefixes])  # (V^(L-1), L)
        logp = model(torch.tensor([row] * len(prefixes)), tgt).log_softmax(-1)  # (V^(L-1), L, V)
    best, best_score = None, -math.inf
    for n in range(1, max_len + 1):
        for ys in itertools.product(range(V), repeat=n):
            if 2 in ys[:-1] or (n < max_len and ys[-1] != 2):
                continue  # <eos> ends a hypothesis; shorter ones must end with it
            k = prefixes.index((*ys[:-1], *[0] * (max_len - n)))  # a row whose input starts with <bos> + ys[:-1]
            score = float(sum(logp[k, i, y] for i, y in enumerate(ys))) / length_penalty(n, alpha)
            if score > best_score:
                best, best_score = [y for y in ys if y != 2], score
    return best


def test_wide_beam_search_finds_the_exhaustive_optimum():
    model = peaky_model(tgt_V=6, seed=1, sharpness=2.0)
    with torch.no_grad():
        model.generator.weight[2] += 0.3 * model.generator.weight.abs().max()  # make <eos> a real option
    found = set()
    for alpha in (0.0, 0.6, 2.0):
        got = beam_search(model, sources(ROWS), beam_size=36, alpha=alpha, max_len=3)
        assert got == [exhaustive_best(model, row, 3, alpha) for row in ROWS], alpha
        found.update(len(h) for h in got)
    assert len(found) > 1  # the length penalty changes which length wins: the cases differ


def test_beam_search_stops_once_no_open_beam_can_win():
    model = with_eos_bias(peaky_model(), 1e4)  # <eos> first, every other token costs about 1e4
    calls = []
    decode = model.decode
    model.decode = lambda *args, **kwargs: calls.append(1) or decode(*args, **kwargs)
    assert beam_search(model, sources(ROWS), beam_size=3) == [[], [], []]
    assert len(calls) == 1  # not 2 S + 10 steps: the open beams (score about -1e4) cannot catch up
    with pytest.raises(ValueError, match="alpha"):
        beam_search(model, sources(ROWS), alpha=-1.0)


def test_beam_search_rows_do_not_depend_on_their_batch():
    model = peaky_model(seed=2)
    together = beam_search(model, sources(ROWS), beam_size=3, max_len=8)
    assert together == [beam_search(model, sources([row]), beam_size=3, max_len=8)[0] for row in ROWS]
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, sources(ROWS), beam_size=0)
    with pytest.raises(TypeError, match=r"\(B, S\)"):
        greedy_decode(model, torch.randn(2, 3))


def test_length_penalty_is_gnmts():
    assert length_penalty(1, 0.6) == pytest.approx(1.0)
    assert length_penalty(7, 0.6) == pytest.approx(2.0**0.6)
    assert length_penalty(torch.tensor([1.0, 7.0]), 1.0).tolist() == pytest.approx([1.0, 2.0])


def test_translate_maps_unknown_words_to_unk_without_crashing():
    src_vocab, tgt_vocab = build_vocabs(PAIRS)
    model = peaky_model(len(src_vocab), len(tgt_vocab), seed=3)
    out = translate(model, "I go to Busan.", src_vocab, tgt_vocab)
    assert isinstance(out, str)
    assert out == translate(model, "I go to Gimhae.", src_vocab, tgt_vocab)  # both unknown -> the same <unk>
    assert translate(model, "", src_vocab, tgt_vocab) == ""
    assert isinstance(translate(model, "Zebras go to school!", src_vocab, tgt_vocab, beam_size=3), str)
    with pytest.raises(UntranslatableError, match=r"knows no word.*'Zebras!' \(unknown words: Zebras, !\)"):
        translate(model, "Zebras!", src_vocab, tgt_vocab, beam_size=3)  # nothing known: refused, not made up
    assert translate_batch(model, ["I like cats.", "", "I go to school."], src_vocab, tgt_vocab)[1] == ""
    with pytest.raises(TypeError, match="one sentence"):
        translate(model, ["I go to school."], src_vocab, tgt_vocab)


def test_translate_batch_equals_one_at_a_time():
    src_vocab, tgt_vocab = build_vocabs(PAIRS)
    model = peaky_model(len(src_vocab), len(tgt_vocab), seed=4)
    english = [en for en, _ in PAIRS]
    for beam in (1, 3):
        assert translate_batch(model, english, src_vocab, tgt_vocab, beam, batch_size=3) == \
            [translate(model, en, src_vocab, tgt_vocab, beam) for en in english]


def test_evaluate_scores_a_tiny_case():
    src_vocab, tgt_vocab = build_vocabs(PAIRS)
    model = peaky_model(len(src_vocab), len(tgt_vocab), seed=5)
    english = [en for en, _ in PAIRS]
    hyps = translate_batch(model, english, src_vocab, tgt_vocab)
    perfect = evaluate(model, list(zip(english, hyps)), src_vocab, tgt_vocab)  # references = its own output
    assert perfect["exact"] == 1.0 and perfect["hypotheses"] == hyps and perfect["chrf"] == pytest.approx(100.0)
    result = evaluate(model, PAIRS, src_vocab, tgt_vocab)
    refs = [ko for _, ko in PAIRS]
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert result["exact"] == sum(h == r for h, r in zip(hyps, refs)) / 4
    assert all(h != r for h, r in zip(hyps, refs))  # untrained: no output equals its reference...
    half = [(en, hyp) for en, hyp in zip(english[:2], hyps[:2])] + list(PAIRS[2:])
    assert evaluate(model, half, src_vocab, tgt_vocab)["exact"] == 0.5  # ...so exactly 2 of these 4 match
    with pytest.raises(ValueError, match="at least one"):
        evaluate(model, [], src_vocab, tgt_vocab)
