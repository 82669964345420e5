"""Chapter 07 · Training: the loop and the command line (batches come from ``batches``, the loss and the
schedule from ``objective``; this module re-exports both, so ``training.make_batches`` etc. keep working).

``python -m course_lib.training --out course_lib/data/translator_en_ko.pt --seed 0 --threads 1 --epochs 8`` trains the
chapter's model on ``corpus.make_splits(seed)`` (with ``UNK_DROPOUT`` of the source words as ``<unk>``) and writes the
checkpoint that ships with the course. It runs unchanged under
``torchrun --nproc_per_node=N -m course_lib.training ...`` (DistributedDataParallel).
Its options are checked before anything runs (one-line errors); Ctrl-C saves the progress to
``OUT.progress.pt`` (a second Ctrl-C during that save is held until the file is whole) and ``--resume``
continues it to the same weights as an uninterrupted run.
``--config paper_base --bf16`` trains the paper's base model on the course corpus (one shared vocabulary) in
bf16 autocast on a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from . import set_threads
from .batches import Batch, build_vocabs, collate, encode_pairs, make_batches, unk_dropout  # re-exported
from .checkpoint import CheckpointError, average_state_dicts, save_checkpoint, weights_fingerprint
from .corpus import make_splits, pair_text
from .files import hold_ctrl_c
from .model import Transformer, TransformerConfig, inference
from .objective import TrainConfig, cooled_lr, label_smoothing_loss, make_optimizer, noam_lr
from .progress import (
    OneLineParser,
    StopOnCtrlC,
    TrainingInterrupted,
    load_progress,
    number,
    output_file,
    progress_path,
    save_progress,
    unwritable,
)
from .tokens import Tokenize, Vocab, word_tokenize

__all__ = ["build_vocabs", "encode_pairs", "unk_dropout", "Batch", "make_batches", "label_smoothing_loss",
           "noam_lr", "cooled_lr", "make_optimizer", "TrainConfig", "TrainingError", "TrainingInterrupted", "default_device",
           "train",
           "evaluate_loss", "progress_path", "build_parser", "parse_args",
           "MODEL_CONFIGS", "shared_vocab", "model_config", "autocast_context",
           "chapter07_config", "chapter07_pairs", "NOTE_REPEATS", "UNK_DROPOUT", "CHAPTER07_TRAIN", "SHIPPED_EPOCHS", "main",
           "collate"]


# --- the training loop ------------------------------------------------------------------------

class TrainingError(RuntimeError):
    """Training cannot go on (the loss stopped being finite, the batches do not fit the model, ...)."""


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


def _check_batches(model: Transformer, batches: list[Batch], which: str) -> None:
    """Every id of every batch fits the model's vocabularies (a named error now, not an index error mid-run)."""
    c = model.config
    for n, batch in enumerate(batches):
        for name, ids, size in (("source", batch.src, c.src_vocab_size), ("target", batch.tgt_in, c.tgt_vocab_size),
                                ("target", batch.tgt_out, c.tgt_vocab_size)):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise TrainingError(f"{which} batch {n} has {name} ids from {int(ids.min())} to {int(ids.max())}, but the "
                                    f"model's {name} vocabulary has {size} tokens (ids 0..{size - 1}): build the model "
                                    f"with the vocabularies that encoded the batches")


def _train_device(config: TrainConfig, rank: int, world: int) -> torch.device:
    """Where this process trains: ``config.device`` ("auto": CUDA when present), this rank's GPU under torchrun."""
    device = default_device() if config.device == "auto" else torch.device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    return device


def _restore(resume: dict, model: Transformer, optimizer: torch.optim.Optimizer,
             schedule: torch.optim.lr_scheduler.LRScheduler, rng: random.Random) -> tuple:
    """Put a run's saved progress back (weights, Adam, schedule, random states); returns the loop's state:
    (history, snapshots, stop, epoch, (order, position))."""
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    schedule.load_state_dict(resume["schedule"])
    torch.set_rng_state(resume["torch_rng"])
    rng.setstate((resume["rng"][0], tuple(resume["rng"][1]), resume["rng"][2]))
    return resume["history"], resume["snapshots"], resume["stop"], resume["epoch"], (resume["order"], resume["position"])


def _one_step(net: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer,
              schedule: torch.optim.lr_scheduler.LRScheduler, epsilon: float, pad_id: int, history: dict, epoch: int) -> None:
    """Forward, loss, backward and one optimizer step; the loss and learning rate go into ``history``."""
    logits = net(batch.src, batch.tgt_in, batch.src_mask)  # (B, T, V)
    loss = label_smoothing_loss(logits, batch.tgt_out, epsilon, pad_id)
    lr = optimizer.param_groups[0]["lr"]
    if not torch.isfinite(loss):
        raise TrainingError(f"the loss became {loss.item()} at step {history['steps'] + 1} (epoch {epoch + 1}, "
                            f"learning rate {lr:.3g}): stopped before the weights turn NaN; lower lr_factor, "
                            "raise warmup, or look for a broken batch")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    history["lr"].append(lr)
    optimizer.step()
    schedule.step()
    history["loss"].append(loss.item())


