"""Checkers of chapter 07: solutions (and other correct styles) pass, stubs propagate
NotImplementedError, and each classic mistake fails with its own hint."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.course import checks
from course_lib.course.checks import CheckFailed

ch07 = checks.ch07


# --- label smoothing ----------------------------------------------------------------------------

def ls_solution(logits, target, epsilon=0.1, ignore_index=0):
    logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    smooth = -logp.mean(dim=-1)  # (B, T)
    loss = (1 - epsilon) * nll + epsilon * smooth
    mask = target != ignore_index
    return (loss * mask).sum() / mask.sum()


def ls_full_nll(logits, target, epsilon=0.1, ignore_index=0):
    """The "1·nll + eps·smooth" weighting: the target's term keeps its full weight."""
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    loss = nll + epsilon * -logp.mean(dim=-1)
    mask = target != ignore_index
    return (loss * mask).sum() / mask.sum()


def ls_distribution_style(logits, target, epsilon=0.1, ignore_index=0):
    """Build the smoothed target distribution q explicitly, then -sum(q * log p) on the kept rows."""
    V = logits.shape[-1]
    logits, target = logits.reshape(-1, V), target.reshape(-1)
    q = torch.full_like(logits, epsilon / V)
    q.scatter_(1, target[:, None], 1 - epsilon + epsilon / V)
    keep = target != ignore_index
    return -(q[keep] * torch.log_softmax(logits[keep], -1)).sum(-1).mean()


def ls_loop_style(logits, target, epsilon=0.1, ignore_index=0):
    total, count = 0.0, 0
    V = logits.shape[-1]
    for b in range(target.shape[0]):
        for t in range(target.shape[1]):
            y = int(target[b, t])
            if y == ignore_index:
                continue
            logp = logits[b, t] - torch.logsumexp(logits[b, t], 0)
            total = total + (1 - epsilon) * -logp[y] + epsilon / V * -logp.sum()
            count += 1
    return total / count


def _ls(spread="V", mean="valid", mask=True, log_softmax=True, eps_fixed=None, ignore_fixed=None):
    def fn(logits, target, epsilon=0.1, ignore_index=0):
        eps = epsilon if eps_fixed is None else eps_fixed
        ign = ignore_index if ignore_fixed is None else ignore_fixed
        V = logits.shape[-1]
        logp = F.log_softmax(logits, -1) if log_softmax else logits
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        total = -logp.sum(-1)
        smooth = {"V": total / V, "V-1": (total - nll) / (V - 1), "V-2": (total - nll + logp[..., ign]) / (V - 2),
                  "notarget": (total - nll) / V, "sum": total}[spread]
        loss = (1 - eps) * nll + eps * smooth
        keep = (target != ign) if mask else torch.ones_like(target, dtype=torch.bool)
        s = (loss * keep).sum()
        return {"valid": s / keep.sum(), "all": s / target.numel(), "sum": s}[mean]
    return fn


def ls_annotated_transformer_kl(logits, target, epsilon=0.1, ignore_index=0):
    """The Annotated Transformer's LabelSmoothing: nn.KLDivLoss(reduction='sum') against eps / (V - 2), 0 on the pad column,
    divided by the number of real tokens (as its SimpleLossCompute does)."""
    V = logits.shape[-1]
    x, y = F.log_softmax(logits, -1).reshape(-1, V), target.reshape(-1)
    true_dist = torch.full_like(x, epsilon / (V - 2))
    true_dist.scatter_(1, y[:, None], 1 - epsilon)
    true_dist[:, ignore_index] = 0
    true_dist[y == ignore_index] = 0
    return torch.nn.KLDivLoss(reduction="sum")(x, true_dist) / (y != ignore_index).sum()


def ls_annotated_transformer(logits, target, epsilon=0.1, ignore_index=0):
    """The same target distribution, with the cross-entropy -sum(q log p) instead of the KL divergence."""
    V = logits.shape[-1]
    x, y = F.log_softmax(logits, -1).reshape(-1, V), target.reshape(-1)
    q = torch.full_like(x, epsilon / (V - 2))
    q.scatter_(1, y[:, None], 1 - epsilon)
    q[:, ignore_index] = 0
    keep = y != ignore_index
    return -(q[keep] * x[keep]).sum() / keep.sum()


