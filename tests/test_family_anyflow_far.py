"""AnyFlow FAR (`AnyFlowFARTransformer3DModel`): the family's properties on its tiny model in all three forward paths
(causal training rollout, KV-cache prefill, autoregressive step), and `AnyFlowFARPipeline` end to end.

The block lists are stated here, independently of the package: the ``blocks`` take and return the video stream
(compressed context + full-resolution frames, one sequence) alone; text is a cross-attention condition.
"""

import pytest
import torch

from tiny_pipelines_wanlike2 import require

require("AnyFlowFARTransformer3DModel", "AnyFlowFARPipeline")

import family_checks  # noqa: E402
from reference_loop import official_output  # noqa: E402
from tiny_pipelines_wanlike2 import (  # noqa: E402
    anyflow_far_pipeline,
    anyflow_frames,
    assert_repvideo_round_trip,
    pixel_video,
)

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo  # noqa: E402
from repvideo_diffusers.attention import capture_attention  # noqa: E402
from repvideo_diffusers.families import get_family, get_family_by_name  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    # PyTorch's note that uncompiled flex attention materialises the scores: expected at these sizes.
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
]

BLOCK_LISTS = [("blocks", ("hidden_states",), None)]
TINY = get_family_by_name("AnyFlow-FAR").tiny


def test_the_class_belongs_to_its_own_family():
    from diffusers import AnyFlowFARTransformer3DModel

    assert get_family(AnyFlowFARTransformer3DModel).name == "AnyFlow-FAR"


def test_zero_gates_give_the_vanilla_output():
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    family_checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY)


def _loss_and_grads(checkpointing: bool, device: str):
    transformer, inputs = TINY.build(seed=0)
    transformer.to(device).train()
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    gates = apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.5))
    with torch.no_grad():
        gates.gate.copy_(torch.linspace(0.2, 0.8, gates.gate.numel()))
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    loss = transformer(**inputs, return_dict=False)[0].float().square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in transformer.named_parameters() if p.grad is not None}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention has no backward on a CPU")
def test_checkpointing_gives_the_same_loss_and_gradients():
    """family_checks' check, on CUDA: PyTorch's flex attention (the causal self-attention) cannot backpropagate on a
    CPU ("FlexAttention does not support backward on CPU"), so the family trains only on an accelerator."""
    loss, grads = _loss_and_grads(checkpointing=False, device="cuda")
    loss_ckpt, grads_ckpt = _loss_and_grads(checkpointing=True, device="cuda")
    assert abs(loss.item() - loss_ckpt.item()) <= 1e-5
    assert grads.keys() == grads_ckpt.keys() and "repvideo_gates.gate" in grads
    assert grads["repvideo_gates.gate"][2:].abs().max().item() > 0.0
    assert max((grads[k] - grads_ckpt[k]).abs().max().item() for k in grads) <= 1e-5


def test_backward_on_a_cpu_is_pytorch_flex_attention_s_limit_not_repvideo_s():
    transformer, inputs = TINY.build(seed=0)
    with pytest.raises(NotImplementedError, match="FlexAttention does not support backward on CPU"):
        transformer(**inputs, return_dict=False)[0].square().mean().backward()


def test_no_attention_facts_so_capture_is_refused_with_the_reason():
    transformer, _ = TINY.build()
    assert get_family(transformer).attention is None  # causal self-attention runs on flex, not SDPA
    with pytest.raises(ValueError, match="declares no attention facts"):
        with capture_attention(transformer):
            pass


# --- the KV-cache paths the pipeline uses ---------------------------------------------------------------------------


def _kv_cache(transformer, batch, chunks, tokens_full, tokens_compressed):
    """Empty per-block KV buffers, sized as `AnyFlowFARPipeline` sizes them (one-frame chunks)."""
    config = transformer.config
    shape = (2, batch, config.num_attention_heads)
    return {
        layer: {
            "full_cache": torch.zeros(*shape, config.full_chunk_limit * tokens_full, config.attention_head_dim),
            "compressed_cache": torch.zeros(*shape, (chunks - config.full_chunk_limit + 1) * tokens_compressed,
                                            config.attention_head_dim),
        }
        for layer in range(config.num_layers)
    }


