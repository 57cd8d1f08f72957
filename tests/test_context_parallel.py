"""RepVideo under diffusers' context parallelism: each rank blends and caches only its shard of the tokens.

diffusers 0.42 ships a context-parallel plan (`_cp_plan`) for Wan and LTX-Video among our families, none for
CogVideoX, HunyuanVideo or Mochi. On a CPU-only machine `enable_parallelism` divides by
`torch.accelerator.device_count()` (0) and raises ZeroDivisionError; the worker works around that one line, so the
gloo test below runs the real Ulysses all-to-all attention of diffusers. Ring attention needs `return_lse`, which
the native (CPU) attention backend does not provide. LTX-Video's plan fails on CPU without RepVideo too (attention
mask shape), so it is only run on GPUs.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("context_parallel_worker.py")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(backend: str, families: str, out_dir: Path, processes: int = 2) -> list[dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    with socket.socket() as probe:  # a free port, so parallel test runs on one machine do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(port), str(WORKER), backend, families, str(out_dir)]
    # A session of its own, so a hung rendezvous can be ended with all its workers, not just the launcher.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail("context-parallel workers did not finish within 240 s:\n" + stderr[-4000:])
    assert process.returncode == 0, stdout[-4000:] + stderr[-4000:]
    return [json.loads(line) for path in sorted(out_dir.glob("rank*.jsonl")) for line in path.read_text().splitlines()]


def _assert_equals_single_process(records: list[dict], families: list[str], processes: int):
    assert len(records) == len(families) * 2 * processes  # every family, both orders, every rank
    for record in records:
        assert record["output_shape"] == record["reference_shape"]
        assert record["repvideo_effect"] > 1e-2, record  # the gates really change the output ...
        assert record["max_difference"] <= 1e-5, record  # ... and context parallelism does not
        full_tokens = 3 * 4 * 4  # tiny Wan: 3 latent frames of 8x8, patch 2
        assert record["cached_tokens"] == full_tokens // processes, record  # the cache holds this rank's shard


@pytest.mark.slow
def test_repvideo_under_two_process_context_parallelism_on_cpu_equals_one_process(tmp_path):
    _assert_equals_single_process(_run("gloo", "Wan", tmp_path), ["Wan"], 2)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA GPUs for NCCL context parallelism")
def test_repvideo_under_two_gpu_context_parallelism_equals_one_gpu(tmp_path):
    records = _run("nccl", "Wan", tmp_path, processes=2)
    _assert_equals_single_process(records, ["Wan"], 2)
