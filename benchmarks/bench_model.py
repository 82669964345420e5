"""The whole model's training step: course_lib's ``Transformer`` against ``nn.Transformer``, with MFU.

Both sides are whole translation models built from one ``TransformerConfig``: the same
``TokenEmbedding`` and ``PositionalEncoding`` in front, the same (tied, when the config says so)
output projection behind; only the encoder-decoder body differs (ours, hand-written or fused,
or PyTorch's ``nn.Transformer``). Weights are not shared (only the sizes matter for speed). One
step = forward + cross-entropy + backward + Adam. Variants are timed in one process with
``torch.utils.benchmark`` (``benchmarks/timing.py``), in interleaved rounds (the order rotates every
round), and the median step time is reported, with the ratio to ``nn.Transformer``.

    python benchmarks/bench_model.py              # CPU (2 threads, d_model 256, 3+3 layers, batch 64,
                                                  # length 32); plus, with CUDA, the paper's base model in
                                                  # bf16 autocast at lengths 128 and 512 (~25k tokens a batch)
    python benchmarks/bench_model.py --gpu-only --compile --fused-adam --chunked-loss
    python benchmarks/bench_model.py --dry-run    # the GPU code path with a tiny config on the CPU (a smoke test)

Model FLOPs per step (the MFU numerator), for B sequences of S source and T target positions:

    F = 6·B·(W_enc·S + W_xkv·S + W_dec·T + D·V·T) + 12·B·N·D·(S² + T² + S·T)

W_enc = N·(4D² + 2·D·d_ff) are the encoder's weight matrices, W_xkv = N·2D² the decoder's
cross-attention key/value projections (applied to the S source positions), W_dec = N·(6D² + 2·D·d_ff)
the rest of the decoder, D·V the output projection (counted even when tied to the embedding: tying
shares the table, not the multiply). The last term is the attention itself, QKᵀ and A·V
(2·2·L_q·L_k·D per layer forward, times 3 for forward + backward) for the encoder self-, decoder
self- (causal, counted in full) and cross-attention. Biases, norms, softmax and embeddings are left
out; padding positions count (the hardware computes them). MFU = F / step time / the device's peak.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: python benchmarks/bench_model.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py, fused_loss.py
from fused_loss import chunk_grad, linear_cross_entropy  # noqa: E402
from timing import compare_table, interleaved, ratios  # noqa: E402

from course_lib.embeddings import PositionalEncoding, TokenEmbedding  # noqa: E402
from course_lib.model import Transformer, TransformerConfig, count_parameters  # noqa: E402
from course_lib.multihead import set_fused  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s.
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}
REFERENCE = "nn.Transformer"


class TorchSeq2Seq(nn.Module):
    """``nn.Transformer`` between our embeddings and output projection, sized by a ``TransformerConfig``.

    Note: ``nn.Transformer`` always ends its encoder and its decoder with a LayerNorm, also post-LN.
    """

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.config = c
        self.src_embed = TokenEmbedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = self.src_embed if c.share_embeddings else TokenEmbedding(c.tgt_vocab_size, c.d_model)
        self.pos = PositionalEncoding(c.d_model, c.max_len, c.dropout)
        self.body = nn.Transformer(c.d_model, c.n_heads, c.n_layers, c.n_layers, c.d_ff, c.dropout,
                                   batch_first=True, norm_first=c.norm_first)
        self.generator = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        if c.tie_output:
            self.generator.weight = self.tgt_embed.weight

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        blocked = src == self.config.pad_id  # (B, S) PyTorch's convention: True = padding
        future = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool, device=tgt.device).triu(1)  # (T, T)
        hidden = self.body(self.pos(self.src_embed(src)), self.pos(self.tgt_embed(tgt)), tgt_mask=future,
                           src_key_padding_mask=blocked, memory_key_padding_mask=blocked, tgt_is_causal=True)
        return self.generator(hidden)  # (B, T, V)


@dataclass(frozen=True)
class Case:
    """One benchmark setting: a model size, a batch shape, a device and a precision."""

    name: str
    config: TransformerConfig
    batch: int
    length: int  # source length = target length
    device: str
    bf16: bool = False


@dataclass(frozen=True)
class Options:
    """How the variants are built: compiled (and with which backend), fused Adam, the chunked loss."""

    compile: bool = False
    backend: str = "inductor"
    fused_adam: bool = False
    chunked_loss: bool = False


def model_flops(c: TransformerConfig, batch: int, src_len: int, tgt_len: int) -> float:
    """Training FLOPs of one step (the formula in this file's docstring)."""
    d, n = c.d_model, c.n_layers
    w_enc, w_xkv, w_dec = n * (4 * d * d + 2 * d * c.d_ff), n * 2 * d * d, n * (6 * d * d + 2 * d * c.d_ff)
    dense = 6 * batch * (w_enc * src_len + w_xkv * src_len + w_dec * tgt_len + d * c.tgt_vocab_size * tgt_len)
    attention = 12 * batch * n * d * (src_len ** 2 + tgt_len ** 2 + src_len * tgt_len)
    return float(dense + attention)


def peak_flops(device: str) -> tuple[str, float | None]:
    """(device name, peak bf16 FLOP/s or None when unknown, e.g. a CPU)."""
    if not device.startswith("cuda"):
        return "CPU", None
    name = torch.cuda.get_device_name(torch.device(device))
    return name, next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def make_batch(c: TransformerConfig, batch: int, length: int, device: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random ids; a quarter of the rows end early (right padding), as in a length-bucketed batch."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, min(c.src_vocab_size, c.tgt_vocab_size), (2, batch, length + 1), generator=g)
    ends = torch.full((batch,), length + 1).index_fill(0, torch.arange(0, batch, 4), 3 * length // 4)
    ids = ids.masked_fill(torch.arange(length + 1) >= ends[:, None], c.pad_id)  # (2, B, L + 1)
    src, tgt = ids[0, :, :length], ids[1]
    return src.to(device), tgt[:, :-1].to(device), tgt[:, 1:].to(device)  # src, tgt_in, tgt_out


Loss = Callable[[nn.Module, tuple[torch.Tensor, ...]], torch.Tensor]


def logits_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The model's logits (B, T, V), then cross-entropy in (at least) float32: the plain way."""
    src, tgt_in, tgt_out = batch
    logits = model(src, tgt_in)  # (B, T, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 under autocast -> float32
    return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0)


class HiddenStates(nn.Module):
    """Our model with its output projection moved into the loss: forward returns (B, T, D), ``head`` is (V, D)."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.head = model.generator  # tied to the target embedding when the config says so
        model.generator = nn.Identity()
        self.model = model

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.model(src, tgt)  # (B, T, D)


def chunked_loss(grad_fn: Callable = chunk_grad) -> Loss:
    """The loss of ``HiddenStates``: projection and cross-entropy chunk by chunk (``fused_loss.py``)."""
    def loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        src, tgt_in, tgt_out = batch
        return linear_cross_entropy(model(src, tgt_in), model.head.weight, tgt_out, ignore_index=0, grad_fn=grad_fn)
    return loss


def compile_layers(model: nn.Module, backend: str) -> nn.Module:
    """``torch.compile`` every encoder and decoder layer in place (regional compilation: the six identical
    layers of a stack share one compiled graph, so compiling is much shorter than the whole model's)."""
    body = model.body if isinstance(model, TorchSeq2Seq) else getattr(model, "model", model)
    for layer in [*body.encoder.layers, *body.decoder.layers]:
        layer.compile(backend=backend, dynamic=False)
    return model


def variant_specs(options: Options) -> dict[str, tuple[Callable[[TransformerConfig], nn.Module], Loss, bool]]:
    """name -> (build the model, its loss, compiled?) for every variant ``options`` asks for."""
    ours = Transformer
    fused = lambda c: set_fused(Transformer(c), True)  # noqa: E731
    specs: dict = {"ours (hand-written)": (ours, logits_loss, False), "ours (fused)": (fused, logits_loss, False),
                   REFERENCE: (TorchSeq2Seq, logits_loss, False)}
    if options.compile:
        specs.update({"ours (hand-written) + compile": (ours, logits_loss, True),
                      "ours (fused) + compile": (fused, logits_loss, True),
                      f"{REFERENCE} + compile": (TorchSeq2Seq, logits_loss, True)})
    if options.chunked_loss:
        grad_fn = torch.compile(chunk_grad, backend=options.backend, dynamic=False) if options.compile else chunk_grad
        name = "ours (fused) + compile + chunked loss" if options.compile else "ours (fused) + chunked loss"
        specs[name] = (lambda c: HiddenStates(fused(c)), chunked_loss(grad_fn), options.compile)
    return specs


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Loss, batch: tuple[torch.Tensor, ...],
              bf16: bool) -> Callable[[], None]:
    """One training step as a no-argument function (what ``Timer`` calls)."""
    device_type = batch[0].device.type

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
    return step


def build_steps(case: Case, options: Options, batch: tuple[torch.Tensor, ...]) -> dict[str, Callable[[], None]]:
    """A step function for each variant, models on the case's device in train mode."""
    steps = {}
    for name, (build, loss_fn, compiled) in variant_specs(options).items():
        torch.manual_seed(0)
        model = build(case.config).to(case.device).train()
        if compiled:
            compile_layers(model, options.backend)
        extra = {"fused": True} if options.fused_adam and case.device.startswith("cuda") else {}
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, **extra)
        steps[name] = make_step(model, optimizer, loss_fn, batch, case.bf16)
    return steps


def warm_up(steps: dict[str, Callable[[], None]], warmup: int, device: str) -> dict[str, float | None]:
    """Run each variant's warm-up steps (and compilation) alone; on CUDA return the last one's peak memory in GiB
    above what was allocated before it: what a step needs beyond the weights, the gradients and Adam's state
    (activations and temporaries), when ``warmup`` >= 2 (the first step also creates the gradients and Adam's state)."""
    memory: dict[str, float | None] = {}
    cuda = device.startswith("cuda")
    for name, step in steps.items():
        for _ in range(max(warmup - 1, 0)):
            step()
        if cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        step()
        if cuda:
            torch.cuda.synchronize()
        memory[name] = (torch.cuda.max_memory_allocated() - before) / 2**30 if cuda else None
    return memory


def time_case(case: Case, warmup: int, rounds: int, min_run_time: float, options: Options = Options(),
              threads: int = 1) -> list[dict]:
    """Median seconds per step of every variant, timed in interleaved rounds; one result row each."""
    batch = make_batch(case.config, case.batch, case.length, case.device)
    steps = build_steps(case, options, batch)
    memory = warm_up(steps, warmup, case.device)
    timings = interleaved(steps, rounds, min_run_time, threads, label=case.name, sub_label=case.device)
    print(compare_table(timings))
    flops = model_flops(case.config, case.batch, case.length, case.length)
    device_name, peak = peak_flops(case.device)
    rows = []
    for name, (ratio, round_ratio) in ratios(timings, REFERENCE).items():
        med = timings[name].median
        rows.append(dict(case=case.name, device=device_name, variant=name, ms=med * 1e3, ratio=ratio,
                         round_ratio=round_ratio, tflops=flops / med / 1e12,
                         mfu=None if peak is None else flops / med / peak, gib=memory[name],
                         tokens=case.batch * case.length, n=len(timings[name].merged.times)))
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| case | device | variant | ms/step | vs nn.Transformer | per-round ratio | achieved TFLOP/s | MFU "
             "| step peak GiB |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        gib = "n/a" if r["gib"] is None else f"{r['gib']:.2f}"
        lines.append(f"| {r['case']} | {r['device']} | {r['variant']} | {r['ms']:.1f} | {r['ratio']:.2f}x | "
                     f"{r['round_ratio']:.2f}x | {r['tflops']:.3g} | {mfu} | {gib} |")
    return "\n".join(lines)


def cpu_case(args: argparse.Namespace) -> Case:
    config = TransformerConfig(1000, 1000, d_model=256, n_heads=8, d_ff=1024, n_layers=3, dropout=0.1, max_len=64)
    return Case("CPU d256 3+3 B64 L32", config, batch=64, length=32, device="cpu")


def gpu_cases(args: argparse.Namespace, device: str) -> list[Case]:
    """The paper's base model in bf16 autocast, about ``args.tokens`` target tokens per batch."""
    config = replace(TransformerConfig.paper_base(), max_len=max(args.lengths))
    if args.dry_run:  # the same code path, a size a CPU runs in seconds
        config = TransformerConfig.tiny(97, 97, share_embeddings=True, tie_output=True, dropout=0.1, max_len=64)
    return [Case(f"{'tiny (dry run)' if args.dry_run else 'paper base'} L{n}", config,
                 batch=max(1, args.tokens // n), length=n, device=device, bf16=True) for n in args.lengths]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU cases")
    p.add_argument("--gpu-only", action="store_true", help="skip the CPU case")
    p.add_argument("--dry-run", action="store_true", help="run the GPU cases' code with a tiny config on the CPU "
                   "(1 round; torch.compile with the 'eager' backend): checks the code runs, its timings mean nothing")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the CPU case (and a dry run)")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="GPU sequence lengths (default 128 512; "
                   "a dry run: 16 32)")
    p.add_argument("--tokens", type=int, default=25_000, help="GPU target tokens per batch (batch = tokens // length)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds each variant is timed per round (Timer.blocked_autorange; default: 0.5 on a GPU, "
                        "0 on a CPU, i.e. one warm-up and one timed step)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compilation included)")
    p.add_argument("--compile", action="store_true", help="add torch.compile variants (GPU cases and dry runs)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (a dry run uses 'eager')")
    p.add_argument("--fused-adam", action="store_true", help="Adam(fused=True) on CUDA")
    p.add_argument("--chunked-loss", action="store_true",
                   help="add ours (fused) with the output projection and the loss fused chunk by chunk")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here (after every case)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.tokens, args.rounds, args.warmup, args.backend = 64, 1, 1, "eager"
    args.lengths = args.lengths or ([16, 32] if args.dry_run else [128, 512])
    return args


def write_json(path: Path | None, rows: list[dict]) -> None:
    if path is not None:  # atomically: a reader never sees half a file
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    cases: list[Case] = []
    torch.set_num_threads(args.threads)  # the CPU case (and a dry run)
    if not args.gpu_only and not args.dry_run:
        cases.append(cpu_case(args))
    if args.dry_run:
        print("dry run: the GPU cases' code path with a tiny config on the CPU (timings mean nothing)")
        cases += gpu_cases(args, "cpu")
    elif args.cpu_only:
        pass
    elif torch.cuda.is_available():
        cases += gpu_cases(args, "cuda")
    else:
        print("CUDA is not available: GPU cases (paper base, bf16, lengths 128 and 512) skipped")
    rows: list[dict] = []
    for case in cases:
        c = case.config
        print(f"{case.name}: d_model {c.d_model}, {c.n_layers}+{c.n_layers} layers, {c.n_heads} heads, d_ff {c.d_ff}, "
              f"vocab {c.tgt_vocab_size}, batch {case.batch} x length {case.length}, {case.device}"
              f"{', bf16 autocast' if case.bf16 else ''}, {count_parameters(Transformer(c)):,} parameters (ours)")
        gpu_path = case.device.startswith("cuda") or args.dry_run
        options = Options(args.compile and gpu_path, args.backend, args.fused_adam, args.chunked_loss and gpu_path)
        if (args.compile or args.chunked_loss) and not gpu_path:
            print("  torch.compile and chunked-loss variants: GPU cases (and dry runs) only, skipped here")
        min_run_time = args.min_run_time if args.min_run_time is not None else (0.5 if case.device != "cpu" else 0.0)
        rows += time_case(case, args.warmup, args.rounds, min_run_time, options, args.threads)
        write_json(args.json, rows)
    print(f"\ntorch {torch.__version__}; medians of {args.rounds} interleaved rounds (torch.utils.benchmark) "
          "(vs nn.Transformer: ratio of the medians; per-round ratio: median of each round's ratio); "
          "MFU against the dense bf16 peak (CPU: achieved FLOP/s only)\n")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
