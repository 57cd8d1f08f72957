"""CV-VAE models: parity with the official implementation, weights layout, chunking/tiling, errors, CLI."""

import json
import logging
import os
import re
import sys
import types

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from cvvae_helpers import FIXTURE_NAMES, reference_dir, smooth_video, tiny_image_vae  # noqa: E402
from repvideo_diffusers.cvvae import CVVAEModel, CVVAESD3Model, inflate_image_vae, load_cvvae, psnr, ssim  # noqa: E402
from repvideo_diffusers.cvvae import attention as attention_module  # noqa: E402
from repvideo_diffusers.cvvae.vae_v1 import SpatialAttnBlock, SpatialTemporalAttnBlock  # noqa: E402

PARITY_ATOL = 1e-4  # float32 noise between two implementations of the same maths


@pytest.fixture(scope="module")
def fixtures():
    return reference_dir()


def _load(fixtures, name):
    return load_cvvae(str(fixtures / name / "vae")).eval()


# ----------------------------------------------------------------------------------------------- parity
def test_fixture_lookup_honours_the_override_and_fails_clearly(fixtures, monkeypatch, tmp_path):
    monkeypatch.setenv("REPVIDEO_REFERENCE_DIR", str(fixtures.parent))
    assert reference_dir() == fixtures
    monkeypatch.setenv("REPVIDEO_REFERENCE_DIR", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="holds no CV-VAE fixtures"):
        reference_dir()


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_parity_with_official_implementation(fixtures, name):
    vae = _load(fixtures, name)
    expected_class = CVVAESD3Model if "sd3" in name else CVVAEModel
    assert type(vae) is expected_class
    if "chunked" in name:  # the fixture was made with 8 frames encoded / 2 latents decoded at a time
        assert (vae.encode_n_frames_a_time, vae.decode_n_frames_a_time) == (8, 2)
    tensors = load_file(str(fixtures / name / "tensors.safetensors"))
    with torch.no_grad():
        posterior = vae.encode(tensors["video"]).latent_dist
        decoded = vae.decode(posterior.mean).sample
    torch.testing.assert_close(posterior.mean, tensors["latent_mean"], atol=PARITY_ATOL, rtol=0)
    torch.testing.assert_close(posterior.logvar, tensors["latent_logvar"], atol=PARITY_ATOL, rtol=0)
    torch.testing.assert_close(decoded, tensors["decoded"], atol=PARITY_ATOL, rtol=0)


def test_chunked_fixture_really_depends_on_chunking(fixtures):
    # Guards the parity test above against passing with chunking silently ignored.
    vae = _load(fixtures, "cvvae-v1-tiny-chunked")
    tensors = load_file(str(fixtures / "cvvae-v1-tiny-chunked" / "tensors.safetensors"))
    vae.disable_chunking()
    with torch.no_grad():
        mean = vae.encode(tensors["video"]).latent_dist.mean
    assert (mean - tensors["latent_mean"]).abs().max() > 1e-2


@pytest.mark.parametrize("variant,cls", [("v1", CVVAEModel), ("sd3", CVVAESD3Model)])
def test_full_size_parameters_match_official_names_and_shapes(fixtures, variant, cls):
    from accelerate import init_empty_weights

    reference = json.loads((fixtures / f"cvvae-{variant}-default-parameters.json").read_text())
    with init_empty_weights():
        model = cls(**reference["config"])
    ours = {name: list(p.shape) for name, p in model.named_parameters()}
    assert next(model.parameters()).device.type == "meta"
    assert sorted(ours) == sorted(reference["parameters"])
    assert ours == reference["parameters"]
    # Our defaults are the official defaults, so `cls()` builds the Hub checkpoint's architecture.
    assert {k: v for k, v in model.config.items() if not k.startswith("_")} == {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in cls.from_config(reference["config"]).config.items()
        if not k.startswith("_")
    }


