"""Wan 2.2 Animate (`WanAnimateTransformer3DModel`): the family properties (tests/family_checks.py), the face
adapters and motion encoder left alone (conditions), and `WanAnimatePipeline` end to end in both modes."""

import pytest
import torch

import family_checks as checks
import tiny_pipelines_wanlike as pipelines
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import get_family, get_family_by_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: only `blocks` are gated; the face adapters' outputs, the pose latents and
# the CLIP image are conditions.
BLOCK_LISTS = [("blocks", ("hidden_states",), None)]
TINY = get_family_by_name("Wan-Animate").tiny


def test_the_transformer_has_its_own_family_and_is_not_taken_for_wan():
    from diffusers import WanAnimateTransformer3DModel, WanTransformer3DModel

    assert not issubclass(WanAnimateTransformer3DModel, WanTransformer3DModel)
    assert get_family(WanAnimateTransformer3DModel).name == "Wan-Animate"


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


def test_sdpa_routing_reaches_the_face_adapters_too():
    from repvideo_diffusers.attention import reset_attention_kernel, set_attention_kernel
    from repvideo_diffusers.attention.processors import attention_modules

    transformer, _ = TINY.build()
    set_attention_kernel(transformer, "sdpa")
    routed = {name for name, _ in attention_modules(transformer)}
    reset_attention_kernel(transformer)
    assert {"face_adapter.0", "face_adapter.1", "blocks.0.attn1", "blocks.3.attn2"} <= routed


def test_capture_records_one_softmax_row_set_per_block():
    checks.assert_capture_records_one_softmax_row_set_per_block(TINY)


def test_the_face_adapters_are_not_gated_and_see_the_blocks_outputs():
    """Each face adapter reads the output of the block before it, which RepVideo leaves as the block made it."""
    transformer, inputs = TINY.build()
    seen = {"adapter": [], "block": []}
    handles = [adapter.register_forward_pre_hook(lambda m, args: seen["adapter"].append(args[0].clone()))
               for adapter in transformer.face_adapter]
    handles += [transformer.blocks[i].register_forward_hook(lambda m, a, out: seen["block"].append(out.clone()))
                for i in (0, 2)]  # inject_face_latents_blocks=2: adapters after blocks 0 and 2
    gates = apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.6))
    checks.run(transformer, inputs)
    for handle in handles:
        handle.remove()
    assert gates.gate.numel() == len(transformer.blocks) == 4
    assert all(not hasattr(adapter, "_diffusers_hook") for adapter in transformer.face_adapter)
    assert len(seen["adapter"]) == len(seen["block"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(seen["adapter"], seen["block"]))


@pytest.mark.parametrize("case", ["animate", "replace", "two_segments"])
def test_pipeline_end_to_end(case):
    overrides = {
        "animate": {},
        "replace": dict(mode="replace", background_video=pipelines.video(5, 4),
                        mask_video=[pipelines.image(8).convert("L")] * 5),
        # 9 frames in segments of 5 with 1 frame of overlap: the second segment is conditioned on the first
        "two_segments": dict(pose_video=pipelines.video(9, 1), face_video=pipelines.video(9, 2, size=8)),
    }[case]
    pipelines.assert_repvideo_round_trip(pipelines.wan_animate_pipeline(), **overrides)


def test_analyze_reports_every_block_of_every_step():
    pipelines.assert_analyze_reports(pipelines.wan_animate_pipeline())
