"""Run by `test_context_parallel.py` under `torch.distributed.run`: RepVideo with and without diffusers' context
parallelism (`transformer.enable_parallelism(ContextParallelConfig(ulysses_degree=world_size))`) on one rank.

Writes one JSON line per case into ``OUT_DIR/rank<r>.jsonl`` (a file per rank: two ranks printing to one pipe can
interleave their lines): the largest difference between the context-parallel output and the single-process
output of the same model, how much RepVideo changes the output (so the first number means something), and how many
tokens the feature cache held on this rank (a shard: sequence / world size).
"""

import json
import sys

import torch
import torch.distributed as dist


def main(backend: str, families: list[str], out_dir: str) -> None:
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cpu":
        # diffusers 0.42 `ModelMixin._resolve_parallel_config` picks the rank's device with
        # `rank % torch.accelerator.device_count()`, which divides by zero when there is no accelerator.
        torch.accelerator.device_count = lambda: 1
    else:
        torch.cuda.set_device(device)
    from diffusers import ContextParallelConfig

    from repvideo_diffusers import RepVideoConfig, apply_repvideo
    from repvideo_diffusers.families import get_transformer_blocks
    from repvideo_diffusers.testing import TINY_MODELS

    for family in families:
        for order in ("repvideo_first", "parallel_first"):
            transformer, inputs = TINY_MODELS[family].build(seed=0)
            transformer.to(device)
            inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
            config = RepVideoConfig(window=3, gate_init=0.5)
            gate_values = torch.linspace(0.1, 0.9, TINY_MODELS[family].num_blocks)
            with torch.no_grad():
                vanilla = transformer(**inputs, return_dict=False)[0]
                gates = apply_repvideo(transformer, config)
                gates.gate.copy_(gate_values)
                reference = transformer(**inputs, return_dict=False)[0]
            if order == "parallel_first":  # RepVideo applied on top of an already parallel model
                from repvideo_diffusers import remove_repvideo

                remove_repvideo(transformer)
                transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
                gates = apply_repvideo(transformer, config)
                with torch.no_grad():
                    gates.gate.copy_(gate_values)
            else:
                transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
            cached_tokens = []
            last_block = get_transformer_blocks(transformer)[-1]
            last_block.register_forward_hook(
                lambda *_: cached_tokens.append(transformer._repvideo_state.state.means[0].shape[1])
            )
            with torch.no_grad():
                output = transformer(**inputs, return_dict=False)[0]
            record = json.dumps({
                "rank": rank, "world": world, "family": family, "order": order,
                "max_difference": (output - reference).abs().max().item(),
                "repvideo_effect": (reference - vanilla).abs().max().item(),
                "cached_tokens": cached_tokens[0],
                "output_shape": list(output.shape),
                "reference_shape": list(reference.shape),
            })
            with open(f"{out_dir}/rank{rank}.jsonl", "a") as results:
                results.write(record + "\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","), sys.argv[3])