def ls_kl_div(logits, target, epsilon=0.1, ignore_index=0):
    """PyTorch's target distribution, but the KL divergence instead of the cross-entropy."""
    V = logits.shape[-1]
    x, y = F.log_softmax(logits, -1).reshape(-1, V), target.reshape(-1)
    q = torch.full_like(x, epsilon / V)
    q.scatter_add_(1, y[:, None], torch.full_like(x[:, :1], 1 - epsilon))
    keep = y != ignore_index
    return F.kl_div(x[keep], q[keep], reduction="sum") / keep.sum()


def ls_no_ignore_cross_entropy(logits, target, epsilon=0.1, ignore_index=0):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), label_smoothing=epsilon)


def ls_returns_float(logits, target, epsilon=0.1, ignore_index=0):
    return ls_solution(logits, target, epsilon, ignore_index).item()


def ls_detached(logits, target, epsilon=0.1, ignore_index=0):
    return ls_solution(logits.detach(), target, epsilon, ignore_index)


def ls_per_position(logits, target, epsilon=0.1, ignore_index=0):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), label_smoothing=epsilon,
                           ignore_index=ignore_index, reduction="none")


def test_label_smoothing_solutions_pass(capsys):
    for fn in (ls_solution, ls_distribution_style, ls_loop_style):
        ch07.label_smoothing_loss(fn)
    assert capsys.readouterr().out.count("✓ label_smoothing_loss") == 3


def test_label_smoothing_reference_equals_pytorch_on_a_golden_case():
    logits = torch.tensor([[[2.0, 0.5, -1.0, 0.0]]])  # (1, 1, 4)
    target = torch.tensor([[1]])
    logp = torch.log_softmax(logits[0, 0], 0)
    by_hand = 0.9 * -logp[1] + 0.1 * -logp.mean()
    assert math.isclose(float(ls_solution(logits, target)), float(by_hand), rel_tol=1e-6)
    # logsumexp = 2.3423; -log p[1] = 1.8423; mean of -log p = 2.3423 - 0.375 = 1.9673
    assert math.isclose(float(ls_solution(logits, target)), 0.9 * 1.84234 + 0.1 * 1.96734, abs_tol=1e-4)
    expected = F.cross_entropy(logits[0], target[0], label_smoothing=0.1)
    assert math.isclose(float(ls_solution(logits, target)), float(expected), rel_tol=1e-6)


@pytest.mark.parametrize("wrong, hint", [
    (_ls(mask=False), "must not count"),
    (ls_no_ignore_cross_entropy, "must not count"),
    (_ls(mean="all"), "NON-pad positions only"),
    (_ls(mean="sum"), "not their sum"),
    (_ls(spread="sum"), "not their sum: with the sum the target distribution q adds up to"),
    (ls_annotated_transformer, "the Annotated Transformer's label smoothing"),
    (ls_annotated_transformer_kl, "exceeds the KL divergence"),
    (ls_kl_div, "you computed the KL divergence"),
    (_ls(spread="V-1"), r"not eps / \(V - 1\)"),
    (_ls(spread="V-2"), "the Annotated Transformer's label smoothing"),
    (_ls(spread="notarget"), "the target class gets its share"),
    (_ls(log_softmax=False), "log_softmax"),
    (_ls(eps_fixed=0.0), "plain cross-entropy"),
    (_ls(eps_fixed=0.1), "epsilon argument"),
    (_ls(ignore_fixed=0), "ignore_index argument"),
    (ls_returns_float, "return the tensor itself"),
    (ls_detached, "connected to the logits"),
    (ls_per_position, "ONE number"),
    (ls_full_nll, r"1 \* nll \+ eps"),
])
def test_label_smoothing_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch07.label_smoothing_loss(wrong)


def test_label_smoothing_stub_propagates():
    def stub(logits, target, epsilon=0.1, ignore_index=0):
        raise NotImplementedError("write it")
    with pytest.raises(NotImplementedError):
        ch07.label_smoothing_loss(stub)


# --- noam_lr --------------------------------------------------------------------------------------

def noam_solution(step, d_model, warmup=4000, factor=1.0):
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def noam_branch_style(step, d_model, warmup=4000, factor=1.0):
    if step < warmup:
        return factor * step / (warmup * math.sqrt(warmup * d_model))
    return factor / math.sqrt(d_model * step)


