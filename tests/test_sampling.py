"""Chapter 09 sampling: each rule on hand-made distributions, and generation with the cache equal to
generation by recomputation."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.gpt import GPT, GPTConfig
from course_lib.llama import Llama, LlamaStyleConfig
from course_lib.sampling import (
    apply_temperature,
    generate,
    greedy,
    sample_next,
    top_k_filter,
    top_p_filter,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest on a shared CPU

PROBS = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.1, 0.6, 0.05, 0.2]], dtype=torch.float64)
LOGITS = PROBS.log()


def kept(filtered: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in filtered]


def test_greedy_and_temperature():
    assert greedy(LOGITS).tolist() == [0, 2]
    sharp, flat = apply_temperature(LOGITS, 0.5).softmax(-1), apply_temperature(LOGITS, 2.0).softmax(-1)
    assert sharp[0, 0] > PROBS[0, 0] > flat[0, 0]
    assert torch.allclose(sharp[0], PROBS[0] ** 2 / (PROBS[0] ** 2).sum())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(LOGITS, 0.0)


def test_top_k():
    assert kept(top_k_filter(LOGITS, 2)) == [[0, 1], [2, 4]]
    assert kept(top_k_filter(LOGITS, 99)) == [[0, 1, 2, 3, 4]] * 2
    with pytest.raises(ValueError, match="positive int"):
        top_k_filter(LOGITS, 0)


@pytest.mark.parametrize("p, expected", [
    (0.45, [[0], [2]]),  # 0.5 and 0.6 alone reach 0.45
    (0.55, [[0, 1], [2]]),  # 0.5 < 0.55, then 0.7 crosses: the crossing token is kept
    (0.65, [[0, 1], [2, 4]]),
    (0.72, [[0, 1, 2], [2, 4]]),
    (1.0, [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]),
    (0.01, [[0], [2]]),  # the most likely token always stays
])
def test_top_p_keeps_the_smallest_set_that_reaches_p(p, expected):
    assert kept(top_p_filter(LOGITS, p)) == expected


def test_top_p_rejects_bad_p():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        top_p_filter(LOGITS, 0.0)
    with pytest.raises(TypeError, match=r"\(B, V\)"):
        top_p_filter(LOGITS[0], 0.5)


def test_sample_next_follows_the_distribution_and_the_filters():
    g = torch.Generator().manual_seed(0)
    draws = sample_next(LOGITS[:1].expand(20000, 5), generator=g)
    freq = torch.bincount(draws, minlength=5) / 20000
    assert torch.allclose(freq, PROBS[0].float(), atol=0.015)
    draws = sample_next(LOGITS[:1].expand(5000, 5), top_p=0.6, generator=g)
    assert set(draws.tolist()) == {0, 1} and math.isclose(float((draws == 0).float().mean()), 0.5 / 0.7, abs_tol=0.03)
    assert sample_next(LOGITS, temperature=0).tolist() == [0, 2]


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_generate_with_cache_equals_recomputation(kind):
    torch.manual_seed(0)
    if kind == "gpt":
        model = GPT(GPTConfig(vocab_size=25, d_model=16, n_heads=2, n_layers=2, max_len=32))
    else:
        model = Llama(LlamaStyleConfig(vocab_size=25, d_model=16, n_heads=4, n_kv_heads=1, n_layers=2, d_ff=24, max_len=32))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0)  # a peaked random model: greedy is far from ties
    prompt = torch.randint(0, 25, (3, 4))
    fast = generate(model, prompt, 12)
    slow = generate(model, prompt, 12, use_cache=False)
    assert fast.shape == (3, 16) and torch.equal(fast, slow) and torch.equal(fast[:, :4], prompt)
    a = generate(model, prompt, 12, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, 12, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)
    eos = int(fast[0, 5])
    stopped = generate(model, prompt, 12, eos_id=eos)
    row = stopped[0, 4:].tolist()
    assert eos in row and all(t == eos for t in row[row.index(eos):])
    assert model.training  # the mode is restored


def test_generate_refuses_more_tokens_than_positions():
    model = GPT(GPTConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1, max_len=8))
    with pytest.raises(ValueError, match="at most 5 new tokens"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 6)
