"""``repvideo vae ...``: CV-VAE reconstruction and training from the command line.

    repvideo vae reconstruct --vae DIR --video IN.mp4 --out OUT.mp4 [--device cuda] [--tile-size 256]
    repvideo vae train --image-vae SD_VAE_DIR --data CLIPS_DIR --out OUT_DIR [--max-steps 1000] [--resume latest]

Every argument and path is checked before a model is loaded; an existing --out is replaced only with --overwrite
(``vae train``: or continued with --resume); outputs are written beside their destination and moved into place
when complete, so Ctrl-C leaves no half-written file.

The work is done by `repvideo_diffusers.cvvae.reconstruct.reconstruct_video` and
`repvideo_diffusers.cvvae.training.train_cvvae_on_videos`.
"""

import argparse
from pathlib import Path

from ._common import (UsageError, add_alias, add_device_arguments, add_out_argument, add_parser, canonical_dtype,
                      check_dtype, check_input_file, check_output_file, finite, positive, resolve_device)


def register(subparsers) -> None:
    """Add the ``vae`` command (sub-commands ``reconstruct`` and ``train``) to the ``repvideo`` CLI.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="repvideo")
        >>> register(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["vae", "reconstruct", "--vae", "v", "--video", "a.mp4", "--out", "b.mp4"])
        >>> args.func.__name__, args.tile_size
        ('run_reconstruct', None)
    """
    vae = add_parser(subparsers, "vae", help="CV-VAE video VAE: reconstruct videos, train from an image VAE")
    commands = vae.add_subparsers(dest="vae_command", metavar="VAE_COMMAND", parser_class=type(vae))
    vae.set_defaults(func=lambda args: vae.print_help() or 2)

    count, number = positive(int), positive(float)
    rec = add_parser(commands, "reconstruct", help="encode + decode a video and report PSNR / SSIM")
    rec.add_argument("--vae", required=True, help="CV-VAE folder (config.json + safetensors)")
    rec.add_argument("--subfolder", default=None,
                     help="subfolder of --vae, e.g. vae3d, vae3d_v1-1, vae3d_sd3 (default: --vae itself)")
    rec.add_argument("--video", required=True, help="input video (mp4, or any format ffmpeg reads)")
    add_out_argument(rec, "output video (mp4); missing folders are made", required=True)
    add_device_arguments(rec, dtype_help="compute dtype (default: fp32)")
    rec.add_argument("--max-frames", type=count, default=None, help="use at most this many frames (default: all)")
    rec.add_argument("--tile-size", type=count, default=None,
                     help="spatial tile in pixels, a multiple of 8 (default: the config's)")
    rec.add_argument("--tile-overlap", type=finite, default=None, help="tile overlap ratio in [0, 1) "
                     "(default: the config's)")
    rec.add_argument("--no-tiling", action="store_true", help="process whole frames")
    rec.add_argument("--chunk-frames", type=count, default=None,
                     help="frames encoded at a time, a multiple of 4 (default: the config's)")
    rec.add_argument("--no-chunking", action="store_true", help="process all frames at once")
    rec.add_argument("--sample", action="store_true", help="decode a posterior sample instead of its mode")
    rec.add_argument("--no-ssim", action="store_true",
                     help="skip SSIM (PSNR only): SSIM of a long clip takes a while on the CPU")
    rec.add_argument("--seed", type=int, default=0, help="seed of --sample")
    rec.set_defaults(func=run_reconstruct)

    train = add_parser(commands, "train", help="train a CV-VAE initialised from an image VAE (AutoencoderKL)")
    train.add_argument("--image-vae", required=True, help="diffusers AutoencoderKL folder (the latent space to keep)")
    train.add_argument("--image-vae-subfolder", default=None,
                       help="e.g. vae for a full pipeline folder (default: --image-vae itself)")
    train.add_argument("--variant", default="v1", choices=("v1", "sd3"), help="v1: 4 channels, sd3: 16 channels")
    train.add_argument("--init", default=None, help="start from this CV-VAE folder instead of inflating "
                       "(default: inflate --image-vae)")
    train.add_argument("--data", required=True, help="folder of training mp4 clips")
    add_alias(train, "--videos", "--data")
    add_out_argument(train, "where to save the trained CV-VAE and its checkpoints/ (a folder)", required=True)
    add_alias(train, "--output", "--out")
    overwrite = next(a for a in train._actions if a.dest == "overwrite")  # noqa: SLF001 - argparse's action list
    overwrite.help = (
        "start a new run in an --out that holds one; the old one is deleted when the new run's first checkpoint "
        "(or result) is complete")
    train.add_argument("--max-steps", type=count, default=1000, help="optimizer steps")
    add_alias(train, "--steps", "--max-steps")
    train.add_argument("--learning-rate", type=number, default=2e-5, help="AdamW learning rate")
    add_alias(train, "--lr", "--learning-rate")
    train.add_argument("--batch-size", type=count, default=1, help="clips per step")
    train.add_argument("--num-frames", type=count, default=17, help="frames per clip, 1 + 4k")
    train.add_argument("--resolution", type=count, default=256, help="square clip size in pixels, a multiple of 8")
    train.add_argument("--frame-choice", default="slice", choices=("slice", "mean", "random"),
                       help="how the image VAE sees each group of 4 frames in the latent regularisation")
    train.add_argument("--kl-weight", type=positive(float, allow_zero=True), default=1e-6, help="KL weight")
    train.add_argument("--reg-weight", type=positive(float, allow_zero=True), default=1.0,
                       help="latent regularisation weight")
    train.add_argument("--mixed-precision", default="no", type=_mixed_precision, metavar="{no,fp16,bf16}",
                       help="autocast precision; fp16 on GPUs only")
    train.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    train.add_argument("--checkpoint-every", type=count, default=500,
                       help="save a checkpoint (weights, optimizer, RNG) every N steps")
    train.add_argument("--checkpoints-total-limit", type=count, default=None,
                       help="keep only the newest N checkpoints (default: all)")
    train.add_argument("--resume", default=None, metavar="latest|PATH",
                       help="continue the run in --out from a checkpoint (default: a new run)")
    train.add_argument("--seed", type=int, default=0, help="seed of clip order and noise")
    train.set_defaults(func=run_train)


