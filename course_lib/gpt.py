"""Chapter 09 · A decoder-only language model (GPT-style) from the course's own parts.

Take chapter 06's decoder layer, drop the cross-attention (there is no encoder to read), and
stack it under one token embedding: what is left predicts the next token of a single sequence.
The parts are the earlier chapters': ``MultiHeadAttention`` (04), ``LayerNorm`` and the
feed-forward network (05), ``causal_mask`` (03). ``GPT.from_hf`` copies the weights of a Hugging
Face ``GPT2LMHeadModel`` so that the tests can prove the two compute the same logits.

``KVCache`` keeps each layer's keys and values between calls, the chapter 08 idea for a model
without an encoder; it is passed in explicitly and never stored on the model.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import causal_mask
from .encoder import FeedForward, LayerNorm
from .hooks import HookPoint
from .multihead import MultiHeadAttention, split_heads
from .validate import check_ids as check_id_values
from .validate import check_int, check_model_size, check_number

__all__ = [
    "GPT",
    "GELUFeedForward",
    "GPTBlock",
    "GPTConfig",
    "KVCache",
    "NoTargetsError",
    "causal_self_attention",
    "next_token_loss",
]


class NoTargetsError(ValueError):
    """A loss with nothing to average: every target is ignored (the mean of no terms would be NaN)."""


def next_token_loss(logits: Tensor, ids: Tensor, ignore_index: int | None = None) -> Tensor:
    """Cross-entropy of predicting token t+1 from the logits at position t (the one-position shift).

    The logits at the last position predict a token the sequence does not have, and the first
    token is predicted by nothing, so T positions give T - 1 predictions. Targets equal to
    ``ignore_index`` (padding, or a prompt that is given rather than learned) do not count.
    Shape:
        logits (B, T, V) from the model run on ids (B, T) -> a scalar
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        got = f"dtype {logits.dtype}" if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"next_token_loss: logits must be a floating tensor (B, T, V), got {got}")
    ignore = -100 if ignore_index is None else check_int(ignore_index, "ignore_index", minimum=-(2**63))  # -100: torch's
    if logits.dim() == 3:
        ids = check_id_values(ids, logits.shape[-1], "next_token_loss", ignore_index=ignore)  # ids in 0..V-1 or ignored
    if logits.dim() != 3 or ids.shape != logits.shape[:2]:
        raise ValueError(f"next_token_loss expects logits (B, T, V) and the ids (B, T) they were computed from, "
                         f"got {tuple(logits.shape)} and {tuple(getattr(ids, 'shape', ()))}")
    if ids.shape[1] < 2:
        raise ValueError("next_token_loss needs sequences of at least 2 tokens: one to read, one to predict")
    predictions = logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
    targets = ids[:, 1:]  # (B, T-1)
    if not (targets != ignore).any():
        raise NoTargetsError(f"next_token_loss has nothing to average: every target (ids[:, 1:], {targets.numel()} of them) "
                             f"equals ignore_index = {ignore}, so the mean would be NaN; is the batch all padding or prompt?")
    return F.cross_entropy(predictions.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore)


