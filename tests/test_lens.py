"""Chapter 11's analysis functions on hand-made cases with known answers (course_lib/lens.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.corpus import Pair, generate
from course_lib.hooks import HookPoint, hook_names, run_with_cache, run_with_hooks
from course_lib.lens import (
    AttentionOnly,
    ItCase,
    adjective_minimal_pairs,
    alignment_accuracy,
    direct_logit_attribution,
    head_contributions,
    induction_scores,
    it_attention,
    it_cases,
    logit_difference,
    logit_lens,
    masked_losses,
    patch_sweep,
    previous_token_scores,
    recovery,
    referent_scores,
    repeated_tokens,
    repeated_twice,
    train_induction,
)


def _rows(T: int, key_of_query) -> torch.Tensor:
    """(1, 1, T, T) pattern whose row t puts all weight on key_of_query(t) (clamped to 0..t)."""
    p = torch.zeros(1, 1, T, T)
    for t in range(T):
        p[0, 0, t, min(max(key_of_query(t), 0), t)] = 1.0
    return p


def _uniform_causal(T: int) -> torch.Tensor:
    p = torch.ones(T, T).tril()
    return (p / p.sum(-1, keepdim=True))[None, None]  # (1, 1, T, T)


# --- pattern scores -------------------------------------------------------------------------------

def test_previous_token_score_of_hand_made_heads():
    pattern = torch.cat([_rows(5, lambda t: t - 1), _rows(5, lambda t: t), _uniform_causal(5)], dim=1)  # (1, 3, 5, 5)
    got = previous_token_scores(pattern)
    expected = torch.tensor([1.0, 0.0, (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4])
    torch.testing.assert_close(got, expected)
    batch = torch.cat([_rows(5, lambda t: t - 1), _rows(5, lambda t: t)], dim=0)  # two rows: averaged over the batch
    torch.testing.assert_close(previous_token_scores(batch), torch.tensor([0.5]))


def test_induction_score_counts_the_token_after_the_previous_occurrence():
    L = 4  # tokens a b c d a b c d: query 5 (b) looks at 2 (c), i.e. t - L + 1
    induction = _rows(2 * L, lambda t: t - L + 1 if t >= L else 0)
    duplicate = _rows(2 * L, lambda t: t - L if t >= L else 0)  # attends to the same token: the off-by-one
    previous = _rows(2 * L, lambda t: t - 1)
    got = induction_scores(torch.cat([induction, duplicate, previous], dim=1), L)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.0]))
    half = induction.clone()
    half[0, 0, L:2 * L:2] = _rows(2 * L, lambda t: t)[0, 0, L:2 * L:2]  # every other query of the copy fails
    torch.testing.assert_close(induction_scores(half, L), torch.tensor([0.5]))


@pytest.mark.parametrize("period", [0, 8, 2.0, True])
def test_induction_score_rejects_a_bad_period(period):
    with pytest.raises(ValueError, match="period must be an int in 1..7"):
        induction_scores(_uniform_causal(8), period)


def test_scores_reject_a_pattern_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"previous_token_scores expects a self-attention pattern \(B, H, T, T\)"):
        previous_token_scores(torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="induction_scores"):
        induction_scores(torch.rand(1, 2, 5, 6), 2)


# --- data --------------------------------------------------------------------------------------------

def test_repeated_tokens_copies_a_segment_at_random_offsets_and_lengths():
    g = torch.Generator().manual_seed(0)
    ids, repeated = repeated_tokens(200, 48, 64, g, min_len=4, max_len=16)
    assert ids.shape == repeated.shape == (200, 48) and ids.dtype == torch.long and 0 <= ids.min() <= ids.max() < 64
    starts, lengths = [], []
    for b in range(200):
        where = repeated[b].nonzero().squeeze(1)
        n = len(where) + 1  # the first token of the copy is not marked: it cannot be foreseen
        assert 4 <= n <= 16 and torch.equal(where, torch.arange(where[0], where[0] + n - 1))  # one contiguous run
        copy = int(where[0]) - 1
        # some earlier start s holds the same n tokens
        assert any(torch.equal(ids[b, s:s + n], ids[b, copy:copy + n]) for s in range(0, copy - n + 1))
        starts.append(copy)
        lengths.append(n)
    assert len(set(starts)) > 20 and len(set(lengths)) == 13  # positions and lengths vary: position alone never tells
    again = repeated_tokens(200, 48, 64, torch.Generator().manual_seed(0), min_len=4, max_len=16)
    assert torch.equal(again.ids, ids) and torch.equal(again.repeated, repeated)


def test_repeated_tokens_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="2 \\* max_len <= seq_len"):
        repeated_tokens(2, 20, 64, torch.Generator(), max_len=11)
    with pytest.raises(TypeError, match="batch_size"):
        repeated_tokens(2.0, 20, 64, torch.Generator())  # type: ignore[arg-type]


def test_repeated_twice_and_masked_losses():
    ids = repeated_twice(3, 5, 10, torch.Generator().manual_seed(1))
    assert ids.shape == (3, 10) and torch.equal(ids[:, :5], ids[:, 5:])
    logits = torch.zeros(1, 4, 3)
    logits[0, 0, 1] = 10.0  # position 0 predicts token 1 confidently (right)
    ids = torch.tensor([[0, 1, 2, 0]])
    repeated = torch.tensor([[False, True, False, False]])  # only token 1 (at position 1) is "repeated"
    rep, other = masked_losses(logits, ids, repeated)
    ce = nn.functional.cross_entropy
    torch.testing.assert_close(rep, ce(logits[0, :1], torch.tensor([1])))
    torch.testing.assert_close(other, torch.log(torch.tensor(3.0)))  # uniform logits at positions 1 and 2


# --- the model ------------------------------------------------------------------------------------------

def _model(final_norm: bool = True) -> AttentionOnly:
    torch.manual_seed(0)
    model = AttentionOnly(16, d_model=8, n_heads=2, n_layers=2, max_len=12, final_norm=final_norm).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)  # every weight random, norm gains and biases too
    return model


def test_attention_only_hook_names_follow_the_course_scheme():
    names = hook_names(_model())
    assert names[:3] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
    assert names[-1] == "ln_final.hook_normalized" and "blocks.1.attn.hook_pattern" in names
    assert "ln_final.hook_normalized" not in hook_names(_model(final_norm=False))


def test_attention_only_rejects_bad_ids():
    with pytest.raises(TypeError, match="token ids"):
        _model()(torch.rand(1, 3))
    with pytest.raises(ValueError, match="max_len is 12"):
        _model()(torch.zeros(1, 13, dtype=torch.long))


def test_training_is_deterministic_and_lowers_the_loss():
    def run() -> tuple:
        torch.manual_seed(0)
        model = AttentionOnly(16, d_model=16, n_heads=2, n_layers=1, max_len=32)
        return train_induction(model, 30, batch_size=8, seq_len=32, lr=1e-2, seed=3, log_every=10), model

    (log, model), (again, _) = run(), run()
    assert log == again and log.steps == [1, 10, 20, 30] and not model.training
    assert log.loss_other[-1] < log.loss_other[0]


def test_logit_lens_at_the_last_layer_is_the_output_and_needs_the_final_norm():
    model = _model()
    ids = torch.randint(16, (2, 7), generator=torch.Generator().manual_seed(0))
    out, cache = run_with_cache(model, ids)
    last = cache["blocks.1.hook_resid_post"]
    torch.testing.assert_close(logit_lens(last, model.unembed, model.normalise), out, rtol=0, atol=1e-12)
    assert not torch.allclose(logit_lens(last, model.unembed), out, atol=1e-3)  # without the norm: wrong
    plain = _model(final_norm=False)
    out, cache = run_with_cache(plain, ids)
    torch.testing.assert_close(logit_lens(cache["blocks.1.hook_resid_post"], plain.unembed), out, rtol=0, atol=1e-12)


def test_head_contributions_and_direct_logit_attribution_add_up_to_the_logit():
    model = _model()
    ids = torch.randint(16, (2, 7), generator=torch.Generator().manual_seed(1))
    out, cache = run_with_cache(model, ids)
    parts = [(cache["hook_embed"] + cache["hook_pos_embed"]).unsqueeze(2)]  # (B, T, 1, D)
    for i, block in enumerate(model.blocks):
        heads = head_contributions(cache[f"blocks.{i}.attn.hook_z"], block.attn.w_o)  # (B, T, H, D)
        torch.testing.assert_close(heads.sum(2) + block.attn.w_o.bias, cache[f"blocks.{i}.hook_attn_out"])
        parts += [heads, block.attn.w_o.bias.expand(2, 7, 1, 8)]
    components = torch.cat(parts, dim=2)  # (B, T, C, D): the residual stream, split
    resid = cache["blocks.1.hook_resid_post"]
    torch.testing.assert_close(components.sum(2), resid)
    targets = torch.randint(16, (2, 7), generator=torch.Generator().manual_seed(2))
    dla = direct_logit_attribution(components, resid, model.ln_final.norm, model.unembed, targets)  # (B, T, C)
    bias_term = model.unembed.weight[targets] @ model.ln_final.norm.bias  # (B, T)
    target_logits = out.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    torch.testing.assert_close(dla.sum(-1) + bias_term, target_logits, rtol=0, atol=1e-10)


# --- alignment -------------------------------------------------------------------------------------------

def test_alignment_accuracy_on_a_hand_made_pattern():
    # 2 heads, 3 queries (Korean words), 4 keys (English words); links: (key, query)
    pattern = torch.tensor([[[0.1, 0.7, 0.1, 0.1],   # head 0: query 0 -> key 1 (right)
                             [0.6, 0.2, 0.1, 0.1],   # query 1 -> key 0 (wrong: 2 or 3)
                             [0.0, 0.0, 0.2, 0.8]],  # query 2 -> key 3 (right)
                            [[0.25, 0.25, 0.25, 0.25],  # head 1: argmax 0 everywhere (first of the ties)
                             [0.1, 0.1, 0.1, 0.7],  # query 1 -> key 3, one of its two links: right
                             [0.9, 0.0, 0.0, 0.1]]])  # (H=2, T_q=3, T_k=4)
    links = [(1, 0), (2, 1), (3, 1), (3, 2)]
    torch.testing.assert_close(alignment_accuracy(pattern, links), torch.tensor([2 / 3, 1 / 3]))
    torch.testing.assert_close(alignment_accuracy(pattern[None], links), torch.tensor([[2 / 3, 1 / 3]]))  # any leading dims
    assert float(alignment_accuracy(pattern[0], [(0, 1)])) == 1.0  # an unlinked query is not scored


def test_alignment_accuracy_rejects_links_outside_the_pattern():
    with pytest.raises(ValueError, match=r"link \(key 4, query 0\) is outside"):
        alignment_accuracy(torch.rand(3, 4), [(4, 0)])
    with pytest.raises(ValueError, match="at least one"):
        alignment_accuracy(torch.rand(3, 4), [])


# --- patching ------------------------------------------------------------------------------------------

def test_recovery_is_zero_for_corrupted_and_one_for_clean():
    assert float(recovery(2.0, 2.0, -1.0)) == 1.0 and float(recovery(-1.0, 2.0, -1.0)) == 0.0
    assert float(recovery(0.5, 2.0, -1.0)) == 0.5
    torch.testing.assert_close(recovery(torch.tensor([0.0, 3.0]), torch.tensor([2.0, 3.0]), torch.tensor([-2.0, 1.0])),
                               torch.tensor([0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="same metric"):
        recovery(1.0, 2.0, 2.0)


class _Toy(nn.Module):
    """logits[b, 0, v] = sum_t w[t] * x[b, t, v]: position t of the hooked input moves the logit by w[t] x[t]."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = torch.tensor(w, dtype=torch.float64)
        self.hook_resid_pre = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)  # (B, T, V)
        return torch.einsum("t,btv->bv", self.w, x).unsqueeze(1)  # (B, 1, V)


