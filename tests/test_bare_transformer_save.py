"""A transformer saved on its own with RepVideo on: clean base weights, gates in `repvideo/` inside its folder, and
`apply_repvideo(Model.from_pretrained(folder))` finds them again (issue 12, item 6)."""

import contextlib
import io
import logging
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel, ModelMixin
from safetensors.torch import load_file

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.core import pipeline
from repvideo_diffusers.testing import TINY_MODELS

TRAINED = [0.3, 0.3, 0.3, 0.3]


def run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


@pytest.fixture
def gated():
    """The tiny CogVideoX transformer with RepVideo on and gates that look trained (0.3, not the fresh 0.5)."""
    transformer, inputs = TINY_MODELS["CogVideoX"].build()
    vanilla = run(transformer, inputs)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2))
    with torch.no_grad():
        gates.gate.fill_(0.3)
    return transformer, inputs, vanilla, run(transformer, inputs)


@contextlib.contextmanager
def diffusers_log():
    """Everything diffusers logs at INFO and above (its loggers do not propagate to the root logger)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def loading_complaints(text: str) -> list[str]:
    words = ("were not used", "unexpected", "newly initialized", "not initialized", "missing")
    return [line for line in text.splitlines() if any(word in line.lower() for word in words)]


def test_bare_save_round_trip_keeps_trained_gates_and_the_output(gated, tmp_path):
    transformer, inputs, vanilla, expected = gated
    transformer.save_pretrained(tmp_path / "model")

    assert (tmp_path / "model" / "repvideo" / "config.json").is_file()
    loaded = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "model")
    assert torch.equal(run(loaded, inputs), vanilla)  # the saved base weights are the base model's
    gates = apply_repvideo(loaded)  # no argument: the gates saved beside it
    assert gates.gate.tolist() == pytest.approx(TRAINED)
    assert gates.config.window == 2
    assert torch.equal(run(loaded, inputs), expected)
    assert transformer.repvideo_gates.gate.tolist() == pytest.approx(TRAINED)  # still on after saving


def test_bare_save_writes_no_repvideo_keys_and_plain_diffusers_loads_it_silently(gated, tmp_path):
    transformer, inputs, _, _ = gated
    transformer.save_pretrained(tmp_path / "clean")
    weights = load_file(tmp_path / "clean" / "diffusion_pytorch_model.safetensors")
    assert not [key for key in weights if "repvideo" in key]
    assert set(weights) == {k for k in transformer.state_dict() if not k.startswith("repvideo_gates.")}

    # Control: diffusers' own save_pretrained (unwrapped) does leak the gate, and loading it complains.
    ModelMixin.save_pretrained.__wrapped_by_repvideo__(transformer, tmp_path / "dirty")
    assert "repvideo_gates.gate" in load_file(tmp_path / "dirty" / "diffusion_pytorch_model.safetensors")
    with diffusers_log() as log:
        CogVideoXTransformer3DModel.from_pretrained(tmp_path / "dirty")
    assert loading_complaints(log.getvalue())

    with diffusers_log() as log:
        CogVideoXTransformer3DModel.from_pretrained(tmp_path / "clean")
    assert loading_complaints(log.getvalue()) == []


@pytest.mark.parametrize("kwargs, weight_files", [
    ({"variant": "fp16"}, ["diffusion_pytorch_model.fp16.safetensors"]),
    ({"safe_serialization": False}, ["diffusion_pytorch_model.bin"]),
    ({"max_shard_size": "20KB"}, None),  # several shards plus an index
])
def test_save_pretrained_arguments_pass_through(gated, tmp_path, kwargs, weight_files):
    transformer, inputs, _, expected = gated
    folder = tmp_path / "model"
    transformer.save_pretrained(folder, **kwargs)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "config.json")
    if weight_files is None:
        assert "diffusion_pytorch_model.safetensors.index.json" in files and len(files) > 2
    else:
        assert files == weight_files
    for name in files:
        if name.endswith(".safetensors"):
            assert not [k for k in load_file(folder / name) if "repvideo" in k]
        elif name.endswith(".bin"):
            assert not [k for k in torch.load(folder / name, weights_only=True) if "repvideo" in k]
    loaded = CogVideoXTransformer3DModel.from_pretrained(folder, variant=kwargs.get("variant"))
    apply_repvideo(loaded)
    assert torch.equal(run(loaded, inputs), expected)


@pytest.fixture
def fake_hub(monkeypatch):
    """diffusers' push_to_hub without a network: what would be uploaded, per repo id (files relative to the folder)."""
    import diffusers.models.modeling_utils as modeling_utils
    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.utils.hub_utils as hub_utils

    uploaded = {}

    class Repo:
        def __init__(self, repo_id, *args, **kwargs):
            self.repo_id = repo_id

    def fake_upload_folder(repo_id, folder_path, **kwargs):
        uploaded[repo_id] = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*"))

    for module in (modeling_utils, pipeline_utils):
        monkeypatch.setattr(module, "create_repo", Repo)
        monkeypatch.setattr(module, "load_or_create_model_card", lambda *a, **k: hub_utils.ModelCard("---\n---\n"))
    monkeypatch.setattr(hub_utils, "upload_folder", fake_upload_folder)
    return uploaded


