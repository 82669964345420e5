"""Chapter 07's training recipe, measured: which settings reach the shipped model's quality fastest on a CPU.

For each recipe it trains chapter 07's translator as the chapter does (``corpus.make_splits(0)``, the note's extra
copies, 5 % word dropout, seed 0, length-bucketed batches), on ``--threads`` threads, and measures on the test
split: greedy BLEU (sacrebleu, default ``13a``; the signature is printed), exact match, and how many of the
concept note's sentences (``corpus.NOTE_EXAMPLES``, plus ``corpus.IT_EXAMPLES`` where the corpus has them) come
out exactly right. Training seconds are the loop's own wall time (``history["seconds"]``: steps, the per-epoch
validation loss and the weight averaging), measured in this one run, so compare rows with each other.

    python benchmarks/ch07_recipe.py --threads 2 --out benchmarks/results/ch07_recipe.md
    python benchmarks/ch07_recipe.py --recipes "4x64 cool" --threads 2          # some rows only

Run it on an idle machine (nothing else on the CPU): a second program on a 2-core machine doubles the times.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from course_lib import corpus, decoding, set_seed, training  # noqa: E402
from course_lib.files import atomic_write  # noqa: E402
from course_lib.model import Transformer  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    """One way to train chapter 07's model: changes to ``CHAPTER07_TRAIN`` and to ``chapter07_config``."""

    train: dict = field(default_factory=dict)  # TrainConfig fields: epochs, batch_size, warmup, lr_factor, ...
    model: dict = field(default_factory=dict)  # TransformerConfig fields: d_ff, d_model, n_heads, ...
    note_repeats: int = training.NOTE_REPEATS


RECIPES: dict[str, Recipe] = {
    # the course's recipe before this benchmark: the paper's schedule, 8 epochs of 128, the last 3 epochs averaged
    "8x128 (before)": Recipe({"epochs": 8, "batch_size": 128, "warmup": 400, "average_last": 3}),
    "4x128": Recipe({"epochs": 4, "batch_size": 128, "warmup": 400, "average_last": 2}),  # half the epochs
    "4x64": Recipe({"epochs": 4, "batch_size": 64, "warmup": 300, "average_last": 2}),  # twice the updates: the chapter's
    "3x64 cool": Recipe({"epochs": 3, "batch_size": 64, "warmup": 300, "cooldown": 0.4}),  # and a cool-down at the end
    "4x64 cool": Recipe({"epochs": 4, "batch_size": 64, "warmup": 300, "cooldown": 0.4}),
    "5x64": Recipe({"epochs": 5, "batch_size": 64, "warmup": 300, "average_last": 2}),
}


def run(name: str, recipe: Recipe, splits: corpus.Splits) -> dict:
    """Train one recipe from seed 0 and score it; returns one row of the table."""
    config = replace(training.CHAPTER07_TRAIN, max_seconds=None, **recipe.train)
    src_vocab, tgt_vocab = training.build_vocabs(splits.train)
    pairs = training.chapter07_pairs(splits.train, recipe.note_repeats)
    examples = training.unk_dropout(training.encode_pairs(pairs, src_vocab, tgt_vocab), training.UNK_DROPOUT, seed=0)
    train_batches = training.make_batches(examples, config.batch_size, seed=0)
    valid_batches = training.make_batches(training.encode_pairs(splits.valid, src_vocab, tgt_vocab), 256, shuffle=False)
    set_seed(0)
    model_config = replace(training.chapter07_config(len(src_vocab), len(tgt_vocab)), **recipe.model)
    model = Transformer(model_config)
    cpu = time.process_time()
    history = training.train(model, train_batches, valid_batches, config, progress=False)
    cpu = time.process_time() - cpu
    model.eval()
    scores = decoding.evaluate(model, splits.test, src_vocab, tgt_vocab)
    notes = list(corpus.NOTE_EXAMPLES) + list(getattr(corpus, "IT_EXAMPLES", []))
    right = sum(decoding.translate(model, en, src_vocab, tgt_vocab) == ko for en, ko in notes)
    return {"recipe": name, "seconds": history["seconds"], "cpu": cpu, "steps": history["steps"], "epochs": config.epochs,
            "batch": config.batch_size, "warmup": config.warmup, "factor": config.lr_factor, "cooldown": config.cooldown,
            "d_ff": model_config.d_ff, "valid": history["valid_loss"][-1], "bleu": scores["bleu"],
            "exact": scores["exact"], "notes": f"{right}/{len(notes)}"}


def table(rows: list[dict], threads: int) -> str:
    import sacrebleu

    metric = sacrebleu.BLEU()
    metric.corpus_score(["x"], [["x"]])  # the signature knows the number of references after a first score
    lines = [f"Chapter 07's model trained from seed 0 on {threads} thread(s) ({torch.__version__}); test split "
             f"of `corpus.make_splits(0)`, greedy decoding; BLEU {metric.get_signature()}.", "",
             "| recipe | training CPU s | wall s | steps | epochs × batch | warm-up | lr factor | cool-down | d_ff | valid loss "
             "| test BLEU | exact | note sentences |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['cpu']:.0f} | {r['seconds']:.0f} | {r['steps']:,} | {r['epochs']} × {r['batch']} | "
                     f"{r['warmup']} | "
                     f"{r['factor']:g} | {r['cooldown']:.0%} | {r['d_ff']} | {r['valid']:.3f} | {r['bleu']:.2f} | "
                     f"{100 * r['exact']:.1f} % | "
                     f"{r['notes']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds are robust to a busy machine)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    parser.add_argument("--rows", type=Path, default=None, help="append each row as JSON to this file (to merge runs)")
    parser.add_argument("--table-from", type=Path, default=None, help="train nothing: make the table from a --rows file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.table_from is not None:  # rows of several runs (e.g. two processes side by side), in RECIPES' order
        found = {r["recipe"]: r for r in map(json.loads, args.table_from.read_text(encoding="utf-8").splitlines())}
        return _write(table([found[name] for name in RECIPES if name in found], args.threads), args.out)
    splits = corpus.make_splits(0)
    rows = []
    for name in args.recipes:
        start = time.perf_counter()
        rows.append(run(name, RECIPES[name], splits))
        print(f"{name}: {rows[-1]} ({time.perf_counter() - start:.0f} s with scoring)", flush=True)
        if args.rows is not None:
            with args.rows.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rows[-1]) + "\n")
    return _write(table(rows, args.threads), args.out)


def _write(text: str, out: Path | None) -> int:
    print(text)
    if out is not None:
        atomic_write(out, lambda f: f.write(text.encode("utf-8")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