def test_patch_sweep_finds_the_position_that_carries_the_difference():
    toy = _Toy([1.0, 2.0, 3.0])
    clean = torch.zeros(1, 3, 2, dtype=torch.float64)
    corrupted = clean.clone()
    clean[0, 1, 0] = 1.0  # only position 1 differs: token 0's logit is 2 higher in the clean run
    metric = lambda logits: logit_difference(logits, 0, 0, 1)  # noqa: E731
    got = patch_sweep(toy, [clean], [corrupted], ["hook_resid_pre"], metric)
    torch.testing.assert_close(got, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))
    clean[0, 2, 0] = 1.0  # now positions 1 and 2 differ, carrying 2 and 3 of the 5
    got = patch_sweep(toy, [clean], [corrupted], ["hook_resid_pre"], metric, positions=[2, 1, 0])
    torch.testing.assert_close(got, torch.tensor([[0.6, 0.4, 0.0]], dtype=torch.float64))
    assert not toy._forward_hooks and not toy.hook_resid_pre._forward_hooks  # nothing left registered


def test_patch_sweep_on_the_attention_only_model_restores_the_clean_run():
    model = _model()
    g = torch.Generator().manual_seed(4)
    clean = torch.randint(16, (1, 6), generator=g)
    corrupted = clean.clone()
    corrupted[0, 2] = (clean[0, 2] + 1) % 16  # one token differs
    metric = lambda logits: logit_difference(logits, 5, 3, 7)  # noqa: E731
    got = patch_sweep(model, [clean], [corrupted], ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"], metric)
    assert got.shape == (2, 6)
    torch.testing.assert_close(got[0], torch.tensor([0, 0, 1, 0, 0, 0], dtype=torch.float64))  # the changed token
    torch.testing.assert_close(got[1, 5], torch.tensor(1.0, dtype=torch.float64))  # the last position's output
    torch.testing.assert_close(got[1, :5], torch.zeros(5, dtype=torch.float64))  # causal: no later read
    out = run_with_hooks(model, corrupted, hooks=[])
    torch.testing.assert_close(out, model(corrupted))


# --- the note's "it" ---------------------------------------------------------------------------------------

def _it_pair(en: str, ko: str, key: tuple, it: str, construction: str = "it") -> Pair:
    return Pair(en, ko, construction, key, "past", (), it)


def test_it_cases_finds_it_the_nouns_and_the_adjective():
    note = ("cat", "drink", "milk")
    pairs = [_it_pair("The cat drank the milk because it was hungry.", "고양이는 배가 고파서 우유를 마셨다.", note, "cat"),
             _it_pair("The police officer ate the cookie because it was sweet.", "경찰관은 쿠키가 달아서 먹었다.",
                      ("police_officer", "eat", "cookie"), "cookie"),
             _it_pair("The cat drank the milk because it was thirsty.", "고양이는 목이 말라서 우유를 마셨다.", note, "cat",
                      construction="because"),  # an "it", but not the construction's: skipped
             _it_pair("It was raining.", "비가 왔다.", ("-", "rain", "-"), "")]  # no "it" that refers to a noun: skipped
    cat, officer = it_cases(pairs)
    assert cat == ItCase("The cat drank the milk because it was hungry .".split(), "고양이는 배가 고파서 우유를 마셨다 .".split(),
                         it=6, subject=1, object=4, adjective=8, referent="subject")
    assert (officer.it, officer.subject, officer.object, officer.adjective, officer.referent) == (7, 2, 5, 9, "object")
    with pytest.raises(ValueError, match="it_cases: the noun 'milk' is not in"):
        it_cases([_it_pair("The cat drank the water because it was hungry.", "", ("cat", "drink", "milk"), "cat")])


def test_it_cases_on_generated_pairs():
    pairs = [p for p in generate(seed=1, n_pairs=3000) if p.construction == "it"]
    cases = it_cases(pairs)
    assert len(cases) == len(pairs) > 100
    assert {c.referent for c in cases} == {"subject", "object"}
    for c in cases:
        assert c.subject < c.object < c.it < c.adjective == len(c.en) - 2 and c.en[c.it] == "it"
        assert c.en[c.adjective] in (("hungry", "tired", "sleepy") if c.referent == "subject"
                                     else ("sweet", "fresh", "hot", "cold", "heavy"))


def _case(adjective: str, referent: str, ko: str, verb: str = "drank") -> ItCase:
    return ItCase(f"The cat {verb} the milk because it was {adjective} .".split(), ko.split(), 6, 1, 4, 8, referent)


def test_it_attention_reads_the_row_of_it_in_the_referents_order():
    pattern = torch.zeros(2, 10, 10)  # (H, S, S)
    pattern[0, 6, [1, 4, 8]] = torch.tensor([0.5, 0.2, 0.3])  # head 0: "it" -> cat, milk, hungry
    pattern[1, 6, [1, 4, 8]] = torch.tensor([0.1, 0.6, 0.3])
    pattern[:, 5, 1] = 9.0  # another row: never read
    subject, obj = _case("hungry", "subject", ""), _case("sweet", "object", "")
    torch.testing.assert_close(it_attention(pattern, subject), torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]]))
    torch.testing.assert_close(it_attention(pattern, obj), torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    torch.testing.assert_close(it_attention(pattern[None], obj)[0], it_attention(pattern, obj))  # any leading dims
    with pytest.raises(ValueError, match=r"it_attention expects a self-attention pattern \(\.\.\., S, S\) with S >= 10"):
        it_attention(torch.rand(2, 8, 8), subject)
    with pytest.raises(ValueError, match="it_attention"):
        it_attention(torch.rand(2, 10, 12), subject)


def test_referent_scores_count_wins_and_half_the_ties():
    to_referent = torch.tensor([[0.5, 0.1], [0.2, 0.3], [0.3, 0.3]])  # (N=3 cases, 2 heads)
    to_other = torch.tensor([[0.1, 0.2], [0.4, 0.3], [0.3, 0.3]])
    torch.testing.assert_close(referent_scores(to_referent, to_other), torch.tensor([0.5, 1 / 3], dtype=torch.float64))
    assert float(referent_scores(torch.ones(4), torch.ones(4))) == 0.5  # cannot tell the nouns apart: chance
    with pytest.raises(ValueError, match="referent_scores expects two tensors of the same shape"):
        referent_scores(torch.ones(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="N >= 1"):
        referent_scores(torch.ones(0, 2), torch.ones(0, 2))


def test_adjective_minimal_pairs_match_sentences_that_differ_only_in_the_adjective():
    hungry = _case("hungry", "subject", "고양이는 배가 고파서 우유를 마셨다 .")
    sweet = _case("sweet", "object", "고양이는 우유가 달아서 마셨다 .")
    fresh = _case("fresh", "object", "고양이는 우유가 신선해서 마셨다 .")
    other_verb = _case("cold", "object", "고양이는 우유가 차가워서 안 마셨다 .", verb="spilled")  # another sentence frame
    tired = _case("tired", "subject", "고양이는 피곤해서 우유를 마셨다 .")
    pairs = adjective_minimal_pairs([sweet, other_verb, hungry, fresh, tired])
    assert [(p.subject.en[8], p.object.en[8], p.k) for p in pairs] == [("hungry", "fresh", 1), ("hungry", "sweet", 1),
                                                                      ("tired", "fresh", 1), ("tired", "sweet", 1)]
    assert pairs[0].subject is hungry and pairs[0].object is fresh
    late = _case("sweet", "object", "고양이는 배가 달아서 마셨다 .")  # the translations first differ at word 2
    assert [p.k for p in adjective_minimal_pairs([hungry, late])] == [2]
    assert adjective_minimal_pairs([hungry, tired]) == []  # the same referent: no pair
