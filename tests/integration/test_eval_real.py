"""Integration: `fashiongen eval` of a few-step checkpoint on real Fashion-MNIST, N = 200.

Uses the shipped feature network and the user's statistics cache (computed on first use,
keyed by the featnet's fingerprint, so sharing it is safe).
"""

import json

import pytest

from fashiongen.cli import main
from fashiongen.data.sources import resolve_idx_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        resolve_idx_dir("fashion-mnist") is None, reason="Fashion-MNIST not available offline"
    ),
]
# the dcgan preset compiles its networks; tiny runs skip it (tests/unit/test_train.py
# tests compiling)
SMALL = [
    "--set",
    "train.compile=false",
    "--set",
    "model.g_width=16",
    "--set",
    "model.d_width=16",
    "--no-progress",
    "--set",
    "train.use_tensorboard=false",
    "--set",
    "train.num_threads=1",
]


def test_eval_few_step_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "dcgan", "--max-steps", "5", "--out", str(run), *SMALL]) == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--num-samples", "200", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "N = 200" in printed and "fashion-mnist test split, 10000 images" in printed
    assert "feature net: fashion-mnist, test accuracy 0.9" in printed
    result = json.loads(out.read_text())
    assert result["num_samples"] == 200 and result["ref_count"] == 10000
    assert result["featnet"]["name"] == "fashion-mnist"
    # five steps of training: far from the real-data floor (FID 0.06 at N = 1000)
    assert result["fid"] > 1 and result["conditional_accuracy"] is not None
    assert 0 <= result["copy_rate"] <= 1 and 0 <= result["coverage"] <= 1
