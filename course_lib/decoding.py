"""Chapter 07 · Decoding and evaluation: greedy decoding, beam search, translate, BLEU/chrF.

At inference the decoder has no target sentence to read: it starts from ``<bos>``, predicts one
token, appends it, and repeats until ``<eos>``. Greedy decoding keeps the single most likely
token each time; beam search keeps the ``beam_size`` best partial translations and compares
finished ones with the paper's length penalty. Every step re-runs the decoder over the whole
prefix (simple and exact; chapter 08 adds a cache).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .attention import padding_mask
from .corpus import pair_text
from .model import Transformer, inference
from .tokens import Tokenize, Vocab, detokenize, word_tokenize
from .validate import check_int, check_number, nfc

__all__ = ["inference", "check_src", "decode_limits", "greedy_loop", "greedy_decode", "beam_step", "length_penalty",
           "beam_search", "translate", "translate_batch", "evaluate", "unknown_words", "source_tokens",
           "UntranslatableError", "TruncatedInputWarning", "UnknownWordWarning"]


class UntranslatableError(ValueError):
    """A sentence in which the source vocabulary knows no word: the model would only make up Korean."""


class TruncatedInputWarning(UserWarning):
    """A sentence longer than the model's table of positions: only its beginning is translated."""


_ALPHA_HINT = "the length penalty's exponent; 0: none, the paper: 0.6"


class UnknownWordWarning(UserWarning):
    """Words the source vocabulary never saw: each is read as <unk>, and the model may invent a word in its place."""


def check_src(model: Transformer, src: object) -> Tensor:
    """``src`` as integer ids (B, S) on the model's device, or a TypeError that says what was expected."""
    if not isinstance(model, Transformer):
        raise TypeError(f"expected a course_lib Transformer, got {type(model).__name__}")
    if not isinstance(src, Tensor) or src.dim() != 2 or src.is_floating_point() or src.shape[1] == 0:
        got = f"{src.dtype} {tuple(src.shape)}" if isinstance(src, Tensor) else type(src).__name__
        raise TypeError(f"src must be integer token ids of shape (B, S) with S >= 1, got {got}")
    return src.to(next(model.parameters()).device)


def decode_limits(model: Transformer, src_mask: Tensor, max_len: int | None) -> Tensor:
    """How many tokens each row may generate: ``max_len``, by default 2 S + 10 with S the row's own
    length (so a sentence's translation does not depend on the batch it is in), within the table of positions.

    Shape:
        src_mask (B, 1, S) -> (B,) long
    """
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"max_len must be None or a positive int, got {max_len!r}")
    if model.config.max_len < 2:
        raise ValueError(f"this model's table of positions has max_len = {model.config.max_len}: position 0 holds <bos>, "
                         "so it cannot generate a single token; build it with TransformerConfig(max_len >= 2)")
    lengths = src_mask.flatten(1).sum(dim=1)  # (B,) real source tokens per row
    limits = 2 * lengths + 10 if max_len is None else torch.full_like(lengths, max_len)  # (B,)
    return limits.clamp(max=model.config.max_len - 1)  # <bos> takes position 0


def greedy_decode(model: Transformer, src: Tensor, max_len: int | None = None, bos_id: int = 1, eos_id: int = 2,
                  src_mask: Tensor | None = None) -> Tensor:
    """The most likely next token, one at a time, for every sentence of the batch at once.

    Rows that have produced ``<eos>`` are padded with ``pad_id`` from then on; decoding stops when
    every row has finished or after ``max_len`` tokens.

    Shape:
        src (B, S) ids -> (B, L) ids without <bos>, L <= max_len
    """
    src, pad_id = check_src(model, src), model.config.pad_id
    with inference(model):
        src_mask = padding_mask(src, pad_id) if src_mask is None else src_mask.to(src.device)  # (B, 1, S)
        limits = decode_limits(model, src_mask, max_len)  # (B,)
        memory = model.encode(src, src_mask)  # (B, S, D), computed once

        def step(ys: Tensor) -> Tensor:  # the whole prefix (B, t) through the decoder again
            return model.decode(ys, memory, src_mask)[:, -1]  # (B, V): the last position only

        return greedy_loop(step, limits, bos_id, eos_id, pad_id)


