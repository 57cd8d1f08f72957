"""SkyReels-V2 (`SkyReelsV2Transformer3DModel`): the family properties (tests/family_checks.py) on the tiny
text-to-video configuration and on a diffusion-forcing one (per-frame timesteps, block-causal attention), the
training facts, and the T2V, I2V and diffusion-forcing pipelines end to end."""

import numpy as np
import pytest
import torch

import family_checks as checks
import tiny_pipelines_wanlike as pipelines
from repvideo_diffusers.families import TinyModel, get_family, get_family_by_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: the video stream flows through `blocks`; text and CLIP image tokens are
# cross-attention conditions.
BLOCK_LISTS = [("blocks", ("hidden_states",), None)]


def _diffusion_forcing_transformer():
    from diffusers import SkyReelsV2Transformer3DModel

    return SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32, num_frame_per_block=2,
    )


def _diffusion_forcing_inputs(g, b):
    # 4 latent frames in causal blocks of 2, each frame at its own noise level.
    return {
        "hidden_states": torch.randn(b, 4, 4, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.randint(0, 1000, (b, 4), generator=g),
        "enable_diffusion_forcing": True,
    }


MODELS = {
    "t2v": get_family_by_name("SkyReels-V2").tiny,
    "diffusion_forcing": TinyModel("SkyReels-V2", _diffusion_forcing_transformer, _diffusion_forcing_inputs, 4),
}


def test_the_transformer_has_its_own_family_and_is_not_taken_for_wan():
    from diffusers import SkyReelsV2Transformer3DModel, WanTransformer3DModel

    assert not issubclass(SkyReelsV2Transformer3DModel, WanTransformer3DModel)
    assert get_family(SkyReelsV2Transformer3DModel).name == "SkyReels-V2"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_zero_gates_give_the_vanilla_output(model):
    checks.assert_zero_gates_give_the_vanilla_output(MODELS[model])


@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_random_gates_match_the_official_loop(model, window):
    checks.assert_random_gates_match_the_official_loop(MODELS[model], BLOCK_LISTS, window)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_remove_gives_the_original_bitwise(model):
    checks.assert_remove_gives_the_original_bitwise(MODELS[model])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_checkpointing_gives_the_same_loss_and_gradients(model):
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(MODELS[model])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_sdpa_routing_reproduces_the_stock_output_exactly(model):
    checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(MODELS[model])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_capture_records_one_softmax_row_set_per_block(model):
    checks.assert_capture_records_one_softmax_row_set_per_block(MODELS[model])


def test_the_diffusion_forcing_configuration_really_masks_attention_causally():
    """The same weights without the block-causal mask give another output: the checks above ran with the mask."""
    transformer, inputs = MODELS["diffusion_forcing"].build()
    masked = checks.run(transformer, inputs)
    transformer.register_to_config(num_frame_per_block=1)
    assert (checks.run(transformer, inputs) - masked).abs().max().item() > 1e-4


def test_training_facts_invert_the_decode_normalisation_and_feed_the_transformer():
    facts = get_family_by_name("SkyReels-V2").training
    pipe = pipelines.skyreels_v2_pipeline()
    vae = pipe.vae
    video = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad(), pipelines.ftfy_stand_in(pipe):
        latents = facts.encode_video(pipe, video, torch.Generator().manual_seed(1))
        raw = vae.encode(video).latent_dist.sample(generator=torch.Generator().manual_seed(1))
        embeds = facts.encode_prompt(pipe, "a fox", facts.max_sequence_length(pipe))
        kwargs = facts.forward_kwargs(pipe, latents[None], {"prompt_embeds": embeds[None]}, torch.tensor([400.0]))
        prediction = pipe.transformer(**kwargs)[0]
    # What SkyReelsV2Pipeline does before decoding: latents / (1 / std) + mean, written out here.
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(latents[None] / (1.0 / std) + mean, raw, rtol=1e-5, atol=1e-5)
    assert latents.shape == (16, 2, 2, 2) and embeds.shape == (512, 16)
    assert prediction.shape == (1, 16, 2, 2, 2) and torch.isfinite(prediction).all()
    assert facts.default_size(pipe) == (544, 960, 97)


@pytest.mark.parametrize("builder", ["skyreels_v2_pipeline", "skyreels_v2_i2v_pipeline", "skyreels_v2_df_pipeline"])
def test_pipeline_end_to_end(builder):
    pipelines.assert_repvideo_round_trip(getattr(pipelines, builder)())


def test_the_text_to_video_pipeline_trains_only_its_gates(tmp_path):
    from repvideo_diffusers.training import TrainConfig, train
    from train_helpers import write_clips

    clips = write_clips(tmp_path / "clips", ["stripes number 0", "stripes number 1"], frames=5, height=16, width=16)
    pipe = pipelines.skyreels_v2_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    base = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    with pipelines.ftfy_stand_in(pipe):
        result = train(TrainConfig(
            data=str(clips), output_dir=str(tmp_path / "run"), model=str(tmp_path / "model"), max_steps=2,
            checkpoint_every=100, learning_rate=1e-2, progress_bar=False, report_to=None, height=16, width=16,
            num_frames=5, max_sequence_length=16,
        ))
    assert result.objective.startswith("flow matching") and result.steps == 2
    assert all(np.isfinite(loss) for loss in result.losses), result.losses
    assert max(abs(g - 0.5) for g in result.gates) > 1e-6, result.gates
    trained = dict(result.pipeline.transformer.named_parameters())
    assert [n for n in trained if n not in base or not torch.equal(trained[n], base[n])] == ["repvideo_gates.gate"]


def test_repvideo_generate_runs_a_saved_pipeline(tmp_path):
    pipelines.assert_generate_from_a_saved_folder(pipelines.skyreels_v2_pipeline(), tmp_path)


@pytest.mark.parametrize("builder", ["skyreels_v2_pipeline", "skyreels_v2_i2v_pipeline"])
def test_analyze_reports_every_block_of_every_step(builder):
    pipelines.assert_analyze_reports(getattr(pipelines, builder)())


def test_analyze_on_the_diffusion_forcing_pipeline():
    # The diffusion-forcing pipeline passes one timestep per latent frame to the step callback, and its asynchronous
    # schedule runs more denoising iterations than `num_inference_steps`: one report entry per iteration.
    import torch

    from repvideo_diffusers import RepVideoConfig
    from repvideo_diffusers.analysis import analyze

    pipe = pipelines.skyreels_v2_df_pipeline()
    call = pipelines.call_arguments(pipe, 2, height=32, width=32)
    for name in ("prompt", "num_inference_steps", "output_type", "generator"):
        call.pop(name)
    blocks = len(pipe.transformer.blocks)
    with pipelines.ftfy_stand_in(pipe):
        report = analyze(pipe, num_inference_steps=2, gates=RepVideoConfig(window=2), progress=False, **call)
    for run in report["runs"].values():
        matrices = torch.tensor(run["attention_similarity"])
        assert matrices.shape[0] == len(run["timesteps"]) >= 2 and matrices.shape[1:] == (blocks, blocks)
        assert all(isinstance(t, list) and len(t) == run["grid"][0] for t in run["timesteps"])  # one per frame
        assert torch.equal(matrices.diagonal(dim1=1, dim2=2), torch.ones(matrices.shape[:2], dtype=matrices.dtype))
