"""fit under torchrun: two CPU processes (gloo) take the same steps as one process on the whole batch, and only
rank 0 writes the checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowlib import distributed, train

sys.path.insert(0, str(Path(__file__).parent))
import _ddp_worker  # noqa: E402


def test_single_process_helpers():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    part, weight = distributed.shard({"x": torch.arange(5), "label": "a"})
    assert torch.equal(part["x"], torch.arange(5)) and part["label"] == "a" and weight == 1.0


def test_two_gloo_processes_match_one_process(tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(Path(__file__).parent / "_ddp_worker.py"), str(tmp_path)]
    try:
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"torchrun did not finish in 180 s: {error.stderr}")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["saved_by"] == [0] and ranks[1]["saved_by"] == []  # only rank 0 writes
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir() if path.suffix == ".pt") == [
        "ddp-demo.pt"]

    single = _ddp_worker.build()
    history = train.fit(single, lambda m, x: -m.log_prob(x).mean(), _ddp_worker.batches(), epochs=2, lr=1e-2,
                        max_grad_norm=5.0, device="cpu", progress=False)
    assert len(ranks[0]["train_loss"]) == len(history.train_loss) == 14
    for rank in ranks:
        assert torch.allclose(torch.tensor(rank["train_loss"]), torch.tensor(history.train_loss), atol=1e-4)
        for name, value in single.state_dict().items():
            assert torch.allclose(rank["state"][name], value, atol=1e-4), name
    fresh = _ddp_worker.build().state_dict()
    moved = [name for name, value in single.state_dict().items() if not torch.equal(value, fresh[name])]
    assert len(moved) >= len(fresh) // 2  # training changed the weights, so the comparison above means something