def greedy_loop(step: Callable[[Tensor], Tensor], limits: Tensor, bos_id: int, eos_id: int, pad_id: int) -> Tensor:
    """The greedy loop shared by ``greedy_decode`` and ``kvcache.greedy_decode_cached``.

    ``step(ys)`` gets the ids so far, ``<bos>`` first, and returns the next-token logits; the loop takes
    the argmax, pads rows that have ended, and stops when every row has produced ``<eos>`` or reached
    its limit.

    Shape:
        step: ys (B, t) -> logits (B, V); limits (B,) -> (B, L) ids without <bos>, L <= limits.max()
    """
    ys = torch.full((limits.shape[0], 1), bos_id, dtype=torch.long, device=limits.device)  # (B, 1)
    done = torch.zeros(limits.shape[0], dtype=torch.bool, device=limits.device)  # (B,)
    for t in range(1, int(limits.max()) + 1):
        next_id = step(ys).argmax(dim=-1).masked_fill(done, pad_id)  # (B,) rows that ended get <pad>
        ys = torch.cat([ys, next_id[:, None]], dim=1)  # (B, t + 1)
        done |= (next_id == eos_id) | (limits <= t)
        if done.all():
            break
    return ys[:, 1:]  # (B, L)


def beam_step(log_probs: Tensor, scores: Tensor, beam_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """One step of beam search: the ``beam_size`` best of all K * V one-token continuations.

    A continuation's score is its beam's running score plus the token's log-probability. Works
    on a batch too: leading dimensions are kept.

    Shape:
        log_probs (..., K, V), scores (..., K) -> new_scores, beam_idx, token_idx, each (..., beam_size),
        best first
    """
    if log_probs.dim() < 2 or scores.shape != log_probs.shape[:-1]:
        raise ValueError(f"log_probs must be (..., K, V) and scores (..., K): got {tuple(log_probs.shape)} and "
                         f"{tuple(getattr(scores, 'shape', ()))}")
    V = log_probs.shape[-1]
    total = scores.unsqueeze(-1) + log_probs  # (..., K, V) score of every continuation
    new_scores, flat = total.flatten(-2).topk(beam_size, dim=-1)  # (..., beam_size) over all K * V
    return new_scores, flat // V, flat % V  # which beam it extends, which token it adds


def length_penalty(length: Tensor | int, alpha: float = 0.6) -> Tensor | float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha; a hypothesis is ranked by log P(Y) / lp(Y)."""
    check_number(alpha, "alpha", 0.0, hint=_ALPHA_HINT)
    return ((5 + length) / 6) ** alpha


def beam_search(model: Transformer, src: Tensor, beam_size: int = 4, alpha: float = 0.6, max_len: int | None = None,
                bos_id: int = 1, eos_id: int = 2) -> list[list[int]]:
    """The best translation of every source sentence under beam search with a length penalty.

    A beam that has produced ``<eos>`` stays in the beam with its score frozen (it can only be
    extended by padding, at no cost), so finished and unfinished hypotheses compete for the
    ``beam_size`` places; at the end the winner is the best log P(Y) / lp(Y), |Y| counting <eos>.
    The search stops as soon as no unfinished beam can beat the best finished one any more.

    Shape:
        src (B, S) ids -> B lists of ids, without <bos> and <eos>
    """
    src = check_src(model, src)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    check_number(alpha, "alpha", 0.0, hint=_ALPHA_HINT)
    B, K, pad_id, dev = src.shape[0], beam_size, model.config.pad_id, src.device
    with inference(model):
        src_k = src.repeat_interleave(K, dim=0)  # (B*K, S): every beam reads its sentence
        src_mask = padding_mask(src_k, pad_id)  # (B*K, 1, S)
        limits = decode_limits(model, src_mask, max_len).view(B, K)  # (B, K)
        memory = model.encode(src_k, src_mask)  # (B*K, S, D)
        ys = torch.full((B, K, 1), bos_id, dtype=torch.long, device=dev)  # (B, K, 1)
        scores = torch.full((B, K), float("-inf"), device=dev)  # (B, K)
        scores[:, 0] = 0.0  # one live beam at the start, so the first step does not pick K copies
        done = torch.zeros(B, K, dtype=torch.bool, device=dev)  # (B, K)
        lengths = torch.zeros(B, K, device=dev)  # (B, K) tokens produced, <eos> included
        for t in range(1, int(limits.max()) + 1):
            logits = model.decode(ys.flatten(0, 1), memory, src_mask)[:, -1]  # (B*K, V)
            log_probs = logits.float().log_softmax(dim=-1).view(B, K, -1)  # (B, K, V)
            frozen = torch.full_like(log_probs[0, 0], float("-inf"))  # (V,)
            frozen[pad_id] = 0.0  # a finished beam may only add padding, for free
            log_probs = torch.where(done.unsqueeze(-1), frozen, log_probs)  # (B, K, V)
            scores, beam_idx, token_idx = beam_step(log_probs, scores, K)  # (B, K) each
            ys = torch.cat([ys.gather(1, beam_idx[..., None].expand_as(ys)), token_idx[..., None]], dim=2)  # (B, K, t+1)
            was_done = done.gather(1, beam_idx)  # (B, K)
            lengths = lengths.gather(1, beam_idx) + (~was_done).float()  # (B, K)
            done = was_done | (token_idx == eos_id) | (limits <= t)  # (B, K)
            # scores only fall, so an unfinished beam can reach at most score / lp(limit): once the best
            # finished hypothesis beats that bound in every row, nothing can change the answer
            best_done = torch.where(done, scores / length_penalty(lengths, alpha), -torch.inf).amax(dim=1)  # (B,)
            best_open = torch.where(done, -torch.inf, scores / length_penalty(limits, alpha)).amax(dim=1)  # (B,)
            if (best_done >= best_open).all():
                break
        best = (scores / length_penalty(lengths, alpha)).argmax(dim=1)  # (B,)
    return [_strip(ys[b, best[b], 1:].tolist(), eos_id, pad_id) for b in range(B)]


def _strip(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    """The ids before <eos> (and without padding)."""
    ids = ids[:ids.index(eos_id)] if eos_id in ids else ids
    return [i for i in ids if i != pad_id]


Detokenize = Callable[[list[str]], str]


def source_tokens(sentence: str, src_vocab: Vocab, tokenize: Tokenize = word_tokenize) -> list[str]:
    """The tokens ``translate`` feeds the model: ``tokenize(sentence)``, each in the case the vocabulary knows.

    The corpus writes ordinary English case ("I", names, a capital at the start) and the vocabulary
    keeps case ("The" and "the" are two entries). A token not in ``src_vocab`` as typed is looked up
    lower-case, then Capitalised, then in CAPITALS, so "i" reads as "I", "SCHOOL" as "school" and
    "seoul" as "Seoul"; a token none of these finds stays as typed (and becomes <unk>).
    """
    tokens = tokenize(sentence)
    if not isinstance(tokens, (list, tuple)):
        raise TypeError(f"tokenize must return a list of str tokens, got {type(tokens).__name__} {tokens!r:.60} "
                        f"for {sentence!r:.60}")
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise TypeError(f"tokenize must return a list of str tokens, got {type(tok).__name__} {tok!r:.40} at position {i} "
                            f"for {sentence!r:.60}")
    return [next((f for f in (tok, tok.lower(), tok.capitalize(), tok.upper()) if f in src_vocab), tok) for tok in tokens]


def unknown_words(sentence: str, src_vocab: Vocab, tokenize: Tokenize = word_tokenize) -> list[str]:
    """The tokens of ``sentence`` that ``src_vocab`` has never seen, in any case (each once, in order).

    The same tokenization as ``translate`` (``source_tokens``), so these are exactly the tokens that become ``<unk>``.
    """
    if not isinstance(sentence, str):
        raise TypeError(f"unknown_words expects one sentence (str), got {type(sentence).__name__}")
    return _unknown(source_tokens(sentence, src_vocab, tokenize), src_vocab)


def _unknown(tokens: list[str], src_vocab: Vocab) -> list[str]:
    """The tokens ``src_vocab`` does not hold, each once, in order."""
    return list(dict.fromkeys(tok for tok in tokens if tok not in src_vocab))


def _check_translator(where: str, model: object, src_vocab: object, tgt_vocab: object, tokenize: object,
                      detokenize: object) -> None:
    """Raise a TypeError naming the argument unless each of translate's parts is of the kind it needs."""
    if not isinstance(model, Transformer):
        raise TypeError(f"{where} expects model: a course_lib.model.Transformer, got {type(model).__name__}")
    for name, vocab in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab)):
        if not isinstance(vocab, Vocab):
            raise TypeError(f"{name} must be a course_lib.tokens.Vocab (training.build_vocabs makes both; a checkpoint "
                            f"holds them), got {type(vocab).__name__}")
    for name, fn in (("tokenize", tokenize), ("detokenize", detokenize)):
        if not callable(fn):
            raise TypeError(f"{name} must be a function ({'text -> list of tokens' if name == 'tokenize' else 'tokens -> text'}"
                            f"), got {type(fn).__name__}")


