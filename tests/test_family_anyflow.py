"""AnyFlow (`AnyFlowTransformer3DModel`): the family's properties on its tiny model, and `AnyFlowPipeline` end to end.

The block lists are stated here, independently of the package: the ``blocks`` take and return the video stream
alone; the text reaches every block through cross-attention and is never blended.
"""

import pytest
import torch

from tiny_pipelines_wanlike2 import require

require("AnyFlowTransformer3DModel", "AnyFlowPipeline")

import family_checks  # noqa: E402
from tiny_pipelines_wanlike2 import (  # noqa: E402
    anyflow_frames,
    anyflow_pipeline,
    assert_repvideo_round_trip,
    pixel_video,
)

from repvideo_diffusers.families import get_family, get_family_by_name  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOCK_LISTS = [("blocks", ("hidden_states",), None)]
TINY = get_family_by_name("AnyFlow").tiny


def test_the_class_belongs_to_its_own_family_and_not_to_the_far_variant():
    from diffusers import AnyFlowFARTransformer3DModel, AnyFlowTransformer3DModel

    assert get_family(AnyFlowTransformer3DModel).name == "AnyFlow"
    assert get_family(AnyFlowFARTransformer3DModel).name == "AnyFlow-FAR"  # a sibling class, not a subclass


def test_zero_gates_give_the_vanilla_output():
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    family_checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    family_checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINY)


def test_capture_records_one_softmax_row_set_per_block():
    family_checks.assert_capture_records_one_softmax_row_set_per_block(TINY)


def test_capture_reads_the_grid_from_frames_before_channels():
    from repvideo_diffusers.attention import capture_attention

    transformer, inputs = TINY.build()
    with capture_attention(transformer) as capture:
        family_checks.run(transformer, inputs)
    assert capture.grid == (3, 4, 4)  # (B, F, C, H, W) = (2, 3, 4, 8, 8), patch (1, 2, 2)
    assert [tuple(rows.shape) for rows in capture.maps] == [(2, 3, 48)] * 4  # self-attention: video tokens only


def test_text_to_video_pipeline():
    assert_repvideo_round_trip(anyflow_pipeline(), anyflow_frames)


def test_video_to_video_pipeline():
    """A conditioning video (5 frames: the first 2 latent frames are kept fixed) through the same pipeline."""
    video = pixel_video(5, 16)
    assert_repvideo_round_trip(anyflow_pipeline(), lambda pipe: anyflow_frames(pipe, video=video))


def test_gates_act_on_every_flow_map_step():
    """Each of the 3 flow-map steps calls the transformer once, and RepVideo runs in every call."""
    from repvideo_diffusers import RepVideoConfig

    pipe = anyflow_pipeline()
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.5))
    state = pipe.transformer._repvideo_state.state
    counts = []
    handle = pipe.transformer.blocks[-1].register_forward_hook(lambda *a: counts.append(state.count))
    anyflow_frames(pipe)
    handle.remove()
    assert counts == [3, 3, 3]  # the last block of each call sees the outputs of all 3 blocks (window 6)
    assert torch.isfinite(pipe.transformer.repvideo_gates.gate).all()


def test_analyze_runs_on_the_pipeline():
    """`repvideo analyze`'s measurement: attention and frame similarity per step, with and without RepVideo."""
    from repvideo_diffusers.analysis import analyze

    report = analyze(anyflow_pipeline(), num_inference_steps=2, num_frames=9, height=32, width=32,
                     max_sequence_length=16, progress=False)
    for run in report["runs"].values():
        assert torch.tensor(run["attention_similarity"]).shape == (2, 3, 3)  # steps x blocks x blocks
        assert torch.tensor(run["frame_similarity"]).shape == (2, 3)
        assert run["grid"] == [3, 2, 2]