class KVCache:
    """Every layer's keys and values so far; each call appends the new positions' rows.

    Shape: keys[i], values[i] (B, H_kv, T_so_far, Dh)
    """

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.owner: weakref.ref[nn.Module] | None = None  # the model whose keys these are, set by its first call

    @staticmethod
    def start_of(cache: object, model: nn.Module, ids: object) -> int:
        """The position of the first of ``ids``: 0 without a cache, else ``cache.start(model, ids)``."""
        if cache is None:
            return 0
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (or None), got {type(cache).__name__}")
        return cache.start(model, ids)

    def start(self, model: nn.Module, ids: object) -> int:
        """The position of the first of ``ids``, once this cache is known to be ``model``'s and of this batch.

        A cache belongs to one model and one batch (a re-run notebook cell that keeps an old cache would
        otherwise extend another model's keys): anything else is refused before the model does any work.
        """
        if self.owner is None:
            self.owner = weakref.ref(model)
        elif self.owner() is not model:
            raise ValueError(f"this KVCache holds another model's keys and values ({self.length} positions): "
                             "a cache belongs to one model; make a new KVCache() for this one")
        batch = ids.shape[0] if isinstance(ids, Tensor) and ids.dim() == 2 else None
        if self.keys and batch is not None and batch != self.keys[0].shape[0]:
            rows = self.keys[0].shape[0]
            raise ValueError(f"this KVCache holds keys for a batch of {rows} row{'s' * (rows != 1)}, but ids has {batch}: "
                             "a cache belongs to one batch of prompts; make a new KVCache() for a new batch")
        return self.length

    @property
    def length(self) -> int:
        """How many positions are cached (the position the next token will have)."""
        return self.keys[0].shape[-2] if self.keys else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this call's keys/values of ``layer``; return all of them (B, H_kv, T_so_far, Dh)."""
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        elif layer < len(self.keys):
            held = self.keys[layer]
            if any(t.shape[:-2] + t.shape[-1:] != held.shape[:-2] + held.shape[-1:] or t.dtype != held.dtype for t in (k, v)):
                raise ValueError(f"KVCache.update: layer {layer} holds keys of shape {tuple(held.shape)} (B, H_kv, T, Dh), "
                                 f"{held.dtype}, but got {tuple(k.shape)} {k.dtype} and {tuple(v.shape)}: a cache belongs "
                                 "to one model and one batch; make a new KVCache()")
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=-2)  # (B, H_kv, T_so_far, Dh)
            self.values[layer] = torch.cat([self.values[layer], v], dim=-2)
        else:
            raise ValueError(f"KVCache.update: layer {layer} came before layer {len(self.keys)} was cached")
        return self.keys[layer], self.values[layer]

    def nbytes(self) -> int:
        """Bytes held by the cached keys and values."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def causal_self_attention(attn: MultiHeadAttention, x: Tensor, cache: KVCache | None = None,
                          layer: int = 0) -> Tensor:
    """Chapter 04's attention, causal, with the earlier positions' keys/values taken from ``cache``.

    The new queries are the last T_q of T_k positions, so they get the last T_q rows of the
    (T_k, T_k) causal mask: with one new token that row is all True.
    Shape:
        x (B, T_q, D) -> (B, T_q, D)
    """
    q = split_heads(attn.w_q(x), attn.n_heads, attn.hook_q)  # (B, H, T_q, Dh)
    k = split_heads(attn.w_k(x), attn.n_heads, attn.hook_k)  # (B, H, T_q, Dh)
    v = split_heads(attn.w_v(x), attn.n_heads, attn.hook_v)
    if cache is not None:
        k, v = cache.update(layer, k, v)  # (B, H, T_k, Dh) earlier positions too
    t_q, t_k = q.shape[-2], k.shape[-2]
    mask = causal_mask(t_k, device=x.device)[t_k - t_q:]  # (T_q, T_k)
    return attn.attend(q, k, v, mask)  # (B, T_q, D)


class GELUFeedForward(FeedForward):
    """Chapter 05's feed-forward network with GPT-2's activation: GELU, tanh approximation.

    ``0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`` is what GPT-2 was trained with
    (``gelu_new`` in ``transformers``); ``F.gelu`` without ``approximate="tanh"`` is the exact erf form.
    """

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.gelu(self.linear1(x), approximate="tanh")  # (B, T, d_ff)
        return self.linear2(self.dropout(hidden))  # (B, T, D)


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT-2-style model; ``d_ff`` defaults to 4 d_model as in GPT-2."""

    vocab_size: int
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int | None = None
    max_len: int = 128
    dropout: float = 0.0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "d_model", "n_heads", "n_layers", "max_len"))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        check_positive_ints(self, ("d_ff",))
        check_number(self.eps, "GPTConfig.eps", 0.0)
        v, d, n, f, t = self.vocab_size, self.d_model, self.n_layers, self.d_ff or 0, self.max_len
        check_model_size("GPTConfig", {f"vocab_size = {v} × d_model = {d}": v * d, f"max_len = {t} × d_model = {d}": t * d,
                                       f"n_layers = {n} × 4 d_model² (d_model = {d})": 4 * n * d * d,
                                       f"n_layers = {n} × 2 d_model × d_ff = {f}": 2 * n * d * f})


