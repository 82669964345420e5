"""Chapter 09 · Today's parts: RMSNorm, rotary positions, SwiGLU, grouped-query attention, a Llama-style model.

Each part replaces one piece of the GPT-2 block (``gpt.py``): RMSNorm the LayerNorm, rotary
embeddings the learned position table, SwiGLU the GELU feed-forward, grouped-query attention the
multi-head attention (several query heads share one key/value head, so the KV cache shrinks).
The attention itself is still chapter 03's ``scaled_dot_product_attention``. ``Llama.from_hf``
copies the weights of a Hugging Face ``LlamaForCausalLM`` so that the tests can prove them equal.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import causal_mask, scaled_dot_product_attention
from .gpt import KVCache, check_ids, check_positive_ints
from .hooks import HookPoint
from .multihead import merge_heads, split_heads
from .validate import check_features, check_int, check_model_size, check_number

__all__ = [
    "GroupedQueryAttention",
    "Llama",
    "LlamaLayer",
    "LlamaStyleConfig",
    "RMSNorm",
    "SwiGLU",
    "apply_rotary",
    "grouped_query_attention",
    "repeat_kv",
    "rotary_cos_sin",
    "rotate_half",
]


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight``: LayerNorm without the mean and without the bias.

    For float16 and bfloat16 inputs the statistic is computed in float32 and the result cast back before
    the gain, as ``transformers``' ``LlamaRMSNorm`` does: x = 300 squared is 90,000, beyond float16's 65,504.
    Shape: (..., D) -> (..., D)
    """

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.d_model, self.eps = check_int(d_model, "d_model"), check_number(eps, "eps", 0.0)
        self.weight = nn.Parameter(torch.ones(d_model))  # (D,) gain

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.d_model, "RMSNorm")
        h = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # (..., D) float32, float64 stays float64
        normed = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., D) divided by the RMS
        return self.weight * normed.to(x.dtype)  # (..., D)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


