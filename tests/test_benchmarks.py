"""benchmarks/bench_model.py stays runnable: its dry run takes the GPU cases' code path on the CPU,
and its FLOP formula (the MFU numerator) equals PyTorch's own count of our model's matmuls."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from course_lib.model import Transformer, TransformerConfig

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_model.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_model", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_model"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


def test_dry_run_takes_the_gpu_code_path_on_the_cpu(bench, capsys):
    rows = bench.main(["--dry-run", "--threads", "1"])
    out = capsys.readouterr().out
    assert "dry run" in out and "bf16 autocast" in out
    variants = ["ours (hand-written)", "ours (fused)", "nn.Transformer"]
    assert [r["variant"] for r in rows] == variants * 2  # lengths 16 and 32
    assert [r["case"] for r in rows] == ["tiny (dry run) L16"] * 3 + ["tiny (dry run) L32"] * 3
    for r in rows:
        assert r["ms"] > 0 and r["tflops"] > 0 and r["mfu"] is None and r["device"] == "CPU"
        assert (r["ratio"] == 1.0) == (r["variant"] == "nn.Transformer")
    table = out[out.index("| case |"):]
    assert table.count("\n| tiny (dry run)") == 6 and "| n/a |" in table


def test_the_two_models_are_the_same_size_apart_from_pytorchs_final_norms(bench):
    config = TransformerConfig.tiny(50, 50, share_embeddings=True, tie_output=True)
    ours, theirs = Transformer(config), bench.TorchSeq2Seq(config)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (tied tables once)
    assert count(theirs) - count(ours) == 2 * 2 * config.d_model  # nn.Transformer's two final LayerNorms
    assert theirs.generator.weight is theirs.src_embed.weight  # tied like ours
    src, tgt_in, _ = bench.make_batch(config, 4, 9, "cpu")
    assert theirs(src, tgt_in).shape == ours(src, tgt_in).shape == (4, 9, 50)


@pytest.mark.parametrize("config", [TransformerConfig.tiny(50, 50, share_embeddings=True, tie_output=True),
                                    TransformerConfig.tiny(40, 60, d_ff=48, n_layers=3)], ids=["tied", "untied"])
def test_model_flops_equals_pytorchs_count_of_our_hand_written_step(bench, config):
    model = Transformer(config)
    src, tgt_in, tgt_out = bench.make_batch(config, 6, 10, "cpu")
    with FlopCounterMode(display=False) as counter:  # counts every matmul, forward and backward
        loss = F.cross_entropy(model(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=0)
        loss.backward()
    assert counter.get_total_flops() == bench.model_flops(config, 6, 10, 10)


def test_paper_base_flops_and_peak_table(bench):
    c = TransformerConfig.paper_base()
    flops = bench.model_flops(c, batch=49, src_len=512, tgt_len=512)
    tokens = 49 * 512
    per_token = 12 * 512**2 * 6 + 2 * 512 * 2048 * 6 * 2 + 512 * 37000  # attention + FF matrices, both stacks, + output
    dense = 6 * tokens * per_token
    attention = 12 * 49 * 6 * 512 * 3 * 512**2
    assert flops == dense + attention
    assert 0.12 < attention / flops < 0.14  # at length 512 the attention term is already 13% of the work
    assert bench.peak_flops("cpu") == ("CPU", None)
    assert bench.PEAK_BF16["H100"] == 989e12 and bench.PEAK_BF16["A100"] == 312e12
