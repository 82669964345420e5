"""Chapter 07 · Training: batches, label smoothing, the warmup schedule, the loop, the command line.

``python -m course_lib.training --out course_lib/data/translator_en_ko.pt --seed 0`` trains the chapter's
model on ``corpus.make_splits(seed)`` and writes the checkpoint that ships with the course. It runs
unchanged under ``torchrun --nproc_per_node=N -m course_lib.training ...`` (DistributedDataParallel).
"""
from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .attention import padding_mask
from .checkpoint import average_state_dicts, save_checkpoint, weights_fingerprint
# Transitional, not part of training's API: notebooks 07/08 and tests/test_training.py still import these
# from here. Remove this line once they import them from course_lib.checkpoint.
from .checkpoint import PRETRAINED_PATH, Checkpoint, CheckpointError, load_checkpoint, load_pretrained  # noqa: F401
from .corpus import make_splits, pair_text
from .model import Transformer, TransformerConfig, inference
from .tokens import Tokenize, Vocab, word_tokenize

__all__ = ["build_vocabs", "encode_pairs", "Batch", "make_batches", "label_smoothing_loss",
           "noam_lr", "make_optimizer", "TrainConfig", "default_device", "train", "evaluate_loss",
           "chapter07_config", "chapter07_pairs", "NOTE_REPEATS", "CHAPTER07_TRAIN", "main"]


# --- data -------------------------------------------------------------------------------------

def build_vocabs(pairs: Sequence, min_freq: int = 1, tokenize: Tokenize = word_tokenize) -> tuple[Vocab, Vocab]:
    """Source (English) and target (Korean) vocabularies of the tokenized pairs."""
    sides = [pair_text(p) for p in pairs]
    return (Vocab.build((tokenize(en) for en, _ in sides), min_freq),
            Vocab.build((tokenize(ko) for _, ko in sides), min_freq))


def encode_pairs(pairs: Sequence, src_vocab: Vocab, tgt_vocab: Vocab,
                 tokenize: Tokenize = word_tokenize) -> list[tuple[list[int], list[int]]]:
    """Each pair as (source ids, target ids), without <bos>/<eos> (``make_batches`` adds them)."""
    return [(src_vocab.encode(tokenize(en)), tgt_vocab.encode(tokenize(ko))) for en, ko in map(pair_text, pairs)]


@dataclass
class Batch:
    """One padded batch. ``tgt_in`` = <bos> + tokens is what the decoder reads; ``tgt_out`` = tokens
    + <eos> is what it must predict, one position ahead (teacher forcing).

    Shape:
        src (B, S) long, src_mask (B, 1, S) bool (True = real token), tgt_in and tgt_out (B, T) long
    """

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    src_mask: Tensor
    n_tokens: int  # non-pad target tokens: what the loss averages over

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device) for t in (self.src, self.tgt_in, self.tgt_out, self.src_mask)), self.n_tokens)


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int = 0) -> Batch:
    """Pad (source ids, target ids) examples into one ``Batch`` (adding <bos> and <eos> to the target)."""
    if not examples or any(len(src) == 0 for src, _ in examples):
        raise ValueError("collate needs (source ids, target ids) examples, at least one, none with an empty source")
    S, T = max(len(s) for s, _ in examples), max(len(t) for _, t in examples) + 1
    src = torch.full((len(examples), S), pad_id, dtype=torch.long)  # (B, S)
    tgt_in = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    tgt_out = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    for b, (s, t) in enumerate(examples):
        src[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[b, :len(t) + 1] = torch.tensor([Vocab.bos_id, *t], dtype=torch.long)
        tgt_out[b, :len(t) + 1] = torch.tensor([*t, Vocab.eos_id], dtype=torch.long)
    src_mask = padding_mask(src, pad_id)  # (B, 1, S)
    return Batch(src, tgt_in, tgt_out, src_mask, int((tgt_out != pad_id).sum()))


def make_batches(examples: Sequence[tuple[list[int], list[int]]], batch_size: int = 64, shuffle: bool = True,
                 seed: int = 0, pad_id: int = 0, pool: int = 50) -> list[Batch]:
    """Batches of sentences of similar length (little padding): sort by length inside pools of
    ``pool * batch_size`` examples, cut into batches, then shuffle the batches (if ``shuffle``).
    Without ``shuffle`` the examples keep their order apart from the sort inside each pool."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rng, order = random.Random(seed), list(range(len(examples)))
    if shuffle:
        rng.shuffle(order)
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = sorted(order[start:start + pool * batch_size], key=lambda i: (len(examples[i][0]), len(examples[i][1])))
        batches += [collate([examples[i] for i in chunk[k:k + batch_size]], pad_id)
                    for k in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


# --- loss and learning rate -------------------------------------------------------------------

def label_smoothing_loss(logits: Tensor, target: Tensor, epsilon: float = 0.1, ignore_index: int = 0) -> Tensor:
    """Cross-entropy against a smoothed target: 1 - epsilon on the right token plus epsilon spread
    evenly over all V tokens (the definition of ``F.cross_entropy(label_smoothing=epsilon)``).
    The mean is over the positions whose target is not ``ignore_index``.

    Shape:
        logits (..., V) float, target (...) long -> scalar
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits (..., V) and target (...) must agree: got {tuple(logits.shape)} and {tuple(target.shape)}")
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon!r}")
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))  # (..., V)
    keep = target != ignore_index  # (...)
    safe = target.masked_fill(~keep, 0)  # (...) any valid id where ignored; zeroed below
    nll = -log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (...) -log p(right token)
    uniform = -log_probs.mean(dim=-1)  # (...) cross-entropy with the uniform distribution
    per_token = (1.0 - epsilon) * nll + epsilon * uniform  # (...)
    return (per_token * keep).sum() / keep.sum().clamp(min=1)