def rotary_cos_sin(positions: Tensor, head_dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
                   ) -> tuple[Tensor, Tensor]:
    """The rotation angles ``position * base^(-2i/Dh)`` of pair i, as cos and sin tables.

    The angles are computed in float32 (as Meta's Llama code and ``transformers`` do; positions are
    exact in float32 up to 2^24), then cast to ``dtype``. Each frequency appears twice, for
    dimension i and for i + Dh/2, the two halves that ``rotate_half`` pairs.
    Shape:
        positions (T,) -> cos, sin (T, Dh)
    """
    if not isinstance(positions, Tensor) or positions.dim() != 1:
        got = f"shape {tuple(positions.shape)}" if isinstance(positions, Tensor) else type(positions).__name__
        raise (ValueError if isinstance(positions, Tensor) else TypeError)(
            f"positions must be a 1-D tensor (T,) of token positions, e.g. torch.arange(T), got {got}")
    check_int(head_dim, "head_dim", minimum=2)
    if head_dim % 2:
        raise ValueError(f"rotary embeddings rotate pairs of dimensions: head_dim must be even, got {head_dim}")
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, Dh)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) with x1 the first half of the last dimension and x2 the second.

    Dimension i is paired with dimension i + Dh/2 (the ``transformers`` Llama convention). Meta's
    original code pairs neighbours (2i, 2i+1) instead; the two differ by a fixed permutation of
    the q/k projection rows, which Hugging Face's conversion script applies to the weights.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., Dh/2) each
    return torch.cat([-x2, x1], dim=-1)  # (..., Dh)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (i, i + Dh/2) of every query/key by its position's angle.

    Shape: x (B, H, T, Dh), cos and sin (T, Dh) -> (B, H, T, Dh)
    """
    return x * cos + rotate_half(x) * sin  # (B, H, T, Dh)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``: a gated feed-forward network with three matrices, no biases.

    Shape: (B, T, D) -> (B, T, D), with a hidden width d_ff in between
    """

    def __init__(self, d_model: int, d_ff: int, bias: bool = False) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, d_ff) -> (B, T, D)


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, H_kv, T, Dh) -> (B, H_kv * groups, T, Dh): query head h reads key/value head h // groups.

    Consecutive query heads share a key/value head: [k0, k0, k1, k1] for 2 groups, not [k0, k1, k0, k1].
    """
    return x.repeat_interleave(groups, dim=1)  # (B, H, T, Dh)


def grouped_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *,
                            on_scores: Callable[[Tensor], Tensor] | None = None,
                            on_weights: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Chapter 03's attention with H query heads and H_kv key/value heads (H a multiple of H_kv).

    ``on_scores`` / ``on_weights`` go to ``scaled_dot_product_attention`` (chapter 11's hook points).

    Shape: q (B, H, T_q, Dh), k and v (B, H_kv, T_k, Dh) -> output (B, H, T_q, Dh), weights (B, H, T_q, T_k)
    """
    h, h_kv = q.shape[1], k.shape[1]
    if h % h_kv or v.shape[1] != h_kv:
        raise ValueError(f"grouped-query attention needs H = {h} query heads to be a multiple of H_kv = {h_kv} "
                         f"key/value heads (k and v alike; v has {v.shape[1]})")
    return scaled_dot_product_attention(q, repeat_kv(k, h // h_kv), repeat_kv(v, h // h_kv), mask,
                                        on_scores=on_scores, on_weights=on_weights)


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with rotary positions and ``n_kv_heads`` shared key/value heads.

    ``n_kv_heads = n_heads`` is multi-head attention; ``n_kv_heads = 1`` is multi-query attention.
    Shape: x (B, T, D), cos and sin (T, Dh) for the new positions -> (B, T, D)
    """

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int | None = None,
                 bias: bool = False) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
            check_int(value, name)
        if head_dim is not None:
            check_int(head_dim, "head_dim")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = head_dim or d_model // n_heads
        self.w_q = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.w_k = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)  # H_kv heads only
        self.w_v = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.w_o = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        # chapter 11's hook points: q (B, T, H, Dh), k and v (B, T, H_kv, Dh), rot_q/rot_k after the rotation,
        # scores and pattern (B, H, T_q, T_k), z (B, T_q, H, Dh) before W_O
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_rot_q, self.hook_rot_k = HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern, self.hook_z = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        q = split_heads(self.w_q(x), self.n_heads, self.hook_q)  # (B, H, T_q, Dh)
        k = split_heads(self.w_k(x), self.n_kv_heads, self.hook_k)  # (B, H_kv, T_q, Dh)
        v = split_heads(self.w_v(x), self.n_kv_heads, self.hook_v)  # (B, H_kv, T_q, Dh)
        q = self.hook_rot_q(apply_rotary(q, cos, sin).transpose(1, 2)).transpose(1, 2)  # hook sees (B, T_q, H, Dh)
        k = self.hook_rot_k(apply_rotary(k, cos, sin).transpose(1, 2)).transpose(1, 2)  # (B, H_kv, T_q, Dh)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H_kv, T_k, Dh): the cache holds H_kv heads, not H
        t_q, t_k = q.shape[-2], k.shape[-2]
        out, _ = grouped_query_attention(q, k, v, causal_mask(t_k, device=x.device)[t_k - t_q:],
                                         on_scores=self.hook_attn_scores, on_weights=self.hook_pattern)  # (B, H, T_q, Dh)
        return self.w_o(merge_heads(out, self.hook_z))  # (B, T_q, D)


@dataclass(frozen=True)
class LlamaStyleConfig:
    """Sizes of a Llama-style model (names follow the course; ``from_hf`` maps Hugging Face's)."""

    vocab_size: int
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2
    n_layers: int = 2
    d_ff: int = 344
    max_len: int = 128
    eps: float = 1e-6
    rope_base: float = 10000.0
    head_dim: int | None = None
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "d_model", "n_heads", "n_kv_heads", "n_layers", "d_ff", "max_len"))
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        check_positive_ints(self, ("head_dim",))
        check_number(self.eps, "LlamaStyleConfig.eps", 0.0)
        check_number(self.rope_base, "LlamaStyleConfig.rope_base", 0.0, above=True)
        v, d, n, f = self.vocab_size, self.d_model, self.n_layers, self.d_ff
        heads = (2 * self.n_heads + 2 * self.n_kv_heads) * (self.head_dim or 0)  # W_q, W_o (H heads), W_k, W_v (H_kv heads)
        check_model_size("LlamaStyleConfig", {
            f"vocab_size = {v} × d_model = {d}": (1 if self.tie_embeddings else 2) * v * d,
            f"n_layers = {n} × d_model = {d} × (2 n_heads + 2 n_kv_heads) × head_dim = {self.head_dim}": n * d * heads,
            f"n_layers = {n} × 3 d_model × d_ff = {f}": 3 * n * d * f})


