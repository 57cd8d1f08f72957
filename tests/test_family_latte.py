"""Latte: spatial and temporal blocks interleaved, each with its own token layout, gated as one sequence.

The reference below is the official loop written out by hand for Latte's layouts (independent of the package): the
cache keeps every block output converted to (batch, frames * tokens, width), frame-major, and the blend is converted
back to the block's own layout.
"""

import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import get_family_by_name, get_transformer_blocks

LATTE = get_family_by_name("Latte")


def _canonical(tensor, kind, batch, frames, tokens):
    width = tensor.shape[-1]
    if kind == "spatial":  # (B * F, N, D)
        return tensor.reshape(batch, frames, tokens, width).reshape(batch, frames * tokens, width)
    return tensor.reshape(batch, tokens, frames, width).permute(0, 2, 1, 3).reshape(batch, frames * tokens, width)


def _own(tensor, kind, batch, frames, tokens):
    width = tensor.shape[-1]
    if kind == "spatial":
        return tensor.reshape(batch * frames, tokens, width)
    return tensor.reshape(batch, frames, tokens, width).permute(0, 2, 1, 3).reshape(batch * tokens, frames, width)


def official_latte(transformer, inputs, gates, window):
    batch, _, frames, height, width = inputs["hidden_states"].shape
    tokens = (height // 2) * (width // 2)
    order = [(kind, block) for pair in zip(transformer.transformer_blocks, transformer.temporal_transformer_blocks)
             for kind, block in zip(("spatial", "temporal"), pair)]
    cache, handles = [], []
    for i, (kind, block) in enumerate(order):
        def pre(module, args, i=i, kind=kind):
            h = args[0]
            canonical = _canonical(h, kind, batch, frames, tokens)
            if i == 0:
                cache[:] = [canonical]
            m = torch.stack(cache).mean(0)
            blended = gates[i] * m + (1 - gates[i]) * canonical
            return (_own(blended, kind, batch, frames, tokens), *args[1:])

        def post(module, args, output, i=i, kind=kind):
            out = _canonical(output, kind, batch, frames, tokens)
            cache[:] = [out] if i % window == 0 else cache + [out]

        handles += [block.register_forward_pre_hook(pre), block.register_forward_hook(post)]
    try:
        with torch.no_grad():
            return transformer(**inputs, return_dict=False)[0]
    finally:
        for handle in handles:
            handle.remove()


def test_blocks_are_gated_in_the_interleaved_execution_order():
    transformer, inputs = LATTE.tiny.build()
    order = []
    handles = [block.register_forward_pre_hook(lambda m, a, block=block: order.append(block))
               for block in [*transformer.transformer_blocks, *transformer.temporal_transformer_blocks]]
    checks.run(transformer, inputs)
    for handle in handles:
        handle.remove()
    assert get_transformer_blocks(transformer) == order  # what the model runs, in that order
    assert order[1] is transformer.temporal_transformer_blocks[0]


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop_in_one_canonical_layout(window):
    transformer, inputs = LATTE.tiny.build(seed=0)
    gate_values = torch.rand(4, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.1
    expected = official_latte(transformer, inputs, gate_values, window)
    vanilla = checks.run(transformer, inputs)
    gates = apply_repvideo(transformer, RepVideoConfig(window=window))
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    actual = checks.run(transformer, inputs)
    assert (actual - expected).abs().max().item() <= 1e-5
    assert (actual - vanilla).abs().max().item() > 1e-4


def test_zero_gates_give_the_vanilla_output():
    checks.assert_zero_gates_give_the_vanilla_output(LATTE.tiny)


def test_remove_gives_the_original_bitwise():
    checks.assert_remove_gives_the_original_bitwise(LATTE.tiny)


def test_checkpointing_gives_the_same_loss_and_gradients():
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(LATTE.tiny)


def test_without_temporal_attention_only_the_spatial_gates_act():
    transformer, inputs = LATTE.tiny.build(seed=1)
    gates = apply_repvideo(transformer, RepVideoConfig(window=6, gate_init=0.5))
    spatial_only = checks.run(transformer, {**inputs, "enable_temporal_attentions": False})
    with torch.no_grad():
        gates.gate[1::2] = 0.9  # the temporal blocks' gates: they do not run, so nothing changes
    assert torch.equal(checks.run(transformer, {**inputs, "enable_temporal_attentions": False}), spatial_only)


def _tiny_latte_pipeline():
    from diffusers import AutoencoderKL, DDIMScheduler, LattePipeline

    from tiny_pipelines import t5

    tokenizer, text_encoder = t5()
    torch.manual_seed(1)
    vae = AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=2)
    transformer, _ = LATTE.tiny.build(seed=2)
    return LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                         scheduler=DDIMScheduler())


def _latte_latents(pipe):
    return pipe("a fox in snow", num_inference_steps=2, video_length=3, height=16, width=16, guidance_scale=1.0,
                mask_feature=False, output_type="latent",
                generator=torch.Generator().manual_seed(0)).frames


def test_the_latte_pipeline_runs_end_to_end_with_repvideo():
    from repvideo_diffusers import RepVideoConfig

    pipe = _tiny_latte_pipeline()
    vanilla = _latte_latents(pipe)
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.0))
    assert torch.equal(_latte_latents(pipe), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert (_latte_latents(pipe) - vanilla).abs().max().item() > 1e-4
    pipe.disable_repvideo()
    assert torch.equal(_latte_latents(pipe), vanilla)


def test_repvideo_generate_writes_a_video_with_a_latte_folder(tmp_path, capsys):
    from repvideo_diffusers.cli import main
    from repvideo_diffusers.utils.video import read_video

    _tiny_latte_pipeline().save_pretrained(tmp_path / "latte")
    out = tmp_path / "fox.mp4"
    assert main(["generate", "a fox in snow", "--model", str(tmp_path / "latte"), "--frames", "3", "--height", "16",
                 "--width", "16", "--steps", "2", "--out", str(out)]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (3, 16, 16, 3)  # --frames reached Latte's `video_length`
    assert "with RepVideo" in capsys.readouterr().out