def noam_tensor_style(step, d_model, warmup=4000, factor=1.0):
    s = torch.tensor(float(step), dtype=torch.float64)
    return factor * torch.rsqrt(torch.tensor(float(d_model), dtype=torch.float64)) * torch.minimum(s.rsqrt(), s * warmup ** -1.5)


def noam_counts_from_zero(step, d_model, warmup=4000, factor=1.0):
    step = step - 1  # "the first step is step 0"
    return 0.0 if step == 0 else factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def noam_counts_from_zero_unguarded(step, d_model, warmup=4000, factor=1.0):
    step = step - 1
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)  # 0 ** -0.5: ZeroDivisionError


def test_noam_solutions_pass(capsys):
    for fn in (noam_solution, noam_branch_style, noam_tensor_style):
        ch07.noam_lr(fn)
    out = capsys.readouterr().out
    assert out.count("✓ noam_lr") == 3 and "0.0006988" in out


def test_noam_golden_values():
    assert math.isclose(noam_solution(4000, 512), 6.987712429686844e-04, rel_tol=1e-12)
    assert math.isclose(noam_solution(1, 512), 1.7469281074217107e-07, rel_tol=1e-12)
    assert math.isclose(noam_solution(100000, 512), 1.3975424859373685e-04, rel_tol=1e-12)


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, d, warmup=4000, factor=1.0: noam_solution(s + 1, d, warmup, factor), r"rate of step \+ 1"),
    (lambda s, d, warmup=4000, factor=1.0: noam_solution(max(s - 1, 1), d, warmup, factor), "rate of step - 1"),
    (lambda s, d, warmup=4000, factor=1.0: factor * min(s ** -0.5, s * warmup ** -1.5), r"d_model \*\* -0.5 is missing"),
    (lambda s, d, warmup=4000, factor=1.0: factor * d ** 0.5 * min(s ** -0.5, s * warmup ** -1.5), r"not d_model \*\* 0.5"),
    (lambda s, d, warmup=4000, factor=1.0: factor * d ** -0.5 * max(s ** -0.5, s * warmup ** -1.5), "not the max"),
    (lambda s, d, warmup=4000, factor=1.0: factor * d ** -0.5 * min(s ** -0.5, s * warmup ** -0.5), "meet the decay exactly at "
                                                                                                    "step = warmup"),
    (lambda s, d, warmup=4000, factor=1.0: d ** -0.5 * min(s ** -0.5, s * warmup ** -1.5), "factor argument"),
    (lambda s, d, warmup=4000, factor=1.0: "fast", "return a float"),
    (lambda s, d, warmup=4000, factor=1.0: factor * d ** -0.5 * s ** -0.5, r"a linear rise until step = warmup"),
    (noam_counts_from_zero, "your rate is 0 at step 1"),
    (noam_counts_from_zero_unguarded, "your rate is 0 at step 1"),
])
def test_noam_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch07.noam_lr(wrong)


# --- greedy decoding ------------------------------------------------------------------------------

def greedy_solution(model, src, max_len, bos_id=1, eos_id=2, pad_id=0):
    src_mask = (src != pad_id).unsqueeze(1)  # (B, 1, S)
    memory = model.encode(src, src_mask)  # (B, S, D)
    ys = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)  # (B, 1)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        logits = model.decode(ys, memory, src_mask)  # (B, t, V)
        nxt = logits[:, -1].argmax(-1).masked_fill(done, pad_id)  # (B,)
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if done.all():
            break
    return ys[:, 1:]


def greedy_list_style(model, src, max_len, bos_id=1, eos_id=2, pad_id=0):
    """Python lists per row, the forward pass model(src, tgt), padding added at the end."""
    rows = [[bos_id] for _ in range(src.shape[0])]
    finished = [False] * src.shape[0]
    for _ in range(max_len):
        logits = model(src, torch.tensor(rows))
        for b, tok in enumerate(logits[:, -1].argmax(-1).tolist()):
            rows[b].append(pad_id if finished[b] else tok)
            finished[b] = finished[b] or tok == eos_id
        if all(finished):
            break
    return torch.tensor(rows)[:, 1:]


