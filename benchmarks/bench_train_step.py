"""Time one training step of our encoder-decoder against ``nn.Transformer`` (same config, same process).

Both models get the same embeddings, output layer, weights (ours is copied from PyTorch's with
``Encoder.from_torch`` / ``Decoder.from_torch``), inputs and masks; each step is
forward + cross-entropy + backward + Adam. After a warm-up the two steps are timed alternately with
``torch.utils.benchmark`` (``benchmarks/timing.py``: the order flips every round, so a noisy neighbour
hurts both alike) and the script prints the median step time of each and the ratio ours / PyTorch.
Not a test: timings depend on the machine.

    python benchmarks/bench_train_step.py                 # d_model 256, 3+3 layers, batch 64, length 32, 2 threads
    python benchmarks/bench_train_step.py --steps 30 --threads 4 --norm-first

Note: ``nn.Transformer`` always ends its encoder and decoder with a LayerNorm (even post-LN), so
ours is built with ``final_norm=True`` here to do the same work.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo's course_lib
sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py
from timing import compare_table, interleaved, ratios  # noqa: E402

from course_lib.decoder import Decoder  # noqa: E402
from course_lib.encoder import Encoder  # noqa: E402
from course_lib.multihead import MultiHeadAttention  # noqa: E402

PAD = 0


class Seq2Seq(nn.Module):
    """Embeddings + (our or PyTorch's) encoder-decoder + output layer; masks built per convention."""

    def __init__(self, body: nn.Module | tuple[nn.Module, nn.Module], vocab: int, d_model: int) -> None:
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(vocab, d_model), nn.Embedding(vocab, d_model)
        self.out = nn.Linear(d_model, vocab)
        self.torch_body = body if isinstance(body, nn.Transformer) else None
        if self.torch_body is None:
            self.encoder, self.decoder = body

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        src_real, tgt_real = src != PAD, tgt != PAD  # (B, S), (B, T) True = real token
        T = tgt.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt.device).tril()  # (T, T) True = may attend
        s, t = self.src_emb(src), self.tgt_emb(tgt)  # (B, S, D), (B, T, D)
        if self.torch_body is not None:  # PyTorch's convention: True = blocked / padding
            h = self.torch_body(s, t, tgt_mask=~causal, src_key_padding_mask=~src_real,
                                tgt_key_padding_mask=~tgt_real, memory_key_padding_mask=~src_real, tgt_is_causal=True)
        else:  # ours: True = may attend
            src_mask = src_real[:, None, :]  # (B, 1, S)
            tgt_mask = causal & tgt_real[:, None, :]  # (B, T, T)
            h = self.decoder(t, self.encoder(s, src_mask), tgt_mask, src_mask)  # (B, T, D)
        return self.out(h)  # (B, T, V)


