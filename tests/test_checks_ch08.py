"""Checkers of chapter 08: the solutions (and other correct styles) pass, stubs propagate
NotImplementedError, each classic mistake fails with its own hint, and the RNG is left alone."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from course_lib.course import checks
from course_lib.course.checks import CheckFailed

ch08 = checks.ch08


# --- one cached attention step --------------------------------------------------------------------

def step_solution(q, k, v, k_cache, v_cache):
    k_cache = torch.cat([k_cache, k], dim=2)  # (B, H, t + 1, Dh)
    v_cache = torch.cat([v_cache, v], dim=2)
    w = torch.softmax(q @ k_cache.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, H, 1, t + 1)
    return w @ v_cache, k_cache, v_cache


def step_sdpa_style(q, k, v, k_cache, v_cache):
    k_cache, v_cache = torch.cat((k_cache, k), -2), torch.cat((v_cache, v), -2)
    return F.scaled_dot_product_attention(q, k_cache, v_cache), k_cache, v_cache


def step_einsum_style(q, k, v, k_cache, v_cache):
    kc, vc = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, kc) * q.shape[-1] ** -0.5
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), vc), kc, vc


def step_attend_then_append(q, k, v, k_cache, v_cache):
    w = torch.softmax(q @ k_cache.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v_cache, torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)


def step_one_row_causal_mask(q, k, v, k_cache, v_cache):
    kc, vc = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    t = kc.shape[2]
    mask = torch.ones(t, t, dtype=torch.bool).tril()[:1]  # (1, t + 1): the first row of a causal mask
    return F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask), kc, vc


def step_no_scale(q, k, v, k_cache, v_cache):
    kc, vc = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    return torch.softmax(q @ kc.transpose(-2, -1), -1) @ vc, kc, vc


def step_softmax_over_queries(q, k, v, k_cache, v_cache):
    kc, vc = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    return torch.softmax(q @ kc.transpose(-2, -1) / math.sqrt(q.shape[-1]), -2) @ vc, kc, vc


def step_masks_itself_nan(q, k, v, k_cache, v_cache):
    """The new position hidden from itself, with no clean-up: position 0 then has no key at all (nan)."""
    kc, vc = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    scores = q @ kc.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores[..., -1] = float("-inf")
    return torch.softmax(scores, -1) @ vc, kc, vc


def step_naive_softmax(q, k, v, k_cache, v_cache):
    kc, vc = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    e = torch.exp(q @ kc.transpose(-2, -1) / math.sqrt(q.shape[-1]))
    return e / e.sum(-1, keepdim=True) @ vc, kc, vc


def step_scales_q_in_place(q, k, v, k_cache, v_cache):
    q /= math.sqrt(q.shape[-1])  # changes the caller's tensor
    kc, vc = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    return torch.softmax(q @ kc.transpose(-2, -1), -1) @ vc, kc, vc


def test_an_in_place_scaled_query_is_not_told_to_divide_by_sqrt_dh():
    with pytest.raises(CheckFailed) as err:
        ch08.attention_step(step_scales_q_in_place)
    assert "do not change your inputs in place" in str(err.value) and "sqrt(Dh)" not in str(err.value)


def step_wrong_dim(q, k, v, k_cache, v_cache):
    out, _, _ = step_solution(q, k, v, k_cache, v_cache)
    return out, torch.cat([k_cache, k], -1), torch.cat([v_cache, v], -1)


def step_keeps_old_cache(q, k, v, k_cache, v_cache):
    return step_solution(q, k, v, k_cache, v_cache)[0], k_cache, v_cache


def step_prepends(q, k, v, k_cache, v_cache):
    kc, vc = torch.cat([k, k_cache], 2), torch.cat([v, v_cache], 2)
    return F.scaled_dot_product_attention(q, kc, vc), kc, vc


def test_attention_step_solutions_pass(capsys):
    for fn in (step_solution, step_sdpa_style, step_einsum_style):
        ch08.attention_step(fn)
    assert capsys.readouterr().out.count("✓ attention_step") == 3


@pytest.mark.parametrize("wrong, hint", [
    (step_attend_then_append, "BEFORE attending"),
    (step_one_row_causal_mask, "no mask in a cached step"),
    (step_no_scale, r"sqrt\(Dh\)"),
    (step_softmax_over_queries, "over the KEYS"),
    (step_wrong_dim, "along the positions dimension"),
    (step_keeps_old_cache, "grow the caches by one position"),
    (step_prepends, "append the new one at the END"),
    (lambda q, k, v, kc, vc: step_solution(q, k, v, kc, vc)[0], r"a tuple \(out, k_cache, v_cache\)"),
    (step_masks_itself_nan, "BEFORE attending"),
    (step_naive_softmax, "your softmax overflows"),
    (step_scales_q_in_place, "q changed in place"),
])
def test_attention_step_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch08.attention_step(wrong)


def test_the_course_kv_cache_agrees_with_the_exercise():
    """The library's incremental decoder and the exercise's step follow the same rule (golden: equal to recomputation)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, dtype=torch.float64) for _ in range(3))
    kc = vc = torch.zeros(1, 2, 0, 4, dtype=torch.float64)
    outs = []
    for t in range(5):
        out, kc, vc = step_solution(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], kc, vc)
        outs.append(out)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(torch.cat(outs, 2), full, atol=1e-12)


