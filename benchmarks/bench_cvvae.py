"""CV-VAE reconstruction speed and peak memory (one configuration per process, so peak RSS is its own).

    python benchmarks/bench_cvvae.py --frames 17 --size 256 --mode plain
    python benchmarks/bench_cvvae.py --frames 17 --size 256 --mode tiled --tile 128

Builds a full-size default-config ``CVVAEModel`` (or ``CVVAESD3Model`` with ``--sd3``) with random weights,
encodes + decodes one random video and prints a JSON line: seconds, frames/s, peak RSS (MiB), and peak GPU
memory on CUDA.
"""

import argparse
import json
import resource
import time

import torch

from repvideo_diffusers.cvvae import CVVAEModel, CVVAESD3Model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--mode", choices=("plain", "tiled"), default="plain")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--chunk", type=int, default=0, help="frames encoded at a time (0: all)")
    parser.add_argument("--sd3", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    torch.manual_seed(0)
    cls = CVVAESD3Model if args.sd3 else CVVAEModel
    dtype = getattr(torch, args.dtype)
    vae = cls(en_de_n_frames_a_time=args.chunk or None, tile_spatial_size=None).eval().to(args.device, dtype)
    if args.mode == "tiled":
        vae.enable_tiling(args.tile, args.overlap)
    video = torch.rand(1, 3, args.frames, args.size, args.size, device=args.device, dtype=dtype) * 2 - 1
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        z = vae.encode(video).latent_dist.mode()
        encoded = time.perf_counter()
        out = vae.decode(z).sample
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    end = time.perf_counter()
    result = {
        "model": cls.__name__,
        "mode": args.mode,
        "tile": args.tile if args.mode == "tiled" else None,
        "chunk": args.chunk or None,
        "frames": args.frames,
        "size": args.size,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "encode_s": round(encoded - start, 2),
        "decode_s": round(end - encoded, 2),
        "frames_per_s": round(args.frames / (end - start), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_run_mib": round(rss_before),
        "out_shape": list(out.shape),
    }
    if args.device.startswith("cuda"):
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