def train(model: Transformer, train_batches: list[Batch], valid_batches: list[Batch] | None,
          config: TrainConfig, progress: bool = True, on_epoch: Callable[[int, dict], None] | None = None,
          resume: dict | None = None, interruptible: bool = False) -> dict:
    """Train ``model`` in place; returns the history: loss and lr per step, valid loss per epoch, speed.

    ``on_epoch(epoch, history)``, if given, runs after every epoch (e.g. to print a sample translation).
    Dropout and the batch order are seeded with ``config.seed``: the same call gives the same model.
    A loss that is not finite stops training with ``TrainingError`` naming the step.

    ``interruptible=True`` (one process): Ctrl-C stops after the current step and raises
    ``TrainingInterrupted``, whose ``progress`` passed back as ``resume=`` (same model as built, same
    batches and config) continues the run: weights, Adam moments, schedule, random states and the
    position in the epoch are restored, so the result equals an uninterrupted run's.

    Under torch.distributed (e.g. torchrun) the model is wrapped in DistributedDataParallel and
    each rank takes every world-th batch of one shared shuffled order.
    """
    rank, world = _distributed()
    device = _train_device(config, rank, world)
    if resume is not None and world > 1:
        raise TrainingError("resuming is supported in one process only (not under torchrun)")
    _check_batches(model, train_batches, "training")
    _check_batches(model, valid_batches or [], "validation")
    model.to(device).train()
    torch.manual_seed(config.seed + rank)  # dropout: explicit and reproducible
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    per_rank = len(train_batches) // world
    if per_rank == 0:
        raise ValueError(f"{len(train_batches)} training batches cannot be shared by {world} processes")
    planned = min(config.epochs * per_rank, config.max_steps or config.epochs * per_rank)  # where a cool-down ends
    optimizer, schedule = make_optimizer(model, model.config.d_model, config.warmup, config.lr_factor, planned, config.cooldown)
    history: dict = {"loss": [], "lr": [], "valid_loss": [], "epochs": 0, "steps": 0, "tokens": 0, "world_size": world}
    rng, stop, snapshots, first_epoch, place = random.Random(config.seed), False, [], 0, None
    if resume is not None:
        history, snapshots, stop, first_epoch, place = _restore(resume, model, optimizer, schedule, rng)
    start = time.perf_counter() - (resume["seconds"] if resume else 0.0)
    with StopOnCtrlC(interruptible and world == 1) as ctrl_c:
        bar = tqdm(total=config.epochs * per_rank, initial=history["steps"], disable=not progress or rank != 0,
                   desc="training", mininterval=0.5)
        for epoch in range(first_epoch, config.epochs):
            if place is None:
                order = list(range(len(train_batches)))
                rng.shuffle(order)  # the same order on every rank (same seed): rank r takes every world-th batch
                done = 0
            else:
                (order, done), place = place, None  # resumed inside this epoch, after `done` of its batches
            mine = order[:per_rank * world][rank::world]
            for position in range(done, len(mine)):
                if stop:
                    break
                batch = train_batches[mine[position]].to(device)
                _one_step(net, batch, optimizer, schedule, config.label_smoothing, model.config.pad_id, history, epoch)
                history["steps"], history["tokens"] = history["steps"] + 1, history["tokens"] + batch.n_tokens * world
                seconds = time.perf_counter() - start
                bar.update()
                bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", tok_s=f"{history['tokens'] / seconds:,.0f}", refresh=False)
                stop = _stop_everywhere((config.max_seconds is not None and seconds >= config.max_seconds)
                                        or (config.max_steps is not None and history["steps"] >= config.max_steps), world, device)
                if ctrl_c.pressed:
                    bar.close()
                    raise TrainingInterrupted(copy.deepcopy({
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                        "torch_rng": torch.get_rng_state(), "rng": [*rng.getstate()[:1], list(rng.getstate()[1]), None],
                        "history": history, "snapshots": snapshots, "stop": stop, "epoch": epoch, "order": order,
                        "position": position + 1, "seconds": seconds}))
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


UNK_DROPOUT = 0.05
"""Share of training source words the chapter replaces by ``<unk>`` (``unk_dropout``). ``<unk>`` never occurs in the
training source otherwise, so its embedding row would stay as initialised and an unknown word would derail the whole
sentence (chapter 10 measures it): with 5 % of the words dropped the model learns to translate around the gap."""


