"""Chapter 03: scaled dot-product attention and its masks — the note's numbers, equal to PyTorch, clear errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from course_lib.attention import causal_mask, check_mask, padding_mask, scaled_dot_product_attention

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}

# The note's worked example: "나는 학교에 간다", one 2-d vector per word for Q, K and V.
NOTE_Q = torch.tensor([[0.11, 0.21], [0.31, 0.41], [0.51, 0.61]], dtype=torch.float64)
NOTE_K = torch.tensor([[7.77, 0.22], [17.19, 0.42], [10.47, 0.62]], dtype=torch.float64)
NOTE_V = torch.tensor([[0.13, 0.23], [0.33, 0.43], [0.53, 0.63]], dtype=torch.float64)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def random_qkv(seed: int, dtype: torch.dtype, batch=(2, 3), T_q=4, T_k=6, d_k=8, d_v=5, grad=False):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(grad)  # noqa: E731
    return make(*batch, T_q, d_k), make(*batch, T_k, d_k), make(*batch, T_k, d_v)


def random_mask(seed: int, shape: tuple[int, ...], p_keep: float = 0.6) -> torch.Tensor:
    """A random bool mask; the first key of every row stays visible (no fully masked row)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=g) < p_keep
    mask[..., 0] = True
    return mask


# --- the note's worked example, number by number ----------------------------------------------

def test_note_example_scores_weights_and_output_with_scale_one():
    out, weights = scaled_dot_product_attention(NOTE_Q, NOTE_K, NOTE_V, scale=1.0)
    scores = NOTE_Q[1] @ NOTE_K.T  # the row of "학교에"
    assert scores.tolist() == pytest.approx([2.5, 5.5, 3.5], abs=2e-3)
    # the note rounds the scores to 2.5, 5.5, 3.5 before the softmax: its weights are those of the rounded scores
    rounded = torch.softmax(torch.tensor([2.5, 5.5, 3.5], dtype=torch.float64), -1)
    assert rounded.tolist() == pytest.approx([0.042, 0.8437, 0.1141], abs=1e-4)
    assert weights[1].tolist() == pytest.approx([0.04193, 0.84399, 0.11408], abs=1e-5)  # the exact scores
    assert weights[1].tolist() == pytest.approx([0.042, 0.8437, 0.1141], abs=4e-4)
    assert out[1].tolist() == pytest.approx([0.3444, 0.4444], abs=1e-4)
    assert weights.sum(-1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)


def test_note_example_slip_second_coordinate_is_0_4444_not_0_4463():
    out, weights = scaled_dot_product_attention(NOTE_Q[1:2], NOTE_K, NOTE_V, scale=1.0)
    # the code's weights round to the note's, and its output is the note's by-hand sum done right
    assert weights[0].tolist() == pytest.approx([0.042, 0.8437, 0.1141], abs=4e-4)
    assert out[0].tolist() == pytest.approx((weights[0] @ NOTE_V).tolist(), abs=1e-12)
    assert out[0, 1].item() == pytest.approx(0.4444, abs=1e-4)  # the second coordinate is 0.4444...
    assert abs(out[0, 1].item() - 0.446334) > 1e-3  # ...not the note's printed 0.446334


def test_default_scale_is_one_over_sqrt_dk_and_differs_from_unscaled():
    q, k, v = random_qkv(0, torch.float64, d_k=16)
    default, w_default = scaled_dot_product_attention(q, k, v)
    explicit, w_explicit = scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(16))
    assert max_diff(default, explicit) == 0.0 and max_diff(w_default, w_explicit) == 0.0
    unscaled, w_unscaled = scaled_dot_product_attention(q, k, v, scale=1.0)
    assert max_diff(w_default, w_unscaled) > 1e-2
    by_hand = torch.softmax(q @ k.transpose(-2, -1) / 4.0, dim=-1)
    assert max_diff(w_default, by_hand) < 1e-12


def test_note_example_with_the_real_scale_is_softer():
    _, unscaled = scaled_dot_product_attention(NOTE_Q, NOTE_K, NOTE_V, scale=1.0)
    _, scaled = scaled_dot_product_attention(NOTE_Q, NOTE_K, NOTE_V)  # / sqrt(2)
    assert scaled[1].max() < unscaled[1].max()
    assert scaled[1].tolist() == pytest.approx(torch.softmax(NOTE_Q[1] @ NOTE_K.T / math.sqrt(2), -1).tolist(), abs=1e-12)


