"""LoRA and RepVideo together: diffusers' LoRA API (`load_lora_weights`, `set_adapters`, `fuse_lora`,
`unfuse_lora`, `unload_lora_weights`) on a pipeline with RepVideo enabled, in either order, and a LoRA trained by
``repvideo train --train lora`` loaded into a fresh pipeline with plain diffusers.

The reference is independent of peft and of diffusers' LoRA code: the LoRA file is read with safetensors and merged
by hand, ``W + alpha / r * weight * B @ A``, into a deep copy of the base transformer, which then gets the same
RepVideo gates.
"""

import copy
import re

import pytest
import torch
from safetensors.torch import load_file

from repvideo_diffusers import RepVideoGates, apply_repvideo
from repvideo_diffusers.testing import TINY_MODELS

RANK, ALPHA = 4, 8.0  # alpha != rank: a loader that ignored the saved alpha would scale the delta by 1, not 2
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TOLERANCE = 1e-5

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pipeline_class(family):
    from diffusers import CogVideoXPipeline, WanPipeline

    return {"CogVideoX": CogVideoXPipeline, "Wan": WanPipeline}[family]


def _bare_pipeline(family, seed=0):
    """The family's tiny transformer in its diffusers pipeline (no VAE or text encoder: the LoRA API needs neither)."""
    from diffusers import CogVideoXDDIMScheduler, FlowMatchEulerDiscreteScheduler

    transformer, _ = TINY_MODELS[family].build(seed=seed)
    scheduler = CogVideoXDDIMScheduler() if family == "CogVideoX" else FlowMatchEulerDiscreteScheduler()
    return _pipeline_class(family)(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                                   scheduler=scheduler)


def _inputs(family):
    return TINY_MODELS[family].build(seed=0)[1]


def _make_lora(family, folder, seed):
    """A LoRA with random (non-zero) A and B on the attention projections, saved in the pipeline's own format."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer, _ = TINY_MODELS[family].build(seed=0)
    torch.manual_seed(seed)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights=False, target_modules=TARGETS)
    transformer.add_adapter(config)
    with torch.no_grad():  # peft's B init is uniform(+-1/sqrt(r)); keep the delta a modest fraction of W
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.2)
    _pipeline_class(family).save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                              transformer_lora_adapter_metadata=config.to_dict())
    return folder


@pytest.fixture(scope="module", params=["CogVideoX", "Wan"])
def family(request):
    return request.param


@pytest.fixture(scope="module")
def loras(family, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"lora-{family}")
    return [_make_lora(family, root / name, seed) for seed, name in enumerate(("first", "second"), start=1)]


def _gates(num_blocks):
    """Distinct gate per block and a window shorter than the model, so every block's blend matters."""
    gates = RepVideoGates(num_blocks=num_blocks, window=2, gate_init=0.5)
    with torch.no_grad():
        gates.gate.copy_(torch.linspace(0.2, 0.8, num_blocks))
    return gates


def hand_merged(transformer, loras_and_weights):
    """A deep copy of `transformer` (no adapters) with ``sum_i weight_i * alpha / r * B_i @ A_i`` added to each
    targeted weight, read straight from the saved files."""
    merged = copy.deepcopy(transformer)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for folder, weight in loras_and_weights:
            state = load_file(folder / "pytorch_lora_weights.safetensors")
            for key in state:
                if ".lora_A." not in key:
                    continue
                path = re.sub(r"^transformer\.", "", key.split(".lora_A.")[0])
                a, b = state[key], state[key.replace(".lora_A.", ".lora_B.")]
                assert a.shape[0] == RANK
                modules[path].weight += weight * ALPHA / RANK * (b @ a)
    return merged