def _autoregressive_rollout(transformer, forward, seed=0):
    """Three one-frame chunks as the pipeline generates them: step chunk 0; prefill [0]; step chunk 1; prefill [0, 1]
    (chunk 0 now FAR-compressed); step chunk 2. ``forward(transformer, kwargs)`` runs one transformer call; returns
    the three steps' outputs."""
    g = torch.Generator().manual_seed(seed)
    batch = 2
    frames = [torch.randn(batch, 1, 4, 8, 8, generator=g) for _ in range(3)]
    text = torch.randn(batch, 12, 16, generator=g)
    kv_cache = _kv_cache(transformer, batch, chunks=3, tokens_full=16, tokens_compressed=4)
    flag = {"num_cached_chunks": 0, "is_cache_step": False}
    outputs = []
    for chunk in range(3):
        t = torch.full((batch, 1), 700.0)
        outputs.append(forward(transformer, dict(
            hidden_states=frames[chunk], timestep=t, r_timestep=t * 0.5, encoder_hidden_states=text,
            chunk_partition=[1] * (chunk + 1), kv_cache=kv_cache, kv_cache_flag=dict(flag))))
        if chunk < 2:  # prefill: the clean chunks so far, at timestep 0, write every block's keys and values
            context = torch.cat(frames[: chunk + 1], dim=1)
            zero = torch.zeros(batch, chunk + 1)
            prefill = dict(hidden_states=context, timestep=zero, r_timestep=zero, encoder_hidden_states=text,
                           chunk_partition=[1] * (chunk + 1), kv_cache=kv_cache,
                           kv_cache_flag=dict(flag, is_cache_step=True))
            assert forward(transformer, prefill) is None  # the prefill returns no sample
            flag["num_cached_chunks"] += 1
    return outputs


def _call(transformer, kwargs):
    with torch.no_grad():
        return transformer(**kwargs, return_dict=False)[0]


@pytest.mark.parametrize("window", [2, 3])
def test_kv_cache_prefill_and_steps_match_the_official_loop(window):
    """RepVideo gates the prefill calls (so the cached keys and values come from the blended stream) and the steps,
    each as one forward call: the same numbers as the official loop around each call."""
    transformer, _ = TINY.build()
    gates = torch.rand(4, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.1
    expected = _autoregressive_rollout(
        transformer, lambda tr, kw: official_output(tr, {k: v for k, v in kw.items()}, gates, window, BLOCK_LISTS))
    vanilla = _autoregressive_rollout(transformer, _call)
    applied = apply_repvideo(transformer, RepVideoConfig(window=window))
    with torch.no_grad():
        applied.gate.copy_(gates)
    actual = _autoregressive_rollout(transformer, _call)
    for a, e, v in zip(actual, expected, vanilla):
        assert a.shape == (2, 1, 4, 8, 8)
        assert (a - e).abs().max().item() <= 1e-5
    assert (actual[2] - vanilla[2]).abs().max().item() > 1e-4
    remove_repvideo(transformer)
    assert all(torch.equal(a, v) for a, v in zip(_autoregressive_rollout(transformer, _call), vanilla))


def test_kv_cache_path_with_zero_gates_is_vanilla():
    transformer, _ = TINY.build()
    vanilla = _autoregressive_rollout(transformer, _call)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.0))
    assert all(torch.equal(a, v) for a, v in zip(_autoregressive_rollout(transformer, _call), vanilla))


# --- the pipeline -----------------------------------------------------------------------------------------------


def test_text_to_video_pipeline():
    """Three one-frame chunks of 32 x 32 (KV-cache prefill between chunks, the first chunk FAR-compressed for the
    third)."""
    assert_repvideo_round_trip(anyflow_far_pipeline(), lambda pipe: anyflow_frames(pipe, size=32))


def test_video_to_video_pipeline():
    """A 5-frame conditioning video fills the first two chunks, which only go through the KV-cache prefill."""
    video = pixel_video(5, 32)
    assert_repvideo_round_trip(anyflow_far_pipeline(), lambda pipe: anyflow_frames(pipe, size=32, video=video))