# --- parity with PyTorch ------------------------------------------------------------------------

def _masks(seed: int, batch: tuple[int, ...], T_q: int, T_k: int) -> dict[str, torch.Tensor | None]:
    pad = random_mask(seed, (*batch[:1], *(1,) * (len(batch) - 1), 1, T_k))  # (B, 1, 1, T_k)-like
    return {
        "none": None,
        "full (..., T_q, T_k)": random_mask(seed + 1, (*batch, T_q, T_k)),
        "padding (B, 1.., 1, T_k)": pad,
        "shared (T_q, T_k)": random_mask(seed + 2, (T_q, T_k)),
        "causal": causal_mask(T_k)[-T_q:] if T_q <= T_k else None,
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed, batch, T_q, T_k, d_k, d_v", [
    (0, (2,), 4, 6, 8, 5), (1, (2, 3), 5, 5, 4, 4), (2, (1, 2, 2), 1, 7, 16, 3), (3, (3,), 6, 2, 2, 8),
])
@pytest.mark.parametrize("scale", [None, 1.0, 0.3])
def test_values_and_gradients_equal_torch(dtype, seed, batch, T_q, T_k, d_k, d_v, scale):
    tol = TOL[dtype]
    for name, mask in _masks(seed, batch, T_q, T_k).items():
        q, k, v = random_qkv(seed, dtype, batch, T_q, T_k, d_k, d_v, grad=True)
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        assert out.dtype == dtype and out.shape == (*batch, T_q, d_v) and weights.shape == (*batch, T_q, T_k)
        assert max_diff(out, expected) < tol, name
        grads = torch.autograd.grad((out * torch.arange(d_v, dtype=dtype)).sum(), (q, k, v))
        expected_grads = torch.autograd.grad((expected * torch.arange(d_v, dtype=dtype)).sum(), (q, k, v))
        for which, g, e in zip("qkv", grads, expected_grads):
            assert max_diff(g, e) < tol * max(1.0, e.abs().max().item()), f"{name}: d/d{which}"


def test_weights_are_the_softmax_of_scaled_scores_and_masked_keys_get_exactly_zero():
    q, k, v = random_qkv(5, torch.float64)
    mask = random_mask(6, (2, 3, 4, 6))
    _, weights = scaled_dot_product_attention(q, k, v, mask)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~mask, -math.inf)
    assert max_diff(weights, torch.softmax(scores, -1)) < 1e-12
    assert torch.all(weights[~mask] == 0.0)
    assert max_diff(weights.sum(-1), torch.ones(2, 3, 4, dtype=torch.float64)) < 1e-12


def test_a_masked_key_value_never_reaches_the_output():
    q, k, v = random_qkv(7, torch.float64, batch=(2,))
    mask = torch.ones(2, 1, 6, dtype=torch.bool)
    mask[:, :, 4:] = False  # the last two keys are padding
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, 4:], v2[:, 4:] = 1e3, -1e3
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask)
    assert max_diff(out, out2) < 1e-12
    out3, _ = scaled_dot_product_attention(q, k2, v2)  # without the mask they do leak
    assert max_diff(out, out3) > 1.0


def test_all_true_mask_is_the_same_as_no_mask():
    q, k, v = random_qkv(8, torch.float32)
    a, wa = scaled_dot_product_attention(q, k, v, torch.ones(4, 6, dtype=torch.bool))
    b, wb = scaled_dot_product_attention(q, k, v)
    assert torch.equal(a, b) and torch.equal(wa, wb)


def test_mask_convention_is_the_opposite_of_nn_multihead_attention():
    """One head with identity projections: nn.MultiheadAttention is plain attention, blocked = True."""
    torch.manual_seed(0)
    D = 6
    mha = nn.MultiheadAttention(D, 1, bias=False, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.eye(D)] * 3))
        mha.out_proj.weight.copy_(torch.eye(D))
    x = torch.randn(2, 5, D, dtype=torch.float64)
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    ours_mask = padding_mask(ids, pad_id=0) & causal_mask(5)  # (B, 5, 5), True = may attend
    ours, ours_w = scaled_dot_product_attention(x, x, x, ours_mask)
    theirs, theirs_w = mha(x, x, x, key_padding_mask=ids == 0, attn_mask=~causal_mask(5))  # True = blocked
    assert max_diff(ours, theirs) < 1e-12 and max_diff(ours_w, theirs_w) < 1e-12
    wrong, _ = mha(x, x, x, attn_mask=causal_mask(5))  # our mask passed as-is means the opposite
    assert wrong.isnan().any() or max_diff(wrong, ours) > 1e-3