def test_xformers_attention_types_load_as_sdpa_blocks(fixtures):
    vae = _load(fixtures, "cvvae-v1-tiny")
    assert vae.config.encoder_attn_type == "vanilla-xformers"
    assert vae.config.decoder_attn_type == "spatial-temporal-xformer"
    assert type(vae.encoder.mid.attn_1) is SpatialAttnBlock
    assert type(vae.decoder.mid.attn_1) is SpatialTemporalAttnBlock
    with pytest.raises(ValueError, match="Unknown CV-VAE attention type 'nonsense'"):
        CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, encoder_attn_type="nonsense")


@pytest.fixture
def fresh_backend_cache(monkeypatch):
    monkeypatch.setattr(attention_module, "_BACKENDS", {})
    yield
    attention_module._BACKENDS.clear()


def _fake_xformers(monkeypatch, works: bool):
    calls = []

    def memory_efficient_attention(q, k, v, attn_bias=None, op=None):
        calls.append(q.shape)
        if not works:
            raise NotImplementedError("No operator found for `memory_efficient_attention_forward` on cpu")
        # xformers layout (batch, tokens, [heads,] dim); the maths is SDPA's
        if q.dim() == 3:
            return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    ops = types.SimpleNamespace(memory_efficient_attention=memory_efficient_attention)
    module = types.ModuleType("xformers")
    module.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", module)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    return calls


def test_importable_xformers_without_cpu_kernel_falls_back_to_sdpa(fixtures, monkeypatch, fresh_backend_cache, caplog):
    calls = _fake_xformers(monkeypatch, works=False)
    vae = _load(fixtures, "cvvae-v1-tiny")
    tensors = load_file(str(fixtures / "cvvae-v1-tiny" / "tensors.safetensors"))
    with caplog.at_level(logging.INFO, logger="repvideo_diffusers.cvvae.attention"), torch.no_grad():
        mean = vae.encode(tensors["video"]).latent_dist.mean
    assert len(calls) == 1  # only the probe; every real call went to SDPA
    assert "runs with sdpa" in caplog.text
    torch.testing.assert_close(mean, tensors["latent_mean"], atol=PARITY_ATOL, rtol=0)


def test_working_xformers_is_used(fixtures, monkeypatch, fresh_backend_cache):
    calls = _fake_xformers(monkeypatch, works=True)
    vae = _load(fixtures, "cvvae-v1-tiny")
    tensors = load_file(str(fixtures / "cvvae-v1-tiny" / "tensors.safetensors"))
    with torch.no_grad():
        mean = vae.encode(tensors["video"]).latent_dist.mean
    assert attention_module.attention_backend(torch.device("cpu"), torch.float32) == "xformers"
    assert len(calls) > 1
    torch.testing.assert_close(mean, tensors["latent_mean"], atol=PARITY_ATOL, rtol=0)


# ----------------------------------------------------------------------------------------------- tiling
class _LocalEncoder(torch.nn.Module):
    """Stand-in encoder whose every output depends on one aligned 8x8 block: tiling must be exact for it."""

    def forward(self, x):
        z = F.avg_pool3d(x[:, :, ::4], kernel_size=(1, 8, 8))
        return torch.cat([z, z, z[:, :2]], dim=1)  # 8 = 2 x 4 moment channels


class _LocalDecoder(torch.nn.Module):
    def forward(self, z):
        frames = [0] + [j for j in range(1, z.shape[2]) for _ in range(4)]
        return F.interpolate(z[:, :3, frames], scale_factor=(1, 8, 8), mode="nearest")


def _local_vae():
    vae = CVVAEModel(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, tile_spatial_size=None, en_de_n_frames_a_time=None)
    vae.encoder, vae.decoder = _LocalEncoder(), _LocalDecoder()
    return vae


