"""Wan VACE (`WanVACETransformer3DModel`): the family properties (tests/family_checks.py), the VACE branch left
alone (its hints are conditions), and `WanVACEPipeline` end to end, text-only and with a control video."""

import pytest
import torch

import family_checks as checks
import tiny_pipelines_wanlike as pipelines
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import get_family, get_family_by_name, get_transformer_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: only the main `blocks` are gated; `vace_blocks` produce hints added to
# the video stream after the blocks of `vace_layers`, a condition like the cross-attention text.
BLOCK_LISTS = [("blocks", ("hidden_states",), None)]
TINY = get_family_by_name("Wan-VACE").tiny


def test_the_transformer_has_its_own_family_and_is_not_taken_for_wan():
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    assert not issubclass(WanVACETransformer3DModel, WanTransformer3DModel)
    assert get_family(WanVACETransformer3DModel).name == "Wan-VACE"


def test_zero_gates_give_the_vanilla_output():
    checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    checks.assert_remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINY)


def test_capture_records_one_softmax_row_set_per_block():
    checks.assert_capture_records_one_softmax_row_set_per_block(TINY)


def test_the_vace_branch_is_not_gated_and_its_hints_are_the_same_with_repvideo():
    transformer, inputs = TINY.build()
    hints = []
    handles = [block.register_forward_hook(lambda m, a, out: hints.append(out[0].clone()))
               for block in transformer.vace_blocks]
    vanilla = checks.run(transformer, inputs)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.6))
    blended = checks.run(transformer, inputs)
    for handle in handles:
        handle.remove()
    assert gates.gate.numel() == len(transformer.blocks) == 4
    assert not any(block in get_transformer_blocks(transformer) for block in transformer.vace_blocks)
    assert all(not hasattr(block, "_diffusers_hook") for block in transformer.vace_blocks)
    assert len(hints) == 4 and all(torch.equal(a, b) for a, b in zip(hints[:2], hints[2:]))
    assert (blended - vanilla).abs().max().item() > 1e-4


@pytest.mark.parametrize("control", [False, True])
def test_pipeline_end_to_end(control):
    overrides = {}
    if control:  # a source video, an inpainting mask and a reference image through the VACE branch
        overrides = dict(video=pipelines.video(5, 3), mask=[pipelines.image(7).convert("L")] * 5,
                         reference_images=[pipelines.image(9)])
    pipelines.assert_repvideo_round_trip(pipelines.wan_vace_pipeline(), **overrides)


def test_repvideo_generate_runs_a_saved_pipeline(tmp_path):
    """A prompt alone is a valid VACE call (no control video: text-to-video), so `repvideo generate` works."""
    pipelines.assert_generate_from_a_saved_folder(pipelines.wan_vace_pipeline(), tmp_path)


def test_analyze_reports_every_block_of_every_step():
    pipelines.assert_analyze_reports(pipelines.wan_vace_pipeline())
