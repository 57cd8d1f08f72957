"""Gates are Hub artefacts: safetensors + config + model card, loadable from gate and pipeline folders."""

import json
import math

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from repvideo_diffusers import RepVideoConfig, RepVideoGates, apply_repvideo, load_gates, remove_repvideo
from repvideo_diffusers.testing import TINY_MODELS


def run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": 0}, "window must be an integer >= 1"),
        ({"window": 2.5}, "window must be an integer >= 1"),
        ({"gate_init": math.nan}, "gate_init must be a finite number"),
        ({"gate_init": math.inf}, "gate_init must be a finite number"),
        ({"gate_init": "half"}, "gate_init must be a finite number"),
    ],
)
def test_invalid_config_raises_value_error_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        RepVideoConfig(**kwargs)
    assert "Use " in str(error.value)  # names the fix


def test_save_pretrained_writes_safetensors_config_and_model_card(tmp_path):
    transformer, _ = TINY_MODELS["CogVideoX"].build()
    gates = apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.25))
    with torch.no_grad():
        gates.gate.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    gates.register_to_config(base_model="THUDM/CogVideoX-2b")
    gates.save_pretrained(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    weights = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    assert list(weights) == ["gate"]
    assert torch.allclose(weights["gate"], torch.tensor([0.1, 0.2, 0.3, 0.4]))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "RepVideoGates"
    assert (config["num_blocks"], config["window"], config["model_family"]) == (4, 3, "CogVideoX")

    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "repvideo-diffusers"
    assert card.data.base_model == "THUDM/CogVideoX-2b"
    assert {"repvideo", "text-to-video"} <= set(card.data.tags)
    assert "0.1000, 0.2000, 0.3000, 0.4000" in card.text


def test_saved_gates_load_back_onto_a_fresh_model_with_the_same_output(tmp_path):
    transformer, inputs = TINY_MODELS["CogVideoX"].build()
    gates = apply_repvideo(transformer, RepVideoConfig(window=3))
    with torch.no_grad():
        gates.gate.copy_(torch.tensor([0.9, 0.8, 0.7, 0.6]))
    expected = run(transformer, inputs)
    gates.save_pretrained(tmp_path / "gates")

    fresh, _ = TINY_MODELS["CogVideoX"].build()
    loaded = apply_repvideo(fresh, str(tmp_path / "gates"))
    assert loaded.config.window == 3
    assert torch.equal(run(fresh, inputs), expected)


def test_push_to_hub_uploads_the_gates_with_our_model_card(monkeypatch, tmp_path):
    uploaded = {}

    class Repo:
        repo_id = "me/my-gates"

    def fake_upload_folder(repo_id, folder_path, **kwargs):
        import pathlib

        uploaded["repo_id"] = repo_id
        uploaded["files"] = sorted(p.name for p in pathlib.Path(folder_path).iterdir())
        uploaded["card"] = ModelCard.load(pathlib.Path(folder_path) / "README.md")
        return "https://huggingface.co/me/my-gates/commit/0"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kwargs: Repo())
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake_upload_folder)
    gates = RepVideoGates(num_blocks=4, model_family="CogVideoX")
    assert gates.push_to_hub("me/my-gates").endswith("/commit/0")
    assert uploaded["repo_id"] == "me/my-gates"
    assert uploaded["files"] == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    assert "repvideo" in uploaded["card"].data.tags


def _untouched(transformer, inputs, vanilla):
    assert not hasattr(transformer, "repvideo_gates")
    assert all(not hasattr(block, "_diffusers_hook") for block in transformer.transformer_blocks)
    assert torch.equal(run(transformer, inputs), vanilla)


@pytest.mark.parametrize(
    "saved, message",
    [
        (dict(num_blocks=30, model_family="CogVideoX"), "30 blocks .* has 4 blocks"),
        (dict(num_blocks=4, model_family="Wan"), "saved for a Wan model"),
    ],
    ids=["another-block-count", "another-family"],
)
def test_gates_saved_for_another_model_raise_and_leave_the_model_untouched(tmp_path, saved, message):
    RepVideoGates(**saved).save_pretrained(tmp_path)
    transformer, inputs = TINY_MODELS["CogVideoX"].build()
    vanilla = run(transformer, inputs)
    with pytest.raises(ValueError, match=message):
        apply_repvideo(transformer, str(tmp_path))
    _untouched(transformer, inputs, vanilla)


def test_a_folder_of_something_else_raises_naming_what_was_found(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "CogVideoXTransformer3DModel"}))
    (tmp_path / "weights.bin").write_bytes(b"\0")
    transformer, inputs = TINY_MODELS["CogVideoX"].build()
    vanilla = run(transformer, inputs)
    with pytest.raises(ValueError, match=r"not a RepVideo gates folder.*weights\.bin"):
        apply_repvideo(transformer, str(tmp_path))
    _untouched(transformer, inputs, vanilla)


def test_corrupt_gate_weights_raise_a_clear_error(tmp_path):
    RepVideoGates(num_blocks=4, model_family="CogVideoX").save_pretrained(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="Could not load RepVideo gates"):
        load_gates(tmp_path)


def test_unknown_hub_id_offline_raises_a_clear_error():
    with pytest.raises(ValueError, match="No RepVideo gates found at 'nobody/no-such-gates'"):
        load_gates("nobody/no-such-gates")


def test_unsupported_model_raises_naming_the_supported_families_and_is_untouched():
    from diffusers import UNet2DModel

    model = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 4),
                        norm_num_groups=2, layers_per_block=1,
                        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as error:
        apply_repvideo(model)
    for family in ("CogVideoX", "Wan", "HunyuanVideo", "LTX-Video", "Mochi"):
        assert family in str(error.value)
    assert not hasattr(model, "repvideo_gates") and not hasattr(model, "_repvideo_state")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_applying_twice_raises_and_keeps_the_first_gates():
    transformer, _ = TINY_MODELS["CogVideoX"].build()
    first = apply_repvideo(transformer)
    with pytest.raises(ValueError, match="already applied"):
        apply_repvideo(transformer)
    assert transformer.repvideo_gates is first
    remove_repvideo(transformer)
    remove_repvideo(transformer)  # removing twice is harmless
