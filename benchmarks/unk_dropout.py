"""Word dropout at chapter 07's size: the translator trained with and without ``--unk-dropout``.

For each training seed it trains chapter 07's model twice with the course's training command (``--unk-dropout 0``
and ``--unk-dropout 0.05``, the default; ``--threads 1 --epochs 8`` as the shipped run), then measures on chapter 07's test
split: greedy BLEU and exact match,
the largest change of the source ``<unk>`` row since initialisation, and, on three substitution sets of 50 test
sentences with one noun replaced by an unknown word (``generalisation.substitution_set`` seeds 0, 1, 2), how many
translations keep every other word right. It writes a Markdown table (chapter 10 shows it).

    python benchmarks/unk_dropout.py --seeds 0 --out benchmarks/results/unk_dropout.md [--use-shipped]

``--use-shipped`` takes the shipped checkpoint for the run its stored settings say it is (seed, word dropout, one
thread, 8 epochs) instead of training it again. Each training takes a few minutes on one core.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib import checkpoint, corpus, training  # noqa: E402
from course_lib.decoding import evaluate, translate_batch  # noqa: E402
from course_lib.generalisation import fresh_model, kept_other_words, substitution_set, unk_row_change  # noqa: E402

SUBSTITUTION_SEEDS = (0, 1, 2)


def shipped_run(seed: int, p: float) -> checkpoint.Checkpoint | None:
    """The shipped checkpoint when it is this run (seed, word dropout, one thread, the shipped epochs), else None."""
    shipped = checkpoint.load_pretrained()
    same = (shipped.meta.get("seed"), shipped.meta.get("unk_dropout"), shipped.meta.get("threads"),
            shipped.meta.get("epochs")) == (seed, p, 1, training.SHIPPED_EPOCHS)
    return shipped if same else None


def trained(seed: int, p: float, folder: Path) -> checkpoint.Checkpoint:
    """Chapter 07's translator for this seed and word-dropout rate, trained by the course's command."""
    out = folder / f"seed{seed}-p{p}.pt"
    code = training.main(["--out", str(out), "--seed", str(seed), "--unk-dropout", str(p), "--threads", "1",
                          "--epochs", str(training.SHIPPED_EPOCHS), "--quiet"])
    if code != 0:
        raise SystemExit(f"training seed {seed} with --unk-dropout {p} failed (exit code {code})")
    return checkpoint.load_checkpoint(out)


def measure(ckpt: checkpoint.Checkpoint, test: list) -> dict:
    """Test-split scores, the <unk> row's change, and 'every other word right' on each substitution set."""
    model, src, tgt = ckpt.model, ckpt.src_vocab, ckpt.tgt_vocab
    scores = evaluate(model, test, src, tgt)
    kept = []
    for s in SUBSTITUTION_SEEDS:
        subs = substitution_set(test, src, n=50, seed=s)
        hyps = translate_batch(model, [x.en for x in subs], src, tgt)
        kept.append(sum(kept_other_words(h, x) for h, x in zip(hyps, subs)))
    return {"bleu": scores["bleu"], "exact": scores["exact"], "kept": kept,
            "unk_row": unk_row_change(model, fresh_model(model.config, ckpt.meta["seed"]))}


def table(rows: list[tuple[int, float, dict]]) -> str:
    lines = ["| training seed | --unk-dropout | test BLEU | test exact | <unk> row moved | every other word right "
             f"(of 50, substitution seeds {', '.join(map(str, SUBSTITUTION_SEEDS))}) |", "|---|---|---|---|---|---|"]
    for seed, p, m in rows:
        lines.append(f"| {seed} | {p:g} | {m['bleu']:.2f} | {100 * m['exact']:.1f}% | {m['unk_row']:.4f} | "
                     f"{' / '.join(map(str, m['kept']))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "unk_dropout.md")
    parser.add_argument("--use-shipped", action="store_true")
    args = parser.parse_args(argv)
    test = corpus.make_splits(0).test
    rows, reused = [], []
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for p in (0.0, training.UNK_DROPOUT):
                ckpt = shipped_run(seed, p) if args.use_shipped else None
                reused += [f"the {p:g} row of seed {seed}"] if ckpt is not None else []
                ckpt = ckpt if ckpt is not None else trained(seed, p, Path(folder))
                rows.append((seed, p, measure(ckpt, test)))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = ("Chapter 07's translator with and without word dropout, on chapter 07's test split (1,000 pairs, greedy, "
            "sacrebleu 13a).\nMade by `python benchmarks/unk_dropout.py " + " ".join(argv or sys.argv[1:]) + "`"
            + (f" ({' and '.join(reused)}: the shipped checkpoint)" if reused else "") + ".\n\n"
            + table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(args.out.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(args.out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