def _mixed_precision(value: str) -> str:
    return "no" if str(value).lower() == "no" else canonical_dtype(value)


def check_reconstruct_args(args: argparse.Namespace) -> str:
    """Every ``vae reconstruct`` argument checked before the VAE is loaded; returns the device to run on."""
    from ..training.workspace import check_weights

    device = resolve_device(args.device)
    check_dtype(args.dtype, device)
    if args.tile_size is not None and (args.tile_size < 16 or args.tile_size % 8):
        raise UsageError(f"--tile-size must be a multiple of 8 pixels (the spatial compression) and at least 16, "
                         f"got {args.tile_size}. Use e.g. {max(16, round(args.tile_size / 8) * 8)}.")
    if args.tile_overlap is not None and not 0 <= args.tile_overlap < 1:
        raise UsageError(f"--tile-overlap must be in [0, 1) (a fraction of the tile), got {args.tile_overlap}. "
                         "Use e.g. 0.25.")
    if args.chunk_frames is not None and args.chunk_frames % 4:
        raise UsageError(f"--chunk-frames must be a multiple of 4 (the temporal compression), got "
                         f"{args.chunk_frames}. Use {max(4, args.chunk_frames // 4 * 4)}.")
    check_input_file(args.video, "--video")
    check_output_file(args.out, args.overwrite, suffixes=(".mp4",))
    folder = Path(args.vae, args.subfolder) if args.subfolder else Path(args.vae)
    if not (folder / "config.json").is_file():
        found = "does not exist" if not folder.exists() else "has no config.json"
        raise UsageError(f"--vae: No CV-VAE config at {str(folder / 'config.json')!r} ({str(folder)!r} {found}). "
                         "Pass a folder with config.json and diffusion_pytorch_model.safetensors (or add --subfolder, "
                         "e.g. vae3d).")
    check_weights(folder, "--vae")
    return device


def run_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct ``args.video`` with a CV-VAE, write ``args.out``, print PSNR and SSIM.

    Example::

        repvideo vae reconstruct --vae /models/CV-VAE --subfolder vae3d --video in.mp4 --out out.mp4 --tile-size 256
    """
    from ..cvvae.reconstruct import reconstruct_video
    from ..utils.dtypes import parse_dtype

    device = check_reconstruct_args(args)
    result = reconstruct_video(
        args.vae, args.video, args.out, subfolder=args.subfolder, device=device,
        dtype=parse_dtype(args.dtype or "fp32", "--dtype"), max_frames=args.max_frames, tile_size=args.tile_size,
        tile_overlap=args.tile_overlap, tiling=not args.no_tiling, chunk_frames=args.chunk_frames,
        chunking=not args.no_chunking, sample=args.sample, seed=args.seed, note=print, ssim=not args.no_ssim,
    )
    print(f"Reconstructed {result.num_frames} frames at {result.height}x{result.width} in {result.seconds:.1f} s "
          f"({result.num_frames / result.seconds:.2f} frames/s)")
    print(f"PSNR: {result.psnr:.2f} dB")
    if result.ssim is not None:
        print(f"SSIM: {result.ssim:.4f}")
    print(f"Wrote {args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train a CV-VAE from ``args.image_vae`` on the clips in ``args.data``; save to ``args.out``.

    Example::

        repvideo vae train --image-vae /models/sd-2-1 --image-vae-subfolder vae --data clips/ --out out/
    """
    from ..cvvae.training import CVVAETrainingConfig, train_cvvae_on_videos

    config = CVVAETrainingConfig(
        steps=args.max_steps,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        kl_weight=args.kl_weight,
        regularization_weight=args.reg_weight,
        frame_choice=args.frame_choice,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        checkpoints_total_limit=args.checkpoints_total_limit,
    )
    history = train_cvvae_on_videos(  # checks every argument and path before loading a model
        args.image_vae, args.data, args.out, config, image_vae_subfolder=args.image_vae_subfolder,
        variant=args.variant, init=args.init, num_frames=args.num_frames, resolution=args.resolution,
        resume=args.resume, overwrite=args.overwrite,
        on_step=lambda step, losses: print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in losses.items())),
    )
    print(f"Trained to step {len(history)} of {args.max_steps}; saved the CV-VAE to {args.out}")
    return 0
