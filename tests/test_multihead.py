"""Chapter 04: multi-head attention, by hand, proven equal to ``nn.MultiheadAttention`` (values and gradients).

Mask conventions: ours is bool, True = may attend, broadcastable to (B, T_q, T_k) and shared by
every head. ``nn.MultiheadAttention`` uses True = blocked, a ``key_padding_mask`` of shape
(B, T_k), and a 3-D ``attn_mask`` of shape (B*H, T_q, T_k) with index b*H + h.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import causal_mask, padding_mask, scaled_dot_product_attention
from course_lib.multihead import MultiHeadAttention, merge_heads, set_fused, split_heads

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
MASK_KINDS = ("none", "padding", "causal", "full")


# --- helpers ----------------------------------------------------------------------------------

def _pair(d_model: int, n_heads: int, dtype: torch.dtype, seed: int, bias: bool = True):
    """A torch module with non-trivial biases and ours built from it."""
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(d_model, n_heads, dropout=0.0, bias=bias, batch_first=True).to(dtype)
    if bias:
        with torch.no_grad():
            theirs.in_proj_bias.uniform_(-0.5, 0.5), theirs.out_proj.bias.uniform_(-0.5, 0.5)
    return theirs, MultiHeadAttention.from_torch(theirs)


def _masks(kind: str, b: int, t_q: int, t_k: int, n_heads: int, g: torch.Generator):
    """(our mask, kwargs for nn.MultiheadAttention); no query is left with nothing to attend to."""
    if kind == "none":
        return None, {}
    if kind == "padding":
        lengths = torch.randint(1, t_k + 1, (b,), generator=g)
        ids = torch.where(torch.arange(t_k) < lengths[:, None], 5, 0)  # (B, T_k), pad id 0 at the end
        ours = padding_mask(ids, pad_id=0)  # (B, 1, T_k)
        return ours, {"key_padding_mask": ~ours[:, 0, :]}  # (B, T_k), True = padding (blocked)
    if kind == "causal":
        ours = causal_mask(t_q)  # (T, T)
        return ours, {"attn_mask": ~ours}
    ours = torch.rand(b, t_q, t_k, generator=g) < 0.6  # (B, T_q, T_k) a different mask per sentence
    ours[torch.arange(b)[:, None], torch.arange(t_q)[None, :], torch.randint(0, t_k, (b, t_q), generator=g)] = True
    return ours, {"attn_mask": (~ours).repeat_interleave(n_heads, dim=0)}  # (B*H, T_q, T_k), index b*H + h


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    n_heads = [1, 2, 4, 8][seed % 4]
    d_head = int(torch.randint(1, 5, (1,), generator=g))
    b, t_q, t_k = (int(v) for v in torch.randint(1, 8, (3,), generator=g))
    return g, n_heads, n_heads * d_head, b, t_q, t_k


# --- parity with nn.MultiheadAttention ----------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_parity_with_torch_values_weights_and_gradients(seed, kind, dtype):
    g, n_heads, d_model, b, t_q, t_k = _case(seed)
    self_attention = kind == "causal" or seed % 2 == 0
    t_k = t_q if self_attention else t_k
    theirs, ours = _pair(d_model, n_heads, dtype, seed)
    mask, torch_kwargs = _masks(kind, b, t_q, t_k, n_heads, g)
    q = torch.randn(b, t_q, d_model, generator=g, dtype=torch.float64).to(dtype)
    k = q if self_attention else torch.randn(b, t_k, d_model, generator=g, dtype=torch.float64).to(dtype)
    v = q if self_attention else torch.randn(b, t_k, d_model, generator=g, dtype=torch.float64).to(dtype)
    inputs_a = [t.clone().requires_grad_() for t in (q, k, v)]
    inputs_b = [t.clone().requires_grad_() for t in (q, k, v)]
    out, weights = ours.forward_with_weights(*inputs_a, mask=mask)
    ref, ref_weights = theirs(*inputs_b, **torch_kwargs, need_weights=True, average_attn_weights=False)
    tol = TOL[dtype]
    assert out.shape == (b, t_q, d_model) and weights.shape == (b, n_heads, t_q, t_k)
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    torch.testing.assert_close(weights, ref_weights, atol=tol, rtol=tol)
    grad_out = torch.randn(b, t_q, d_model, generator=g, dtype=torch.float64).to(dtype)
    (out * grad_out).sum().backward()
    (ref * grad_out).sum().backward()
    for mine, theirs_in in zip(inputs_a, inputs_b):
        torch.testing.assert_close(mine.grad, theirs_in.grad, atol=tol, rtol=tol)
    in_proj_grad = torch.cat([ours.w_q.weight.grad, ours.w_k.weight.grad, ours.w_v.weight.grad])  # (3D, D)
    torch.testing.assert_close(in_proj_grad, theirs.in_proj_weight.grad, atol=tol, rtol=tol)
    in_bias_grad = torch.cat([ours.w_q.bias.grad, ours.w_k.bias.grad, ours.w_v.bias.grad])  # (3D,)
    torch.testing.assert_close(in_bias_grad, theirs.in_proj_bias.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(ours.w_o.weight.grad, theirs.out_proj.weight.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(ours.w_o.bias.grad, theirs.out_proj.bias.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_parity_without_bias_and_in_eval_mode(training):
    theirs, ours = _pair(16, 4, torch.float64, seed=7, bias=False)
    theirs.train(training), ours.train(training)
    assert ours.w_q.bias is None and ours.w_o.bias is None
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    pad = padding_mask(torch.tensor([[4, 4, 4, 4, 4, 4], [4, 4, 0, 0, 0, 0], [4, 4, 4, 4, 4, 0]]), 0)  # (B, 1, S)
    with torch.no_grad():
        ref, _ = theirs(x, x, x, key_padding_mask=~pad[:, 0])
        torch.testing.assert_close(ours(x, x, x, mask=pad), ref, atol=1e-10, rtol=1e-10)


def test_the_3d_torch_mask_is_batch_major_and_an_inverted_mask_is_wrong():
    """nn.MultiheadAttention's (B*H, T_q, T_k) mask needs repeat_interleave; repeat and a forgotten ~ give other values."""
    theirs, ours = _pair(8, 2, torch.float64, seed=3)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    mask, kwargs = _masks("full", 3, 5, 5, 2, g)
    with torch.no_grad():
        ours_out = ours(x, x, x, mask=mask)
        right = theirs(x, x, x, **kwargs, need_weights=False)[0]
        head_major = theirs(x, x, x, attn_mask=(~mask).repeat(2, 1, 1), need_weights=False)[0]
        torch.testing.assert_close(ours_out, right, atol=1e-10, rtol=1e-10)
        assert not torch.allclose(ours_out, head_major, atol=1e-3)
        assert not torch.allclose(ours_out, ours(x, x, x, mask=~mask | torch.eye(5, dtype=torch.bool)), atol=1e-3)


