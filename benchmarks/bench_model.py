"""The whole model's training step: course_lib's ``Transformer`` against ``nn.Transformer``, with MFU.

Both sides are whole translation models built from one ``TransformerConfig``: the same
``TokenEmbedding`` and ``PositionalEncoding`` in front, the same (tied, when the config says so)
output projection behind; only the encoder-decoder body differs (ours, hand-written or fused,
or PyTorch's ``nn.Transformer``). Weights are not shared (only the sizes matter for speed). One
step = forward + cross-entropy + backward + Adam. Variants are timed in one process, in
interleaved rounds (the order rotates every round), and the median step time is reported.

    python benchmarks/bench_model.py              # CPU (2 threads, d_model 256, 3+3 layers, batch 64,
                                                  # length 32); plus, with CUDA, the paper's base model in
                                                  # bf16 autocast at lengths 128 and 512 (~25k tokens a batch)
    python benchmarks/bench_model.py --gpu-only --compile --fused-adam
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
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: python benchmarks/bench_model.py
from course_lib.embeddings import PositionalEncoding, TokenEmbedding  # noqa: E402
from course_lib.model import Transformer, TransformerConfig, count_parameters  # noqa: E402
from course_lib.multihead import set_fused  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s.
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


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


def build_variants(case: Case, compile_: bool, fused_adam: bool) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    """Models (and their Adam) to compare: ours hand-written, ours fused, nn.Transformer [, compiled]."""
    torch.manual_seed(0)
    variants = {
        "ours (hand-written)": Transformer(case.config),
        "ours (fused)": set_fused(Transformer(case.config), True),
        "nn.Transformer": TorchSeq2Seq(case.config),
    }
    if compile_:
        variants["ours (fused) + compile"] = torch.compile(set_fused(Transformer(case.config), True))
        variants["nn.Transformer + compile"] = torch.compile(TorchSeq2Seq(case.config))
    out = {}
    for name, model in variants.items():
        model.to(case.device).train()
        extra = {"fused": True} if fused_adam and case.device.startswith("cuda") else {}
        out[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, **extra))
    return out


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], bf16: bool) -> None:
    src, tgt_in, tgt_out = batch
    device_type = src.device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        logits = model(src, tgt_in)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(case: Case, warmup: int, rounds: int, steps: int, compile_: bool = False,
              fused_adam: bool = False) -> list[dict]:
    """Median seconds per step of every variant, timed in interleaved rounds; one result row each."""
    variants = build_variants(case, compile_, fused_adam)
    batch = make_batch(case.config, case.batch, case.length, case.device)
    memory: dict[str, float | None] = {}
    for name, (model, opt) in variants.items():  # warm-up (and compilation), one variant at a time
        if case.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for _ in range(warmup):
            train_step(model, opt, batch, case.bf16)
        _sync(case.device)
        cuda = case.device.startswith("cuda")
        memory[name] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order every round
            model, opt = variants[name]
            _sync(case.device)
            start = time.perf_counter()
            for _ in range(steps):
                train_step(model, opt, batch, case.bf16)
            _sync(case.device)
            times[name].append((time.perf_counter() - start) / steps)
    flops = model_flops(case.config, case.batch, case.length, case.length)
    device_name, peak = peak_flops(case.device)
    base, ref = statistics.median(times["nn.Transformer"]), times["nn.Transformer"]
    rows = []
    for name, t in times.items():
        med = statistics.median(t)
        per_round = statistics.median(a / b for a, b in zip(t, ref))  # steadier when the load drifts
        rows.append(dict(case=case.name, device=device_name, variant=name, ms=med * 1e3, ratio=med / base,
                         round_ratio=per_round,
                         tflops=flops / med / 1e12, mfu=None if peak is None else flops / med / peak,
                         gib=memory[name], tokens=case.batch * case.length, n=len(t)))
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| case | device | variant | ms/step | vs nn.Transformer | per-round ratio | achieved TFLOP/s | MFU "
             "| peak GiB |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        gib = "n/a" if r["gib"] is None else f"{r['gib']:.1f}"
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
    p.add_argument("--dry-run", action="store_true",
                   help="run the GPU cases' code with a tiny config on the CPU (1 round, 1 step): checks the code runs")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the CPU case")
    p.add_argument("--lengths", type=int, nargs="+", default=[128, 512], help="GPU sequence lengths")
    p.add_argument("--tokens", type=int, default=25_000, help="GPU target tokens per batch (batch = tokens // length)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--compile", action="store_true", help="add torch.compile variants (GPU cases)")
    p.add_argument("--fused-adam", action="store_true", help="Adam(fused=True) on CUDA")
    args = p.parse_args(argv)
    if args.dry_run:
        args.lengths, args.tokens, args.rounds, args.steps, args.warmup = [16, 32], 64, 1, 1, 1
    return args


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
    rows = []
    for case in cases:
        c = case.config
        print(f"{case.name}: d_model {c.d_model}, {c.n_layers}+{c.n_layers} layers, {c.n_heads} heads, d_ff {c.d_ff}, "
              f"vocab {c.tgt_vocab_size}, batch {case.batch} x length {case.length}, {case.device}"
              f"{', bf16 autocast' if case.bf16 else ''}, {count_parameters(Transformer(c)):,} parameters (ours)")
        compile_ = args.compile and case.device.startswith("cuda")
        if args.compile and not compile_:
            print("  torch.compile variants: CUDA cases only, skipped")
        rows += time_case(case, args.warmup, args.rounds, args.steps, compile_, args.fused_adam)
    print(f"\ntorch {torch.__version__}; medians of {args.rounds} interleaved rounds x {args.steps} steps "
          "(vs nn.Transformer: ratio of the medians; per-round ratio: median of each round's ratio); "
          "MFU against the dense bf16 peak (CPU: achieved FLOP/s only)\n")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