# --- fully masked rows: zeros, never a silent NaN ----------------------------------------------

def test_fully_masked_row_gives_zero_weights_zero_output_and_finite_gradients():
    q, k, v = random_qkv(9, torch.float64, batch=(2,), grad=True)
    mask = torch.ones(2, 4, 6, dtype=torch.bool)
    mask[0, 2] = False  # query 2 of sentence 0 may look at nothing
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(weights[0, 2], torch.zeros(6, dtype=torch.float64))
    assert torch.equal(out[0, 2], torch.zeros(5, dtype=torch.float64))
    assert not out.isnan().any() and not weights.isnan().any()
    # the other rows are untouched: the same as attending without the dead row
    rest, _ = scaled_dot_product_attention(q[1:], k[1:], v[1:])
    assert max_diff(out[1], rest[0]) < 1e-12
    (out.sum() + weights.pow(2).sum()).backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[0, 2], torch.zeros(8, dtype=torch.float64))


def test_torch_also_returns_zeros_for_a_fully_masked_row_while_naive_softmax_gives_nan():
    q, k, v = random_qkv(10, torch.float64, batch=(1,))
    mask = torch.ones(1, 4, 6, dtype=torch.bool)
    mask[0, 1] = False
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert max_diff(ours, theirs) < 1e-12 and torch.equal(theirs[0, 1], torch.zeros(5, dtype=torch.float64))
    naive = torch.softmax((q @ k.transpose(-2, -1)).masked_fill(~mask, -math.inf), -1)
    assert naive[0, 1].isnan().all()  # -inf everywhere: 0 / 0
    uniform = torch.softmax((q @ k.transpose(-2, -1)).masked_fill(~mask, -1e9), -1)
    assert uniform[0, 1].tolist() == pytest.approx([1 / 6] * 6)  # a big negative number: an average of padding


# --- masks -----------------------------------------------------------------------------------------

def test_causal_mask_values():
    assert causal_mask(1).tolist() == [[True]]
    assert causal_mask(4).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]
    m = causal_mask(7)
    assert m.dtype == torch.bool and m.shape == (7, 7) and m.sum().item() == 28


def test_causal_mask_hides_the_future():
    q, k, v = random_qkv(11, torch.float64, batch=(1,), T_q=5, T_k=5)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(5))
    assert torch.all(weights.triu(1) == 0)
    k2, v2 = k.clone(), v.clone()
    k2[:, 3:] += 10.0
    v2[:, 3:] -= 10.0  # change positions 3 and 4
    out2, _ = scaled_dot_product_attention(q, k2, v2, causal_mask(5))
    assert max_diff(out[:, :3], out2[:, :3]) < 1e-12  # positions 0..2 cannot see them
    assert max_diff(out[:, 3:], out2[:, 3:]) > 0.1


def test_padding_mask_shape_values_and_pad_id():
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 0, 8, 9, 10]])
    m = padding_mask(ids, pad_id=0)
    assert m.dtype == torch.bool and m.shape == (2, 1, 5)
    assert m[:, 0].tolist() == [[True, True, True, False, False], [True, False, True, True, True]]
    assert padding_mask(torch.tensor([[3, 0, 3]]), pad_id=3).tolist() == [[[False, True, False]]]


def test_padding_and_causal_masks_combine_by_broadcasting():
    ids = torch.tensor([[4, 5, 0], [4, 5, 6]])
    both = padding_mask(ids, 0) & causal_mask(3)  # (B, 1, S) & (S, S) -> (B, S, S)
    assert both.shape == (2, 3, 3)
    assert both[0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]


# --- our forward never calls PyTorch's fused attention ------------------------------------------

class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _fused_ops(ops: list[str]) -> list[str]:
    # under a dispatch mode torch's SDPA shows up as its math decomposition, whose tell is _safe_softmax
    return [op for op in ops if "attention" in op or "sdp" in op or "_safe_softmax" in op]


def test_the_op_log_would_see_torchs_fused_attention():
    q = torch.randn(2, 3, 4)
    with _OpLog() as log:
        F.scaled_dot_product_attention(q, q, q, attn_mask=causal_mask(3))
    assert _fused_ops(log.ops), log.ops


