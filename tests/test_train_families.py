"""Specifications of `repvideo train` on tiny LTX-Video and Mochi pipelines built here, with real mp4 clips."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from repvideo_diffusers.training import TrainConfig, train
from repvideo_diffusers.utils.video import read_video
from train_helpers import write_clips


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("clips"), ["stripes number 0", "stripes number 1"])


def _t5():
    from transformers import T5Config, T5EncoderModel

    from repvideo_diffusers.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    return tokenizer, text_encoder


def _tiny_ltx_pipeline():
    """LTXPipeline with a 4x spatial / 4x temporal VAE of 8 latent channels, patch size 1."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline

    from repvideo_diffusers.testing import TINY_MODELS

    tokenizer, text_encoder = _t5()
    torch.manual_seed(1)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False, scaling_factor=0.8,
    )
    # Non-trivial statistics, so the normalisation is really exercised (the buffers default to 0 and 1).
    vae.latents_mean.copy_(torch.linspace(-0.5, 0.5, 8))
    vae.latents_std.copy_(torch.linspace(0.5, 2.0, 8))
    transformer, _ = TINY_MODELS["LTX-Video"].build(seed=0)
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                       tokenizer=tokenizer, transformer=transformer)


def _tiny_mochi_pipeline():
    """MochiPipeline with an 8x spatial / 6x temporal VAE of 12 latent channels (Mochi's own layout)."""
    from diffusers import AutoencoderKLMochi, FlowMatchEulerDiscreteScheduler, MochiPipeline, MochiTransformer3DModel

    tokenizer, text_encoder = _t5()
    torch.manual_seed(1)
    vae = AutoencoderKLMochi(encoder_block_out_channels=(32,) * 4, decoder_block_out_channels=(32,) * 4,
                             layers_per_block=(1,) * 5, add_attention_block=(False,) * 5)
    torch.manual_seed(2)
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=4, pooled_projection_dim=16,
        in_channels=12, text_embed_dim=16, time_embed_dim=4, max_sequence_length=16,
    )
    # Mochi's released scheduler config: inverted sigmas (time runs from 1000 down to 0 the other way round).
    return MochiPipeline(scheduler=FlowMatchEulerDiscreteScheduler(invert_sigmas=True), vae=vae,
                         text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


def _train_and_check(pipe, clips, tmp_path: Path, num_frames: int):
    from diffusers import DiffusionPipeline

    pipe.save_pretrained(tmp_path / "model")
    base = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    result = train(TrainConfig(
        data=str(clips), output_dir=str(tmp_path / "run"), model=str(tmp_path / "model"), max_steps=3,
        checkpoint_every=100, learning_rate=1e-2, progress_bar=False, report_to=None, height=32, width=32,
        num_frames=num_frames, max_sequence_length=16, validation_every=3, validation_steps=2,
    ))
    assert result.num_samples == 2 and result.steps == 3
    assert all(np.isfinite(loss) for loss in result.losses), result.losses
    assert max(abs(g - 0.5) for g in result.gates) > 1e-4, result.gates
    trained = dict(result.pipeline.transformer.named_parameters())
    changed = [n for n in trained if n not in base or not torch.equal(trained[n], base[n])]
    assert changed == ["repvideo_gates.gate"]

    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "model")
    gates = reloaded.enable_repvideo(str(tmp_path / "run" / "repvideo"))
    assert gates.gate.tolist() == pytest.approx(result.gates, abs=0)
    # Validation runs the family's own pipeline call with the trained gates attached.
    frames, _ = read_video(tmp_path / "run" / "validation" / "step-000003.mp4")
    assert frames.shape == (num_frames, 32, 32, 3)
    return result


def test_ltx_encoding_unpacks_to_exactly_the_normalised_vae_latents():
    from diffusers import LTXPipeline

    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = _tiny_ltx_pipeline()
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        encoded = FAMILY_DATA["LTX-Video"].encode_video(pipe, video, torch.Generator().manual_seed(3))
        raw = pipe.vae.encode(video).latent_dist.sample(generator=torch.Generator().manual_seed(3))
    # Independent reference: (z - mean) * scaling_factor / std per channel, written out here.
    mean = torch.linspace(-0.5, 0.5, 8).view(1, -1, 1, 1, 1)
    std = torch.linspace(0.5, 2.0, 8).view(1, -1, 1, 1, 1)
    normalised = (raw - mean) * 0.8 / std
    assert encoded["latent_size"].tolist() == [3, 8, 8]
    assert encoded["latents"].shape == (3 * 8 * 8, 8)
    unpacked = LTXPipeline._unpack_latents(encoded["latents"][None], 3, 8, 8, 1, 1)
    assert torch.equal(unpacked, pipe._normalize_latents(raw, pipe.vae.latents_mean, pipe.vae.latents_std, 0.8))
    torch.testing.assert_close(unpacked, normalised, rtol=1e-6, atol=1e-6)


def test_prompt_encoding_carries_the_t5_padding_mask_for_ltx_and_mochi():
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = _tiny_ltx_pipeline()
    encoded = FAMILY_DATA["LTX-Video"].encode_prompt(pipe, "abc", 16)
    # "abc" tokenises to the word marker, 3 characters and </s>: 5 real tokens, 11 padding.
    assert encoded["prompt_attention_mask"].tolist() == [True] * 5 + [False] * 11
    assert encoded["prompt_embeds"].shape == (16, 16)
    assert FAMILY_DATA["Mochi"].encode_prompt is FAMILY_DATA["LTX-Video"].encode_prompt


