"""The list of chapters: the one source of the course map.

The README's chapter table, chapter 00's map (the table ``course_map`` makes), every notebook's title and
every chapter's "What comes next" line agree with ``CHAPTERS``; ``tests/test_chapters.py`` checks
each of them, for any number of chapters. A chapter that is being written is listed with
``planned=True``: it is left out of the map and of "what comes next" until its notebook exists and
the flag is removed (the test fails on a planned chapter whose notebook is already there).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    """One chapter: notebook ``notebooks/NN_name.ipynb``, titled ``# NN · title``."""

    number: int
    name: str
    title: str
    summary: str  # what you build, one line (the README's and the map's column)
    modules: tuple[str, ...] = ()  # the course_lib modules it writes
    planned: bool = False

    @property
    def nn(self) -> str:
        return f"{self.number:02d}"

    @property
    def stem(self) -> str:
        return f"{self.nn}_{self.name}"


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(0, "introduction", "Introduction", "sequence data, transduction; why RNNs struggle with long sentences"),
    Chapter(1, "tokens", "Tokens", "word tokens, Korean particles and jamo, a vocabulary, byte-pair encoding", ("tokens",)),
    Chapter(2, "embeddings", "Embeddings", "embedding tables, cosine similarity, skip-gram, sinusoidal positions",
            ("embeddings",)),
    Chapter(3, "attention", "Attention", "queries/keys/values, the note's worked example, why √d_k, stable softmax, "
            "padding and causal masks", ("attention",)),
    Chapter(4, "multi_head_attention", "Multi-head attention", "why several heads, split and merge, W_O, the same "
            "parameters as one head, equal to `nn.MultiheadAttention`, a heads explorer", ("multihead",)),
    Chapter(5, "encoder", "The encoder", "residuals, layer norm, feed-forward, post-LN vs pre-LN, a stack of N", ("encoder",)),
    Chapter(6, "decoder", "The decoder", "masked self-attention, cross-attention to the encoder", ("decoder",)),
    Chapter(7, "translation", "Translation", "the full model, label smoothing, the learning-rate schedule, training on the "
            "CPU, greedy and beam search, BLEU, attention maps, a translator widget",
            ("model", "checkpoint", "batches", "objective", "progress", "training", "decoding")),
    Chapter(8, "beyond", "Beyond: what attention costs, and how real systems make it fast", "cost vs length, the fused "
            "path, a KV cache, pre-LN vs post-LN, the paper's base model on a GPU", ("kvcache",)),
    Chapter(9, "gpt", "From the translator to GPT and Llama", "a decoder-only GPT and a Llama-style model (RMSNorm, RoPE, "
            "SwiGLU, GQA) equal to Hugging Face `transformers`, greedy/temperature/top-k/top-p sampling with a KV cache, "
            "translation as next-token generation, a sampling widget", ("gpt", "llama", "sampling", "gpt_translate")),
    Chapter(10, "where_it_fails", "Where it fails: word forms, long sentences and unknown words", "where the translator "
            "fails and why: unseen word forms (words vs BPE), sentences longer than any in training, the shift probe, "
            "unknown words and the untrained `<unk>` row, word dropout as a fix", ("generalisation",)),
    Chapter(11, "inside", "Inside the trained model", "hooks and an activation cache, induction heads, the logit lens, "
            "what the translator's attention does, activation patching", ("hooks", "lens")),
)


def published() -> list[Chapter]:
    """The chapters a learner can open today (not planned), in order."""
    return [c for c in CHAPTERS if not c.planned]


def next_chapter(number: int) -> Chapter | None:
    """The published chapter after chapter ``number``, or None when it is the last one."""
    return next((c for c in published() if c.number > number), None)


def modules_cell(chapter: Chapter) -> str:
    """The module column: ```tokens.py```, several joined by commas, or — for none."""
    return ", ".join(f"`{m}.py`" for m in chapter.modules) or "—"


def course_map(link: Callable[[Chapter], str | None] | None = None) -> str:
    """The published chapters as a markdown table; ``link(chapter)`` may give a target for its notebook's name."""
    rows = ["| NN | notebook | `course_lib` module | what you build |", "|---|---|---|---|"]
    for c in published():
        target = link(c) if link else None
        name = f"[`{c.stem}`]({target})" if target else f"`{c.stem}`"
        rows.append(f"| {c.nn} | {name} | {modules_cell(c)} | {c.summary} |")
    return "\n".join(rows) + "\n"
