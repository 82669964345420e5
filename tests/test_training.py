"""Chapter 07 training: batches, label smoothing, the schedule, the loop, checkpoints, your own data."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from course_lib import corpus
from course_lib.checkpoint import CheckpointError, average_state_dicts, content_digest, load_checkpoint, save_checkpoint
from course_lib.model import Transformer, TransformerConfig
from course_lib.tokens import BPE, Vocab
from course_lib.training import (
    CHAPTER07_TRAIN,
    NOTE_REPEATS,
    Batch,
    TrainConfig,
    build_vocabs,
    chapter07_config,
    chapter07_pairs,
    cooled_lr,
    encode_pairs,
    evaluate_loss,
    label_smoothing_loss,
    make_batches,
    make_optimizer,
    noam_lr,
    train,
)

PAIRS = [("I go to school.", "나는 학교에 간다."), ("Suni closed the window.", "순이는 창문을 닫았다."),
         ("She closed the drawer.", "그녀는 서랍을 닫았다."), ("I like cats.", "나는 고양이가 좋다."),
         ("I was born in Paris.", "나는 파리에서 태어났다."), ("He closed his heart.", "그는 마음을 닫았다.")]


@pytest.fixture(scope="module")
def vocabs():
    return build_vocabs(PAIRS)


def tiny_model(src_vocab: Vocab, tgt_vocab: Vocab, seed: int = 0, **changes) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig.tiny(len(src_vocab), len(tgt_vocab), **changes))


# --- vocabularies and batches -----------------------------------------------------------------

def test_build_vocabs_and_encode_pairs_accept_pairs_and_tuples(vocabs):
    src_vocab, tgt_vocab = vocabs
    assert "school" in src_vocab and "학교에" in tgt_vocab and "." in tgt_vocab
    assert src_vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    as_pairs = [corpus.Pair(en, ko, "note", ()) for en, ko in PAIRS]
    assert [v.itos for v in build_vocabs(as_pairs)] == [src_vocab.itos, tgt_vocab.itos]
    encoded = encode_pairs(PAIRS[:1], src_vocab, tgt_vocab)
    assert encoded == [(src_vocab.encode(["I", "go", "to", "school", "."]), tgt_vocab.encode(["나는", "학교에", "간다", "."]))]
    assert Vocab.bos_id not in encoded[0][1] and Vocab.eos_id not in encoded[0][1]  # make_batches adds them
    assert encode_pairs([("I go to Seoul.", "나는 서울에 간다.")], src_vocab, tgt_vocab)[0][0][3] == Vocab.unk_id
    with pytest.raises(TypeError, match="Pair or an"):
        build_vocabs(["I go to school."])


def test_batch_has_bos_eos_padding_and_masks():
    examples = [([5, 6, 7], [8, 9]), ([5], [8, 9, 10, 11])]
    (batch,) = make_batches(examples, batch_size=2, shuffle=False)
    assert isinstance(batch, Batch)
    # sorted by length inside the pool: the short source comes first
    assert batch.src.tolist() == [[5, 0, 0], [5, 6, 7]]
    assert batch.src_mask.tolist() == [[[True, False, False]], [[True, True, True]]]
    assert batch.src_mask.shape == (2, 1, 3) and batch.src_mask.dtype == torch.bool
    assert batch.tgt_in.tolist() == [[1, 8, 9, 10, 11], [1, 8, 9, 0, 0]]
    assert batch.tgt_out.tolist() == [[8, 9, 10, 11, 2], [8, 9, 2, 0, 0]]
    assert batch.n_tokens == 5 + 3
    assert batch.src.dtype == batch.tgt_in.dtype == torch.long
    moved = batch.to("cpu")
    assert torch.equal(moved.tgt_out, batch.tgt_out) and moved.n_tokens == batch.n_tokens
    with pytest.raises(ValueError, match="none with an empty source"):
        make_batches([([], [4])], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(examples, batch_size=0)


def test_bucketing_keeps_every_example_once_and_cuts_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 30, (400,), generator=g).tolist()
    examples = [([4 + i % 50] * n, [4] * (n // 2 + 1)) for i, n in enumerate(lengths)]
    bucketed = make_batches(examples, batch_size=16, seed=1)
    plain = make_batches(examples, batch_size=16, seed=1, pool=1)  # pool=1: no sorting across batches
    for batches in (bucketed, plain):
        seen = sorted(tuple(row[row != 0].tolist()) for b in batches for row in b.src)
        assert seen == sorted(tuple(s) for s, _ in examples)
    pad = lambda batches: sum(int((b.src == 0).sum()) for b in batches)  # noqa: E731
    assert pad(bucketed) < pad(plain) / 4
    again = make_batches(examples, batch_size=16, seed=1)
    assert all(torch.equal(a.src, b.src) for a, b in zip(bucketed, again))  # seeded
    other = make_batches(examples, batch_size=16, seed=2)
    assert not all(torch.equal(a.src, b.src) for a, b in zip(bucketed, other))


# --- loss and learning rate -------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_label_smoothing_loss_equals_torch_values_and_grads(dtype, tol, epsilon):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(4, 7, 11, generator=g) * 3).to(dtype).requires_grad_()
    target = torch.randint(0, 11, (4, 7), generator=g)
    target[0, 3:] = 0  # padding is ignored
    ours = label_smoothing_loss(logits, target, epsilon)
    theirs = F.cross_entropy(logits.detach().flatten(0, 1).requires_grad_(), target.flatten(), ignore_index=0,
                             label_smoothing=epsilon)
    assert abs(ours.item() - theirs.item()) < tol * max(1.0, abs(theirs.item()))
    ref_logits = logits.detach().clone().requires_grad_()
    F.cross_entropy(ref_logits.transpose(1, 2), target, ignore_index=0, label_smoothing=epsilon).backward()
    ours.backward()
    assert (logits.grad - ref_logits.grad).abs().max() < tol


def test_label_smoothing_loss_golden_value_and_errors():
    logits = torch.zeros(1, 1, 4)  # uniform prediction: cross-entropy ln 4 whatever the smoothing
    assert label_smoothing_loss(logits, torch.tensor([[2]])).item() == pytest.approx(math.log(4), abs=1e-6)
    logits = torch.tensor([[[0.0, 0.0, math.log(2.0)]]])  # p = (1/4, 1/4, 1/2)
    expected = 0.9 * math.log(2) + 0.1 * (2 * math.log(4) + math.log(2)) / 3
    assert label_smoothing_loss(logits, torch.tensor([[2]]), 0.1, ignore_index=-100).item() == pytest.approx(expected, abs=1e-6)
    assert label_smoothing_loss(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)).item() == 0.0  # all padding
    with pytest.raises(ValueError, match="must agree"):
        label_smoothing_loss(torch.randn(2, 3, 5), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="epsilon"):
        label_smoothing_loss(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), epsilon=1.0)


def test_noam_lr_golden_values_and_peak():
    assert noam_lr(1, 512, 4000) == pytest.approx(512**-0.5 * 4000**-1.5, rel=1e-12)
    assert noam_lr(4000, 512, 4000) == pytest.approx(6.987712429686844e-4, rel=1e-12)  # 1 / sqrt(512 * 4000)
    assert noam_lr(16000, 512, 4000) == pytest.approx(6.987712429686844e-4 / 2, rel=1e-12)  # 1/sqrt(step) decay
    assert noam_lr(200, 128, 400, factor=2.0) == pytest.approx(2 * 128**-0.5 * 200 * 400**-1.5, rel=1e-12)
    lrs = [noam_lr(s, 128, 400) for s in range(1, 2000)]
    assert max(range(len(lrs)), key=lrs.__getitem__) + 1 == 400  # the peak is at the end of warmup
    assert all(a < b for a, b in zip(lrs[:398], lrs[1:399]))  # linear warmup: rising
    with pytest.raises(ValueError, match="from 1"):
        noam_lr(0, 512)


def test_make_optimizer_uses_the_papers_adam_and_schedule():
    model = torch.nn.Linear(3, 3)
    optimizer, schedule = make_optimizer(model, d_model=64, warmup=10, factor=2.0)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.Adam) and group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9
    for step in range(1, 30):
        assert group["lr"] == pytest.approx(noam_lr(step, 64, 10, 2.0), rel=1e-12)
        optimizer.step()
        schedule.step()


def test_cooled_lr_is_noam_then_a_straight_line_to_zero():
    total = 100
    assert [cooled_lr(s, total, 64, 10, 2.0, cooldown=0.0) for s in range(1, 121)] == \
        [noam_lr(s, 64, 10, 2.0) for s in range(1, 121)]  # no cool-down: the paper's schedule, bit for bit
    rates = [cooled_lr(s, total, 64, 10, 2.0, cooldown=0.3) for s in range(1, total + 1)]
    assert rates[:70] == [noam_lr(s, 64, 10, 2.0) for s in range(1, 71)]  # steps 1..70: the paper's
    top = noam_lr(70, 64, 10, 2.0)
    assert rates[70] == pytest.approx(top * 30 / 31, rel=1e-12)  # step 71: one 31st of the way down
    assert rates[-1] == pytest.approx(top / 31, rel=1e-12)  # step 100: the last step still learns a little
    assert cooled_lr(total + 1, total, 64, 10, 2.0, 0.3) == 0.0 and cooled_lr(total + 50, total, 64, 10, 2.0, 0.3) == 0.0
    steps = [b - a for a, b in zip(rates[70:], rates[71:])]
    assert max(steps) == pytest.approx(min(steps), rel=1e-9) and steps[0] < 0  # a straight line, falling
    for bad, match in (({"cooldown": 1.0}, "cooldown"), ({"cooldown": -0.1}, "cooldown"), ({"total": 0}, "total")):
        with pytest.raises(ValueError, match=match):
            cooled_lr(1, **{"total": 10, "d_model": 64, "cooldown": 0.5, **bad})


def test_make_optimizer_with_a_cooldown_follows_cooled_lr():
    model = torch.nn.Linear(3, 3)
    optimizer, schedule = make_optimizer(model, d_model=64, warmup=10, factor=2.0, total=40, cooldown=0.25)
    for step in range(1, 41):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cooled_lr(step, 40, 64, 10, 2.0, 0.25), rel=1e-12)
        optimizer.step()
        schedule.step()
    with pytest.raises(ValueError, match="needs total"):
        make_optimizer(model, d_model=64, cooldown=0.25)
    with pytest.raises(ValueError, match="TrainConfig.cooldown"):
        TrainConfig(cooldown=1.5)


# --- the model's start and the loop -----------------------------------------------------------

@pytest.fixture(scope="module")
def small_splits():
    return corpus.make_splits(0, n_train=2000, n_valid=100, n_test=100)


def test_chapter07_pairs_repeat_the_notes_sentences(small_splits):
    pairs = chapter07_pairs(small_splits.train)
    assert pairs[:len(small_splits.train)] == small_splits.train
    assert len(pairs) == len(small_splits.train) + NOTE_REPEATS * len(corpus.NOTE_EXAMPLES)
    counts = Counter(p.en for p in pairs)
    assert [counts[en] for en, _ in corpus.NOTE_EXAMPLES] == [NOTE_REPEATS + 1] * len(corpus.NOTE_EXAMPLES)
    assert chapter07_pairs(small_splits.train, note_repeats=0) == small_splits.train
    assert chapter07_pairs(PAIRS) == PAIRS  # plain (en, ko) tuples carry no "note" mark: nothing is repeated


def test_fresh_chapter07_model_starts_near_ln_v(small_splits):
    splits = small_splits
    src_vocab, tgt_vocab = build_vocabs(splits.train)
    torch.manual_seed(0)
    model = Transformer(chapter07_config(len(src_vocab), len(tgt_vocab)))
    loss = evaluate_loss(model, make_batches(encode_pairs(splits.valid, src_vocab, tgt_vocab), 50, shuffle=False))
    assert abs(loss - math.log(len(tgt_vocab))) < 0.5, (loss, math.log(len(tgt_vocab)))
    assert isinstance(CHAPTER07_TRAIN, TrainConfig) and CHAPTER07_TRAIN.label_smoothing == 0.1


def test_train_learns_a_tiny_task_and_records_history(vocabs):
    src_vocab, tgt_vocab = vocabs
    batches = make_batches(encode_pairs(PAIRS, src_vocab, tgt_vocab), batch_size=3)
    model = tiny_model(src_vocab, tgt_vocab)
    before = evaluate_loss(model, batches)
    config = TrainConfig(epochs=40, warmup=20, lr_factor=0.5, device="cpu")
    history = train(model, batches, batches, config, progress=False)
    after = evaluate_loss(model, batches)
    assert after < before / 3, (before, after)
    assert history["steps"] == 80 and history["epochs"] == 40 and len(history["loss"]) == 80
    assert len(history["valid_loss"]) == 40 and history["valid_loss"][-1] == pytest.approx(after)
    assert history["lr"] == pytest.approx([noam_lr(s, 32, 20, 0.5) for s in range(1, 81)])
    assert history["tokens"] == 40 * sum(b.n_tokens for b in batches) and history["tokens_per_s"] > 0
    cooled = train(tiny_model(src_vocab, tgt_vocab), batches, None, TrainConfig(epochs=10, warmup=5, cooldown=0.5, device="cpu"),
                   progress=False)  # the cool-down ends at the planned last step: 10 epochs x 2 batches
    assert cooled["lr"] == pytest.approx([cooled_lr(s, 20, 32, 5, 1.0, 0.5) for s in range(1, 21)])
    assert not model.training  # handed back in eval mode


def test_train_stops_at_max_steps_and_max_seconds(vocabs):
    src_vocab, tgt_vocab = vocabs
    batches = make_batches(encode_pairs(PAIRS, src_vocab, tgt_vocab), batch_size=1)
    history = train(tiny_model(src_vocab, tgt_vocab), batches, None, TrainConfig(epochs=5, max_steps=7, device="cpu"),
                    progress=False)
    assert history["steps"] == 7 and history["epochs"] == 2 and history["valid_loss"] == []
    history = train(tiny_model(src_vocab, tgt_vocab), batches, None, TrainConfig(epochs=50, max_seconds=0.0, device="cpu"),
                    progress=False)
    assert history["steps"] == 1


def test_train_ends_with_the_average_of_the_last_epochs(vocabs):
    src_vocab, tgt_vocab = vocabs
    batches = make_batches(encode_pairs(PAIRS, src_vocab, tgt_vocab), batch_size=3)
    model, seen = tiny_model(src_vocab, tgt_vocab), []
    config = TrainConfig(epochs=5, warmup=5, lr_factor=0.5, device="cpu", average_last=3)
    history = train(model, batches, None, config, progress=False,
                    on_epoch=lambda epoch, h: seen.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert history["averaged_epochs"] == 3 and len(seen) == 5
    for name, value in model.state_dict().items():
        assert torch.allclose(value, (seen[2][name] + seen[3][name] + seen[4][name]) / 3, atol=1e-6), name
    assert not torch.allclose(model.generator.weight, seen[4]["generator.weight"])  # not simply the last epoch
    one = train(tiny_model(src_vocab, tgt_vocab), batches, None, TrainConfig(epochs=2, device="cpu"), progress=False)
    assert one["averaged_epochs"] == 1


def test_average_state_dicts():
    a, b = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([2])}, {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([4])}
    mean = average_state_dicts([a, b])
    assert mean["w"].tolist() == [2.0, 4.0] and mean["n"].tolist() == [3] and mean["n"].dtype == torch.long
    assert average_state_dicts([a])["w"].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="same keys"):
        average_state_dicts([a, {"w": a["w"]}])
    with pytest.raises(ValueError, match="one or more"):
        average_state_dicts([])


def test_train_is_reproducible_with_a_seed(vocabs):
    src_vocab, tgt_vocab = vocabs
    batches = make_batches(encode_pairs(PAIRS, src_vocab, tgt_vocab), batch_size=2)
    config = TrainConfig(epochs=3, warmup=5, device="cpu", seed=4)
    runs = [train(tiny_model(src_vocab, tgt_vocab, dropout=0.1), batches, None, config, progress=False)["loss"]
            for _ in range(2)]
    assert runs[0] == runs[1]


# --- checkpoints ------------------------------------------------------------------------------

def _logits(model: Transformer) -> torch.Tensor:
    src, tgt = torch.tensor([[4, 5, 6, 7]]), torch.tensor([[1, 4, 5]])
    with torch.no_grad():
        return model.eval()(src, tgt)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, vocabs):
    src_vocab, tgt_vocab = vocabs
    model = tiny_model(src_vocab, tgt_vocab, seed=5)
    meta = {"note": "test", "steps": 3, "torch": torch.__version__, "losses": (1.5, 0.5)}
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, src_vocab, tgt_vocab, meta=meta)
    ckpt = load_checkpoint(path)
    assert torch.equal(_logits(ckpt.model), _logits(model))
    assert not ckpt.model.training and ckpt.model.config == model.config
    assert ckpt.src_vocab.itos == src_vocab.itos and ckpt.tgt_vocab.itos == tgt_vocab.itos
    assert ckpt.meta == {"note": "test", "steps": 3, "torch": str(torch.__version__), "losses": [1.5, 0.5]}
    with pytest.raises(TypeError, match="meta may hold only"):
        save_checkpoint(tmp_path / "x.pt", model, src_vocab, tgt_vocab, meta={"vocab": src_vocab})
    half = load_checkpoint(save_checkpoint(tmp_path / "half.pt", model, src_vocab, tgt_vocab, half=True))
    assert next(half.model.parameters()).dtype == torch.float32
    assert (_logits(half.model) - _logits(model)).abs().max() < 2e-2
    assert (tmp_path / "half.pt").stat().st_size < 0.7 * path.stat().st_size


def test_missing_corrupt_and_mismatched_checkpoints_raise_checkpoint_error(tmp_path, vocabs):
    src_vocab, tgt_vocab = vocabs
    with pytest.raises(CheckpointError, match="no checkpoint at .*python -m course_lib.training"):
        load_checkpoint(tmp_path / "nothing.pt")
    assert issubclass(CheckpointError, ValueError)
    good = save_checkpoint(tmp_path / "good.pt", tiny_model(src_vocab, tgt_vocab), src_vocab, tgt_vocab)
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint at all")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:2000])
    for name in ("junk.pt", "cut.pt"):
        with pytest.raises(CheckpointError, match="not a readable translator checkpoint"):
            load_checkpoint(tmp_path / name)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a course_lib translator checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    def tampered(name: str, change) -> str:  # a changed file with a matching digest: the deeper checks must catch it
        data = torch.load(good, weights_only=True)
        change(data)
        data["sha256"] = content_digest(data)
        torch.save(data, tmp_path / name)
        return str(tmp_path / name)

    with pytest.raises(CheckpointError, match="do not fit the saved config"):
        load_checkpoint(tampered("wide.pt", lambda d: d["config"].update(d_model=64, d_ff=128)))
    with pytest.raises(CheckpointError, match="do not fit the saved config"):
        load_checkpoint(tampered("extra.pt", lambda d: d["state_dict"].update(extra=torch.zeros(1))))
    with pytest.raises(CheckpointError, match="vocabularies of"):
        load_checkpoint(tampered("vocab.pt", lambda d: d["tgt_vocab"]["itos"].append("새말")))
    with pytest.raises(CheckpointError, match="invalid config"):
        load_checkpoint(tampered("config.pt", lambda d: d["config"].update(n_heads=5)))
    with pytest.raises(CheckpointError, match="'state_dict' must be a dict"):
        load_checkpoint(tampered("list.pt", lambda d: d.update(state_dict=[1, 2])))
    with pytest.raises(CheckpointError, match="lacks the entries"):
        load_checkpoint(tampered("partial.pt", lambda d: d.pop("state_dict")))
    with pytest.raises(ValueError, match="vocabularies have sizes"):
        save_checkpoint(tmp_path / "bad.pt", tiny_model(src_vocab, tgt_vocab), tgt_vocab, src_vocab)


# --- bring your own data ----------------------------------------------------------------------

def test_bring_your_own_tsv_with_bpe(tmp_path):
    from course_lib.decoding import translate

    lines = [f"{en}\t{ko}\tCC-BY note" for en, ko in PAIRS]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    pairs = corpus.load_pairs(tmp_path / "pairs.tsv")
    assert pairs == PAIRS
    bpe = BPE.train([text for pair in pairs for text in pair], num_merges=40)
    src_vocab, tgt_vocab = build_vocabs(pairs, tokenize=bpe.tokenize)
    assert "▁closed" in src_vocab and "▁the" in src_vocab  # the repeated words became single pieces
    assert all(bpe.detokenize(bpe.tokenize(text)) == text for pair in pairs for text in pair)
    examples = encode_pairs(pairs, src_vocab, tgt_vocab, tokenize=bpe.tokenize)
    assert all(Vocab.unk_id not in s + t for s, t in examples)
    model = tiny_model(src_vocab, tgt_vocab, seed=1)
    batches = make_batches(examples, batch_size=3)
    train(model, batches, None, TrainConfig(epochs=60, warmup=30, lr_factor=0.5, device="cpu"), progress=False)
    out = [translate(model, en, src_vocab, tgt_vocab, tokenize=bpe.tokenize, detokenize=bpe.detokenize)
           for en, _ in pairs]
    assert out == [ko for _, ko in pairs]  # a tiny model memorises six pairs
    assert isinstance(translate(model, "A zebra sings.", src_vocab, tgt_vocab, tokenize=bpe.tokenize,
                                detokenize=bpe.detokenize), str)  # unseen characters: <unk>, no crash


# --- word dropout (--unk-dropout) ---------------------------------------------------------------

def test_unk_dropout_replaces_source_ids_only():
    from course_lib.training import unk_dropout
    examples = [([4, 5, 6, 2], [7, 8]), ([9, 10], [11])]
    assert unk_dropout(examples, 0.0) == examples
    assert unk_dropout(examples, 1.0) == [([3, 3, 3, 2], [7, 8]), ([3, 3], [11])]  # <eos> (2) is special: kept
    assert unk_dropout(examples, 1.0, only={5, 10}) == [([4, 3, 6, 2], [7, 8]), ([9, 3], [11])]
    many = [(list(range(4, 104)), [5])] * 20
    dropped = unk_dropout(many, 0.1, seed=0)
    share = sum(i == 3 for src, _ in dropped for i in src) / 2000
    assert 0.07 < share < 0.13 and dropped == unk_dropout(many, 0.1, seed=0) and dropped != unk_dropout(many, 0.1, seed=1)
    assert examples == [([4, 5, 6, 2], [7, 8]), ([9, 10], [11])]  # not changed in place
    with pytest.raises(ValueError, match="probability in \\[0, 1\\]"):
        unk_dropout(examples, 1.5)


@pytest.mark.parametrize("p, trained", [("0", False), ("0.5", True)])
def test_the_command_trains_the_unk_row_only_with_word_dropout(tmp_path, p, trained):
    """--unk-dropout 0: <unk> never occurs in the source, so its embedding row keeps its initial values exactly."""
    from course_lib import training
    from course_lib.generalisation import fresh_model, unk_row_change
    out = tmp_path / "m.pt"
    assert training.main(["--out", str(out), "--tiny", "--max-steps", "3", "--quiet", "--float32", "--unk-dropout", p]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.meta["unk_dropout"] == float(p) and ckpt.meta["steps"] == 3 and ckpt.meta["threads"] >= 1
    moved = unk_row_change(ckpt.model, fresh_model(ckpt.model.config, 0))
    assert (moved > 1e-4) if trained else (moved == 0.0), moved


def test_the_command_sets_its_threads_and_gives_the_callers_back(tmp_path):
    from course_lib import training
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert training.main(["--out", str(tmp_path / "m.pt"), "--tiny", "--max-steps", "1", "--quiet", "--threads", "2"]) == 0
        assert load_checkpoint(tmp_path / "m.pt").meta["threads"] == 2  # the command trained on the threads it was given
        assert torch.get_num_threads() == 1  # and the caller's setting is back
    finally:
        torch.set_num_threads(before)
