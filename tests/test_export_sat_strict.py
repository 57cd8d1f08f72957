"""`export_sat` reads a transformer folder strictly: the exported tensors are exactly the files' tensors (the same as
exporting the model in memory), and a folder with missing, extra or mis-shaped tensors, a non-CogVideoX config, a
CV-VAE folder or a damaged weights file is refused, listing what is wrong, with nothing written and nothing ever
initialised at random."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from repvideo_diffusers import RepVideoGates
from repvideo_diffusers.convert import SAT_MODEL_FILE, export_sat
from repvideo_diffusers.tiny import build_tiny_transformer

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture
def model():
    return build_tiny_transformer()


@pytest.fixture
def gates():
    gates = RepVideoGates(num_blocks=4)
    with torch.no_grad():
        gates.gate.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    return gates


def _exported(folder):
    return torch.load(folder / "1" / SAT_MODEL_FILE, weights_only=True)["module"]


def _assert_same_export(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("shard", [None, "20KB"], ids=["one-file", "sharded"])
def test_a_folder_exports_exactly_what_the_model_in_memory_exports(model, gates, tmp_path, shard, monkeypatch):
    model.save_pretrained(tmp_path / "transformer", **({"max_shard_size": shard} if shard else {}))
    if shard:
        assert (tmp_path / "transformer" / f"{WEIGHTS}.index.json").is_file()
    reference = _exported(export_sat(model, gates, tmp_path / "from-memory"))
    # Reading the folder initialises no real weights: every Linear it builds holds shapes only (meta tensors).
    devices, reset = [], torch.nn.Linear.reset_parameters
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters",
                        lambda self: (devices.append(self.weight.device.type), reset(self))[1])
    from_folder = _exported(export_sat(tmp_path / "transformer", gates, tmp_path / "from-folder"))
    _assert_same_export(from_folder, reference)
    assert devices and set(devices) == {"meta"}


def _damaged(model, tmp_path, edit) -> str:
    folder = tmp_path / "transformer"
    model.save_pretrained(folder)
    state = load_file(str(folder / WEIGHTS))
    edit(state)
    save_file(state, str(folder / WEIGHTS))
    return folder


def _assert_refused(folder, gates, tmp_path, *fragments):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError) as info:
        export_sat(folder, gates, tmp_path / "sat")
    for fragment in fragments:
        assert fragment in str(info.value)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    return str(info.value)


def test_missing_block_weights_are_refused_and_listed(model, gates, tmp_path):
    def drop_block_3(state):
        for key in [k for k in state if k.startswith("transformer_blocks.3.")]:
            del state[key]

    message = _assert_refused(_damaged(model, tmp_path, drop_block_3), gates, tmp_path, "missing tensors",
                       "transformer_blocks.3.attn1.to_q.weight", "Nothing was written")
    assert "transformer_blocks.2." not in message
    missing = sum(1 for k in model.state_dict() if k.startswith("transformer_blocks.3."))
    assert f"missing tensors ({missing})" in message


def test_extra_weights_are_refused_and_listed(model, gates, tmp_path):
    def add(state):
        state["transformer_blocks.4.attn1.to_q.weight"] = torch.zeros(16, 16)

    _assert_refused(_damaged(model, tmp_path, add), gates, tmp_path, "unexpected tensors (1)",
             "transformer_blocks.4.attn1.to_q.weight")


def test_mis_shaped_weights_are_refused_with_both_shapes(model, gates, tmp_path):
    def reshape(state):
        state["proj_out.weight"] = torch.zeros(3, 16)

    expected = tuple(model.state_dict()["proj_out.weight"].shape)
    _assert_refused(_damaged(model, tmp_path, reshape), gates, tmp_path, "shape mismatches (1)",
             f"proj_out.weight: (3, 16) vs {expected} expected")


@pytest.mark.parametrize("config, fragment", [
    ({"_class_name": "WanTransformer3DModel", "num_layers": 2}, "describes a WanTransformer3DModel"),
    ({"_class_name": "CVVAEModel", "latent_channels": 4}, "describes a CVVAEModel"),
    ({"in_channels": 3, "latent_channels": 4, "z_channels": 4}, "(a CV-VAE / VAE folder?)"),
], ids=["wan", "cvvae", "vae-without-class-name"])
def test_a_folder_of_another_model_is_refused_before_any_weights_are_read(config, fragment, gates, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    (tmp_path / "other" / WEIGHTS).write_bytes(b"never read")
    _assert_refused(tmp_path / "other", gates, tmp_path, fragment, "not a CogVideoXTransformer3DModel")


def test_a_truncated_weights_file_is_named(model, gates, tmp_path):
    model.save_pretrained(tmp_path / "transformer")
    weights = tmp_path / "transformer" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    _assert_refused(tmp_path / "transformer", gates, tmp_path, f"Could not read '{weights}'", "truncated or corrupt")


def test_a_shard_index_naming_a_missing_shard_is_refused(model, gates, tmp_path):
    model.save_pretrained(tmp_path / "transformer", max_shard_size="20KB")
    shard = sorted((tmp_path / "transformer").glob("*-of-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"names shards that do not exist: .*{shard.name}"):
        export_sat(tmp_path / "transformer", gates, tmp_path / "sat")
    assert not (tmp_path / "sat").exists()


def test_a_file_at_out_is_refused_even_with_overwrite(model, gates, tmp_path):
    (tmp_path / "sat").write_text("keep me")
    with pytest.raises(ValueError, match="is a file; the SAT checkpoint is a folder"):
        export_sat(model, gates, tmp_path / "sat", overwrite=True)
    assert (tmp_path / "sat").read_text() == "keep me"


def test_a_transformer_with_repvideo_applied_exports_like_the_bare_one(model, gates, tmp_path):
    from repvideo_diffusers import apply_repvideo

    reference = _exported(export_sat(model, gates, tmp_path / "bare"))
    apply_repvideo(model, gates)
    _assert_same_export(_exported(export_sat(model, None, tmp_path / "applied")), reference)