CHAPTER07_TRAIN = TrainConfig(epochs=4, batch_size=64, warmup=300, lr_factor=1.0, label_smoothing=0.1, seed=0,
                              max_seconds=180.0, average_last=2)
"""Chapter 07's recipe, measured by ``benchmarks/ch07_recipe.py`` (its table is in benchmarks/README.md): 4 epochs of
batches of 64 (twice the updates per epoch of 128, at about 60 % of the cost of a step) reach test BLEU 98.6 on one
thread for about half the CPU work of the recipe before (8 epochs of 128); on 2 idle cores it trains in 43 s. The
shipped checkpoint is the same recipe trained twice as long (``SHIPPED_EPOCHS``)."""

SHIPPED_EPOCHS = 8
"""``--epochs`` of the command that made the shipped checkpoint (docs/translator.md): twice the chapter's 4, so that the
model learners may switch to is the better one (test BLEU 99.43 against 98.6)."""


# --- the command line's model sizes and precision (--config, --bf16) -------------------------------

MODEL_CONFIGS = ("chapter07", "tiny", "paper_base")


def shared_vocab(pairs: Sequence, min_freq: int = 1, tokenize: Tokenize = word_tokenize) -> Vocab:
    """One vocabulary for both languages, as the paper's (shared source-target vocabulary, tied embeddings)."""
    return Vocab.build((tokenize(text) for pair in pairs for text in pair_text(pair)), min_freq)


def model_config(name: str, src_vocab_size: int, tgt_vocab_size: int) -> TransformerConfig:
    """The model ``--config`` names: ``chapter07`` (the chapter's), ``tiny`` (tests) or ``paper_base``
    (the paper's base model: 6+6 layers, d_model 512, shared vocabulary, tied embeddings)."""
    if name == "paper_base":
        if src_vocab_size != tgt_vocab_size:
            raise ValueError(f"paper_base shares one vocabulary between source and target; got sizes {src_vocab_size} "
                             f"and {tgt_vocab_size} (build one with shared_vocab)")
        return TransformerConfig.paper_base(src_vocab_size)
    builders = {"chapter07": chapter07_config, "tiny": TransformerConfig.tiny}
    if name not in builders:
        raise ValueError(f"unknown model config {name!r}; expected one of {', '.join(MODEL_CONFIGS)}")
    return builders[name](src_vocab_size, tgt_vocab_size)


def autocast_context(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type when ``bf16`` (weights and Adam state stay float32), else nothing."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _init_distributed() -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _distributed()


PROG = "python -m course_lib.training"
MAX_SEED = 2**32 - 1  # the range every seeded generator here accepts (torch, random, numpy)
MAX_NOTE_REPEATS = 1000  # 7 sentences x 1000: already far more than the corpus itself
MAX_THREADS = 512  # torch's thread pool fails far above any real core count
# a resumed run repeats these
RUN_KEYS = ("seed", "epochs", "batch_size", "max_steps", "note_repeats", "unk_dropout", "tiny", "config", "bf16")


def build_parser() -> argparse.ArgumentParser:
    """Every option of the training command (each checked as it is parsed)."""
    positive = number(int, 1, "an integer >= 1")
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=output_file, help="where to write the checkpoint (.pt)")
    parser.add_argument("--seed", type=number(int, 0, f"an integer in 0..{MAX_SEED}", MAX_SEED), default=0,
                        help="seeds the corpus splits, the weights and the batch order")
    parser.add_argument("--epochs", type=positive, default=CHAPTER07_TRAIN.epochs)
    parser.add_argument("--batch-size", type=positive, default=CHAPTER07_TRAIN.batch_size)
    parser.add_argument("--max-seconds", type=number(float, 1e-9, "a number of seconds > 0"), default=None,
                        help="stop early after this long (not reproducible)")
    parser.add_argument("--max-steps", type=positive, default=None)
    parser.add_argument("--note-repeats", type=number(int, 0, f"an integer in 0..{MAX_NOTE_REPEATS}", MAX_NOTE_REPEATS),
                        default=NOTE_REPEATS, help="extra copies of the note's sentences")
    parser.add_argument("--unk-dropout", type=number(float, 0.0, "a probability in [0, 1]", high=1.0),
                        default=UNK_DROPOUT, help="share of training source words replaced by <unk> (0 turns it off)")
    parser.add_argument("--tiny", action="store_true", help="TransformerConfig.tiny sizes (for quick tests; = --config tiny)")
    parser.add_argument("--config", choices=MODEL_CONFIGS, default="chapter07",
                        help="model size: the chapter's, tiny, or the paper's base model with one shared vocabulary")
    parser.add_argument("--bf16", action="store_true", help="train in bf16 autocast (needs a CUDA GPU)")
    parser.add_argument("--float32", action="store_true", help="store float32 weights (default: float16)")
    parser.add_argument("--threads", type=number(int, 1, f"an integer in 1..{MAX_THREADS}", MAX_THREADS), default=None,
                        help="CPU threads (default: the course's policy, set_threads('training'): one per free physical "
                             "core, up to 8); the result's last bits depend on it, so the shipped run fixes it at 1")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run that Ctrl-C stopped, from OUT.progress.pt (same options)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's options, checked before anything runs: a bad one exits with a one-line error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bf16 and not torch.cuda.is_available():
        parser.error("--bf16 needs a CUDA GPU (on a CPU bf16 autocast is slower than float32); drop --bf16")
    if args.tiny and args.config != "chapter07":
        parser.error(f"--tiny and --config {args.config} name two model sizes; give one")
    problem = unwritable(args.out)
    saved = progress_path(args.out) if problem is None else args.out
    if problem is None and args.resume and not saved.is_file():
        problem = f"--resume: no interrupted run to continue ({saved} does not exist)"
    if problem is None and not args.resume and saved.exists():
        problem = f"{saved} holds an interrupted run: add --resume to continue it, or delete it to start over"
    if problem:
        parser.error(problem)
    return args


