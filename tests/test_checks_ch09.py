"""Checkers of chapter 09: the solutions (and other correct styles) pass, the untouched stubs propagate
NotImplementedError, and each classic mistake fails with its own hint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.course import checks
from course_lib.course.checks import CheckFailed
from course_lib.llama import apply_rotary as lib_apply_rotary
from course_lib.llama import grouped_query_attention as lib_gqa
from course_lib.llama import rotary_cos_sin
from course_lib.sampling import top_p_filter as lib_top_p

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest on a shared CPU

ch09 = checks.ch09


def stub(*args, **kwargs):
    raise NotImplementedError("write your answer")


def fails_with(check, fn, *needles):
    with pytest.raises(CheckFailed) as err:
        check(fn)
    message = str(err.value)
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("name", ["next_token_loss", "temperature_top_k", "top_p_filter", "apply_rotary", "rms_norm",
                                  "grouped_query_attention"])
def test_stub_propagates_not_implemented(name):
    with pytest.raises(NotImplementedError):
        getattr(ch09, name)(stub)


def test_every_checker_has_graded_hints():
    for name in ["next_token_loss", "temperature_top_k", "top_p_filter", "apply_rotary", "rms_norm", "grouped_query_attention"]:
        assert len(ch09.HINTS[name]) == 3 and getattr(ch09, name).exercise == f"ch09.{name}"


# --- next-token loss ------------------------------------------------------------------------------

def loss_solution(logits, ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def loss_loops(logits, ids):
    total, n = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            total = total - logits[b, t].log_softmax(-1)[ids[b, t + 1]]
            n += 1
    return total / n


def test_next_token_loss_accepts_solutions(capsys):
    ch09.next_token_loss(loss_solution)
    ch09.next_token_loss(loss_loops)
    from course_lib.gpt import next_token_loss
    ch09.next_token_loss(next_token_loss)
    assert capsys.readouterr().out.count("✓") == 3


def test_next_token_loss_mistakes():
    fails_with(ch09.next_token_loss, lambda lg, ids: F.cross_entropy(lg.reshape(-1, lg.shape[-1]), ids.reshape(-1)),
               "no shift", "more help: checks.hint('ch09.next_token_loss')")
    fails_with(ch09.next_token_loss,
               lambda lg, ids: F.cross_entropy(lg[:, 1:].reshape(-1, lg.shape[-1]), ids[:, :-1].reshape(-1)),
               "the wrong way")
    fails_with(ch09.next_token_loss, lambda lg, ids: loss_solution(lg, ids) * (ids.shape[0] * (ids.shape[1] - 1)),
               "not their sum")
    fails_with(ch09.next_token_loss, lambda lg, ids: loss_solution(lg, ids)[None], "one number")


# --- temperature and top-k -----------------------------------------------------------------------

def test_temperature_top_k_accepts_solutions():
    from course_lib.sampling import apply_temperature, top_k_filter

    ch09.temperature_top_k(lambda lg, t, k: top_k_filter(apply_temperature(lg, t), k))

    def sort_style(lg, t, k):
        kth = (lg / t).sort(dim=-1, descending=True).values[:, k - 1:k]
        return torch.where(lg / t >= kth, lg / t, torch.full_like(lg, float("-inf")))

    ch09.temperature_top_k(sort_style)


def test_temperature_top_k_mistakes():
    from course_lib.sampling import top_k_filter

    fails_with(ch09.temperature_top_k, lambda lg, t, k: top_k_filter(lg * t, k), "divide the logits",
               "more help: checks.hint('ch09.temperature_top_k')")
    def smallest(lg, t, k):
        s = lg / t
        return s.masked_fill(s > s.topk(k, dim=-1, largest=False).values[:, -1:], float("-inf"))

    fails_with(ch09.temperature_top_k, smallest, "LARGEST")
    fails_with(ch09.temperature_top_k, lambda lg, t, k: top_k_filter(lg, k), "use the temperature")

    def strictly_above(lg, t, k):
        s = lg / t
        return s.masked_fill(s <= s.topk(k, dim=-1).values[:, -1:], float("-inf"))

    fails_with(ch09.temperature_top_k, strictly_above, "one token too few")

    def zeros(lg, t, k):
        s = lg / t
        return s.masked_fill(s < s.topk(k, dim=-1).values[:, -1:], 0.0)

    fails_with(ch09.temperature_top_k, zeros, "not 0")


def test_temperature_top_k_ties_and_one_too_many_are_named():
    def exactly_k(lg, t, k):
        s = lg / t
        keep = torch.zeros_like(s, dtype=torch.bool).scatter(-1, s.topk(k, dim=-1).indices, True)
        return s.masked_fill(~keep, float("-inf"))

    fails_with(ch09.temperature_top_k, exactly_k, "tied with the k-th", "(2, 6)")

    def k_plus_one(lg, t, k):
        s = lg / t
        kth = s.sort(dim=-1, descending=True).values[:, min(k, s.shape[-1] - 1):][:, :1]
        return s.masked_fill(s < kth, float("-inf"))

    fails_with(ch09.temperature_top_k, k_plus_one, "one token too many")


# --- top-p -----------------------------------------------------------------------------------------

def top_p_loop(logits, p):
    out = logits.clone()
    for b in range(logits.shape[0]):
        probs = logits[b].softmax(-1)
        total = 0.0
        for i in probs.argsort(descending=True).tolist():
            if total >= p:
                out[b, i] = float("-inf")
            total += float(probs[i])
    return out


def top_p_ascending(logits, p):
    """The rule transformers' TopPLogitsWarper uses: drop the tokens whose ascending running total stays <= 1 - p."""
    probs, order = logits.softmax(-1).sort(-1, descending=False)
    drop = probs.cumsum(-1) <= 1 - p
    drop[..., -1] = False
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def top_p_stable_reversed(logits, p):
    """The solution's rule, ties broken the other way (the highest index first)."""
    flipped = logits.flip(-1)
    return lib_top_p(flipped, p).flip(-1)