def _output(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def _reference(family, loras_and_weights, with_gates=True):
    base, _ = TINY_MODELS[family].build(seed=0)
    reference = hand_merged(base, loras_and_weights)
    if with_gates:
        apply_repvideo(reference, _gates(TINY_MODELS[family].num_blocks))
    return _output(reference, _inputs(family))


def _assert_close(actual, expected, tolerance=TOLERANCE):
    error = (actual - expected).abs().max().item()
    assert error <= tolerance, f"max |difference| {error:.3g} > {tolerance:g}"


def test_the_lora_changes_the_output_so_the_comparisons_below_can_fail(family, loras):
    base = _output(TINY_MODELS[family].build(seed=0)[0], _inputs(family))
    merged = _reference(family, [(loras[0], 1.0)], with_gates=False)
    half = _reference(family, [(loras[0], 0.5)], with_gates=False)
    gated = _reference(family, [(loras[0], 1.0)])
    assert (merged - base).abs().max() > 100 * TOLERANCE
    assert (merged - half).abs().max() > 100 * TOLERANCE
    assert (gated - merged).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize("order", ["lora_then_repvideo", "repvideo_then_lora"])
def test_load_lora_weights_and_enable_repvideo_in_either_order_equal_the_hand_merged_model(family, loras, order):
    pipe = _bare_pipeline(family)
    gates = _gates(TINY_MODELS[family].num_blocks)
    if order == "lora_then_repvideo":
        pipe.load_lora_weights(loras[0], adapter_name="a")
        pipe.enable_repvideo(gates)
    else:
        pipe.enable_repvideo(gates)
        pipe.load_lora_weights(loras[0], adapter_name="a")
    assert pipe.transformer.repvideo_gates is gates
    _assert_close(_output(pipe.transformer, _inputs(family)), _reference(family, [(loras[0], 1.0)]))


def test_set_adapters_weights_scale_each_delta_like_the_hand_merge(family, loras):
    pipe = _bare_pipeline(family)
    pipe.enable_repvideo(_gates(TINY_MODELS[family].num_blocks))
    pipe.load_lora_weights(loras[0], adapter_name="a")
    pipe.load_lora_weights(loras[1], adapter_name="b")
    inputs = _inputs(family)

    pipe.set_adapters(["a"], [0.5])
    _assert_close(_output(pipe.transformer, inputs), _reference(family, [(loras[0], 0.5)]))
    pipe.set_adapters(["a", "b"], [1.0, 0.5])
    _assert_close(_output(pipe.transformer, inputs), _reference(family, [(loras[0], 1.0), (loras[1], 0.5)]))


def test_fuse_lora_equals_the_hand_merge_and_unfuse_returns_to_the_unfused_outputs(family, loras):
    pipe = _bare_pipeline(family)
    pipe.load_lora_weights(loras[0], adapter_name="a")
    pipe.enable_repvideo(_gates(TINY_MODELS[family].num_blocks))
    inputs = _inputs(family)
    unfused = _output(pipe.transformer, inputs)

    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    _assert_close(_output(pipe.transformer, inputs), _reference(family, [(loras[0], 1.0)]))
    pipe.unfuse_lora(components=["transformer"])
    _assert_close(_output(pipe.transformer, inputs), unfused, tolerance=1e-6)
    # RepVideo stayed on throughout: the gates are the ones enabled, and they still act.
    assert torch.equal(pipe.transformer.repvideo_gates.gate.detach(), torch.linspace(0.2, 0.8, 4))


def test_disable_repvideo_leaves_the_lora_model_and_unload_lora_leaves_the_gated_base(family, loras):
    pipe = _bare_pipeline(family)
    pipe.load_lora_weights(loras[0], adapter_name="a")
    pipe.enable_repvideo(_gates(TINY_MODELS[family].num_blocks))
    inputs = _inputs(family)

    pipe.disable_repvideo()
    _assert_close(_output(pipe.transformer, inputs), _reference(family, [(loras[0], 1.0)], with_gates=False))

    pipe.enable_repvideo(_gates(TINY_MODELS[family].num_blocks))
    pipe.unload_lora_weights()
    expected = TINY_MODELS[family].build(seed=0)[0]
    apply_repvideo(expected, _gates(TINY_MODELS[family].num_blocks))
    _assert_close(_output(pipe.transformer, inputs), _output(expected, inputs))


def test_a_lora_trained_by_repvideo_train_loads_into_a_fresh_pipeline_with_plain_diffusers(tmp_path, tiny_pipeline_dir):
    from diffusers import CogVideoXPipeline

    from repvideo_diffusers.training import TrainConfig, train
    from train_helpers import write_clips

    clips = write_clips(tmp_path / "clips", ["red stripes", "blue stripes"], frames=12, height=72, width=80)
    result = train(TrainConfig(data=str(clips), output_dir=str(tmp_path / "run"), train="lora", lora_rank=RANK,
                               lora_alpha=ALPHA, max_steps=2, learning_rate=1e-2, checkpoint_every=100,
                               progress_bar=False, report_to=None))

    pipe = CogVideoXPipeline.from_pretrained(tiny_pipeline_dir)  # a fresh process would see exactly this
    base = copy.deepcopy(pipe.transformer)
    pipe.load_lora_weights(result.lora_dir)
    pipe.enable_repvideo(result.gates_dir)

    reference = hand_merged(base, [(result.lora_dir, 1.0)])
    apply_repvideo(reference, result.gates_dir)
    assert torch.equal(reference.repvideo_gates.gate, pipe.transformer.repvideo_gates.gate)
    inputs = _inputs("CogVideoX")
    actual, expected = _output(pipe.transformer, inputs), _output(reference, inputs)
    _assert_close(actual, expected)
    # Two steps at lr 1e-2 move B off zero: the trained LoRA is not the base model.
    apply_repvideo(base, result.gates_dir)
    assert (expected - _output(base, inputs)).abs().max() > 100 * TOLERANCE