def make_batch(batch: int, length: int, vocab: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random token ids with random lengths (right-padded with PAD); targets are tgt shifted by one."""
    def ids() -> torch.Tensor:
        x = torch.randint(1, vocab, (batch, length + 1), generator=gen)
        lengths = torch.randint(length // 2, length + 2, (batch,), generator=gen)
        return x.masked_fill(torch.arange(length + 1) >= lengths[:, None], PAD)
    src, tgt = ids()[:, :length], ids()
    return src, tgt[:, :-1], tgt[:, 1:]


def build(args: argparse.Namespace) -> tuple[Seq2Seq, Seq2Seq]:
    torch.manual_seed(args.seed)
    theirs = nn.Transformer(args.d_model, args.heads, args.layers, args.layers, args.d_ff, args.dropout,
                            batch_first=True, norm_first=args.norm_first)
    body = (Encoder.from_torch(theirs.encoder), Decoder.from_torch(theirs.decoder))
    ours_model, torch_model = Seq2Seq(body, args.vocab, args.d_model), Seq2Seq(theirs, args.vocab, args.d_model)
    for name in ("src_emb", "tgt_emb", "out"):
        getattr(ours_model, name).load_state_dict(getattr(torch_model, name).state_dict())  # same embeddings, output
    return ours_model, torch_model


def loss_of(model: Seq2Seq, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    src, tgt_in, tgt_out = batch
    logits = model(src, tgt_in)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)


def make_step(model: Seq2Seq, lr: float):
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(batch: tuple[torch.Tensor, ...]) -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, batch)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def same_loss(ours: Seq2Seq, theirs: Seq2Seq, batch: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    """Loss of both models on one batch with dropout off (train mode, so PyTorch takes its plain path)."""
    # nn.Dropout keeps its rate in .p; both attention modules keep a float in .dropout
    modules = list(ours.modules()) + list(theirs.modules())
    drops = [(m, "p") for m in modules if isinstance(m, nn.Dropout)]
    drops += [(m, "dropout") for m in modules if isinstance(m, (nn.MultiheadAttention, MultiHeadAttention))]
    saved = [getattr(m, attr) for m, attr in drops]
    for m, attr in drops:
        setattr(m, attr, 0.0)
    with torch.no_grad():
        a, b = loss_of(ours, batch).item(), loss_of(theirs, batch).item()
    for (m, attr), value in zip(drops, saved):
        setattr(m, attr, value)
    return a, b


def cycling(step, batches: list[tuple[torch.Tensor, ...]]):
    """A no-argument call of ``step`` (what ``Timer`` times) that takes the next batch each time, in a cycle."""
    it = itertools.cycle(batches)
    return lambda: step(next(it))


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="interleaved rounds (median reported)")
    p.add_argument("--min-run-time", type=float, default=0.0,
                   help="seconds each model is timed per round (Timer.blocked_autorange; "
                        "0: one warm-up and one timed step)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--layers", type=int, default=3, help="encoder layers = decoder layers")
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=32, help="source and target length")
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--norm-first", action="store_true", help="pre-LN layers (default: post-LN, the paper)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    ours, theirs = build(args)
    ours.train(), theirs.train()
    gen = torch.Generator().manual_seed(args.seed)
    batches = [make_batch(args.batch, args.length, args.vocab, gen) for _ in range(4)]
    a, b = same_loss(ours, theirs, batches[0])
    print(f"same weights, dropout off: loss ours {a:.6f}, PyTorch {b:.6f} (|diff| {abs(a - b):.1e})")

    steps = {"ours": make_step(ours, args.lr), "pytorch": make_step(theirs, args.lr)}
    # each model cycles through the same batches, one per call
    calls = {name: cycling(step, batches) for name, step in steps.items()}
    for _ in range(args.warmup):
        for call in calls.values():
            call()
    timings = interleaved(calls, args.steps, args.min_run_time, args.threads, label="training step",
                          sub_label=f"d{args.d_model} {args.layers}+{args.layers} B{args.batch} L{args.length}")
    print(f"config: d_model {args.d_model}, {args.layers}+{args.layers} layers, {args.heads} heads, d_ff {args.d_ff}, "
          f"dropout {args.dropout}, batch {args.batch}, length {args.length}, vocab {args.vocab}, "
          f"{'pre' if args.norm_first else 'post'}-LN, {args.threads} threads, torch {torch.__version__}")
    print(compare_table(timings))
    for name, t in timings.items():
        print(f"{name:8s} median {t.median * 1e3:8.1f} ms/step  (min {min(t.rounds) * 1e3:.1f}, "
              f"max {max(t.rounds) * 1e3:.1f}, {args.steps} rounds)")
    ratio, paired = ratios(timings, "pytorch")["ours"]  # paired: median of per-round ratios, robust to drifts in load
    print(f"ratio ours / PyTorch: {ratio:.3f}x (ratio of the medians); median of per-round ratios {paired:.3f}x")
    return ratio


if __name__ == "__main__":
    main()
