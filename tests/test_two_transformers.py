"""Pipelines with two transformers (Wan 2.2 A14B: a high-noise and a low-noise expert): both gated by default,
saved and loaded as repvideo/ and repvideo_2/, one picked with `components=`."""

import json

import numpy as np
import pytest
import torch
from diffusers import WanPipeline

from repvideo_diffusers import RepVideoConfig, RepVideoGates
from tiny_pipelines import wan22_pipeline, wan_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def pipe():
    return wan22_pipeline()


def _experts_called(pipe):
    """How often each expert runs in one pipeline call (both must, or the test proves nothing)."""
    calls = {"transformer": 0, "transformer_2": 0}
    handles = [getattr(pipe, name).register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
               for name in calls]
    wan_frames(pipe)
    for handle in handles:
        handle.remove()
    return calls


def test_both_experts_run_in_the_tiny_pipeline(pipe):
    calls = _experts_called(pipe)
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0


def test_enable_gates_both_transformers_and_disable_gives_the_original_output(pipe):
    vanilla = wan_frames(pipe)
    gates = pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.7))
    assert gates is pipe.transformer.repvideo_gates
    assert pipe.transformer_2.repvideo_gates.gate.shape == (4,) and gates.gate.shape == (3,)
    both = wan_frames(pipe)
    assert np.abs(both - vanilla).max() > 1e-4

    pipe.disable_repvideo()
    assert not hasattr(pipe.transformer, "repvideo_gates") and not hasattr(pipe.transformer_2, "repvideo_gates")
    assert np.array_equal(wan_frames(pipe), vanilla)


def test_components_picks_one_transformer(pipe):
    vanilla = wan_frames(pipe)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.7), components=("transformer_2",))
    assert not hasattr(pipe.transformer, "repvideo_gates") and hasattr(pipe.transformer_2, "repvideo_gates")
    only_second = wan_frames(pipe)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.7))
    both = wan_frames(pipe)
    assert np.abs(only_second - vanilla).max() > 1e-4 and np.abs(both - only_second).max() > 1e-4


def test_save_and_load_write_repvideo_and_repvideo_2(pipe, tmp_path):
    pipe.enable_repvideo(RepVideoConfig(window=2))
    with torch.no_grad():
        pipe.transformer.repvideo_gates.gate.copy_(torch.tensor([0.1, 0.2, 0.3]))
        pipe.transformer_2.repvideo_gates.gate.copy_(torch.tensor([0.6, 0.7, 0.8, 0.9]))
    expected = wan_frames(pipe)
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "repvideo" / "config.json").read_text())["num_blocks"] == 3
    assert json.loads((tmp_path / "repvideo_2" / "config.json").read_text())["num_blocks"] == 4
    for folder in ("transformer", "transformer_2"):  # clean base weights: plain diffusers loads them as they were
        config = json.loads((tmp_path / folder / "config.json").read_text())
        assert config["_class_name"] == "WanTransformer3DModel"

    reloaded = WanPipeline.from_pretrained(tmp_path)
    assert not hasattr(reloaded.transformer, "repvideo_gates")
    reloaded.enable_repvideo()
    assert reloaded.transformer.repvideo_gates.gate.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert reloaded.transformer_2.repvideo_gates.gate.tolist() == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert np.abs(wan_frames(reloaded) - expected).max() <= 1e-6


def test_one_gates_folder_for_two_transformers_is_refused_with_the_fix_and_nothing_changes(pipe, tmp_path):
    RepVideoGates(num_blocks=3, window=2, model_family="Wan").save_pretrained(tmp_path / "gates")
    with pytest.raises(ValueError, match=r"holds one set of gates.*components=\('transformer',\)"):
        pipe.enable_repvideo(str(tmp_path / "gates"))
    assert not hasattr(pipe.transformer, "repvideo_gates") and not hasattr(pipe.transformer_2, "repvideo_gates")
    gates = pipe.enable_repvideo(str(tmp_path / "gates"), components="transformer")
    assert gates.config.num_blocks == 3 and not hasattr(pipe.transformer_2, "repvideo_gates")


def test_a_dict_gives_each_transformer_its_own_and_bad_gates_for_one_change_neither(pipe, tmp_path):
    RepVideoGates(num_blocks=4, window=2, gate_init=0.25, model_family="Wan").save_pretrained(tmp_path / "second")
    pipe.enable_repvideo({"transformer": RepVideoConfig(gate_init=0.0), "transformer_2": str(tmp_path / "second")})
    assert pipe.transformer_2.repvideo_gates.gate.tolist() == [0.25] * 4
    in_use = pipe.transformer.repvideo_gates
    with pytest.raises(ValueError, match="saved for a model with 4 blocks"):
        pipe.enable_repvideo({"transformer": str(tmp_path / "second"), "transformer_2": RepVideoConfig()})
    assert pipe.transformer.repvideo_gates is in_use and pipe.transformer_2.repvideo_gates.gate.tolist() == [0.25] * 4
    with pytest.raises(ValueError, match=r"components=\('transformer_3',\).*\('transformer', 'transformer_2'\)"):
        pipe.enable_repvideo(components=("transformer_3",))