def test_top_p_accepts_solutions():
    ch09.top_p_filter(lib_top_p)
    ch09.top_p_filter(top_p_loop)
    ch09.top_p_filter(top_p_ascending)
    ch09.top_p_filter(top_p_stable_reversed)


def test_top_p_accepts_transformers_warper():
    transformers = pytest.importorskip("transformers")
    warper = transformers.TopPLogitsWarper

    def hf(logits, p):
        return warper(top_p=p)(None, logits)

    ch09.top_p_filter(hf)


def test_top_p_ties_at_the_boundary_give_several_valid_sets():
    probs = torch.tensor([[0.2, 0.3, 0.2, 0.1, 0.2]], dtype=torch.float64)
    kept = [torch.isfinite(f(probs.log(), 0.55)) for f in (lib_top_p, top_p_stable_reversed)]
    assert not torch.equal(kept[0], kept[1]) and all(int(k.sum()) == 3 and bool(k[0, 1]) for k in kept)


def test_top_p_cases_stay_off_the_boundary():
    for probs, p, _ in ch09._TOP_P_CASES:
        ranked = probs.double().sort(-1, descending=True).values
        assert ((ranked.cumsum(-1) - p).abs() > 0.02).all()


def _top_p_variant(rule):
    def fn(logits, p):
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        cum = probs.cumsum(-1)
        drop = {"too_few": cum >= p, "too_few_gt": cum > p}[rule]
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return fn


def test_top_p_mistakes():
    fails_with(ch09.top_p_filter, _top_p_variant("too_few"), "one token too few")
    fails_with(ch09.top_p_filter, _top_p_variant("too_few_gt"), "one token too few")

    def unsorted(logits, p):
        probs = logits.softmax(-1)
        return logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))

    fails_with(ch09.top_p_filter, unsorted, "sort the probabilities")

    def too_many(logits, p):
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        before = probs.cumsum(-1) - probs
        drop = (before - probs.roll(1, -1) * (torch.arange(probs.shape[-1]) > 0)) >= p
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    fails_with(ch09.top_p_filter, too_many, "one token too many")
    fails_with(ch09.top_p_filter, lambda lg, p: lib_top_p(lg, p).softmax(-1), "unchanged")