# --- attention FLOPs --------------------------------------------------------------------------------

def flops_solution(n, d_model, n_heads):
    return 8 * n * d_model ** 2 + 4 * n * n * d_model


def flops_by_products(n, d_model, n_heads):
    """Another style: list every product (m, k) @ (k, p) and add 2 * m * k * p."""
    dh = d_model // n_heads
    products = [(n, d_model, d_model)] * 4 + [(n, dh, n), (n, n, dh)] * n_heads
    return sum(2 * m * k * p for m, k, p in products)


def flops_measured(n, d_model, n_heads):
    """Another style: measure it with FlopCounterMode on meta tensors."""
    x = torch.empty(n, d_model, device="meta")
    w = torch.empty(d_model, d_model, device="meta")
    with FlopCounterMode(display=False) as counter:
        q = x @ w
        k = x @ w
        v = x @ w
        (((q @ k.T) @ v) @ w)
    return counter.get_total_flops()


def test_attention_flops_solutions_pass(capsys):
    for fn in (flops_solution, flops_by_products, flops_measured):
        ch08.attention_flops(fn)
    out = capsys.readouterr().out
    assert out.count("✓ attention_flops") == 3
    assert "n²" not in out and "d²" not in out  # the ✓ line must not hand the answer to the next learner


def test_the_reference_count_is_pytorchs_and_matches_the_formula():
    for n, d, h in ((10, 16, 1), (128, 64, 4), (2048, 512, 16)):
        assert ch08.measured_attention_flops(n, d, h) == 8 * n * d * d + 4 * n * n * d
    x = torch.randn(1, 7, 16)
    mha = nn.MultiheadAttention(16, 4, batch_first=True, bias=False)
    with FlopCounterMode(display=False) as counter:  # PyTorch's own module counts the same
        mha(x, x, x, need_weights=True)
    assert counter.get_total_flops() == 8 * 7 * 16 * 16 + 4 * 7 * 7 * 16


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, d, h: 4 * n * d * d + 2 * n * n * d, "count FLOPs, not multiply-adds"),
    (lambda n, d, h: 6 * n * d * d + 4 * n * n * d, "output projection W_O"),
    (lambda n, d, h: 8 * n * d * d + 2 * n * n * d, "TWO products between positions"),
    (lambda n, d, h: 8 * n * d * d + 4 * n * n * d * h, "you multiplied by n_heads"),
    (lambda n, d, h: 8 * n * d * d + 4 * n * n * d // h, "you counted one head only"),
    (lambda n, d, h: 4 * n * n * d, "include the four projections"),
    (lambda n, d, h: 8 * n * d * d, "include the products between positions"),
    (lambda n, d, h: "many", "return an int"),
    (lambda n, d, h: 8 * n * d * d + 4 * n * n * d / 1, "`/` always gives a float"),
    (lambda n, d, h: torch.tensor(8.0 * n * d * d + 4 * n * n * d), "`/` always gives a float"),
    (lambda n, d, h: n * n * d, "list every matrix product"),
])
def test_attention_flops_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch08.attention_flops(wrong)


# --- pre-LN encoder layer -------------------------------------------------------------------------

