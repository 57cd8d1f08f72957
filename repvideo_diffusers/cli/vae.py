"""``repvideo vae ...``: CV-VAE reconstruction and training from the command line.

    repvideo vae reconstruct --vae DIR --video IN.mp4 --out OUT.mp4 [--device cuda] [--tile-size 256]
    repvideo vae train --image-vae SD_VAE_DIR --data CLIPS_DIR --out OUT_DIR [--max-steps 1000]

The work is done by `repvideo_diffusers.cvvae.reconstruct.reconstruct_video` and
`repvideo_diffusers.cvvae.training.train_cvvae_on_videos`.
"""

import argparse

from ._common import add_alias, add_device_arguments, add_out_argument, add_parser


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

    rec = add_parser(commands, "reconstruct", help="encode + decode a video and report PSNR / SSIM")
    rec.add_argument("--vae", required=True, help="CV-VAE folder (config.json + safetensors)")
    rec.add_argument("--subfolder", default=None, help="subfolder of --vae, e.g. vae3d, vae3d_v1-1, vae3d_sd3")
    rec.add_argument("--video", required=True, help="input video (mp4)")
    add_out_argument(rec, "output video (mp4)", required=True)
    add_device_arguments(rec, dtype_help="compute dtype (default: fp32)")
    rec.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    rec.add_argument("--tile-size", type=int, default=None, help="spatial tile in pixels (default: the config's)")
    rec.add_argument("--tile-overlap", type=float, default=None, help="tile overlap ratio (default: the config's)")
    rec.add_argument("--no-tiling", action="store_true", help="process whole frames")
    rec.add_argument("--chunk-frames", type=int, default=None, help="frames encoded at a time (multiple of 4)")
    rec.add_argument("--no-chunking", action="store_true", help="process all frames at once")
    rec.add_argument("--sample", action="store_true", help="decode a posterior sample instead of its mode")
    rec.add_argument("--seed", type=int, default=0)
    rec.set_defaults(func=run_reconstruct)

    train = add_parser(commands, "train", help="train a CV-VAE initialised from an image VAE (AutoencoderKL)")
    train.add_argument("--image-vae", required=True, help="diffusers AutoencoderKL folder (the latent space to keep)")
    train.add_argument("--image-vae-subfolder", default=None, help="e.g. vae for a full pipeline folder")
    train.add_argument("--variant", default="v1", choices=("v1", "sd3"), help="v1: 4 channels, sd3: 16 channels")
    train.add_argument("--init", default=None, help="start from this CV-VAE folder instead of inflating")
    train.add_argument("--data", required=True, help="folder of training mp4 clips")
    add_alias(train, "--videos", "--data")
    add_out_argument(train, "where to save the trained CV-VAE (a folder)", required=True)
    add_alias(train, "--output", "--out")
    train.add_argument("--max-steps", type=int, default=1000, help="optimizer steps")
    add_alias(train, "--steps", "--max-steps")
    train.add_argument("--learning-rate", type=float, default=2e-5, help="AdamW learning rate")
    add_alias(train, "--lr", "--learning-rate")
    train.add_argument("--batch-size", type=int, default=1)
    train.add_argument("--num-frames", type=int, default=17, help="1 + 4k frames per clip")
    train.add_argument("--resolution", type=int, default=256)
    train.add_argument("--frame-choice", default="slice", choices=("slice", "mean", "random"))
    train.add_argument("--kl-weight", type=float, default=1e-6)
    train.add_argument("--reg-weight", type=float, default=1.0, help="latent regularisation weight")
    train.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=run_train)


def run_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct ``args.video`` with a CV-VAE, write ``args.out``, print PSNR and SSIM.

    Example::

        repvideo vae reconstruct --vae /models/CV-VAE --subfolder vae3d --video in.mp4 --out out.mp4 --tile-size 256
    """
    from ..cvvae.reconstruct import reconstruct_video
    from ..utils.dtypes import parse_dtype
    from ._common import resolve_device

    result = reconstruct_video(
        args.vae, args.video, args.out, subfolder=args.subfolder, device=resolve_device(args.device),
        dtype=parse_dtype(args.dtype or "fp32", "--dtype"), max_frames=args.max_frames, tile_size=args.tile_size,
        tile_overlap=args.tile_overlap, tiling=not args.no_tiling, chunk_frames=args.chunk_frames,
        chunking=not args.no_chunking, sample=args.sample, seed=args.seed, note=print,
    )
    print(f"Reconstructed {result.num_frames} frames at {result.height}x{result.width} in {result.seconds:.1f} s "
          f"({result.num_frames / result.seconds:.2f} frames/s)")
    print(f"PSNR: {result.psnr:.2f} dB")
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
    )
    history = train_cvvae_on_videos(
        args.image_vae, args.data, args.out, config, image_vae_subfolder=args.image_vae_subfolder,
        variant=args.variant, init=args.init, num_frames=args.num_frames, resolution=args.resolution,
        on_step=lambda step, losses: print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in losses.items())),
    )
    print(f"Trained {len(history)} steps; saved the CV-VAE to {args.out}")
    return 0