@pytest.mark.parametrize("size", [(64, 64), (72, 40), (56, 88), (96, 32), (24, 120)])
def test_tiling_covers_every_pixel_and_blends_exactly(size):
    """Tiled == untiled to 1e-6 for a model whose outputs are local: the tiling and blending lose nothing."""
    vae = _local_vae()
    video = smooth_video(5, *size, seed=1)
    plain_z = vae.encode(video).latent_dist.mean
    plain_x = vae.decode(plain_z).sample
    vae.enable_tiling(32, 0.25)
    tiled_z = vae.encode(video).latent_dist.mean
    tiled_x = vae.decode(plain_z).sample
    assert tiled_z.shape == (1, 4, 2, size[0] // 8, size[1] // 8)
    assert tiled_x.shape == video.shape
    torch.testing.assert_close(tiled_z, plain_z, atol=1e-6, rtol=0)
    torch.testing.assert_close(tiled_x, plain_x, atol=1e-6, rtol=0)


def test_tiling_the_real_model_keeps_every_border_pixel(fixtures):
    # The official tiling gives a 7x7 latent and a 57x57 frame here.
    vae = _load(fixtures, "cvvae-v1-tiny")
    video = smooth_video(1, 64, 64, seed=2)
    vae.enable_tiling(32, 0.2222)
    with torch.no_grad():
        posterior = vae.encode(video).latent_dist
        decoded = vae.decode(posterior.mean).sample
    assert posterior.mean.shape == (1, 4, 1, 8, 8)
    assert decoded.shape == (1, 3, 1, 64, 64)
    assert torch.isfinite(decoded).all()
    # Each border row/column holds its own tile's output (not zeros, not a copy of its neighbour).
    assert (decoded[..., -1, :] - decoded[..., -2, :]).abs().max() > 0
    assert decoded[..., -1, :].abs().max() > 0 and decoded[..., :, -1].abs().max() > 0


def test_one_tile_covering_the_frame_equals_plain(fixtures):
    vae = _load(fixtures, "cvvae-sd3-tiny")
    video = smooth_video(5, 40, 48, seed=3)
    with torch.no_grad():
        plain = vae.decode(vae.encode(video).latent_dist.mean).sample
        vae.enable_tiling(48)
        tiled = vae.decode(vae.encode(video).latent_dist.mean).sample
    torch.testing.assert_close(tiled, plain, atol=1e-6, rtol=0)


def test_chunks_longer_than_the_video_equal_plain(fixtures):
    vae = _load(fixtures, "cvvae-v1-tiny")
    video = smooth_video(9, 32, 32, seed=4)
    with torch.no_grad():
        plain = vae.encode(video).latent_dist.mean
        vae.enable_chunking(8)  # 9 frames = one chunk of 8 + the shared boundary frame
        chunked = vae.encode(video).latent_dist.mean
    torch.testing.assert_close(chunked, plain, atol=1e-6, rtol=0)


def test_chunking_and_tiling_together_give_full_shapes(fixtures):
    vae = _load(fixtures, "cvvae-v1-tiny")
    vae.enable_chunking(4)
    vae.enable_tiling(32, 0.25)
    video = smooth_video(9, 40, 32, seed=5)
    ticks = []
    with torch.no_grad():
        z = vae.encode(video, on_chunk=lambda: ticks.append("e")).latent_dist.mode()
        x = vae.decode(z, on_chunk=lambda: ticks.append("d")).sample
    assert z.shape == (1, 4, 3, 5, 4) and x.shape == video.shape
    assert ticks == ["e", "e", "d", "d"] and vae.num_chunks(9) == (2, 2)


def test_bad_tiling_and_chunking_settings_are_explained():
    vae = _local_vae()
    with pytest.raises(ValueError, match="multiple of 8 pixels"):
        vae.enable_tiling(30)
    with pytest.raises(ValueError, match="multiple of 4 frames"):
        vae.enable_chunking(6)


# ----------------------------------------------------------------------------------------------- frames, images, weights
@pytest.mark.parametrize("frames", [2, 4, 8, 10])
def test_wrong_frame_count_is_a_clear_error(frames):
    vae = _local_vae()
    with pytest.raises(ValueError) as error:
        vae.encode(torch.zeros(1, 3, frames, 16, 16))
    message = str(error.value)
    assert "1 + 4k frames" in message and f"found {frames} frames" in message
    shorter = 1 + (frames - 1) // 4 * 4
    assert f"Trim the video to {shorter} frames or pad it to {shorter + 4}" in message


def test_single_frame_is_an_image(fixtures):
    vae = _load(fixtures, "cvvae-v1-tiny")
    image = smooth_video(1, 32, 32, seed=6)[:, :, 0]
    with torch.no_grad():
        z_video = vae.encode(image[:, :, None]).latent_dist.mean
        z_image = vae.encode(image).latent_dist.mean  # 4D input: a batch of images
        decoded = vae.decode(z_image).sample
    assert z_video.shape == (1, 4, 1, 4, 4)
    torch.testing.assert_close(z_image, z_video, atol=0, rtol=0)
    assert decoded.shape == (1, 3, 1, 32, 32)


def test_inflated_model_encodes_an_image_like_the_image_vae():
    # 2D kernels in the current-frame temporal slice: before training a single image maps to the image
    # VAE's latent (up to GroupNorm eps 1e-5 vs 1e-6).
    image_vae = tiny_image_vae()
    vae = inflate_image_vae(image_vae, tile_spatial_size=None)
    image = smooth_video(1, 32, 32, seed=7)[:, :, 0]
    with torch.no_grad():
        ours = vae.encode(image[:, :, None]).latent_dist.mean[:, :, 0]
        reference = image_vae.encode(image).latent_dist.mean
    torch.testing.assert_close(ours, reference, atol=1e-3, rtol=0)


def _copy_fixture(fixtures, name, tmp_path, edit):
    folder = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    (folder / "config.json").write_text((fixtures / name / "vae" / "config.json").read_text())
    weights = load_file(str(fixtures / name / "vae" / "diffusion_pytorch_model.safetensors"))
    save_file(edit(weights), str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


def test_renamed_weight_is_a_clear_error_naming_the_keys(fixtures, tmp_path):
    def rename(weights):
        weights["decoder.mid.attn_1.q_time.weight"] = weights.pop("decoder.mid.attn_1.q_t.weight")
        return weights

    folder = _copy_fixture(fixtures, "cvvae-v1-tiny", tmp_path, rename)
    with pytest.raises(ValueError) as error:
        CVVAEModel.from_pretrained(str(folder))
    assert "decoder.mid.attn_1.q_t.weight" in str(error.value)
    assert "decoder.mid.attn_1.q_time.weight" in str(error.value)


def test_missing_weight_and_wrong_class_are_clear_errors(fixtures, tmp_path):
    folder = _copy_fixture(fixtures, "cvvae-v1-tiny", tmp_path, lambda w: {k: v for k, v in w.items() if "conv_out" not in k})
    with pytest.raises(ValueError, match=re.escape("missing from the checkpoint: ['decoder.conv_out.bias'")):
        CVVAEModel.from_pretrained(str(folder))
    with pytest.raises(ValueError, match="holds a CVVAEModel checkpoint, which does not fit CVVAESD3Model"):
        CVVAESD3Model.from_pretrained(str(fixtures / "cvvae-v1-tiny" / "vae"))
    shrunk = _copy_fixture(fixtures, "cvvae-v1-tiny", tmp_path, lambda w: {**w, "encoder.conv_in.bias": torch.zeros(5)})
    with pytest.raises(ValueError, match="do not fit CVVAEModel: .*encoder.conv_in.bias"):
        CVVAEModel.from_pretrained(str(shrunk))
    vae = _load(fixtures, "cvvae-v1-tiny")
    state = vae.state_dict()
    state.pop("encoder.conv_in.bias")
    with pytest.raises(ValueError, match=re.escape("missing keys ['encoder.conv_in.bias']")):
        vae.load_state_dict(state)


# ----------------------------------------------------------------------------------------------- metrics
def test_psnr_known_values():
    x = torch.rand(2, 3, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    assert psnr(x, x) == float("inf")
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-4)
    assert psnr(x * 0 + 0.5, x * 0 + 0.25) == pytest.approx(-20 * np.log10(0.25), abs=1e-9)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 0.05
    assert psnr(x + noise, x) == pytest.approx(10 * np.log10(1 / noise.double().pow(2).mean().item()), abs=1e-5)
    big = torch.randn(1_000_000, generator=torch.Generator().manual_seed(2)) * 0.05
    assert psnr(big, torch.zeros_like(big)) == pytest.approx(10 * np.log10(1 / 0.05**2), abs=0.02)  # 26.02 dB
    assert psnr(x * 255 + 25.5, x * 255, data_range=255) == pytest.approx(20.0, abs=1e-4)


def test_ssim_known_values():
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    # Constant frames: only the luminance term is left, (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.6, 0.3, (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    constant_a, constant_b = (torch.full((1, 1, 16, 16), v, dtype=torch.float64) for v in (a, b))
    assert ssim(constant_a, constant_b) == pytest.approx(expected, abs=1e-12)
    # One 11x11 window: the Gaussian-weighted statistics written out by hand.
    p, q = torch.rand(1, 1, 11, 11, dtype=torch.float64), torch.rand(1, 1, 11, 11, dtype=torch.float64)
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    mp, mq = (w * p).sum(), (w * q).sum()
    vp, vq, cov = (w * (p - mp) ** 2).sum(), (w * (q - mq) ** 2).sum(), (w * (p - mp) * (q - mq)).sum()
    c2 = (0.03 * 1.0) ** 2
    by_hand = ((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2))
    assert ssim(p, q) == pytest.approx(by_hand.item(), abs=1e-12)
    # Videos are scored frame by frame; noise lowers SSIM.
    video = torch.rand(1, 3, 3, 16, 16)
    assert ssim(video, video.clamp(0.1, 0.9)) < 1.0
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# ----------------------------------------------------------------------------------------------- CLI
def _write_clip(path, frames=11, height=40, width=48):
    from repvideo_diffusers.utils.video import write_video

    t = np.linspace(0, 1, frames)[:, None, None, None]
    y = np.linspace(0, 1, height)[None, :, None, None]
    x = np.linspace(0, 1, width)[None, None, :, None]
    clip = np.concatenate(
        [np.sin(6 * x + 3 * t) * 0.5 + 0.5 + 0 * y, y + 0 * x + 0 * t, (x * y + t) % 1], axis=-1
    )
    write_video((clip * 255).astype(np.uint8), str(path), fps=8)


def test_cli_reconstruct_prints_psnr_ssim_and_writes_the_video(fixtures, tmp_path, capsys):
    from repvideo_diffusers.cli import main
    from repvideo_diffusers.utils.video import read_video

    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _write_clip(source, frames=11, height=36, width=40)
    argv = ["vae", "reconstruct", "--vae", str(fixtures / "cvvae-v1-tiny" / "vae"), "--video", str(source)]
    argv += ["--out", str(target), "--tile-size", "32", "--chunk-frames", "4", "--dtype", "float32"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "Using 9 of 11 frames at 32x40" in captured.out
    psnr_value = float(re.search(r"PSNR: ([0-9.]+) dB", captured.out).group(1))
    ssim_value = float(re.search(r"SSIM: (-?[0-9.]+)", captured.out).group(1))
    assert 0 < psnr_value < 60 and -1 <= ssim_value <= 1
    assert "CV-VAE chunks" in captured.err  # tqdm progress bar over the 2 + 2 chunks
    frames, fps = read_video(str(target))
    assert frames.shape == (9, 32, 40, 3) and fps == pytest.approx(8.0)


def test_cli_reconstruct_bad_input_is_a_clear_error(fixtures, tmp_path, capsys):
    from repvideo_diffusers.cli import main

    source = tmp_path / "in.mp4"
    _write_clip(source, frames=5, height=16, width=16)
    assert main(["vae", "reconstruct", "--vae", str(tmp_path / "nowhere"), "--video", str(source), "--out", "x.mp4"]) == 2
    assert "No CV-VAE config at" in capsys.readouterr().err
    vae_dir = str(fixtures / "cvvae-v1-tiny" / "vae")
    assert main(["vae", "reconstruct", "--vae", vae_dir, "--video", str(tmp_path / "missing.mp4"), "--out", "x.mp4"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["vae", "reconstruct", "--vae", vae_dir, "--video", str(source), "--out", "x.mp4", "--tile-size", "20"]) == 2
    assert "multiple of 8 pixels" in capsys.readouterr().err


@pytest.mark.parametrize("tile,overlap,align", [(32, 8, 8), (72, 16, 8), (4, 1, 1), (32, 0, 8), (9, 3, 1)])
def test_tile_spans_cover_every_size_without_gaps(tile, overlap, align):
    from repvideo_diffusers.cvvae.tiling import TileAccumulator, tile_spans

    for size in range(1, 200):
        spans = tile_spans(size, tile, overlap, align)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(start % align == 0 for start, _ in spans)
        assert all(b0 <= a1 for (_, a1), (b0, _) in zip(spans, spans[1:]))  # no gap between neighbours
        assert all(end - start <= tile + align - 1 for start, end in spans)
        canvas = TileAccumulator(spans, [(0, 1)])
        for i, (start, end) in enumerate(spans):
            canvas.add(i, 0, torch.full((end - start, 1), 3.0))
        torch.testing.assert_close(canvas.result(), torch.full((size, 1), 3.0))  # weights sum to one


def test_docstring_examples_run():
    import doctest
    import importlib

    names = ["attention", "layers", "tiling", "metrics", "modeling", "modeling_sd3", "regularization", "inflation"]
    names += ["mixin", "reconstruct"]
    modules = [f"repvideo_diffusers.cvvae.{name}" for name in names] + ["repvideo_diffusers.cli.vae"]
    for name in modules:
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, f"{name}: {result}"
        assert result.attempted > 0 or name.endswith(".loading"), name


def test_chunking_equals_plain_when_frames_do_not_interact():
    """Chunk assembly (shared boundary frame, dropped duplicates, frame order) is exact. Inflated weights put
    each kernel in the current-frame slice and zero the temporal attention; with the GroupNorms (which pool
    statistics over all frames of a chunk) replaced by identities, frames no longer interact at all, so chunked
    and plain results of a moving clip must agree to float32 noise (stated tolerance 1e-5)."""
    vae = inflate_image_vae(tiny_image_vae(), tile_spatial_size=None, en_de_n_frames_a_time=None)
    for name, module in list(vae.named_modules()):
        if isinstance(module, torch.nn.GroupNorm):
            parent, _, child = name.rpartition(".")
            setattr(vae.get_submodule(parent), child, torch.nn.Identity())
    video = smooth_video(17, 16, 16, seed=8)
    with torch.no_grad():
        plain = vae.encode(video).latent_dist.mean
        plain_x = vae.decode(plain).sample
        vae.enable_chunking(4)  # 4 encode chunks, 4 decode chunks
        chunked = vae.encode(video).latent_dist.mean
        chunked_x = vae.decode(plain).sample
    assert vae.num_chunks(17) == (4, 4) and chunked.shape == (1, 4, 5, 2, 2)
    assert (plain[:, :, 1:] - plain[:, :, :-1]).abs().max() > 1e-2  # the latent frames do differ
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_x, plain_x, atol=1e-5, rtol=1e-5)