def preln_solution(x, layer, mask=None):
    sa = layer.self_attn
    B, S, D = x.shape
    H = sa.num_heads
    h = F.layer_norm(x, (D,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
    q, k, v = (t.reshape(B, S, H, D // H).transpose(1, 2) for t in F.linear(h, sa.in_proj_weight, sa.in_proj_bias).chunk(3, -1))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, S, S)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, S, D)
    x = x + F.linear(out, sa.out_proj.weight, sa.out_proj.bias)
    h = F.layer_norm(x, (D,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
    return x + F.linear(F.relu(F.linear(h, layer.linear1.weight, layer.linear1.bias)), layer.linear2.weight, layer.linear2.bias)


def preln_module_style(x, layer, mask=None):
    """Another style: PyTorch's own sub-modules (nn.MultiheadAttention with its key_padding_mask convention)."""
    h = layer.norm1(x)
    pad = None if mask is None else ~mask[:, 0]
    x = x + layer.self_attn(h, h, h, key_padding_mask=pad, need_weights=False)[0]
    return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))


def _preln_wrong(**kw):
    return lambda x, layer, mask=None: ch08._pre_ln(x, layer, mask, **kw)


def test_pre_ln_solutions_pass(capsys):
    for fn in (preln_solution, _preln_wrong()):
        ch08.pre_ln_encoder_layer(fn)
    assert capsys.readouterr().out.count("✓ pre_ln_encoder_layer") == 2


def test_pre_ln_refuses_the_layers_own_forward_and_restores_it():
    seen = []

    def one_line(x, layer, mask=None):
        seen.append(layer)
        return layer(x, src_key_padding_mask=None if mask is None else ~mask[:, 0])

    def spy(fn):
        def wrapped(x, layer, mask=None):
            seen.append(layer)
            return fn(x, layer, mask)
        return wrapped

    for fn in (one_line, spy(preln_module_style)):
        with pytest.raises(CheckFailed, match="do not call the layer or its sub-modules"):
            ch08.pre_ln_encoder_layer(fn)
    assert seen and all("forward" not in vars(m) for layer in seen for m in layer.modules())
    assert F.multi_head_attention_forward.__name__ == "multi_head_attention_forward"


def test_pre_ln_hints_write_no_code_the_statement_forbids():
    for level in ch08.HINTS["pre_ln_encoder_layer"]:
        for call in ("layer(", "layer.norm1(", "layer.norm2(", "layer.linear1(", "layer.linear2(", "layer.self_attn("):
            assert call not in level, f"a hint calls {call}...), which the statement forbids"


def preln_inverted_mask_nan(x, layer, mask=None):
    return preln_solution(x, layer, None if mask is None else ~mask)


def preln_naive_softmax(x, layer, mask=None):
    sa, (B, S, D) = layer.self_attn, x.shape
    H = sa.num_heads
    h = F.layer_norm(x, (D,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
    q, k, v = (t.reshape(B, S, H, D // H).transpose(1, 2) for t in F.linear(h, sa.in_proj_weight, sa.in_proj_bias).chunk(3, -1))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
    e = scores.exp()
    out = (e / e.sum(-1, keepdim=True) @ v).transpose(1, 2).reshape(B, S, D)
    x = x + F.linear(out, sa.out_proj.weight, sa.out_proj.bias)
    h = F.layer_norm(x, (D,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
    return x + F.linear(F.relu(F.linear(h, layer.linear1.weight, layer.linear1.bias)), layer.linear2.weight, layer.linear2.bias)


@pytest.mark.parametrize("wrong, hint", [
    (_preln_wrong(post=True), "this is post-LN"),
    (_preln_wrong(final_norm=True), "no norm after it"),
    (_preln_wrong(order=(1, 0, 2)), "stacks W_q, W_k, W_v in that order"),
    (_preln_wrong(scale=False), r"sqrt\(Dh\)"),
    (_preln_wrong(heads_ok=False), r"view\(B, S, H, Dh\).transpose\(1, 2\)"),
    (_preln_wrong(act=F.gelu), "not GELU"),
    (_preln_wrong(swap_norms=True), "you swapped them"),
    (_preln_wrong(bias=False), "in_proj_bias"),
    (_preln_wrong(invert_mask=True), "the mask is inverted"),
    (preln_inverted_mask_nan, "the mask is inverted"),
    (preln_naive_softmax, "your softmax overflows"),
    (lambda x, layer, mask=None: preln_solution(x, layer, None), "the padding mask is ignored"),
])
def test_pre_ln_mistakes_get_their_hint(wrong, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch08.pre_ln_encoder_layer(wrong)


# --- all three ---------------------------------------------------------------------------------------

def test_stubs_propagate_not_implemented():
    def stub(*args, **kwargs):
        raise NotImplementedError("todo")
    for check in (ch08.attention_step, ch08.attention_flops, ch08.pre_ln_encoder_layer):
        with pytest.raises(NotImplementedError):
            check(stub)


@pytest.mark.parametrize("check, answer", [
    (ch08.attention_step, step_solution), (ch08.attention_flops, flops_solution), (ch08.pre_ln_encoder_layer, preln_solution)])
def test_checkers_leave_the_global_rng_as_they_found_it(check, answer, capsys):
    torch.manual_seed(11)
    before = torch.get_rng_state()
    check(answer)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["attention_step", "attention_flops", "pre_ln_encoder_layer"])
def test_every_exercise_has_three_graded_hints_and_failures_point_to_them(name, capsys):
    assert len(ch08.HINTS[name]) == 3 and all(len(h) > 40 for h in ch08.HINTS[name])
    checks.hint(f"ch08.{name}", 1)
    assert "Hint 1 of 3" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=rf"checks.hint\('ch08.{name}'\)"):
        getattr(ch08, name)(lambda *a, **k: 0)


def test_checkers_import_no_course_model_module():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(ch08))
    imported = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for a in node.names} | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("course_lib") or name in ("model", "kvcache", "encoder", "multihead") for name in imported)


def test_the_exercise_states_the_goal_not_the_code():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "exercises" / "08_beyond.ipynb").read_text(encoding="utf-8")
    for code in ("torch.cat([k_cache", "8 * n", "4 * n * n", "chunk(3", "reshape(B, S, H"):
        assert code not in text, f"exercises/08_beyond.ipynb gives away {code!r}"
