"""Two CPU processes (DDP over gloo) train the same gates as one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from repvideo_diffusers.training import train

from test_train import _config, make_dataset

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_end_with_identical_gates_equal_to_one_process_with_the_same_global_batch(tmp_path):
    data = make_dataset(tmp_path / "clips", good=4)
    options = dict(max_steps=4, checkpoint_every=2, learning_rate=1e-2)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "repvideo_diffusers", "train", "--data", str(data), "--out",
               str(tmp_path / "ddp"), "--batch-size", "1", "--max-steps", "4", "--checkpoint-every", "2",
               "--learning-rate", "1e-2", "--report-to", "none"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert ddp["num_processes"] == 2 and ddp["global_batch"] == 2
    assert ddp["rank_gate_spread"] == 0.0  # gathered from both ranks after the last step
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints" / "checkpoint-2").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]

    single = train(_config(data, tmp_path / "single", batch_size=2, **options))
    assert single.global_batch == 2
    # Same samples and noise by construction; only the order of the gradient all-reduce differs (float32 sums).
    assert max(abs(a - b) for a, b in zip(ddp["gates"], single.gates)) <= 1e-6
    assert ddp["gates"] != [0.5] * 4
    assert abs(ddp["final_loss"] - single.final_loss) <= 1e-5 * abs(single.final_loss)