def test_push_to_hub_uploads_the_gates_with_the_transformer(gated, tmp_path, fake_hub):
    transformer, _, _, _ = gated
    # str: diffusers' push_to_hub splits the folder name as a string
    transformer.save_pretrained(str(tmp_path / "model"), push_to_hub=True, repo_id="me/tiny-transformer")
    files = fake_hub["me/tiny-transformer"]
    assert "repvideo/diffusion_pytorch_model.safetensors" in files and "diffusion_pytorch_model.safetensors" in files


def test_pipeline_push_to_hub_uploads_the_gates_beside_transformer(tiny_pipe, tmp_path, fake_hub):
    tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.3))
    tiny_pipe.save_pretrained(str(tmp_path / "pipe"), push_to_hub=True, repo_id="me/tiny-pipe")
    files = fake_hub["me/tiny-pipe"]
    assert "repvideo/diffusion_pytorch_model.safetensors" in files
    assert "transformer/diffusion_pytorch_model.safetensors" in files
    assert not [name for name in files if name.startswith("transformer/repvideo")]


def test_a_transformer_2_folder_gets_repvideo_2_where_loading_looks(gated, tmp_path):
    transformer, inputs, _, expected = gated
    transformer.save_pretrained(tmp_path / "transformer_2")
    assert (tmp_path / "transformer_2" / "repvideo_2" / "config.json").is_file()
    loaded = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "transformer_2")
    apply_repvideo(loaded)
    assert torch.equal(run(loaded, inputs), expected)


def test_saving_without_repvideo_writes_no_gates_folder(tmp_path):
    transformer, _ = TINY_MODELS["CogVideoX"].build()
    apply_repvideo(transformer, RepVideoConfig())
    remove_repvideo(transformer)
    transformer.save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model" / "repvideo").exists()


def test_uninstall_restores_diffusers_model_save_pretrained():
    wrapped = ModelMixin.save_pretrained
    original = wrapped.__wrapped_by_repvideo__
    try:
        pipeline.uninstall()
        assert ModelMixin.save_pretrained is original
    finally:
        pipeline.install()
    assert ModelMixin.save_pretrained.__wrapped_by_repvideo__ is original


def test_pipeline_save_keeps_the_gates_beside_transformer_not_inside_it(tiny_pipe, tmp_path):
    tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.3))
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "repvideo" / "config.json").is_file()
    assert not (tmp_path / "pipe" / "transformer" / "repvideo").exists()
    weights = load_file(tmp_path / "pipe" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert not [key for key in weights if "repvideo" in key]
