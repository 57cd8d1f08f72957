"""Attention processors at CogVideoX-2B shapes: stock diffusers vs our SDPA vs our xformers route (+ capture).

On CUDA (default there) it runs one CogVideoX-2B attention layer at the official sampling shape: batch 2 (CFG),
30 heads x 64, 226 text + 17,550 video tokens (49 frames, 480 x 720), bf16. On a CPU it runs a small shape by
default so it finishes in seconds. It prints forward time and peak memory per variant and ratios to the stock
processor, all measured in one run (absolute numbers depend on the machine; compare ratios).

    python benchmarks/attention_bench.py                 # CUDA if available, else the small CPU shape
    python benchmarks/attention_bench.py --shape 2b      # force the CogVideoX-2B shape
    python benchmarks/attention_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SHAPES = {
    # batch, heads, head dim, text tokens, latent frames, latent height / 2, latent width / 2 (patch 2)
    "2b": dict(batch=2, heads=30, head_dim=64, text=226, frames=13, height=30, width=45),
    "small": dict(batch=1, heads=8, head_dim=64, text=226, frames=4, height=12, width=16),
}


def build_attention(shape: dict, device, dtype):
    """A one-block CogVideoX transformer with the 2B attention layout; returns it and its block's attention."""
    from diffusers import CogVideoXTransformer3DModel

    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=shape["heads"], attention_head_dim=shape["head_dim"], num_layers=1,
        max_text_seq_length=shape["text"],
    ).to(device=device, dtype=dtype).eval()
    return transformer, transformer.transformer_blocks[0].attn1


def measure(fn, device, repeats: int):
    for _ in range(2):  # warm-up: kernels selected, allocator primed
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else float("nan")
    return statistics.median(times) * 1000, peak


def main(argv=None):
    from repvideo_diffusers import attention

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: 2b on CUDA, small on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's; use 1 on a shared machine, where spinning threads wait on each other)")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = SHAPES[args.shape or ("2b" if device.type == "cuda" else "small")]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    torch.manual_seed(0)
    transformer, attn = build_attention(shape, device, dtype)
    width = shape["heads"] * shape["head_dim"]
    video_tokens = shape["frames"] * shape["height"] * shape["width"]
    video = torch.randn(shape["batch"], video_tokens, width, device=device, dtype=dtype)
    text = torch.randn(shape["batch"], shape["text"], width, device=device, dtype=dtype)

    @torch.no_grad()
    def forward():
        return attn(hidden_states=video, encoder_hidden_states=text)[0]

    rows, outputs = [], {}
    rows.append(("stock diffusers (CogVideoXAttnProcessor2_0)", *measure(forward, device, args.repeats)))
    outputs["stock"] = forward().float()
    attention.set_attention_kernel(transformer, "sdpa")
    rows.append(("repvideo sdpa", *measure(forward, device, args.repeats)))
    outputs["sdpa"] = forward().float()
    with attention.capture_attention(transformer) as capture:
        # the layer is called on its own, not through the transformer: give the capture the token grid
        capture.grid = (shape["frames"], shape["height"], shape["width"])
        rows.append(("repvideo sdpa + capture (1 query/frame)", *measure(forward, device, args.repeats)))
    problem = attention.probe_xformers(device, dtype)
    if problem is None:
        attention.set_attention_kernel(transformer, "xformers")
        rows.append(("repvideo xformers", *measure(forward, device, args.repeats)))
        outputs["xformers"] = forward().float()
    attention.reset_attention_kernel(transformer)

    tokens = shape["text"] + video_tokens
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), {dtype}, "
          f"batch {shape['batch']}, {shape['heads']} heads x {shape['head_dim']}, {tokens} tokens")
    if problem is not None:
        print(f"xformers not measured: {problem}")
    stock_ms, stock_mb = rows[0][1], rows[0][2]
    print("| variant | forward ms | x stock | peak MiB | x stock |\n|---|---|---|---|---|")
    for name, ms, mb in rows:
        print(f"| {name} | {ms:.2f} | {ms / stock_ms:.3f} | {mb:.0f} | {mb / stock_mb if stock_mb == stock_mb else float('nan'):.3f} |")
    differences = {k: (v - outputs["stock"]).abs().max().item() for k, v in outputs.items() if k != "stock"}
    print("max |output - stock|:", {k: f"{v:.2e}" for k, v in differences.items()})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": str(device), "dtype": str(dtype), "shape": shape, "tokens": tokens,
                       "rows": [dict(variant=n, ms=ms, peak_mib=mb) for n, ms, mb in rows],
                       "max_abs_difference_to_stock": differences}, handle, indent=1)


if __name__ == "__main__":
    main()
