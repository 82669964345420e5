"""Chapter 05 · The encoder: layer norm, feed-forward network, residual sub-layers, a stack of N.

Everything here is written by hand on top of chapter 04's ``MultiHeadAttention``. PyTorch's
``nn.TransformerEncoderLayer`` appears only in ``from_torch``, which copies its weights so that
the tests (and the notebook) can prove the two compute the same thing.

Masks follow the course convention: boolean, **True = may attend** (the opposite of PyTorch's
boolean ``src_mask`` / ``src_key_padding_mask``, where True means "blocked" / "padding").
"""
from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hooks import HookPoint
from .multihead import Attended, MultiHeadAttention, required_weights
from .validate import check_dropout, check_features, check_int, check_number, check_same_dtype

__all__ = ["LayerNorm", "FeedForward", "EncoderLayer", "LayerStack", "Encoder"]


def check_input(x: object, d_model: int, name: str = "x", shape: str = "(B, S, D)") -> None:
    """Raise a clear error unless ``x`` is a floating tensor of shape ``(B, L, d_model)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape {shape} (token vectors, not ids), got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name} must have shape {shape} with D = d_model = {d_model}, got {tuple(x.shape)}")


class LayerNorm(nn.Module):
    """Normalise every token vector to mean 0 and variance 1, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension, with the
    biased variance (divide by D, not D - 1), exactly like ``nn.LayerNorm(d_model)``. Chapter 05
    writes this formula by hand and proves it equal; here it runs as ``F.layer_norm``, PyTorch's
    one-kernel version of the same formula (as attention uses ``torch.softmax``). Written as eight
    separate tensor operations plus their backward, the 17 norms of a 3+3-layer model made a
    training step about 7% slower than ``nn.Transformer``'s (see benchmarks/README.md).

    Shape:
        x: (..., D) -> (..., D)
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.d_model, self.eps = check_int(d_model, "d_model"), check_number(eps, "eps", 0.0)
        self.weight = nn.Parameter(torch.ones(d_model))  # (D,) gain, starts at 1
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None  # (D,) shift, starts at 0

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, self.d_model, "LayerNorm")
        check_same_dtype(x, self.weight.dtype, "x", "LayerNorm's weight dtype")
        return F.layer_norm(x, (self.d_model,), self.weight, self.bias, self.eps)  # (..., D)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}, bias={self.bias is not None}"