def _knows_a_word(tokens: list[str], src_vocab: Vocab) -> bool:
    """True when some token is in the vocabulary and is a word (has a letter or digit), not only punctuation."""
    return any(tok in src_vocab and any(ch.isalnum() for ch in tok) for tok in tokens)


def _unknown_note(sentence: str, src_vocab: Vocab, tokenize: Tokenize) -> str:
    unknown = unknown_words(sentence, src_vocab, tokenize)
    return f"unknown words: {', '.join(unknown)}" if unknown else "only punctuation"


def translate_batch(model: Transformer, sentences: Sequence[str], src_vocab: Vocab, tgt_vocab: Vocab,
                    beam_size: int = 1, alpha: float = 0.6, max_len: int | None = None, batch_size: int = 128,
                    tokenize: Tokenize = word_tokenize, detokenize: Detokenize = detokenize) -> list[str]:
    """Translate many sentences (``beam_size=1``: greedy); words not in ``src_vocab`` become <unk>.

    An empty sentence translates to "". A sentence in which ``src_vocab`` knows no word (only unknown
    words or punctuation) raises ``UntranslatableError``; ``unknown_words`` lists what it did not know.
    A sentence longer than the model's table of positions (``model.config.max_len`` tokens) is cut
    to that length with a ``TruncatedInputWarning``, and the rest of the batch is unaffected.
    """
    if isinstance(sentences, str):
        raise TypeError("translate_batch expects a list of sentences; use translate() for one str")
    _check_translator("translate_batch", model, src_vocab, tgt_vocab, tokenize, detokenize)
    check_int(batch_size, "batch_size")
    check_int(beam_size, "beam_size")
    check_number(alpha, "alpha", 0.0, hint=_ALPHA_HINT)
    sentences = list(sentences)
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"translate_batch expects sentences as str, got {type(s).__name__} {s!r:.40} at position {i}")
    tokens = [source_tokens(s, src_vocab, tokenize) for s in sentences]
    hopeless = [i for i, toks in enumerate(tokens) if toks and not _knows_a_word(toks, src_vocab)]
    if hopeless:
        shown = "; ".join(f"sentence {i} {sentences[i]!r:.60} ({_unknown_note(sentences[i], src_vocab, tokenize)})"
                          for i in hopeless[:3])
        raise UntranslatableError(f"refusing to translate: the source vocabulary ({len(src_vocab)} tokens, from the "
                                  f"training corpus) knows no word of {len(hopeless)} sentence(s), so any Korean would "
                                  f"be made up: {shown}")
    unknown = [(i, words) for i, toks in enumerate(tokens) if (words := _unknown(toks, src_vocab))]
    if unknown:
        shown = "; ".join(f"sentence {i} {sentences[i]!r:.60} ({', '.join(words)})" for i, words in unknown[:3])
        warnings.warn(f"{len(unknown)} of {len(sentences)} sentence{'s' * (len(sentences) != 1)} "
                      f"hold{'s' * (len(unknown) == 1)} words the source "
                      f"vocabulary never saw; each is read as <unk> and the model may invent a word in its place "
                      f"(decoding.unknown_words lists them): {shown}{'; ...' if len(unknown) > 3 else ''}",
                      UnknownWordWarning, stacklevel=2)
    limit = model.config.max_len
    for i, toks in enumerate(tokens):
        if len(toks) > limit:
            warnings.warn(f"sentence {i} has {len(toks)} tokens, more than the model's {limit} positions "
                          f"(TransformerConfig.max_len): translating its first {limit} only: {sentences[i]!r:.80}",
                          TruncatedInputWarning, stacklevel=2)
            tokens[i] = toks[:limit]
    out: list[str] = [""] * len(tokens)  # an empty sentence translates to ""
    todo = sorted((i for i in range(len(tokens)) if tokens[i]), key=lambda i: len(tokens[i]))  # similar lengths together
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        src = src_vocab.encode_batch([tokens[i] for i in chunk])  # (B, S) ids padded with pad_id
        if beam_size == 1:
            hyps = [_strip(row, tgt_vocab.eos_id, tgt_vocab.pad_id)
                    for row in greedy_decode(model, src, max_len, tgt_vocab.bos_id, tgt_vocab.eos_id).tolist()]
        else:
            hyps = beam_search(model, src, beam_size, alpha, max_len, tgt_vocab.bos_id, tgt_vocab.eos_id)
        for i, hyp in zip(chunk, hyps):
            out[i] = detokenize(tgt_vocab.decode(hyp))
    return out