class GPTBlock(nn.Module):
    """One GPT-2 block, pre-LN: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``.

    Chapter 06's decoder layer without its cross-attention, and with the norms before the
    sub-layers (chapter 05's ``norm_first=True``).
    Shape:
        x (B, T, D) -> (B, T, D)
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(d_model, eps=eps)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ln_2 = LayerNorm(d_model, eps=eps)
        self.mlp = GELUFeedForward(d_model, d_ff, dropout=0.0)
        self.dropout = nn.Dropout(dropout)  # on each branch, before the residual sum
        # chapter 11's hook points, (B, T, D) each
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_mid = HookPoint(), HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = self.hook_resid_pre(x)
        attended = self.hook_attn_out(self.dropout(causal_self_attention(self.attn, self.ln_1(x), cache, layer)))
        x = self.hook_resid_mid(x + attended)  # (B, T, D)
        return self.hook_resid_post(x + self.hook_mlp_out(self.dropout(self.mlp(self.ln_2(x)))))  # (B, T, D)


class GPT(nn.Module):
    """A GPT-2-style language model: token + learned position embeddings, N blocks, ``ln_f``, tied output.

    Two differences from chapter 07's embeddings, both GPT-2's: the token vectors are not
    multiplied by sqrt(D), and the positions are a learned (max_len, D) table, not the sinusoids.
    Shape:
        ids (B, T) -> logits (B, T, V); with a ``cache``, ids are the new tokens after the cached ones
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        c = self.config = config
        self.tok = nn.Embedding(c.vocab_size, c.d_model)  # (V, D)
        self.pos = nn.Embedding(c.max_len, c.d_model)  # (max_len, D) learned positions
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(GPTBlock(c.d_model, c.n_heads, c.d_ff or 4 * c.d_model, c.dropout, c.eps)
                                    for _ in range(c.n_layers))
        self.ln_f = LayerNorm(c.d_model, eps=c.eps)  # pre-LN stacks end with one more norm
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.lm_head.weight = self.tok.weight  # tied: the output layer is the embedding table
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()  # chapter 11: (B, T, D) each
        self.hook_normalized = HookPoint("ln_final.hook_normalized")  # ln_f's output, what lm_head reads
        self.apply(_init_weights)

    def forward(self, ids: Tensor, cache: KVCache | None = None) -> Tensor:
        start = KVCache.start_of(cache, self, ids)  # 0 without a cache
        check_ids(ids, self.config.vocab_size, self.config.max_len, start)
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)  # (T,)
        tok = self.hook_embed(self.tok(ids))  # (B, T, D)
        x = self.drop(tok + self.hook_pos_embed(self.pos(positions).expand_as(tok)))  # (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)  # (B, T, D)
        return self.lm_head(self.hook_normalized(self.ln_f(x)))  # (B, T, V)

    @classmethod
    def from_hf(cls, model: Any) -> GPT:
        """Ours with the weights of a ``transformers.GPT2LMHeadModel`` (eval/train mode and dtype kept).

        GPT-2 stores its linear maps as ``Conv1D``: ``y = x @ W + b`` with W of shape (in, out),
        the transpose of ``nn.Linear``'s (out, in); ``c_attn`` holds [W_q | W_k | W_v] side by side.
        """
        if type(model).__name__ != "GPT2LMHeadModel":
            raise TypeError(f"GPT.from_hf expects a transformers GPT2LMHeadModel, got {type(model).__name__}")
        hf = model.config
        if hf.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT.from_hf supports GPT-2's tanh GELU only, got {hf.activation_function!r}")
        if hf.scale_attn_by_inverse_layer_idx or not hf.scale_attn_weights:
            raise ValueError("GPT.from_hf supports attention scaled by 1/sqrt(Dh) only (GPT-2's default)")
        t = model.transformer
        config = GPTConfig(hf.vocab_size, hf.n_embd, hf.n_head, hf.n_layer, hf.n_inner or 4 * hf.n_embd,
                           hf.n_positions, hf.resid_pdrop, hf.layer_norm_epsilon)
        ours = cls(config).to(dtype=t.wte.weight.dtype, device=t.wte.weight.device)
        with torch.no_grad():
            ours.tok.weight.copy_(t.wte.weight)
            ours.pos.weight.copy_(t.wpe.weight)
            for block, h in zip(ours.blocks, t.h):
                _copy_gpt2_block(block, h)
            _copy(ours.ln_f, t.ln_f)
            if not hf.tie_word_embeddings:
                ours.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
        return ours.train(model.training)


def check_ids(ids: object, vocab_size: int, max_len: int | None, start: int = 0, name: str = "ids") -> None:
    """Raise a clear error unless ``ids`` is a (B, T) integer tensor of valid ids that fits the positions."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
        got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
        raise TypeError(f"{name} must be token ids: an integer tensor of shape (B, T), got {got}")
    check_id_values(ids, vocab_size, name)  # TokenIdError (an IndexError too) for an id outside 0..V-1
    if max_len is not None and start + ids.shape[1] > max_len:
        raise ValueError(f"{start} cached + {ids.shape[1]} new tokens exceed max_len = {max_len} positions")


def check_positive_ints(config: object, names: tuple[str, ...]) -> None:
    """Raise a clear error unless each named field of ``config`` is a positive int (``validate.check_int``)."""
    for name in names:
        check_int(getattr(config, name), f"{type(config).__name__}.{name}")


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: normal(0, 0.02) for linear maps and embeddings, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def _copy(ours: Any, theirs: Any, transpose: bool = False) -> None:
    """Copy weight (transposed for Conv1D) and bias, if any, from ``theirs`` into ``ours``."""
    ours.weight.copy_(theirs.weight.T if transpose else theirs.weight)
    if getattr(ours, "bias", None) is not None:
        ours.bias.copy_(theirs.bias)


def _copy_gpt2_block(block: Any, h: Any) -> None:
    d = block.attn.d_model
    _copy(block.ln_1, h.ln_1)
    _copy(block.ln_2, h.ln_2)
    w, b = h.attn.c_attn.weight, h.attn.c_attn.bias  # (D, 3D), (3D,)
    for i, lin in enumerate((block.attn.w_q, block.attn.w_k, block.attn.w_v)):
        lin.weight.copy_(w[:, i * d:(i + 1) * d].T)  # (D, D) in nn.Linear's (out, in) layout
        lin.bias.copy_(b[i * d:(i + 1) * d])
    _copy(block.attn.w_o, h.attn.c_proj, transpose=True)
    _copy(block.mlp.linear1, h.mlp.c_fc, transpose=True)
    _copy(block.mlp.linear2, h.mlp.c_proj, transpose=True)