def test_forward_uses_no_fused_attention(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("fused attention was called")

    monkeypatch.setattr(F, "scaled_dot_product_attention", forbidden)
    monkeypatch.setattr(F, "multi_head_attention_forward", forbidden)
    q, k, v = random_qkv(12, torch.float32, grad=True)
    with _OpLog() as log:
        out, _ = scaled_dot_product_attention(q, k, v, random_mask(13, (4, 6)))
        out.sum().backward()
    assert log.ops, "the dispatch log is empty: the test would prove nothing"
    assert not _fused_ops(log.ops), log.ops


# --- dropout ------------------------------------------------------------------------------------

def test_dropout_acts_on_the_weights_and_weights_are_returned_before_dropout():
    q, k, v = random_qkv(14, torch.float64)
    torch.manual_seed(3)
    out, weights = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(3)
    expected = F.dropout(weights, 0.5) @ v
    assert max_diff(out, expected) < 1e-12
    assert max_diff(weights.sum(-1), torch.ones_like(weights.sum(-1))) < 1e-12
    plain, _ = scaled_dot_product_attention(q, k, v)
    assert max_diff(out, plain) > 1e-3


# --- bad input: errors name the expected shape or dtype ------------------------------------------

@pytest.mark.parametrize("mask, error, words", [
    (torch.ones(4, 5, dtype=torch.bool), ValueError, ["(..., T_q, T_k)", "(2, 3, 4, 6)", "(4, 5)"]),
    (torch.ones(3, 1, 1, 6, dtype=torch.bool), ValueError, ["(..., T_q, T_k)", "(3, 1, 1, 6)"]),
    (torch.ones(7, 2, 3, 4, 6, dtype=torch.bool), ValueError, ["(..., T_q, T_k)"]),
    (torch.ones(4, 6), TypeError, ["torch.bool", "torch.float32", "True = may attend"]),
    (torch.ones(4, 6, dtype=torch.long), TypeError, ["torch.bool", "torch.int64"]),
    ([[True] * 6] * 4, TypeError, ["bool torch.Tensor", "list"]),
])
def test_bad_mask_names_the_expected_shape_and_dtype(mask, error, words):
    q, k, v = random_qkv(15, torch.float32)
    with pytest.raises(error) as info:
        scaled_dot_product_attention(q, k, v, mask)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_query_key_width_mismatch_names_both_shapes():
    q = torch.randn(2, 4, 8)
    k, v = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    with pytest.raises(ValueError, match=r"same width d_k.*\(2, 4, 8\).*\(2, 6, 5\)"):
        scaled_dot_product_attention(q, k, v)


def test_key_value_length_mismatch_and_non_float_inputs():
    q, k = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    with pytest.raises(ValueError, match=r"same T_k.*\(2, 6, 8\).*\(2, 5, 8\)"):
        scaled_dot_product_attention(q, k, torch.randn(2, 5, 8))
    with pytest.raises(TypeError, match=r"query must be a floating tensor of shape \(\.\.\., T, d\)"):
        scaled_dot_product_attention(torch.ones(2, 4, 8, dtype=torch.long), k, k)
    with pytest.raises(TypeError, match=r"value must be a floating tensor.*\(6,\)"):
        scaled_dot_product_attention(q, k, torch.randn(6))
    with pytest.raises(ValueError, match=r"dropout_p.*\[0, 1\]"):
        scaled_dot_product_attention(q, k, k, dropout_p=1.5)


@pytest.mark.parametrize("n", [0, -2, 2.0, True, "3"])
def test_causal_mask_rejects_bad_lengths(n):
    with pytest.raises(ValueError, match="positive length"):
        causal_mask(n)


@pytest.mark.parametrize("ids", [torch.ones(2, 3), torch.ones(5, dtype=torch.long), [[1, 2]]])
def test_padding_mask_rejects_bad_ids(ids):
    with pytest.raises(TypeError, match=r"integer token ids of shape \(B, S\)"):
        padding_mask(ids, 0)


def test_check_mask_accepts_broadcastable_masks_only():
    check_mask(torch.ones(1, 6, dtype=torch.bool), (2, 4, 6), "(B, T, S)")
    check_mask(torch.ones(2, 1, 6, dtype=torch.bool), (2, 4, 6), "(B, T, S)")
    with pytest.raises(ValueError, match=r"\(B, T, S\) = \(2, 4, 6\)"):
        check_mask(torch.ones(2, 6, 4, dtype=torch.bool), (2, 4, 6), "(B, T, S)")