def test_top_p_sorted_order_logit_cumsum_and_forced_top_are_named():
    def sorted_order(logits, p):
        values, _ = logits.sort(-1, descending=True)
        probs = values.softmax(-1)
        return values.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))

    fails_with(ch09.top_p_filter, sorted_order, "vocabulary order", "sorted logits")

    def logit_cumsum(logits, p):
        values, order = logits.sort(-1, descending=True)
        drop = values.cumsum(-1) - values >= p
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    fails_with(ch09.top_p_filter, logit_cumsum, "PROBABILITIES")

    def forced(logits, p):
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        drop = probs.cumsum(-1) >= p
        drop[..., 0] = False
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    fails_with(ch09.top_p_filter, forced, "forcing the most likely token")


# --- rotary ----------------------------------------------------------------------------------------

def rotary_solution(x, positions, base=10000.0):
    cos, sin = rotary_cos_sin(positions, x.shape[-1], base, torch.float64)
    return lib_apply_rotary(x, cos, sin)


def rotary_complex(x, positions, base=10000.0):
    """Another correct style: the halves as the real and imaginary parts of complex numbers."""
    dh = x.shape[-1]
    freq = base ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    z = torch.complex(*x.chunk(2, -1)) * torch.polar(torch.ones(1, dtype=torch.float64), positions[:, None] * freq)
    return torch.cat([z.real, z.imag], -1)


def test_rotary_accepts_solutions():
    ch09.apply_rotary(rotary_solution)
    ch09.apply_rotary(rotary_complex)


def test_rotary_mistakes():
    def neighbours(x, positions, base=10000.0):
        dh = x.shape[-1]
        freq = base ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
        a = positions[:, None] * freq
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * a.cos() - x2 * a.sin(), x2 * a.cos() + x1 * a.sin()], -1).flatten(-2)

    fails_with(ch09.apply_rotary, neighbours, "wrong pairs", "more help: checks.hint('ch09.apply_rotary')")
    fails_with(ch09.apply_rotary, lambda x, pos, base=10000.0: rotary_solution(x, -pos, base), "wrong way")
    fails_with(ch09.apply_rotary, lambda x, pos, base=10000.0: rotary_solution(x, torch.arange(x.shape[2]), base),
               "positions you are given")
    fails_with(ch09.apply_rotary, lambda x, pos, base=10000.0: rotary_solution(x, pos), "base argument")
    fails_with(ch09.apply_rotary, lambda x, pos, base=10000.0: rotary_solution(x, pos + 1, base), "off by one")


def test_rotary_wrong_default_base_is_named():
    fails_with(ch09.apply_rotary, lambda x, pos, base=1000.0: rotary_solution(x, pos, base), "base left out",
               "base=10000.0")


def test_rotary_that_changes_its_input_in_place_is_named():
    def in_place(x, positions, base=10000.0):
        out = rotary_solution(x, positions, base)
        x.copy_(out)
        return x

    fails_with(ch09.apply_rotary, in_place, "x changed in place", "do not change your inputs in place")


# --- RMSNorm ---------------------------------------------------------------------------------------

def test_rms_norm_accepts_solutions():
    ch09.rms_norm(lambda x, w, eps=1e-6: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w)
    ch09.rms_norm(lambda x, w, eps=1e-6: x / x.pow(2).mean(-1, keepdim=True).add(eps).sqrt() * w)


def test_rms_norm_refuses_the_builtin_and_restores_it():
    original = F.rms_norm
    fails_with(ch09.rms_norm, lambda x, w, eps=1e-6: F.rms_norm(x, (x.shape[-1],), w, eps), "a call to F.rms_norm",
               "not allowed here")
    fails_with(ch09.rms_norm, lambda x, w, eps=1e-6: torch.nn.RMSNorm(x.shape[-1], eps=eps).double()(x) * w,
               "not allowed here")
    assert F.rms_norm is original and "rms_norm" not in vars(torch.nn.RMSNorm)


def test_rms_norm_without_the_square_root_and_a_wrong_default_eps_are_named():
    fails_with(ch09.rms_norm, lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w, "square ROOT")
    fails_with(ch09.rms_norm, lambda x, w, eps=1e-5: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w,
               "eps left out", "eps=1e-06")