def noam_lr(step: int, d_model: int, warmup: int = 4000, factor: float = 1.0) -> float:
    """The paper's schedule: factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step from 1.

    It rises linearly for ``warmup`` steps, peaks at ``factor / sqrt(d_model * warmup)``, then
    decays as 1/sqrt(step)."""
    if step < 1:
        raise ValueError(f"steps are counted from 1, got step={step}")
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def make_optimizer(model: nn.Module, d_model: int, warmup: int = 4000, factor: float = 1.0):
    """Adam with the paper's betas (0.9, 0.98) and eps 1e-9; the scheduler sets lr = ``noam_lr`` of step 1, 2, ..."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: noam_lr(i + 1, d_model, warmup, factor))
    return optimizer, schedule


# --- the training loop ------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``max_seconds`` / ``max_steps`` stop early (a safety limit), ``device="auto"`` picks
    CUDA when present, ``average_last=N`` ends with the mean of the weights of the last N epochs (the
    paper averaged its last 5 checkpoints: it smooths out the noise of the last steps)."""

    epochs: int = 10
    batch_size: int = 64
    warmup: int = 400
    lr_factor: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"
    max_seconds: float | None = None
    max_steps: int | None = None
    average_last: int = 1


def default_device() -> torch.device:
    """CUDA when a GPU is available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _distributed() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless running under torch.distributed."""
    dist = torch.distributed
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _stop_everywhere(stop: bool, world: int, device: torch.device) -> bool:
    """Every replica stops at the same step (a time limit seen by one is applied by all)."""
    if world == 1:
        return stop
    flag = torch.tensor([float(stop)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def train(model: Transformer, train_batches: list[Batch], valid_batches: list[Batch] | None,
          config: TrainConfig, progress: bool = True, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``model`` in place; returns the history: loss and lr per step, valid loss per epoch, speed.

    ``on_epoch(epoch, history)``, if given, runs after every epoch (e.g. to print a sample translation).
    Dropout and the batch order are seeded with ``config.seed``: the same call gives the same model.

    Under torch.distributed (e.g. torchrun) the model is wrapped in DistributedDataParallel and
    each rank takes every world-th batch of one shared shuffled order.
    """
    rank, world = _distributed()
    device = default_device() if config.device == "auto" else torch.device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    model.to(device).train()
    torch.manual_seed(config.seed + rank)  # dropout: explicit and reproducible
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, schedule = make_optimizer(model, model.config.d_model, config.warmup, config.lr_factor)
    per_rank = len(train_batches) // world
    if per_rank == 0:
        raise ValueError(f"{len(train_batches)} training batches cannot be shared by {world} processes")
    history: dict = {"loss": [], "lr": [], "valid_loss": [], "epochs": 0, "steps": 0, "tokens": 0, "world_size": world}
    bar = tqdm(total=config.epochs * per_rank, disable=not progress or rank != 0, desc="training", mininterval=0.5)
    rng, start, stop, snapshots = random.Random(config.seed), time.perf_counter(), False, []
    for epoch in range(config.epochs):
        order = list(range(len(train_batches)))
        rng.shuffle(order)  # the same order on every rank (same seed): rank r takes every world-th batch
        for i in order[:per_rank * world][rank::world]:
            batch = train_batches[i].to(device)
            logits = net(batch.src, batch.tgt_in, batch.src_mask)  # (B, T, V)
            loss = label_smoothing_loss(logits, batch.tgt_out, config.label_smoothing, model.config.pad_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            history["lr"].append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
            history["loss"].append(loss.item())
            history["steps"], history["tokens"] = history["steps"] + 1, history["tokens"] + batch.n_tokens * world
            seconds = time.perf_counter() - start
            bar.update()
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", tok_s=f"{history['tokens'] / seconds:,.0f}", refresh=False)
            stop = _stop_everywhere((config.max_seconds is not None and seconds >= config.max_seconds)
                                    or (config.max_steps is not None and history["steps"] >= config.max_steps), world, device)
            if stop:
                break
        history["epochs"] = epoch + 1
        if valid_batches:
            history["valid_loss"].append(evaluate_loss(model, valid_batches))
        if on_epoch is not None:
            on_epoch(epoch + 1, history)
        if config.average_last > 1:  # keep the weights of the last few epochs
            snapshots = [*snapshots[1 - config.average_last:], {k: v.clone() for k, v in model.state_dict().items()}]
        model.train()
        if stop:
            break
    if len(snapshots) > 1:
        model.load_state_dict(average_state_dicts(snapshots))
    history["averaged_epochs"] = max(1, len(snapshots))
    bar.close()
    history["seconds"] = time.perf_counter() - start
    history["tokens_per_s"] = history["tokens"] / max(history["seconds"], 1e-9)
    model.eval()
    return history


@torch.no_grad()
def evaluate_loss(model: Transformer, batches: list[Batch], epsilon: float = 0.0) -> float:
    """Mean loss per target token over ``batches`` in eval mode (``epsilon=0``: plain cross-entropy).
    The model's mode (train or eval) is restored afterwards."""
    if not batches:
        raise ValueError("evaluate_loss needs at least one batch (an empty list has no loss; 0.0 would look perfect)")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with inference(model):  # eval mode (no dropout), no gradients
        for batch in batches:
            batch = batch.to(device)
            logits = model(batch.src, batch.tgt_in, batch.src_mask)  # (B, T, V)
            total += label_smoothing_loss(logits, batch.tgt_out, epsilon, model.config.pad_id).item() * batch.n_tokens
            count += batch.n_tokens
    return total / max(count, 1)


# --- the chapter's model and the command line -------------------------------------------------

def chapter07_config(src_vocab_size: int, tgt_vocab_size: int) -> TransformerConfig:
    """The translator chapter 07 trains: the paper's architecture scaled down for a CPU, and no dropout (on
    this small, regular corpus it changed no score, and its random masks cost a third of a CPU step)."""
    return TransformerConfig(src_vocab_size, tgt_vocab_size, d_model=128, n_heads=4, d_ff=512, n_layers=2,
                             dropout=0.0, max_len=128)


NOTE_REPEATS = 4


def chapter07_pairs(train_pairs: Sequence, note_repeats: int = NOTE_REPEATS) -> list:
    """The chapter's training pairs: the train split plus ``note_repeats`` more copies of the note's sentences.

    Some Korean words of the note's sentences (고양이가, 마음을) occur in no other pair: seen once an
    epoch, such a word is learned late and forgotten again. Repeating the seven sentences makes them stick.
    """
    return list(train_pairs) + [p for p in train_pairs if getattr(p, "construction", "") == "note"] * note_repeats


CHAPTER07_TRAIN = TrainConfig(epochs=8, batch_size=128, warmup=400, lr_factor=1.0, label_smoothing=0.1, seed=0,
                              max_seconds=170.0, average_last=3)


def _init_distributed() -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _distributed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where to write the checkpoint (.pt)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the corpus splits, the weights and the batch order")
    parser.add_argument("--epochs", type=int, default=CHAPTER07_TRAIN.epochs)
    parser.add_argument("--batch-size", type=int, default=CHAPTER07_TRAIN.batch_size)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop early after this long (not reproducible)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--note-repeats", type=int, default=NOTE_REPEATS, help="extra copies of the note's sentences")
    parser.add_argument("--tiny", action="store_true", help="TransformerConfig.tiny sizes (for quick tests)")
    parser.add_argument("--float32", action="store_true", help="store float32 weights (default: float16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    rank, world = _init_distributed()
    torch.manual_seed(args.seed)
    splits = make_splits(args.seed)
    src_vocab, tgt_vocab = build_vocabs(splits.train)
    train_pairs = chapter07_pairs(splits.train, args.note_repeats)
    train_batches = make_batches(encode_pairs(train_pairs, src_vocab, tgt_vocab), args.batch_size, seed=args.seed)
    valid_batches = make_batches(encode_pairs(splits.valid, src_vocab, tgt_vocab), 256, shuffle=False)
    build = TransformerConfig.tiny if args.tiny else chapter07_config
    model = Transformer(build(len(src_vocab), len(tgt_vocab)))
    config = replace(CHAPTER07_TRAIN, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     max_seconds=args.max_seconds, max_steps=args.max_steps)
    history = train(model, train_batches, valid_batches, config, progress=not args.quiet)
    prints = [weights_fingerprint(model)] * world
    if world > 1:
        torch.distributed.all_gather_object(prints, prints[0])
    if rank == 0:
        meta = {"seed": args.seed, "train_config": asdict(config), "note_repeats": args.note_repeats, "world_size": world,
                "torch": torch.__version__, "replica_sha256": prints, "valid_loss": history["valid_loss"],
                **{k: round(history[k], 1) for k in ("steps", "epochs", "seconds", "tokens_per_s")}}
        save_checkpoint(args.out, model, src_vocab, tgt_vocab, meta, half=not args.float32)
        print(f"wrote {args.out}: {history['steps']} steps in {history['seconds']:.0f} s on {world} process(es)")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