def translate(model: Transformer, sentence: str, src_vocab: Vocab, tgt_vocab: Vocab, beam_size: int = 1,
              alpha: float = 0.6, max_len: int | None = None, tokenize: Tokenize = word_tokenize,
              detokenize: Detokenize = detokenize) -> str:
    """English sentence -> Korean sentence: tokenize, look up ids (unknown words -> <unk>), decode, detokenize.

    ``translate(model, "I go to school.", src_vocab, tgt_vocab) == "나는 학교에 간다."`` once trained.
    """
    if not isinstance(sentence, str):
        raise TypeError(f"translate expects one sentence (str), got {type(sentence).__name__}")
    _check_translator("translate", model, src_vocab, tgt_vocab, tokenize, detokenize)
    return translate_batch(model, [sentence], src_vocab, tgt_vocab, beam_size, alpha, max_len, 1, tokenize, detokenize)[0]


def evaluate(model: Transformer, pairs: Sequence, src_vocab: Vocab, tgt_vocab: Vocab, beam_size: int = 1,
             batch_size: int = 128, alpha: float = 0.6, tokenize: Tokenize = word_tokenize,
             detokenize: Detokenize = detokenize) -> dict:
    """Translate the English side of ``pairs`` and score it against the Korean side.

    BLEU and chrF are sacrebleu's corpus scores (0-100). BLEU uses sacrebleu's default "13a"
    tokenizer: Korean words stay whole (split at spaces) and punctuation is split off, so BLEU
    counts word n-grams; chrF compares character n-grams and gives partial credit for a right
    stem with a wrong ending. ``exact`` is the fraction of translations equal to the reference.
    """
    import sacrebleu

    sides = [pair_text(p) for p in pairs]
    if not sides:
        raise ValueError("evaluate needs at least one (english, korean) pair")
    refs = [nfc(ko) for _, ko in sides]  # NFC on both sides: NFD Korean would share no character n-gram
    hyps = [nfc(h) for h in translate_batch(model, [en for en, _ in sides], src_vocab, tgt_vocab, beam_size, alpha,
                                             batch_size=batch_size, tokenize=tokenize, detokenize=detokenize)]
    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
            "exact": sum(h == r for h, r in zip(hyps, refs)) / len(refs), "hypotheses": hyps}
