"""``repvideo vae ...``: CV-VAE reconstruction and training from the command line.

    repvideo vae reconstruct --vae DIR --video IN.mp4 --out OUT.mp4 [--device cuda] [--tile-size 256]
    repvideo vae train --image-vae SD_VAE_DIR --videos CLIPS_DIR --output OUT_DIR [--steps 1000]
"""

import argparse
import time

DTYPES = ("float32", "float16", "bfloat16")


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
    vae = subparsers.add_parser("vae", help="CV-VAE video VAE: reconstruct videos, train from an image VAE")
    commands = vae.add_subparsers(dest="vae_command", metavar="VAE_COMMAND")
    vae.set_defaults(func=lambda args: vae.print_help() or 2)

    rec = commands.add_parser("reconstruct", help="encode + decode a video and report PSNR / SSIM")
    rec.add_argument("--vae", required=True, help="CV-VAE folder (config.json + safetensors)")
    rec.add_argument("--subfolder", default=None, help="subfolder of --vae, e.g. vae3d, vae3d_v1-1, vae3d_sd3")
    rec.add_argument("--video", required=True, help="input video (mp4)")
    rec.add_argument("--out", required=True, help="output video (mp4)")
    rec.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    rec.add_argument("--dtype", default="float32", choices=DTYPES)
    rec.add_argument("--max-frames", type=int, default=None, help="use at most this many frames")
    rec.add_argument("--tile-size", type=int, default=None, help="spatial tile in pixels (default: the config's)")
    rec.add_argument("--tile-overlap", type=float, default=None, help="tile overlap ratio (default: the config's)")
    rec.add_argument("--no-tiling", action="store_true", help="process whole frames")
    rec.add_argument("--chunk-frames", type=int, default=None, help="frames encoded at a time (multiple of 4)")
    rec.add_argument("--no-chunking", action="store_true", help="process all frames at once")
    rec.add_argument("--sample", action="store_true", help="decode a posterior sample instead of its mode")
    rec.add_argument("--seed", type=int, default=0)
    rec.set_defaults(func=run_reconstruct)

    train = commands.add_parser("train", help="train a CV-VAE initialised from an image VAE (AutoencoderKL)")
    train.add_argument("--image-vae", required=True, help="diffusers AutoencoderKL folder (the latent space to keep)")
    train.add_argument("--image-vae-subfolder", default=None, help="e.g. vae for a full pipeline folder")
    train.add_argument("--variant", default="v1", choices=("v1", "sd3"), help="v1: 4 channels, sd3: 16 channels")
    train.add_argument("--init", default=None, help="start from this CV-VAE folder instead of inflating")
    train.add_argument("--videos", required=True, help="folder of training mp4 clips")
    train.add_argument("--output", required=True, help="where to save the trained CV-VAE")
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--lr", type=float, default=2e-5)
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


def _configure(vae, args) -> None:
    if args.no_tiling:
        vae.disable_tiling()
    elif args.tile_size is not None:
        vae.enable_tiling(args.tile_size, args.tile_overlap)
    elif args.tile_overlap is not None and vae.use_tiling:
        vae.enable_tiling(vae.tile_sample_size, args.tile_overlap)
    if args.no_chunking:
        vae.disable_chunking()
    elif args.chunk_frames is not None:
        vae.enable_chunking(args.chunk_frames)


def run_reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct ``args.video`` with a CV-VAE, write ``args.out``, print PSNR and SSIM.

    The clip is trimmed to ``1 + 4k`` frames and a multiple-of-8 size; PSNR / SSIM compare the written 8-bit
    frames with the trimmed input on a [0, 1] scale. Example::

        repvideo vae reconstruct --vae /models/CV-VAE --subfolder vae3d --video in.mp4 --out out.mp4 --tile-size 256
    """
    import torch
    from tqdm.auto import tqdm

    from .loading import load_cvvae
    from .metrics import psnr, ssim
    from ..utils.video import frames_to_tensor, read_video, tensor_to_frames, write_video

    frames, fps = read_video(args.video)
    if args.max_frames is not None:
        frames = frames[: args.max_frames]
    vae = load_cvvae(args.vae, args.subfolder, torch_dtype=getattr(torch, args.dtype))
    _configure(vae, args)
    n, s = vae.time_n_compress, vae.spatial_n_compress
    # The VAE maps 1 + 4k frames of a multiple-of-8 size; trim the rest rather than invent pixels.
    usable = 1 + (len(frames) - 1) // n * n
    height, width = frames.shape[1] // s * s, frames.shape[2] // s * s
    if height == 0 or width == 0:
        raise ValueError(f"Frames of {frames.shape[1]}x{frames.shape[2]} are smaller than {s}x{s} pixels.")
    if usable != len(frames) or (height, width) != frames.shape[1:3]:
        print(f"Using {usable} of {len(frames)} frames at {height}x{width} (1 + {n}k frames, multiples of {s}).")
    frames = frames[:usable, :height, :width]

    device = torch.device(args.device)
    vae = vae.to(device).eval()
    video = frames_to_tensor(frames).to(device, getattr(torch, args.dtype))
    encode_chunks, decode_chunks = vae.num_chunks(usable)
    start = time.perf_counter()
    with torch.no_grad(), tqdm(total=encode_chunks + decode_chunks, desc="CV-VAE chunks", unit="chunk") as bar:
        posterior = vae.encode(video, on_chunk=bar.update).latent_dist
        generator = torch.Generator(device=device).manual_seed(args.seed)
        z = posterior.sample(generator=generator) if args.sample else posterior.mode()
        reconstruction = vae.decode(z, on_chunk=bar.update).sample
    seconds = time.perf_counter() - start
    output = tensor_to_frames(reconstruction)
    write_video(output, args.out, fps=fps)

    # Score the 8-bit frames that were written, against the (trimmed) input, on a [0, 1] scale.
    reference = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].double() / 255.0
    result = torch.from_numpy(output).permute(3, 0, 1, 2)[None].double() / 255.0
    print(f"Reconstructed {usable} frames at {height}x{width} in {seconds:.1f} s ({usable / seconds:.2f} frames/s)")
    print(f"PSNR: {psnr(result, reference):.2f} dB")
    print(f"SSIM: {ssim(result, reference):.4f}")
    print(f"Wrote {args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train a CV-VAE from ``args.image_vae`` on the clips in ``args.videos``; save to ``args.output``.

    Example::

        repvideo vae train --image-vae /models/sd-2-1 --image-vae-subfolder vae --videos clips/ --output out/
    """
    from diffusers import AutoencoderKL

    from .inflation import inflate_image_vae
    from .loading import load_cvvae
    from .training import CVVAETrainingConfig, VideoClipDataset, find_videos, train_cvvae

    dataset = VideoClipDataset(find_videos(args.videos), num_frames=args.num_frames, size=args.resolution)
    image_vae = AutoencoderKL.from_pretrained(args.image_vae, subfolder=args.image_vae_subfolder)
    vae = load_cvvae(args.init) if args.init else inflate_image_vae(image_vae, args.variant)
    config = CVVAETrainingConfig(
        steps=args.steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        kl_weight=args.kl_weight,
        regularization_weight=args.reg_weight,
        frame_choice=args.frame_choice,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
    )
    history = train_cvvae(
        vae,
        image_vae,
        dataset,
        config,
        output_dir=args.output,
        on_step=lambda step, losses: print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in losses.items())),
    )
    print(f"Trained {len(history)} steps; saved the CV-VAE to {args.output}")
    return 0
