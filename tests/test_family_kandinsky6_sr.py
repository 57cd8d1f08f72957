"""Kandinsky 6 super-resolution (`Kandinsky6SRTransformer3DModel`): the family's properties on its tiny
configuration, and `Kandinsky6SRPipeline` (video to video) end to end. Its NABLA attention runs PyTorch's flex
attention, which has no backward pass on the CPU."""

import numpy as np
import pytest
import torch

import family_checks
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.families import TinyModel, get_family_by_name
from tiny_pipelines_kandinsky import kandinsky6_sr_frames, kandinsky6_sr_pipeline

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile")]

# Stated here, not read from the package: one list of blocks, one stream (text-free).
BLOCK_LISTS = [("visual_transformer_blocks", ("hidden_states",), None)]
TINY = get_family_by_name("Kandinsky6-SR").tiny


def test_zero_gates_give_the_vanilla_output():
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    family_checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY)


def test_no_attention_facts_because_the_attention_never_calls_sdpa():
    from repvideo_diffusers.attention import capture_attention

    transformer, _ = TINY.build()
    with pytest.raises(ValueError, match="declares no attention facts"):
        with capture_attention(transformer):
            pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention has no backward pass on the CPU")
def test_checkpointing_gives_the_same_loss_and_gradients():
    def on_cuda(g, b):
        return {k: v.cuda() if torch.is_tensor(v) else v for k, v in TINY.make_inputs(g, b).items()}

    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(
        TinyModel(TINY.family, lambda: TINY.make_transformer().cuda(), on_cuda, TINY.num_blocks))


def test_sr_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise():
    pipe = kandinsky6_sr_pipeline()
    vanilla = kandinsky6_sr_frames(pipe)
    assert vanilla.shape == (1, 5, 32, 32, 3) and np.isfinite(vanilla).all()
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert np.array_equal(kandinsky6_sr_frames(pipe), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert pipe.transformer.repvideo_gates.gate.shape == (3,)
    assert np.abs(kandinsky6_sr_frames(pipe) - vanilla).max() > 1e-4
    pipe.disable_repvideo()
    assert np.array_equal(kandinsky6_sr_frames(pipe), vanilla)