def _greedy_wrong(feed="prefix", stop="all", keep_bos=False, keep_eos=True, pos=-1, pad_after=True, masked=True):
    def fn(model, src, max_len, bos_id=1, eos_id=2, pad_id=0):
        src_mask = (src != pad_id).unsqueeze(1) if masked else None
        memory = model.encode(src, src_mask)
        ys = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            inp = {"prefix": ys, "last": ys[:, -1:], "bos": ys[:, :1]}[feed]
            nxt = model.decode(inp, memory, src_mask)[:, pos].argmax(-1)
            if pad_after:
                nxt = nxt.masked_fill(done, pad_id)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if (stop == "all" and done.all()) or (stop == "any" and done.any()):
                break
        out = ys if keep_bos else ys[:, 1:]
        return out if keep_eos else out.masked_fill(out == eos_id, pad_id)
    return fn


def greedy_per_row(model, src, max_len, bos_id=1, eos_id=2, pad_id=0):
    outs = [greedy_solution(model, src[b:b + 1], max_len, bos_id, eos_id, pad_id)[0] for b in range(src.shape[0])]
    width = max(len(o) for o in outs)
    return torch.stack([F.pad(o, (0, width - len(o)), value=pad_id) for o in outs])


def greedy_src_keyword_style(model, src, max_len, bos_id=1, eos_id=2, pad_id=0):
    """The Transformer also builds the padding mask from decode(..., src=src)."""
    memory = model.encode(src)
    ys = torch.full((src.shape[0], 1), bos_id)
    for _ in range(max_len):
        nxt = model.decode(ys, memory, src=src)[:, -1].argmax(-1)
        finished = (ys[:, 1:] == eos_id).any(1)
        ys = torch.cat([ys, torch.where(finished, torch.full_like(nxt, pad_id), nxt)[:, None]], 1)
        if ((ys[:, 1:] == eos_id).any(1)).all():
            break
    return ys[:, 1:]


def test_greedy_solutions_pass(capsys):
    for fn in (greedy_solution, greedy_list_style, greedy_per_row, greedy_src_keyword_style):
        ch07.greedy_decode(fn)
    assert capsys.readouterr().out.count("✓ greedy_decode") == 4


def test_the_scripted_model_translates_by_reversing_and_shifting():
    model = ch07.ScriptedTranslator()  # words 3..11; shift 5 -> 6, 7 -> 8, 4 -> 5
    assert model.script([5, 7, 4]) == [5, 8, 6, 2]
    out = greedy_solution(model, torch.tensor([[5, 7, 4], [9, 0, 0]]), 10)
    assert out.tolist() == [[5, 8, 6, 2], [10, 2, 0, 0]]
    astray = model.decode(torch.tensor([[5]]), model.encode(torch.tensor([[5, 7, 4]])))  # no <bos> first
    assert int(astray[0, -1].argmax()) not in (0, 1, 2)
    padded = torch.tensor([[9, 0, 0]])  # unmasked padding is read as the word 3, which becomes 4
    start = torch.tensor([[1]])
    assert int(model.decode(start, model.encode(padded))[0, -1].argmax()) == 4
    assert int(model.decode(start, model.encode(padded), (padded != 0)[:, None])[0, -1].argmax()) == 10


@pytest.mark.parametrize("wrong, hint", [
    (_greedy_wrong(feed="last"), "WHOLE growing prefix"),
    (_greedy_wrong(feed="bos"), "you repeat the first word"),
    (_greedy_wrong(pos=0), "LAST position"),
    (_greedy_wrong(keep_bos=True), "drop the <bos>"),
    (_greedy_wrong(stop="never", pad_after=False), "stop at <eos>"),
    (_greedy_wrong(stop="never"), "no all-padding columns"),
    (_greedy_wrong(pad_after=False), "not the model's next words"),
    (_greedy_wrong(stop="any"), "EVERY row"),
    (_greedy_wrong(keep_eos=False), "keep the <eos>"),
    (_greedy_wrong(masked=False), "source padding mask"),
    (lambda model, src, max_len, bos_id=1, eos_id=2, pad_id=0: greedy_solution(model, src, max_len).float(), "torch.long"),
    (lambda model, src, max_len, bos_id=1, eos_id=2, pad_id=0: greedy_solution(model, src, max_len).tolist(), "LongTensor"),
    (lambda model, src, max_len, bos_id=1, eos_id=2, pad_id=0: greedy_solution(model, src, max_len), "bos_id=4"),
])
def test_greedy_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch07.greedy_decode(wrong)


# --- one beam-search step -------------------------------------------------------------------------

