"""Checkers of chapter 09: the solutions (and other correct styles) pass, the untouched stubs propagate
NotImplementedError, and each classic mistake fails with its own hint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib import checks
from course_lib.checks import CheckFailed
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


def test_top_p_accepts_solutions():
    ch09.top_p_filter(lib_top_p)
    ch09.top_p_filter(top_p_loop)


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


# --- RMSNorm ---------------------------------------------------------------------------------------

def test_rms_norm_accepts_solutions():
    ch09.rms_norm(lambda x, w, eps=1e-6: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w)
    ch09.rms_norm(lambda x, w, eps=1e-6: F.rms_norm(x, (x.shape[-1],), w, eps))


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

    def loops(q, k, v, mask=None):
        g = q.shape[1] // k.shape[1]
        heads = []
        for h in range(q.shape[1]):
            s = q[:, h] @ k[:, h // g].transpose(-2, -1) / q.shape[-1] ** 0.5
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            heads.append(s.softmax(-1) @ v[:, h // g])
        return torch.stack(heads, 1)

    ch09.grouped_query_attention(loops)


def test_gqa_mistakes():
    def tiled(q, k, v, mask=None):
        g = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(q, k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1), attn_mask=mask)

    fails_with(ch09.grouped_query_attention, tiled, "wrong order", "more help: checks.hint('ch09.grouped_query_attention')")
    fails_with(ch09.grouped_query_attention, lambda q, k, v, mask=None: lib_gqa(q, k, v)[0], "apply the mask")


def test_checkers_leave_no_trace():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    ch09.rms_norm(lambda x, w, eps=1e-6: F.rms_norm(x, (x.shape[-1],), w, eps))
    assert torch.equal(torch.rand(3), before)