class LlamaLayer(nn.Module):
    """One Llama decoder layer: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` with RMSNorm and SwiGLU."""

    def __init__(self, c: LlamaStyleConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(c.d_model, c.eps)
        self.attn = GroupedQueryAttention(c.d_model, c.n_heads, c.n_kv_heads, c.head_dim)
        self.mlp_norm = RMSNorm(c.d_model, c.eps)
        self.mlp = SwiGLU(c.d_model, c.d_ff)
        # chapter 11's hook points, (B, T, D) each
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_mid = HookPoint(), HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.attn_norm(x), cos, sin, cache, layer)))  # (B, T, D)
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.mlp_norm(x))))  # (B, T, D)


class Llama(nn.Module):
    """A Llama-style language model: token embedding (no position table), N layers, RMSNorm, output layer.

    Shape: ids (B, T) -> logits (B, T, V); with a ``cache``, ids are the new tokens after the cached ones
    """

    def __init__(self, config: LlamaStyleConfig) -> None:
        super().__init__()
        c = self.config = config
        self.attn_head_dim = c.head_dim or c.d_model // c.n_heads
        self.tok = nn.Embedding(c.vocab_size, c.d_model)  # (V, D)
        self.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, c.eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok.weight
        self.hook_embed, self.hook_normalized = HookPoint(), HookPoint("ln_final.hook_normalized")  # chapter 11
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids: Tensor, cache: KVCache | None = None) -> Tensor:
        start = KVCache.start_of(cache, self, ids)  # 0 without a cache
        check_ids(ids, self.config.vocab_size, self.config.max_len, start)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)  # (T,)
        x = self.hook_embed(self.tok(ids))  # (B, T, D)
        cos, sin = rotary_cos_sin(positions, self.attn_head_dim, self.config.rope_base, x.dtype)  # (T, Dh)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i)  # (B, T, D)
        return self.lm_head(self.hook_normalized(self.norm(x)))  # (B, T, V)

    @classmethod
    def from_hf(cls, model: Any) -> Llama:
        """Ours with the weights of a ``transformers.LlamaForCausalLM`` (eval/train mode and dtype kept)."""
        if type(model).__name__ != "LlamaForCausalLM":
            raise TypeError(f"Llama.from_hf expects a transformers LlamaForCausalLM, got {type(model).__name__}")
        hf = model.config
        rope = getattr(hf, "rope_parameters", None) or {"rope_type": "default", "rope_theta": hf.rope_theta}
        if rope.get("rope_type", "default") != "default" or hf.attention_bias or hf.mlp_bias or hf.hidden_act != "silu":
            raise ValueError("Llama.from_hf supports plain rotary embeddings (no scaling), SiLU and no biases")
        config = LlamaStyleConfig(hf.vocab_size, hf.hidden_size, hf.num_attention_heads, hf.num_key_value_heads,
                                  hf.num_hidden_layers, hf.intermediate_size, hf.max_position_embeddings,
                                  hf.rms_norm_eps, float(rope["rope_theta"]), hf.head_dim, hf.tie_word_embeddings)
        m = model.model
        ours = cls(config).to(dtype=m.embed_tokens.weight.dtype, device=m.embed_tokens.weight.device)
        pairs: list[tuple[Any, Any]] = [(ours.tok, m.embed_tokens), (ours.norm, m.norm), (ours.lm_head, model.lm_head)]
        our_layers: list[Any] = list(ours.layers)
        for layer, theirs in zip(our_layers, m.layers):
            a, ta = layer.attn, theirs.self_attn
            pairs += [(layer.attn_norm, theirs.input_layernorm), (layer.mlp_norm, theirs.post_attention_layernorm),
                      (a.w_q, ta.q_proj), (a.w_k, ta.k_proj), (a.w_v, ta.v_proj), (a.w_o, ta.o_proj),
                      (layer.mlp.gate, theirs.mlp.gate_proj), (layer.mlp.up, theirs.mlp.up_proj),
                      (layer.mlp.down, theirs.mlp.down_proj)]
        with torch.no_grad():
            for mine, hf_module in pairs:
                mine.weight.copy_(hf_module.weight)
        return ours.train(model.training)