class FeedForward(nn.Module):
    """The position-wise feed-forward network: Linear -> ReLU -> dropout -> Linear.

    The same two linear maps are applied to every position separately (nothing mixes tokens).

    Shape:
        x: (B, T, D) -> (B, T, D), with a hidden width d_ff in between
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1, bias: bool = True) -> None:
        super().__init__()
        check_int(d_model, "d_model")
        check_int(d_ff, "d_ff")
        check_dropout(dropout)
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.relu(self.linear1(x))  # (B, T, d_ff)
        return self.linear2(self.dropout(hidden))  # (B, T, D)


class EncoderLayer(nn.Module):
    """One encoder layer: self-attention and a feed-forward network, each wrapped in a residual.

    ``norm_first=False`` is the paper (post-LN): ``x = norm(x + sublayer(x))``.
    ``norm_first=True`` is pre-LN: ``x = x + sublayer(norm(x))``; the residual stream itself is
    never normalised, which is why a pre-LN ``Encoder`` ends with one extra LayerNorm.

    Shape:
        x: (B, S, D); mask: bool, True = may attend, (B, 1, S) padding or (B, S, S) / (S, S)
        returns (B, S, D); ``forward_with_weights`` -> Attended(output (B, S, D), weights (B, H, S, S))
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1, norm_first: bool = False,
                 eps: float = 1e-5, bias: bool = True, *, attention_dropout: float | None = None,
                 ffn_dropout: float | None = None) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.norm_first = d_model, n_heads, norm_first
        attention_dropout, ffn_dropout = inner_dropouts(dropout, attention_dropout, ffn_dropout)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=attention_dropout, bias=bias)  # on the weights
        self.ff = FeedForward(d_model, d_ff, dropout=ffn_dropout, bias=bias)  # on the hidden layer
        self.norm1 = LayerNorm(d_model, eps=eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)  # on the attention branch, before the residual sum
        self.dropout2 = nn.Dropout(dropout)  # on the feed-forward branch
        # chapter 11's hook points, (B, S, D) each; post-LN: resid_mid/post are the normalised streams (hooks.py)
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_mid = HookPoint(), HookPoint(), HookPoint()
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self._forward(x, mask, need_weights=False)[0]  # (B, S, D)

    def forward_with_weights(self, x: Tensor, mask: Tensor | None = None) -> Attended[Tensor]:
        """``forward``'s output and the self-attention weights: Attended((B, S, D), (B, H, S, S))."""
        out, weights = self._forward(x, mask, need_weights=True)
        return Attended(out, required_weights(weights))

    def _forward(self, x: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        check_input(x, self.d_model, "x", "(B, S, D)")
        x = self.hook_resid_pre(x)
        if self.norm_first:
            attended, weights = self._sa_block(self.norm1(x), mask, need_weights)
            x = self.hook_resid_mid(x + attended)  # (B, S, D) the residual stream stays un-normalised
            x = x + self._ff_block(self.norm2(x))
        else:
            attended, weights = self._sa_block(x, mask, need_weights)
            x = self.hook_resid_mid(self.norm1(x + attended))  # (B, S, D)
            x = self.norm2(x + self._ff_block(x))
        return self.hook_resid_post(x), weights  # (B, S, D), (B, H, S, S) or None

    def _sa_block(self, x: Tensor, mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        attended, weights = attention_branch(self.self_attn, self.dropout1, x, x, mask, need_weights)
        return self.hook_attn_out(attended), weights  # (B, S, D)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.hook_mlp_out(self.dropout2(self.ff(x)))

    @classmethod
    def from_torch(cls, module: nn.TransformerEncoderLayer) -> EncoderLayer:
        """Our layer with the same weights as a ``nn.TransformerEncoderLayer(batch_first=True)``."""
        return layer_from_torch(cls, module, nn.TransformerEncoderLayer)


class LayerStack(nn.Module):
    """``n_layers`` independent copies of one layer, applied in order: ``Encoder`` and ``Decoder`` are the two stacks.

    ``final_norm=None`` adds a last LayerNorm exactly when the layers are pre-LN (``norm_first``):
    their output is a sum that no norm has touched. Post-LN layers already end with a norm.
    A subclass names its layer type and PyTorch's matching stack (for ``from_torch``).
    """

    layer_type: type[nn.Module]
    torch_type: type[nn.Module]

    def __init__(self, layer: nn.Module, n_layers: int, final_norm: bool | None = None) -> None:
        super().__init__()
        if not isinstance(layer, self.layer_type):
            raise TypeError(f"{type(self).__name__}(layer, n_layers) copies one {self.layer_type.__name__}; "
                            f"got {type(layer).__name__}")
        self.layers = clone_layers(layer, n_layers)
        self.d_model: int = layer.d_model  # type: ignore[assignment]
        use_norm = layer.norm_first if final_norm is None else final_norm
        first = cast(LayerNorm, layer.norm1)
        self.norm = LayerNorm(self.d_model, eps=first.eps, bias=first.bias is not None) if use_norm else None
        self.hook_normalized = HookPoint("ln_final.hook_normalized") if use_norm else None  # chapter 11

    def _run(self, x: Tensor, need_weights: bool, *inputs: Tensor | None) -> Attended[list]:
        """Each layer reads the previous layer's output and the same ``inputs`` (masks; the decoder's memory)."""
        weights: list = []  # stays empty unless need_weights
        for layer in cast("list[Any]", self.layers):  # EncoderLayers or DecoderLayers
            if need_weights:
                x, w = layer.forward_with_weights(x, *inputs)  # (B, L, D), this layer's weights
                weights.append(w)
            else:
                x = layer(x, *inputs)  # (B, L, D)
        if self.norm is not None:
            x = self.norm(x) if self.hook_normalized is None else self.hook_normalized(self.norm(x))  # (B, L, D)
        return Attended(x, weights)

    @classmethod
    def from_torch(cls, module: nn.Module) -> Any:
        """Our stack with the same weights as PyTorch's matching stack (``torch_type``) of batch-first layers."""
        if not isinstance(module, cls.torch_type):
            raise TypeError(f"{cls.__name__}.from_torch expects nn.{cls.torch_type.__name__}, got {type(module).__name__}")
        return stack_from_torch(cls, cls.layer_type, module)


class Encoder(LayerStack):
    """``n_layers`` independent copies of one ``EncoderLayer``, applied in order (see ``LayerStack``).

    Shape:
        x: (B, S, D), mask as in ``EncoderLayer`` -> (B, S, D);
        ``forward_with_weights`` -> Attended(output (B, S, D), weights: n_layers × (B, H, S, S))
    """

    layer_type = EncoderLayer
    torch_type = nn.TransformerEncoder

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self._forward(x, mask, need_weights=False).output  # (B, S, D)

    def forward_with_weights(self, x: Tensor, mask: Tensor | None = None) -> Attended[list[Tensor]]:
        """``forward``'s output and each layer's self-attention weights, layer 0 first: n_layers × (B, H, S, S)."""
        return self._forward(x, mask, need_weights=True)

    def _forward(self, x: Tensor, mask: Tensor | None, need_weights: bool) -> Attended[list[Tensor]]:
        return self._run(x, need_weights, mask)  # every layer gets the same padding mask


# --- helpers shared with chapter 06 (decoder.py imports them; nothing is pasted twice) ----------

def attention_branch(attn: MultiHeadAttention, dropout: nn.Dropout, x: Tensor, memory: Tensor, mask: Tensor | None,
                     need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """One attention sub-layer's branch: queries from ``x``, keys and values from ``memory``, then dropout.

    Shape:
        x (B, L, D), memory (B, M, D) -> (B, L, D) and weights (B, H, L, M), or None unless ``need_weights``
    """
    if need_weights:
        out, weights = attn.forward_with_weights(x, memory, memory, mask)  # (B, L, D), (B, H, L, M)
        return dropout(out), weights
    return dropout(attn(x, memory, memory, mask=mask)), None  # may take the fused kernel


def inner_dropouts(dropout: float, attention_dropout: float | None, ffn_dropout: float | None) -> tuple[float, float]:
    """The dropout on the attention weights and on the feed-forward hidden layer (None: ``dropout``, as PyTorch).

    ``dropout`` itself is applied to each sub-layer's output, as in the paper (section 5.4), which
    names no other; PyTorch's layers (and the course's defaults) also use it inside attention and the
    feed-forward network. ``attention_dropout=0.0, ffn_dropout=0.0`` is the paper's exact setting.
    """
    return (dropout if attention_dropout is None else attention_dropout,
            dropout if ffn_dropout is None else ffn_dropout)


def clone_layers(layer: nn.Module, n_layers: int) -> nn.ModuleList:
    """``n_layers`` deep copies of ``layer`` (each with its own parameters)."""
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n_layers))


def check_torch_layer(module: Any, kind: Any) -> None:
    """Refuse PyTorch layers that ours cannot reproduce, saying what to change."""
    name = kind.__name__
    if not isinstance(module, kind):
        raise TypeError(f"from_torch expects nn.{name}, got {type(module).__name__}")
    if not module.self_attn.batch_first:
        raise ValueError(f"nn.{name} must be built with batch_first=True: ours takes (B, L, D) inputs")
    if not (module.activation is F.relu or isinstance(module.activation, nn.ReLU)):
        raise ValueError(f"nn.{name} must use activation='relu' (ours is Linear -> ReLU -> Linear), got {module.activation}")
    norms = [m for n, m in module.named_children() if n.startswith("norm")]
    if any(not isinstance(n, nn.LayerNorm) or n.weight is None for n in norms):
        raise ValueError(f"nn.{name} must use nn.LayerNorm with elementwise_affine=True")


def layer_from_torch(cls: Any, module: Any, kind: type) -> Any:
    """Our ``cls`` layer with the weights (and eps, dtype, device, train mode) of PyTorch's ``kind`` layer."""
    check_torch_layer(module, kind)
    ref, attn = module.linear1.weight, module.self_attn
    ours = cls(attn.embed_dim, attn.num_heads, module.linear1.out_features, dropout=module.dropout.p,
               norm_first=module.norm_first, bias=module.linear1.bias is not None)
    ours.to(dtype=ref.dtype, device=ref.device)  # first, so that float64 weights are copied without rounding
    with torch.no_grad():
        for mine, src in ((ours.ff.linear1, module.linear1), (ours.ff.linear2, module.linear2)):
            mine.weight.copy_(src.weight)
            if mine.bias is not None:
                mine.bias.copy_(src.bias)
    for name, norm in module.named_children():
        if name.startswith("norm"):
            copy_norm(getattr(ours, name), norm)  # norm1, norm2 (and norm3 in a decoder layer)
    ours.self_attn = MultiHeadAttention.from_torch(attn).to(dtype=ref.dtype, device=ref.device)
    if hasattr(ours, "cross_attn"):
        ours.cross_attn = MultiHeadAttention.from_torch(module.multihead_attn).to(dtype=ref.dtype, device=ref.device)
    return ours.train(module.training)


def copy_norm(ours: LayerNorm, theirs: Any) -> None:
    """Copy one nn.LayerNorm (weights and eps) into ours."""
    if tuple(theirs.normalized_shape) != (ours.d_model,):
        raise ValueError(f"nn.LayerNorm normalises over {tuple(theirs.normalized_shape)}, ours over ({ours.d_model},)")
    with torch.no_grad():
        ours.weight.copy_(theirs.weight)
        if theirs.bias is None:
            ours.bias = None
        else:
            cast(Tensor, ours.bias).copy_(theirs.bias)
    ours.eps = theirs.eps


def stack_from_torch(cls: Any, layer_cls: Any, module: Any) -> Any:
    """Build our Encoder/Decoder from PyTorch's TransformerEncoder/TransformerDecoder."""
    layers = [layer_cls.from_torch(m) for m in module.layers]
    stack = cls(layers[0], len(layers), final_norm=module.norm is not None)
    stack.layers = nn.ModuleList(layers)
    if module.norm is not None:
        # cast first, then copy: copying float64 weights into a float32 norm would round them
        stack.norm.to(dtype=module.norm.weight.dtype, device=module.norm.weight.device)
        copy_norm(stack.norm, module.norm)
    return stack.train(module.training)