def test_from_torch_splits_in_proj_weight_into_wq_wk_wv():
    theirs, ours = _pair(12, 3, torch.float32, seed=1)
    assert theirs.in_proj_weight.shape == (36, 12)
    w_q, w_k, w_v = theirs.in_proj_weight.detach().chunk(3)  # rows 0..11, 12..23, 24..35
    assert torch.equal(ours.w_q.weight, w_q) and torch.equal(ours.w_k.weight, w_k) and torch.equal(ours.w_v.weight, w_v)
    assert torch.equal(ours.w_v.bias, theirs.in_proj_bias.detach()[24:])
    assert torch.equal(ours.w_o.weight, theirs.out_proj.weight)
    with torch.no_grad():
        ours.w_q.weight.zero_()  # a copy, not a view: torch's module is untouched
    assert theirs.in_proj_weight.abs()[:12].sum() > 0
    assert ours.training and ours.d_k == 4 and ours.n_heads == 3


def test_from_torch_keeps_mode_dtype_and_dropout_and_rejects_what_it_cannot_copy():
    theirs = nn.MultiheadAttention(8, 2, dropout=0.25, batch_first=True).double().eval()
    ours = MultiHeadAttention.from_torch(theirs)
    assert not ours.training and ours.w_q.weight.dtype == torch.float64 and ours.dropout == 0.25
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="kdim = vdim = embed_dim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True))
    with pytest.raises(ValueError, match="add_bias_kv=False"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True))


