"""RepVideo alongside other diffusers / accelerate machinery: offloading, FirstBlockCache, torch.compile."""

import accelerate
import diffusers
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.testing import TINY_MODELS

CONFIG = RepVideoConfig(window=3, gate_init=0.6)

# diffusers 0.40's group offloading reads `torch.accelerator.current_accelerator().type`, which fails on a machine
# without an accelerator (fixed in 0.41): a diffusers bug, not RepVideo's, so those tests skip there.
_GROUP_OFFLOAD_BROKEN = tuple(int(p) for p in diffusers.__version__.split(".")[:2]) < (0, 41) and (
    not torch.accelerator.is_available()
)
needs_working_group_offload = pytest.mark.skipif(
    _GROUP_OFFLOAD_BROKEN, reason="diffusers < 0.41 cannot group-offload without an accelerator (diffusers bug)"
)


def build():
    return TINY_MODELS["CogVideoX"].build(seed=0)


def run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


@pytest.fixture
def reference():
    transformer, inputs = build()
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, CONFIG)
    return inputs, vanilla, run(transformer, inputs)


def _sequential_offload(transformer):
    accelerate.cpu_offload(transformer, execution_device=torch.device("cpu"))
    assert transformer.repvideo_gates.gate.device.type == "meta"  # really offloaded: onloaded per call
    return transformer


def _model_offload(transformer):
    transformer, _ = accelerate.cpu_offload_with_hook(transformer, execution_device=torch.device("cpu"))
    return transformer


def _group_offload(transformer):
    transformer.enable_group_offload(
        onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
        offload_type="block_level", num_blocks_per_group=1,
    )
    return transformer


@pytest.mark.parametrize("offload", [_sequential_offload, _model_offload,
                                     pytest.param(_group_offload, marks=needs_working_group_offload)],
                         ids=["accelerate-sequential", "accelerate-model", "diffusers-group"])
def test_offloading_after_repvideo_gives_the_same_output(reference, offload):
    inputs, _, expected = reference
    transformer, _ = build()
    apply_repvideo(transformer, CONFIG)
    transformer = offload(transformer)
    assert torch.equal(run(transformer, inputs), expected)


@needs_working_group_offload
def test_repvideo_after_group_offloading_gives_the_same_output_and_removes_cleanly(reference):
    inputs, vanilla, expected = reference
    transformer, _ = build()
    transformer.enable_group_offload(
        onload_device=torch.device("cpu"), offload_device=torch.device("cpu"), offload_type="leaf_level"
    )
    apply_repvideo(transformer, CONFIG)
    assert torch.equal(run(transformer, inputs), expected)
    remove_repvideo(transformer)
    assert torch.equal(run(transformer, inputs), vanilla)


def _pipeline_frames(pipe, steps=4):
    return pipe(
        "a panda playing guitar", num_inference_steps=steps, num_frames=9, guidance_scale=6.0,
        max_sequence_length=16, output_type="np", generator=torch.Generator().manual_seed(0),
    ).frames


def test_first_block_cache_on_top_of_repvideo(tiny_pipe):
    tiny_pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    expected = _pipeline_frames(tiny_pipe)

    # threshold 0: FirstBlockCache never skips, so the result is RepVideo's alone
    tiny_pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))
    assert abs(_pipeline_frames(tiny_pipe) - expected).max() == 0.0
    tiny_pipe.transformer.disable_cache()

    # a huge threshold: the cache skips the tail blocks after the first step
    tiny_pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=10.0))
    calls = []
    handle = tiny_pipe.transformer.transformer_blocks[3].attn1.register_forward_hook(lambda *a: calls.append(1))
    skipped = _pipeline_frames(tiny_pipe, steps=4)
    handle.remove()
    assert len(calls) == 1  # computed once, skipped in the 3 later steps
    assert abs(skipped - expected).max() > 1e-3
    tiny_pipe.transformer.disable_cache()
    assert abs(_pipeline_frames(tiny_pipe) - expected).max() == 0.0


def test_repvideo_refuses_to_go_under_an_enabled_cache_and_leaves_the_model_alone(tiny_pipe):
    transformer = tiny_pipe.transformer
    transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))
    with pytest.raises(ValueError, match="disable_cache"):
        tiny_pipe.enable_repvideo()
    assert not hasattr(transformer, "repvideo_gates")
    assert all(list(block._diffusers_hook.hooks) == ["fbc_block_hook"] or list(block._diffusers_hook.hooks) == ["fbc_leader_block_hook"]
               for block in transformer.transformer_blocks)


@pytest.mark.slow
def test_torch_compile_of_a_transformer_with_repvideo_matches_eager(reference):
    inputs, _, expected = reference
    transformer, _ = build()
    apply_repvideo(transformer, CONFIG)
    compiled = torch.compile(transformer)
    assert (run(compiled, inputs) - expected).abs().max().item() <= 1e-5
    assert (run(compiled, inputs) - expected).abs().max().item() <= 1e-5  # second call reuses the graph
