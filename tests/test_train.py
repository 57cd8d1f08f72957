"""Specifications of `repvideo train` on the embedded tiny CogVideoX pipeline, with real mp4 clips made here."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from repvideo_diffusers.training import TrainConfig, objective_for, train, training_loss
from repvideo_diffusers.training.data import preprocess_video, read_rows
from repvideo_diffusers.utils.video import write_video
from train_helpers import stripes_clip

ROOT = Path(__file__).resolve().parents[1]


def _stripes(index: int, frames: int = 12, height: int = 72, width: int = 80):
    return stripes_clip(index, frames, height, width, colour_step=0.1, x_period=7.0, y_period=9.0)


def make_dataset(folder: Path, good: int = 3, bad: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(good):
        write_video(_stripes(i), folder / f"clip{i}.mp4", fps=8)
        rows.append({"file_name": f"clip{i}.mp4", "text": f"stripes {i}"})
    if bad:
        (folder / "broken.mp4").write_bytes(b"this is not a video" * 10)
        rows.append({"file_name": "broken.mp4", "text": "a broken file"})
        write_video(_stripes(5), folder / "uncaptioned.mp4", fps=8)
        rows.append({"file_name": "uncaptioned.mp4"})
        write_video(_stripes(6, frames=5), folder / "short.mp4", fps=8)  # the tiny model takes 9 frames
        rows.append({"file_name": "short.mp4", "text": "too short"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("clips"))


def _config(data, out, **overrides):
    values = dict(data=str(data), output_dir=str(out), max_steps=4, checkpoint_every=100, learning_rate=1e-2,
                  progress_bar=False, report_to=None)
    values.update(overrides)
    return TrainConfig(**values)


def _fixed_batch_loss(pipe, samples, gates=None) -> float:
    """Loss of the objective on one fixed batch: every clip at 8 fixed timesteps with fixed noise."""
    from repvideo_diffusers.training.data import FAMILY_DATA

    facts = FAMILY_DATA["CogVideoX"]
    latents = torch.cat([s["latents"][None].repeat(8, 1, 1, 1, 1) for s in samples])
    embeds = torch.cat([s["prompt_embeds"][None].repeat(8, 1, 1) for s in samples])
    objective = objective_for(pipe.scheduler)
    pipe.transformer.eval()
    with torch.no_grad():
        return training_loss(
            pipe.transformer, objective, latents,
            lambda noisy, t: facts.forward_kwargs(pipe, noisy, {"prompt_embeds": embeds}, t),
            torch.Generator().manual_seed(1234),
        ).item()


def _samples(pipe, data):
    from repvideo_diffusers.training.data import load_dataset

    return load_dataset(pipe, "CogVideoX", data, height=64, width=96, num_frames=9, max_sequence_length=16)


def test_gates_only_training_lowers_fixed_batch_loss_and_leaves_base_weights_bitwise_unchanged(clips, tmp_path,
                                                                                                 tiny_pipe):
    result = train(_config(clips, tmp_path / "run", max_steps=12, batch_size=3, gate_init=0.5, validation_every=12))
    trained = result.pipeline.transformer
    from repvideo_diffusers.utils.video import read_video

    frames, _ = read_video(tmp_path / "run" / "validation" / "step-000012.mp4")
    assert frames.shape == (9, 64, 96, 3)

    # Base weights: bitwise those of a freshly loaded pipeline; only the gates differ.
    fresh = dict(tiny_pipe.transformer.named_parameters())
    moved = [n for n, p in trained.named_parameters() if n not in fresh or not torch.equal(p, fresh[n])]
    assert moved == ["repvideo_gates.gate"]
    initial = torch.full((4,), 0.5)
    assert (result.pipeline.transformer.repvideo_gates.gate.detach() - initial).abs().max() > 1e-2

    # Loss on a fixed batch (fixed noise and timesteps): fresh 0.5 gates, the trained gates, and as an independent
    # reference the best of a grid of uniform gates. Gates move this random tiny model's loss by < 0.5% in all, so
    # the check is how much of that reachable gain 12 steps recover.
    from repvideo_diffusers import RepVideoConfig

    samples = _samples(tiny_pipe, clips)
    grid = {}
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=value))
        grid[value] = _fixed_batch_loss(tiny_pipe, samples)
    tiny_pipe.enable_repvideo(result.gates_dir)
    before, after, best = grid[0.5], _fixed_batch_loss(tiny_pipe, samples), min(grid.values())
    assert best < before
    assert before - after > 0.3 * (before - best), (before, after, grid)

    # The artefact: gates in the core format, a model card with the training facts and a gate plot.
    saved = load_file(result.gates_dir / "diffusion_pytorch_model.safetensors")["gate"]
    assert torch.equal(saved, torch.tensor(result.gates))
    card = (result.gates_dir / "README.md").read_text()
    for fact in ("repvideo-tiny-cogvideox", "| training clips | 3 |", "| steps | 12 |", "| learning rate | 0.01 |",
                 f"| final loss | {result.final_loss:.6f} |", "![gate values](gates.png)"):
        assert fact in card
    assert (result.gates_dir / "gates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lora_mode_trains_gates_and_adapters_that_load_back_and_resume_bitwise(clips, tmp_path, tiny_pipe):
    options = dict(train="lora", lora_rank=4, max_steps=4, checkpoint_every=2)
    result = train(_config(clips, tmp_path / "run", **options))
    trained = dict(result.pipeline.transformer.named_parameters())
    lora_b = [n for n in trained if "lora_B" in n]
    assert lora_b and max(trained[n].abs().max().item() for n in lora_b) > 0  # B starts at zero: it has learned
    assert not torch.equal(trained["repvideo_gates.gate"].detach(), torch.full((4,), 0.5))

    tiny_pipe.load_lora_weights(result.lora_dir)

    def lora(named):  # adapter names differ ("default" when trained, "default_0" when loaded)
        return {re.sub(r"\.lora_([AB])\.[^.]+\.", r".lora_\1.", n): p for n, p in named if "lora_" in n}

    saved, loaded = lora(trained.items()), lora(tiny_pipe.transformer.named_parameters())
    assert len(saved) == 4 * 4 * 2  # 4 blocks x (q, k, v, out) x (A, B)
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[n], saved[n]) for n in saved)

    # Interrupted after checkpoint-2 and resumed: adapters and gates bitwise those of the straight run.
    shutil.copytree(tmp_path / "run" / "checkpoints" / "checkpoint-2", tmp_path / "resumed" / "checkpoints" / "checkpoint-2")
    resumed = train(_config(clips, tmp_path / "resumed", resume="latest", **options))
    a = load_file(result.lora_dir / "pytorch_lora_weights.safetensors")
    b = load_file(resumed.lora_dir / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.gates == result.gates and resumed.final_loss == result.final_loss


def test_resumed_run_ends_bitwise_equal_to_the_uninterrupted_run(clips, tmp_path):
    options = dict(max_steps=4, checkpoint_every=2, batch_size=2, gradient_accumulation_steps=2,
                   lr_scheduler="cosine")
    straight = train(_config(clips, tmp_path / "straight", **options))
    # An interrupted run: only checkpoint-2 made it to disk before the process died.
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "checkpoint-2", tmp_path / "resumed" / "checkpoints" / "checkpoint-2")
    resumed = train(_config(clips, tmp_path / "resumed", resume="latest", **options))
    a = load_file(straight.gates_dir / "diffusion_pytorch_model.safetensors")["gate"]
    b = load_file(resumed.gates_dir / "diffusion_pytorch_model.safetensors")["gate"]
    assert torch.equal(a, b) and not torch.equal(a, torch.full((4,), 0.5))
    assert resumed.final_loss == straight.final_loss
    assert resumed.losses == straight.losses  # the first 2 from the checkpoint, the last 2 recomputed

    # Resuming with settings that change what the steps see is refused, and the checkpoint is left alone.
    with pytest.raises(ValueError, match=r"different settings \(global_batch: 2 there, 1 now\)"):
        train(_config(clips, tmp_path / "resumed", resume="latest", **{**options, "batch_size": 1}))


def test_bad_clips_are_skipped_with_a_count_and_nothing_usable_is_a_clear_error(tmp_path, caplog):
    data = make_dataset(tmp_path / "mixed", good=2, bad=True)
    result = train(_config(data, tmp_path / "run", max_steps=2, checkpoint_every=1))
    assert result.num_samples == 2
    log = caplog.text
    assert "using 2 of 5 clips; skipped 3: 1 missing caption, 1 too short, 1 unreadable" in log
    assert "broken.mp4" in log and "short.mp4 (metadata.jsonl line 5): too short (5 frames" in log

    # Same output folder, data where nothing is usable: a clear error, and the trained run left as it was.
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    only_bad = make_dataset(tmp_path / "bad", good=0, bad=True)
    with pytest.raises(ValueError, match=r"No usable training clips .* using 0 of 3 clips; skipped 3"):
        train(_config(only_bad, tmp_path / "run", max_steps=4, resume="latest"))
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before


def test_precomputed_latents_are_written_once_and_reused_with_identical_results(clips, tmp_path):
    cache = tmp_path / "precomputed"
    first = train(_config(clips, tmp_path / "a", max_steps=2, precompute_dir=str(cache)))
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    second = train(_config(clips, tmp_path / "b", max_steps=2, precompute_dir=str(cache)))
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.safetensors"))] == stamps
    assert second.gates == first.gates and second.final_loss == first.final_loss


def test_video_preprocessing_keeps_the_first_frames_and_centre_crops_to_the_model_size():
    frames = np.zeros((12, 72, 80, 3), dtype=np.uint8)
    frames[:] = (np.arange(12) * 20)[:, None, None, None]  # frame k has value 20k
    frames[:, 36, 40] = 255  # a dot in the centre
    video = preprocess_video(frames, height=64, width=96, num_frames=9)
    assert video.shape == (1, 3, 9, 64, 96)
    expected = torch.tensor([20 * k / 127.5 - 1 for k in range(9)])
    assert torch.allclose(video[0, 0, :, 0, 0], expected, atol=1e-5)
    # Scale 1.2 (width 80 -> 96), height 86 cropped by 11 at the top: the dot lands near (32, 48).
    peak = divmod(int(video[0, 0, 0].argmax()), 96)
    assert abs(peak[0] - 32) <= 1 and abs(peak[1] - 48) <= 1


def test_csv_data_reads_the_same_rows_as_metadata_jsonl(clips, tmp_path):
    csv = tmp_path / "clips.csv"
    csv.write_text("file_name,text\n" + "".join(f"{clips / f'clip{i}.mp4'},stripes {i}\n" for i in range(3)))
    assert [(r.path.resolve(), r.text) for r in read_rows(csv)] == [(r.path.resolve(), r.text) for r in read_rows(clips)]


def test_cli_reports_missing_data_folder_with_exit_code_2(tmp_path):
    from repvideo_diffusers.cli import main

    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "repvideo").exists()


def test_push_to_hub_uploads_the_gates_folder_with_its_card(clips, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class Repo:
        repo_id = "someone/tiny-gates"

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, exist_ok: calls.append(("create", repo_id)) or Repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(
        ("upload", kw["repo_id"], sorted(p.name for p in Path(kw["folder_path"]).iterdir()))))
    train(_config(clips, tmp_path / "run", max_steps=1, push_to_hub="someone/tiny-gates"))
    assert calls == [("create", "someone/tiny-gates"), ("upload", "someone/tiny-gates",
                     ["README.md", "config.json", "diffusion_pytorch_model.safetensors", "gates.png"])]


def test_gradient_checkpointing_does_not_change_the_trained_gates(clips, tmp_path):
    plain = train(_config(clips, tmp_path / "plain", max_steps=2, batch_size=2))
    checkpointed = train(_config(clips, tmp_path / "checkpointed", max_steps=2, batch_size=2,
                                 gradient_checkpointing=True))
    assert checkpointed.pipeline.transformer.gradient_checkpointing
    assert max(abs(a - b) for a, b in zip(plain.gates, checkpointed.gates)) <= 1e-6
    assert plain.gates != [0.5] * 4


def test_bf16_mixed_precision_keeps_frozen_weights_in_bf16_and_trains_float32_gates(clips, tmp_path):
    result = train(_config(clips, tmp_path / "bf16", max_steps=2, mixed_precision="bf16"))
    transformer = result.pipeline.transformer
    assert transformer.repvideo_gates.gate.dtype == torch.float32
    assert transformer.proj_out.weight.dtype == torch.bfloat16
    assert np.isfinite(result.final_loss) and result.gates != [0.5] * 4


def test_a_tiny_wan_pipeline_trains_its_gates_end_to_end_with_flow_matching(clips, tmp_path):
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    from repvideo_diffusers.testing import TINY_MODELS
    from repvideo_diffusers.tiny import build_tokenizer
    from repvideo_diffusers.utils.video import read_video

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    transformer, _ = TINY_MODELS["Wan"].build(seed=0)
    WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0)).save_pretrained(tmp_path / "tiny-wan")
    base = {n: p.detach().clone() for n, p in transformer.named_parameters()}

    result = train(_config(clips, tmp_path / "run", model=str(tmp_path / "tiny-wan"), max_steps=3, height=64,
                           width=64, num_frames=9, max_sequence_length=16, validation_every=3, validation_steps=2))
    assert result.objective == "flow matching (target noise - x0, logit-normal sigmas, shift 3)"
    assert np.isfinite(result.final_loss) and result.gates != [0.5] * 4
    trained = dict(result.pipeline.transformer.named_parameters())
    assert [n for n in trained if n not in base or not torch.equal(trained[n], base[n])] == ["repvideo_gates.gate"]
    assert "| objective | flow matching" in (result.gates_dir / "README.md").read_text()
    frames, _ = read_video(tmp_path / "run" / "validation" / "step-000003.mp4")
    assert frames.shape == (9, 64, 64, 3)


def test_full_mode_saves_a_transformer_that_loads_without_repvideo_and_keeps_the_trained_weights(clips, tmp_path):
    from diffusers import CogVideoXTransformer3DModel

    result = train(_config(clips, tmp_path / "run", train="full", max_steps=2, learning_rate=1e-3))
    saved = CogVideoXTransformer3DModel.from_pretrained(result.transformer_dir)
    trained = dict(result.pipeline.transformer.named_parameters())
    assert "repvideo_gates.gate" in trained and result.gates != [0.5] * 4
    assert all(torch.equal(p, trained[n]) for n, p in saved.named_parameters())
    assert not any("repvideo" in n for n, _ in saved.named_parameters())


def test_sizes_the_model_cannot_take_are_refused_before_anything_is_written(clips, tmp_path):
    with pytest.raises(ValueError, match=r"--height must be a multiple of 16 for this model, got 60"):
        train(_config(clips, tmp_path / "run", height=60))
    with pytest.raises(ValueError, match=r"--num-frames must be 1 \+ 4k for this model, got 8. Use 5"):
        train(_config(clips, tmp_path / "run", num_frames=8))
    assert not (tmp_path / "run").exists()