def _train_and_save(args: argparse.Namespace) -> int:
    rank, world = _init_distributed()
    if args.threads is None:
        set_threads("training")  # one thread when other programs keep the cores busy (a second would wait)
    else:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    splits = make_splits(args.seed)
    name = "tiny" if args.tiny else args.config
    src_vocab, tgt_vocab = ((shared_vocab(splits.train),) * 2 if name == "paper_base" else build_vocabs(splits.train))
    train_pairs = chapter07_pairs(splits.train, args.note_repeats)
    train_examples = unk_dropout(encode_pairs(train_pairs, src_vocab, tgt_vocab), args.unk_dropout, seed=args.seed)
    train_batches = make_batches(train_examples, args.batch_size, seed=args.seed)
    valid_batches = make_batches(encode_pairs(splits.valid, src_vocab, tgt_vocab), 256, shuffle=False)
    model = Transformer(model_config(name, len(src_vocab), len(tgt_vocab)))
    config = replace(CHAPTER07_TRAIN, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     max_seconds=args.max_seconds, max_steps=args.max_steps)
    run, saved = {k: getattr(args, k) for k in RUN_KEYS}, progress_path(args.out)
    resume = load_progress(saved, run) if args.resume else None
    if rank == 0:
        print(f"training ({'resumed at step ' + str(resume['history']['steps']) if resume else 'from step 0'}); "
              f"Ctrl-C saves the progress to {saved}", flush=True)
    try:
        with autocast_context(default_device(), args.bf16):
            history = train(model, train_batches, valid_batches, config, progress=not args.quiet, resume=resume,
                            interruptible=world == 1)
    except TrainingInterrupted as stopped:
        # a second Ctrl-C now would cut the save short: it is held (and said so) until the progress is on disk
        with hold_ctrl_c("Ctrl-C again: the progress is being saved, which ends in a moment", deliver=False):
            save_progress(saved, run, stopped.progress)
        steps = stopped.progress["history"]["steps"]
        print(f"interrupted after step {steps}: progress saved to {saved}; add --resume to the same command to "
              "continue", flush=True)
        return 130
    prints = [weights_fingerprint(model)] * world  # of the float32 weights in memory (the file stores float16)
    if world > 1:
        torch.distributed.all_gather_object(prints, prints[0])
    if rank == 0:
        meta = {"seed": args.seed, "train_config": asdict(config), "note_repeats": args.note_repeats,
                "unk_dropout": args.unk_dropout, "world_size": world, "threads": torch.get_num_threads(),
                "torch": torch.__version__, "replica_float32_sha256": prints, "valid_loss": history["valid_loss"],
                **{k: round(history[k], 1) for k in ("steps", "epochs", "seconds", "tokens_per_s")}}
        save_checkpoint(args.out, model, src_vocab, tgt_vocab, meta, half=not args.float32)
        saved.unlink(missing_ok=True)  # the run is complete: its progress file has served
        print(f"wrote {args.out}: {history['steps']} steps in {history['seconds']:.0f} s on {world} process(es)")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()  # restored afterwards: a caller in Python (a notebook, a test) keeps its own
    try:
        return _train_and_save(args)
    except (TrainingError, CheckpointError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was saved (during training, a single Ctrl-C saves the progress)", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    raise SystemExit(main())
