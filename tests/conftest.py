"""Shared test set-up: offline Hub, a fresh per-session cache for the embedded tiny pipeline."""

import os
import tempfile

# Before anything imports huggingface_hub: no network in tests, and a cache that starts empty like CI's.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("REPVIDEO_CACHE", tempfile.mkdtemp(prefix="repvideo-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import repvideo_diffusers  # noqa: E402,F401 - installs pipe.enable_repvideo


@pytest.fixture(scope="session")
def tiny_pipeline_dir():
    """Folder of the embedded tiny CogVideoX pipeline (built once per session)."""
    from repvideo_diffusers.tiny import tiny_pipeline_path

    return tiny_pipeline_path()


@pytest.fixture
def tiny_pipe(tiny_pipeline_dir):
    """A freshly loaded tiny CogVideoX pipeline (float32, CPU)."""
    from diffusers import CogVideoXPipeline

    return CogVideoXPipeline.from_pretrained(tiny_pipeline_dir)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from threads; on a busy 2-core runner two threads per process only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
