"""Chapter 07 on several processes: DistributedDataParallel (gloo, CPU, 127.0.0.1 only).

Two CPU processes train the same model on different batches; after every step their weights must
be identical (DDP averages the gradients), and equal to one process training on the average loss.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from course_lib.checkpoint import load_checkpoint
from course_lib.model import Transformer, TransformerConfig
from course_lib.training import (
    TrainConfig,
    build_vocabs,
    encode_pairs,
    label_smoothing_loss,
    make_batches,
    make_optimizer,
    train,
)

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("I go to school.", "나는 학교에 간다."), ("Suni closed the window.", "순이는 창문을 닫았다."),
         ("She closed the drawer.", "그녀는 서랍을 닫았다."), ("I like cats.", "나는 고양이가 좋다.")]
CONFIG = TrainConfig(epochs=2, warmup=2, lr_factor=0.5, device="cpu", max_steps=2)

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with "
                                                                                                "gloo")


def _setup():
    src_vocab, tgt_vocab = build_vocabs(PAIRS)
    batches = make_batches(encode_pairs(PAIRS, src_vocab, tgt_vocab), batch_size=2, shuffle=False)
    torch.manual_seed(0)
    return Transformer(TransformerConfig.tiny(len(src_vocab), len(tgt_vocab))), batches


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, batches = _setup()
        history = train(model, batches, None, CONFIG, progress=False)
        torch.save({"state": model.state_dict(), "steps": history["steps"], "world": history["world_size"]},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_replicas_stay_identical_and_equal_one_process_on_the_mean_loss(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["steps"] for r in ranks] == [2, 2] and [r["world"] for r in ranks] == [2, 2]
    states = [r["state"] for r in ranks]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])  # identical replicas

    model, batches = _setup()  # the same start, in one process
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(initial[k], states[0][k]) for k in initial)  # and they did train
    optimizer, schedule = make_optimizer(model, model.config.d_model, CONFIG.warmup, CONFIG.lr_factor)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same matmul blocking, the same rounding
    try:
        for _ in range(2):  # each step, rank 0 had one batch and rank 1 the other: DDP averages their gradients
            grads = []
            for b in batches:  # one backward per batch, as each rank did, then DDP's average (g0/2 + g1/2)
                optimizer.zero_grad()
                label_smoothing_loss(model(b.src, b.tgt_in, b.src_mask), b.tgt_out, CONFIG.label_smoothing).backward()
                grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
            for p, g0, g1 in zip(model.parameters(), *grads):
                p.grad = g0 / 2 + g1 / 2
            optimizer.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
    worst = max((model.state_dict()[k] - states[0][k]).abs().max().item() for k in states[0])
    assert worst < 1e-5, worst


@pytest.mark.slow
def test_training_command_runs_unchanged_under_torchrun(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "course_lib.training", "--out", str(out), "--tiny", "--max-steps", "2", "--quiet", "--float32"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "2 steps" in run.stdout and "2 process(es)" in run.stdout
    ckpt = load_checkpoint(out)
    assert ckpt.meta["world_size"] == 2 and ckpt.meta["steps"] == 2
    hashes = ckpt.meta["replica_float32_sha256"]  # of each replica's float32 weights, before the float16 file
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # both processes ended with the same weights
    torch.manual_seed(0)  # the command seeds with --seed 0 before building the model
    fresh = Transformer(ckpt.model.config)
    changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, ckpt.model.state_dict()[k])]
    assert len(changed) == len(fresh.state_dict())  # two Adam steps moved every tensor