def beam_solution(log_probs, scores, beam_size):
    V = log_probs.shape[1]
    total = scores[:, None] + log_probs  # (K, V)
    new_scores, idx = total.view(-1).topk(beam_size)  # (beam_size,)
    return new_scores, idx // V, idx % V


def beam_divides_by_beam_size(log_probs, scores, beam_size):
    new_scores, idx = (scores[:, None] + log_probs).view(-1).topk(beam_size)
    return new_scores, idx // beam_size, idx % beam_size


def beam_token_by_k(log_probs, scores, beam_size):
    K, V = log_probs.shape
    new_scores, idx = (scores[:, None] + log_probs).view(-1).topk(beam_size)
    return new_scores, idx // V, idx % K


def test_noam_wrong_default_is_named():
    def warmup_400(step, d_model, warmup=400, factor=1.0):
        return noam_solution(step, d_model, warmup, factor)

    with pytest.raises(CheckFailed, match=r"warmup/factor left out(.|\n)*warmup=4000, factor=1.0"):
        ch07.noam_lr(warmup_400)


def beam_loop_style(log_probs, scores, beam_size):
    K, V = log_probs.shape
    cands = sorted(((float(scores[k] + log_probs[k, v]), k, v) for k in range(K) for v in range(V)), reverse=True)[:beam_size]
    return (torch.tensor([c[0] for c in cands], dtype=log_probs.dtype),
            torch.tensor([c[1] for c in cands]), torch.tensor([c[2] for c in cands]))


def beam_two_stage_style(log_probs, scores, beam_size):
    """Top-k inside each beam first (the global best k are surely among them), then top-k of those."""
    K, V = log_probs.shape
    vals, toks = (scores[:, None] + log_probs).topk(min(beam_size, V), dim=-1)  # (K, k)
    beams = torch.arange(K)[:, None].expand_as(toks)
    best, pick = vals.reshape(-1).topk(beam_size)
    return best, beams.reshape(-1)[pick], toks.reshape(-1)[pick]