def test_a_tiny_ltx_pipeline_trains_only_its_gates_end_to_end(clips, tmp_path):
    result = _train_and_check(_tiny_ltx_pipeline(), clips, tmp_path, num_frames=9)
    assert result.objective.startswith("flow matching")


def test_a_tiny_mochi_pipeline_trains_only_its_gates_end_to_end_with_inverted_time(clips, tmp_path):
    result = _train_and_check(_tiny_mochi_pipeline(), clips, tmp_path, num_frames=7)
    assert result.objective.startswith("flow matching")


def test_unsupported_family_message_lists_the_new_families():
    from repvideo_diffusers.training.data import family_data

    # Every family of SUPPORTED_MODELS now has a data row; a family without one (here a made-up name) is named.
    from repvideo_diffusers.families import registered_families

    readable = [name for name, family in registered_families().items() if family.training]
    assert {"CogVideoX", "HunyuanVideo", "LTX-Video", "Mochi", "Wan"} <= set(readable)
    with pytest.raises(ValueError, match=rf"reads videos for {', '.join(readable)} pipelines; "
                                         r"this pipeline's transformer is Made-up"):
        family_data("Made-up")


@pytest.mark.parametrize("family", ["LTX-Video", "Mochi"])
def test_the_training_forward_ignores_the_text_padding_as_the_pipeline_does(family):
    """The padding mask reaches the transformer: what sits in padded positions does not change the prediction."""
    from repvideo_diffusers.training.data import FAMILY_DATA, _tensors

    pipe = _tiny_ltx_pipeline() if family == "LTX-Video" else _tiny_mochi_pipeline()
    facts = FAMILY_DATA[family]
    frames = 9 if family == "LTX-Video" else 7
    with torch.no_grad():
        video = torch.rand(1, 3, frames, 32, 32) * 2 - 1
        sample = {**_tensors(facts.encode_video(pipe, video, torch.Generator().manual_seed(0)), "latents"),
                  **facts.encode_prompt(pipe, "abc", 16)}
        batch = {key: value[None] for key, value in sample.items()}
        padding = ~batch["prompt_attention_mask"]
        assert padding.sum() == 11
        noise = torch.randn_like(batch["prompt_embeds"]) * 5
        scrambled = dict(batch, prompt_embeds=torch.where(padding[..., None], noise, batch["prompt_embeds"]))
        timestep = torch.tensor([400.0])

        def predict(values, mask=True):
            kwargs = facts.forward_kwargs(pipe, values["latents"], values, timestep)
            if not mask:
                kwargs["encoder_attention_mask"] = torch.ones_like(kwargs["encoder_attention_mask"])
            return pipe.transformer(**kwargs)[0]

        torch.testing.assert_close(predict(scrambled), predict(batch), rtol=1e-5, atol=1e-5)
        # Without the mask the padding does matter, so the equality above is the mask's doing.
        assert (predict(scrambled, mask=False) - predict(batch, mask=False)).abs().max() > 1e-3


@pytest.mark.parametrize("family, frames, size, message", [
    ("LTX-Video", 10, 32, r"--num-frames must be 1 \+ 4k for this model, got 10. Use 9."),
    ("LTX-Video", 9, 30, r"--height must be a multiple of 4 for this model, got 30"),
    ("Mochi", 9, 32, r"--num-frames must be 1 \+ 6k for this model, got 9. Use 7."),
    ("Mochi", 7, 24, r"--height must be a multiple of 16 for this model, got 24"),
])
def test_sizes_the_vae_and_patches_cannot_take_are_refused_before_anything_is_written(
        clips, tmp_path, family, frames, size, message):
    pipe = _tiny_ltx_pipeline() if family == "LTX-Video" else _tiny_mochi_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    config = TrainConfig(data=str(clips), output_dir=str(tmp_path / "run"), model=str(tmp_path / "model"),
                         max_steps=1, progress_bar=False, report_to=None, height=size, width=32, num_frames=frames)
    with pytest.raises(ValueError, match=message):
        train(config)
    assert not (tmp_path / "run" / "repvideo").exists()


def test_the_cli_trains_a_mochi_folder_passed_as_model(clips, tmp_path):
    from diffusers import MochiPipeline

    from repvideo_diffusers.cli import main

    _tiny_mochi_pipeline().save_pretrained(tmp_path / "model")
    code = main(["train", "--data", str(clips), "--out", str(tmp_path / "run"),
                 "--model", str(tmp_path / "model"), "--max-steps", "2", "--learning-rate", "1e-2", "--height", "32", "--width", "32", "--num-frames", "7",
                 "--max-sequence-length", "16", "--report-to", "none"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and all(np.isfinite(summary["losses"]))
    assert summary["objective"].startswith("flow matching")
    pipe = MochiPipeline.from_pretrained(tmp_path / "model")
    gates = pipe.enable_repvideo(str(tmp_path / "run" / "repvideo"))
    assert gates.gate.tolist() == pytest.approx(summary["gates"], abs=0)