# --- what multi-head means ---------------------------------------------------------------------

def test_split_heads_golden_values_and_merge_inverts_it():
    x = torch.arange(2 * 3 * 8.0).view(2, 3, 8)  # (B, T, D), token t of sentence b holds 24b + 8t + 0..7
    heads = split_heads(x, 4)  # (B, H, T, Dh)
    assert heads.shape == (2, 4, 3, 2)
    assert heads[0, 1].tolist() == [[2.0, 3.0], [10.0, 11.0], [18.0, 19.0]]  # head 1: features 2, 3 of every token
    assert heads[1, 3, 2].tolist() == [46.0, 47.0]
    assert not torch.equal(heads, x.view(2, 4, 3, 2)), "a plain view would mix tokens inside a head"
    assert torch.equal(merge_heads(heads), x)
    assert torch.equal(split_heads(merge_heads(heads), 4), heads)
    with pytest.raises(ValueError, match="divisible by n_heads = 3"):
        split_heads(x, 3)


def test_each_head_is_chapter_03_attention_on_its_own_slice():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    mask = causal_mask(5)
    out, weights = mha.forward_with_weights(x, x, x, mask=mask)
    q, k, v = mha.w_q(x), mha.w_k(x), mha.w_v(x)  # (B, T, D)
    heads = []
    for h in range(3):
        cols = slice(4 * h, 4 * h + 4)
        o, w = scaled_dot_product_attention(q[..., cols], k[..., cols], v[..., cols], mask, scale=1 / math.sqrt(4))
        torch.testing.assert_close(weights[:, h], w, atol=1e-12, rtol=0)
        heads.append(o)
    torch.testing.assert_close(out, mha.w_o(torch.cat(heads, dim=-1)), atol=1e-12, rtol=0)


def test_changing_one_heads_query_weights_changes_only_that_heads_map():
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 4).double()
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    _, before = mha.forward_with_weights(x, x, x)
    with torch.no_grad():
        mha.w_q.weight[8:12] *= 3.0  # rows 8..11 = head 2's W^Q
    _, after = mha.forward_with_weights(x, x, x)
    changed = [(after[:, h] - before[:, h]).abs().max().item() > 1e-6 for h in range(4)]
    assert changed == [False, False, True, False]


def test_weights_rows_sum_to_one_and_masked_keys_get_zero():
    torch.manual_seed(2)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 4, 8)
    pad = padding_mask(torch.tensor([[7, 7, 7, 7], [7, 7, 0, 0]]), 0)  # (B, 1, S)
    _, w = mha.forward_with_weights(x, x, x, mask=pad)  # (B, H, T, S)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 4))
    assert w[1, :, :, 2:].abs().max() == 0


def test_fully_masked_rows_give_zero_attention_not_nan():
    torch.manual_seed(3)
    mha = MultiHeadAttention(8, 2).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    mask = torch.tensor([[[True, True, False], [False, False, False], [True, True, True]]])  # (B, T_q, T_k)
    out, w = mha.forward_with_weights(x, x, x, mask=mask)
    assert not out.isnan().any()
    assert w[0, :, 1].abs().max() == 0
    torch.testing.assert_close(out[0, 1], mha.w_o.bias)  # nothing to attend to: only W_O's bias is left