def test_rms_norm_mistakes():
    def subtracts_mean(x, w, eps=1e-6):
        x = x - x.mean(-1, keepdim=True)
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    fails_with(ch09.rms_norm, subtracts_mean, "does not subtract the mean", "more help: checks.hint('ch09.rms_norm')")
    fails_with(ch09.rms_norm, lambda x, w, eps=1e-6: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w,
               "inside the square root")
    fails_with(ch09.rms_norm, lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps), "gain")


# --- grouped-query attention ------------------------------------------------------------------------

def test_gqa_accepts_solutions():
    ch09.grouped_query_attention(lambda q, k, v, mask=None: lib_gqa(q, k, v, mask)[0])
    ch09.grouped_query_attention(gqa_loops)  # one head at a time, the shared key/value head picked by h // g


def test_gqa_mistakes():
    def tiled(q, k, v, mask=None):
        g = q.shape[1] // k.shape[1]
        return gqa_loops(q, k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1), mask)

    fails_with(ch09.grouped_query_attention, tiled, "wrong order", "more help: checks.hint('ch09.grouped_query_attention')")
    fails_with(ch09.grouped_query_attention, lambda q, k, v, mask=None: lib_gqa(q, k, v)[0], "apply the mask")
    fails_with(ch09.grouped_query_attention, lambda q, k, v, mask=None: gqa_loops(q, k, v, None if mask is None else ~mask),
               "the mask is inverted")


def gqa_loops(q, k, v, mask=None, naive=False):
    g = q.shape[1] // k.shape[1]
    heads = []
    for h in range(q.shape[1]):
        s = q[:, h] @ k[:, h // g].transpose(-2, -1) / q.shape[-1] ** 0.5
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        w = s.exp() / s.exp().sum(-1, keepdim=True) if naive else s.softmax(-1)
        heads.append(w @ v[:, h // g])
    return torch.stack(heads, 1)


def test_gqa_naive_exp_overflows_on_large_scores():
    fails_with(ch09.grouped_query_attention, lambda q, k, v, mask=None: gqa_loops(q, k, v, mask, naive=True),
               "LARGE q and k", "your softmax overflows")


def test_gqa_refuses_the_fused_attention_and_restores_it():
    original = F.scaled_dot_product_attention
    fails_with(ch09.grouped_query_attention,
               lambda q, k, v, mask=None: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True),
               "a call to F.scaled_dot_product_attention")
    assert F.scaled_dot_product_attention is original


def test_gqa_in_place_scaled_query_is_named_not_called_unscaled():
    def in_place(q, k, v, mask=None):
        q /= q.shape[-1] ** 0.5  # changes the caller's tensor
        g = q.shape[1] // k.shape[1]
        s = q @ k.repeat_interleave(g, 1).transpose(-2, -1)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return s.softmax(-1) @ v.repeat_interleave(g, 1)

    message = fails_with(ch09.grouped_query_attention, in_place, "q changed in place", "do not change your inputs")
    assert "sqrt(Dh)" not in message


def test_gqa_wrong_default_mask_is_named():
    causal_mask = torch.ones(5, 5, dtype=torch.bool).tril()

    def causal(q, k, v, mask=causal_mask):
        return gqa_loops(q, k, v, mask)

    fails_with(ch09.grouped_query_attention, causal, "mask left out", "mask=None")


def test_checkers_leave_no_trace():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    ch09.rms_norm(lambda x, w, eps=1e-6: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w)
    assert torch.equal(torch.rand(3), before)


def test_every_open_question_of_every_exercise_notebook_has_an_answer_cell():
    """The learner writes under each question: '*Your answer:*' is kept in exercises/, the model answer is not."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "exercises").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        questions = ["".join(c["source"]) for c in cells if "".join(c["source"]).startswith("**Question")]
        assert all("*Your answer:*" in q for q in questions), f"{path.name}: a question without '*Your answer:*'"
        assert not any("".join(c["source"]).startswith("**Model answer.**") for c in cells), path.name
    text = (root / "exercises" / "09_gpt.ipynb").read_text(encoding="utf-8")
    assert text.count("*Your answer:*") == 3