def _beam_wrong(kind):
    def fn(log_probs, scores, beam_size):
        K, V = log_probs.shape
        total = scores[:, None] + log_probs
        if kind == "per_beam":
            vals, idx = total.topk(beam_size, dim=-1)
            return vals.reshape(-1)[:beam_size], torch.zeros(beam_size, dtype=torch.long), idx.reshape(-1)[:beam_size]
        if kind in ("top1", "top1_beam_order"):
            vals, tok = total.max(-1)
            order = vals.argsort(descending=True) if kind == "top1" else torch.arange(K)
            return vals[order], torch.arange(K)[order], tok[order]
        if kind == "transposed":
            vals, idx = total.T.reshape(-1).topk(beam_size)
            return vals, idx // V, idx % V
        if kind == "no_scores":
            vals, idx = log_probs.reshape(-1).topk(beam_size)
            return vals, idx // V, idx % V
        if kind == "no_scores_total":
            _, idx = log_probs.reshape(-1).topk(beam_size)
            return scores[idx // V] + log_probs.reshape(-1)[idx], idx // V, idx % V
        vals, idx = total.reshape(-1).topk(beam_size, largest=kind != "smallest")
        if kind == "swapped":
            return vals, idx % V, idx // V
        if kind == "by_K":
            return vals, idx // K, idx % K
        if kind == "step_scores":
            return log_probs.reshape(-1)[idx], idx // V, idx % V
        if kind == "ascending":
            return vals.flip(0), (idx // V).flip(0), (idx % V).flip(0)
        if kind == "float_idx":
            return vals, idx / V, idx % V
        return vals, idx // V, idx % V
    return fn


def test_beam_solutions_pass(capsys):
    for fn in (beam_solution, beam_loop_style, beam_two_stage_style):
        ch07.beam_step(fn)
    assert capsys.readouterr().out.count("✓ beam_step") == 3


def test_beam_golden_case():
    probs = torch.tensor([[0.05, 0.45, 0.40, 0.05, 0.05], [0.10, 0.10, 0.10, 0.60, 0.10], [0.90, 0.025, 0.025, 0.025, 0.025]])
    scores, beams, tokens = beam_solution(probs.log(), torch.tensor([-1.0, -1.5, -2.0]), 3)
    assert beams.tolist() == [0, 0, 1] and tokens.tolist() == [1, 2, 3]
    assert torch.allclose(scores, torch.tensor([-1.0 + math.log(0.45), -1.0 + math.log(0.40), -1.5 + math.log(0.6)]))


@pytest.mark.parametrize("wrong, hint", [
    (_beam_wrong("per_beam"), "not the top-k of each beam's row"),
    (_beam_wrong("no_scores"), "add the running scores first"),
    (_beam_wrong("no_scores_total"), "add the running scores first"),
    (_beam_wrong("swapped"), "you swapped them"),
    (_beam_wrong("by_K"), "not by K"),
    (_beam_wrong("smallest"), "LARGEST"),
    (_beam_wrong("step_scores"), "running totals"),
    (_beam_wrong("ascending"), "best first"),
    (_beam_wrong("float_idx"), "integer division"),
    (_beam_wrong("transposed"), "TRANSPOSED"),
    (_beam_wrong("top1"), "top-1 per beam"),
    (_beam_wrong("top1_beam_order"), "top-1 per beam"),
    (lambda lp, s, k: beam_solution(lp, s, k)[:2], "a tuple"),
    (beam_divides_by_beam_size, "nor by beam_size, equal to K here"),
    (beam_token_by_k, r"not idx % K"),
])
def test_beam_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch07.beam_step(wrong)


def test_stubs_propagate_not_implemented():
    def stub(*args, **kwargs):
        raise NotImplementedError("todo")
    for check in (ch07.noam_lr, ch07.greedy_decode, ch07.beam_step):
        with pytest.raises(NotImplementedError):
            check(stub)


# --- the course's own functions meet the exercises' definitions -----------------------------------

def test_the_course_functions_pass_the_checkers(capsys):
    from course_lib import decoding, training
    ch07.label_smoothing_loss(training.label_smoothing_loss)
    ch07.noam_lr(training.noam_lr)
    ch07.beam_step(decoding.beam_step)
    out = capsys.readouterr().out
    assert out.count("✓ ") == 3


def test_the_course_greedy_decode_equals_the_exercise_solution_on_a_real_model():
    from course_lib import decoding
    from course_lib.model import Transformer, TransformerConfig
    torch.manual_seed(5)
    model = Transformer(TransformerConfig.tiny(20, 20)).eval()
    with torch.no_grad():  # a nudge of the <eos> row so that rows finish at different steps
        model.generator.weight[2] += 0.15 * torch.randn(32, generator=torch.Generator().manual_seed(5))
    src = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 0, 0, 0], [12, 13, 14, 0, 0]])
    with torch.no_grad():
        mine = greedy_solution(model, src, 12)
    ours = decoding.greedy_decode(model, src, max_len=12)
    assert ours.tolist() == [[16, 3, 2, 0, 0, 0], [16, 3, 16, 3, 11, 2], [16, 3, 16, 2, 0, 0]]
    assert torch.equal(mine, ours)


# --- no trace, hints ----------------------------------------------------------------------------

@pytest.mark.parametrize("check, answer", [
    (ch07.label_smoothing_loss, ls_solution), (ch07.noam_lr, noam_solution),
    (ch07.greedy_decode, greedy_solution), (ch07.beam_step, beam_solution)])
def test_checkers_leave_the_global_rng_as_they_found_it(check, answer, capsys):
    torch.manual_seed(7)
    before = torch.get_rng_state()
    check(answer)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["label_smoothing_loss", "noam_lr", "greedy_decode", "beam_step"])
def test_every_exercise_has_three_graded_hints_and_failures_point_to_them(name):
    assert len(ch07.HINTS[name]) == 3 and all(len(h) > 40 for h in ch07.HINTS[name])
    with pytest.raises(CheckFailed, match=rf"checks.hint\('ch07.{name}'\)"):
        getattr(ch07, name)(lambda *a, **k: torch.zeros(3))


def test_the_noam_failure_message_does_not_give_the_formula_away():
    with pytest.raises(CheckFailed) as err:
        ch07.noam_lr(lambda s, d, warmup=4000, factor=1.0: 0.5)
    assert "min(" not in str(err.value) and "** -1.5" not in str(err.value)


def test_the_exercise_states_the_goal_not_the_code():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "exercises" / "07_translation.ipynb").read_text(encoding="utf-8")
    for code in ("min(step", "warmup ** -1.5", "(1 - eps) *", "log_p.mean", "logits[:, -1]", "idx // V", "masked_fill(done"):
        assert code not in text, f"exercises/07_translation.ipynb gives away {code!r}"