@pytest.mark.parametrize("n_heads", [1, 2, 4, 8, 16])
def test_parameter_count_does_not_depend_on_the_number_of_heads(n_heads):
    d_model = 64
    ours = MultiHeadAttention(d_model, n_heads)
    theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    count = sum(p.numel() for p in ours.parameters())
    assert count == 4 * d_model * d_model + 4 * d_model == 16640
    assert count == sum(p.numel() for p in theirs.parameters())


def test_paper_base_attention_block_has_1_050_624_parameters():
    assert sum(p.numel() for p in MultiHeadAttention(512, 8).parameters()) == 1_050_624


def test_dropout_acts_in_training_only_and_weights_are_returned_before_dropout():
    torch.manual_seed(4)
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    x = torch.randn(2, 5, 8)
    mha.eval()
    out_eval, w_eval = mha.forward_with_weights(x, x, x)
    torch.testing.assert_close(mha(x, x, x), out_eval, atol=0, rtol=0)
    mha.train()
    out_train, w_train = mha.forward_with_weights(x, x, x)
    assert not torch.allclose(out_train, out_eval, atol=1e-4)
    torch.testing.assert_close(w_train, w_eval)  # the returned map is the one before dropout


# --- never the fused kernels unless asked --------------------------------------------------------

@pytest.fixture
def fused_calls(monkeypatch):
    """Make torch's fused attention raise; count calls to F.scaled_dot_product_attention."""
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append("sdpa")
        return real_sdpa(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("our forward called PyTorch's fused multi-head attention")

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    monkeypatch.setattr(F, "multi_head_attention_forward", forbidden)
    monkeypatch.setattr(nn.MultiheadAttention, "forward", forbidden)
    return calls


def test_default_forward_never_calls_torch_fused_attention(fused_calls):
    torch.manual_seed(5)
    mha = MultiHeadAttention(16, 4, dropout=0.1)
    x, memory = torch.randn(2, 5, 16, requires_grad=True), torch.randn(2, 7, 16)
    for training in (True, False):
        mha.train(training)
        mha(x, x, x, mask=causal_mask(5)).sum().backward()
        mha.forward_with_weights(x, memory, memory, mask=torch.ones(2, 1, 7, dtype=torch.bool))
        mha(x, x, x)
    assert fused_calls == []
    mha.fused = True
    mha(x, x, x)
    assert fused_calls == ["sdpa"], "the counter must see the fused call once it is switched on"


@pytest.mark.parametrize("kind", ["none", "padding", "causal", "full", "fully masked rows"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_path_equals_the_hand_written_one(kind, training):
    g = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    hand = MultiHeadAttention(16, 4, dropout=0.0).double().train(training)
    fused = MultiHeadAttention(16, 4, dropout=0.0, fused=True).double().train(training)
    fused.load_state_dict(hand.state_dict())
    b, t = 3, 6
    if kind == "fully masked rows":
        mask = torch.rand(b, t, t, generator=g) < 0.5  # (B, T, T)
        mask[0, 2] = False
    else:
        mask, _ = _masks(kind, b, t, t, 4, g)
    x1 = torch.randn(b, t, 16, generator=g, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    out_hand, out_fused = hand(x1, x1, x1, mask=mask), fused(x2, x2, x2, mask=mask)
    torch.testing.assert_close(out_fused, out_hand, atol=1e-10, rtol=1e-10)
    out_hand.pow(2).sum().backward()
    out_fused.pow(2).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fused.w_q.weight.grad, hand.w_q.weight.grad, atol=1e-10, rtol=1e-10)


def test_set_fused_switches_every_attention_in_a_model_and_back():
    model = nn.Sequential(MultiHeadAttention(8, 2), nn.ModuleList([MultiHeadAttention(8, 4), nn.Linear(8, 8)]))
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    assert [m.fused for m in attentions] == [False, False]
    assert set_fused(model, True) is model
    assert [m.fused for m in attentions] == [True, True]
    set_fused(model, False)
    assert [m.fused for m in attentions] == [False, False]
    assert "fused=False" in repr(attentions[0]) and "n_heads=2" in repr(attentions[0])


def test_fused_path_still_returns_weights_when_asked():
    torch.manual_seed(6)
    mha = MultiHeadAttention(8, 2, fused=True)
    x = torch.randn(1, 3, 8)
    out, w = mha.forward_with_weights(x, x, x)
    assert w.shape == (1, 2, 3, 3)
    torch.testing.assert_close(out, mha(x, x, x))


# --- bad input: errors that name the expected shape ---------------------------------------------

@pytest.mark.parametrize("d_model, n_heads", [(10, 3), (8, 0), (8, -2)])
def test_d_model_must_be_divisible_by_n_heads(d_model, n_heads):
    with pytest.raises(ValueError, match=rf"d_model \({d_model}\) must be divisible by n_heads \({n_heads}\)"):
        MultiHeadAttention(d_model, n_heads)


@pytest.fixture
def mha_and_x():
    torch.manual_seed(0)
    return MultiHeadAttention(16, 4), torch.randn(2, 5, 16)


@pytest.mark.parametrize("mask, error, pattern", [
    (torch.ones(2, 6, 5, dtype=torch.bool), ValueError, r"\(2, 6, 5\) does not broadcast to \(B, T_q, T_k\) = \(2, 5, 5\)"),
    (torch.ones(3, 1, 5, dtype=torch.bool), ValueError, r"does not broadcast to \(B, T_q, T_k\)"),
    (torch.ones(8, 5, 5, dtype=torch.bool), ValueError, r"does not broadcast to \(B, T_q, T_k\)"),  # torch's (B*H, T_q, T_k)
    (torch.ones(2, 4, 5, 5, dtype=torch.bool), ValueError, r"at most 3 dims, broadcastable to \(B, T_q, T_k\) = \(2, 5, 5\)"),
    (torch.ones(2, 1, 5), TypeError, r"torch.bool .*\(B, T_q, T_k\)"),
    (torch.ones(5, 5, dtype=torch.long), TypeError, r"torch.bool .*\(B, T_q, T_k\)"),
    ([[True] * 5] * 5, TypeError, r"bool torch.Tensor broadcastable to \(B, T_q, T_k\)"),
], ids=["wrong T_q", "wrong B", "torch B*H form", "head axis", "float", "long", "list"])
def test_bad_masks_name_the_expected_shape_and_dtype(mha_and_x, mask, error, pattern):
    mha, x = mha_and_x
    with pytest.raises(error, match=pattern):
        mha(x, x, x, mask=mask)


@pytest.mark.parametrize("shapes, pattern", [
    (((2, 5, 16), (2, 5, 8), (2, 5, 8)), r"key must be a floating tensor of shape \(B, T, D\) with D = d_model = 16, got \(2, 5, "
                                         r"8\)"),
    (((2, 5, 12), (2, 5, 16), (2, 5, 16)), r"query must be .*\(B, T, D\) with D = d_model = 16, got \(2, 5, 12\)"),
    (((5, 16), (5, 16), (5, 16)), r"query must be .*\(B, T, D\).*got \(5, 16\)"),
    (((2, 5, 16), (2, 7, 16), (2, 6, 16)), r"must agree on B and T_k"),
    (((2, 5, 16), (3, 7, 16), (3, 7, 16)), r"must agree on B and T_k"),
], ids=["key width", "query width", "unbatched", "key/value length", "batch"])
def test_bad_inputs_name_the_expected_shape(mha_and_x, shapes, pattern):
    mha, _ = mha_and_x
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(ValueError, match=pattern):
        mha(q, k, v)


def test_integer_inputs_are_rejected_with_the_dtype_named(mha_and_x):
    mha, x = mha_and_x
    ids = torch.ones(2, 5, 16, dtype=torch.long)
    with pytest.raises(TypeError, match=r"floating tensor .*torch.int64"):
        mha(ids, x, x)
