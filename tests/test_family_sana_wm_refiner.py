"""SANA-WM stage-2 refiner (`SanaWMLTX2RefinerTransformer3DModel`): the family's properties on its tiny configuration,
also with the sliding-window KV cache the refiner attends to, and `SanaWMLTX2Refiner` end to end."""

import numpy as np
import pytest
import torch

import family_checks
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.families import TinyModel, get_family_by_name
from tiny_pipelines_kandinsky import sana_wm_refined, sana_wm_refiner_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: the LTX-2 blocks run video-only; the video stream is `hidden_states`.
BLOCK_LISTS = [("transformer_blocks", ("hidden_states",), None)]
TINY = get_family_by_name("SANA-WM-Refiner").tiny


def _with_kv_cache(tiny: TinyModel) -> TinyModel:
    """The tiny inputs attending, in every layer, to a sink frame's keys and values and to a frame of history, as
    the refiner's denoising steps do (``kv_cache_mode="inject"``)."""
    from diffusers.models.transformers.transformer_sana_wm_refiner import SanaWMRefinerKVCache

    def make_inputs(g, b):
        inputs = tiny.make_inputs(g, b)
        builder = tiny.make_transformer()
        cache = SanaWMRefinerKVCache(tiny.num_blocks)
        width = builder.config.num_attention_heads * builder.config.attention_head_dim
        for layer in range(tiny.num_blocks):
            cache.get(layer).store_sink(torch.randn(b, 16, width, generator=g), torch.randn(b, 16, width, generator=g))
            cache.get(layer).store_history(torch.randn(b, 16, width, generator=g),
                                           torch.randn(b, 16, width, generator=g))
        cache.sink_pe = builder.build_rotary_emb_for_absolute_positions(
            batch_size=b, frame_positions=[0], height=4, width=4, device=torch.device("cpu"), fps=16.0)
        return {**inputs, "kv_cache": cache, "kv_cache_mode": "inject"}

    return TinyModel(tiny.family, tiny.make_transformer, make_inputs, tiny.num_blocks)


TINY_CACHED = _with_kv_cache(TINY)


@pytest.mark.parametrize("tiny", [TINY, TINY_CACHED], ids=["plain", "kv-cache"])
def test_zero_gates_give_the_vanilla_output(tiny):
    family_checks.assert_zero_gates_give_the_vanilla_output(tiny)


@pytest.mark.parametrize("tiny", [TINY, TINY_CACHED], ids=["plain", "kv-cache"])
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(tiny, window):
    family_checks.assert_random_gates_match_the_official_loop(tiny, BLOCK_LISTS, window)


def test_the_kv_cache_reaches_the_attention():
    transformer, inputs = TINY_CACHED.build()
    plain = {k: v for k, v in inputs.items() if k not in ("kv_cache", "kv_cache_mode")}
    assert (family_checks.run(transformer, inputs) - family_checks.run(transformer, plain)).abs().max() > 1e-4


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY)


def test_no_gradient_checkpointing_because_the_model_does_not_support_it():
    transformer, _ = TINY.build()
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        transformer.enable_gradient_checkpointing()


def test_refiner_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise():
    pipe = sana_wm_refiner_pipeline()
    vanilla = sana_wm_refined(pipe)
    assert vanilla.shape == (1, 4, 6, 8, 8) and np.isfinite(vanilla).all()
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert np.array_equal(sana_wm_refined(pipe), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    refined = sana_wm_refined(pipe)
    assert np.array_equal(refined[:, :, :1], vanilla[:, :, :1])  # the sink frame is carried through unrefined
    assert np.abs(refined - vanilla).max() > 1e-3
    pipe.disable_repvideo()
    assert np.array_equal(sana_wm_refined(pipe), vanilla)
