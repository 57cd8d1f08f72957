"""RepVideo on quantized transformers: torchao int8 weight-only and optimum-quanto qint8 (CPU), bitsandbytes 4 / 8
bit (CUDA), diffusers' `PipelineQuantizationConfig`, and float8 storage by layerwise casting.

The gates stay a plain floating-point `Parameter` (never quantized, never in a storage dtype). The reference is the
quantized model itself: with every gate at 0 RepVideo must give back exactly its output, with gates at 0.5 a finite
output that differs from it.
"""

import pytest
import torch

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.testing import TINY_MODELS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIES = ["CogVideoX", "Wan", "EasyAnimate"]  # EasyAnimate's first parameter is a (quantized) Linear
BACKENDS = {  # name: (package to import, why it is optional)
    "torchao": ("torchao", "torchao is optional: pip install 'repvideo-diffusers[quantization]'"),
    "quanto": ("optimum.quanto", "optimum-quanto is optional: pip install 'repvideo-diffusers[quantization]'"),
}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 4/8-bit kernels need a CUDA device")


def _quantization_config(backend):
    pytest.importorskip(BACKENDS[backend][0], reason=BACKENDS[backend][1])
    from diffusers import QuantoConfig, TorchAoConfig

    if backend == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    return QuantoConfig(weights_dtype="int8")


def _output(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def _on(inputs, device, dtype):
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) if torch.is_tensor(v) else v
            for k, v in inputs.items()}


def _quantized_linear_weights(transformer):
    """The weights of Linear layers that the quantizer replaced by a tensor subclass (or a quantized layer)."""
    return [m.weight for m in transformer.modules()
            if "Linear" in type(m).__name__ and type(m.weight) not in (torch.Tensor, torch.nn.Parameter)]


def assert_gates_float_and_exact_at_zero(transformer, inputs, dtypes, tolerance=1e-6):
    """The property of this file: plain floating gates; gates 0 == the model alone; gates 0.5 finite and different."""
    alone = _output(transformer, inputs)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.0))
    assert type(gates.gate) is torch.nn.Parameter and type(gates.gate.data) is torch.Tensor
    assert gates.gate.dtype in dtypes, gates.gate.dtype
    assert all(type(p.data) is torch.Tensor and p.is_floating_point() for p in gates.parameters())
    zero = _output(transformer, inputs)
    assert (zero.float() - alone.float()).abs().max().item() <= tolerance
    remove_repvideo(transformer)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.5))
    half = _output(transformer, inputs)
    remove_repvideo(transformer)
    assert torch.isfinite(half).all()
    assert (half.float() - alone.float()).abs().max().item() > 1e-3
    assert torch.equal(_output(transformer, inputs), alone)  # and off is the quantized model again


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_transformer_keeps_float_gates_and_gates_zero_equal_the_quantized_model(backend, family, tmp_path):
    config = _quantization_config(backend)
    transformer, inputs = TINY_MODELS[family].build(seed=0)
    full = _output(transformer, inputs)
    transformer.save_pretrained(tmp_path)
    quantized = type(transformer).from_pretrained(tmp_path, quantization_config=config, dtype=torch.float32).eval()

    assert _quantized_linear_weights(quantized), "nothing was quantized: the test would prove nothing"
    assert (_output(quantized, inputs) - full).abs().max() > 1e-5  # int8 weights: not the float model
    assert_gates_float_and_exact_at_zero(quantized, inputs, (torch.float32,))


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_pipeline_quantization_config_pipeline_runs_with_repvideo_and_gates_zero_equal_it(backend, tiny_pipeline_dir):
    from diffusers import CogVideoXPipeline, PipelineQuantizationConfig

    # quant_mapping: with transformers installed, quant_backend="torchao" / "quanto" is refused by diffusers 0.42
    # ("the signatures of the quantization config classes in diffusers and transformers don't match").
    config = PipelineQuantizationConfig(quant_mapping={"transformer": _quantization_config(backend)})
    pipe = CogVideoXPipeline.from_pretrained(tiny_pipeline_dir, quantization_config=config, dtype=torch.float32)
    assert _quantized_linear_weights(pipe.transformer)
    assert not _quantized_linear_weights(pipe.text_encoder)  # only the transformer was asked for

    def latents():
        return pipe("a panda playing guitar", num_inference_steps=2, num_frames=9, guidance_scale=6.0,
                    max_sequence_length=16, output_type="latent", generator=torch.Generator().manual_seed(0)).frames

    alone = latents()
    gates = pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert type(gates.gate.data) is torch.Tensor and gates.gate.dtype == torch.float32
    assert (latents() - alone).abs().max().item() <= 1e-6
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.5))
    half = latents()
    assert torch.isfinite(half).all() and (half - alone).abs().max() > 1e-3
    pipe.disable_repvideo()
    assert torch.equal(latents(), alone)


def test_float8_layerwise_casting_storage_is_not_a_dtype_for_the_gates():
    # EasyAnimate's first parameter is a Linear that layerwise casting stores in float8: the gates must take the
    # compute dtype (a float8 gate would round 0.3 to 0.3125 and could not be trained).
    transformer, inputs = TINY_MODELS["EasyAnimate"].build(seed=0)
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert next(transformer.parameters()).dtype == torch.float8_e4m3fn
    assert_gates_float_and_exact_at_zero(transformer, inputs, (torch.float32,))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_bitsandbytes_transformer_on_cuda_keeps_float_gates_and_gates_zero_equal_it(bits, family, tmp_path):
    pytest.importorskip("bitsandbytes",
                        reason="bitsandbytes is optional: pip install 'repvideo-diffusers[quantization]'")
    from diffusers import BitsAndBytesConfig

    dtype = torch.float16
    config = (BitsAndBytesConfig(load_in_8bit=True) if bits == 8 else
              BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype))
    transformer, inputs = TINY_MODELS[family].build(seed=0)
    transformer.save_pretrained(tmp_path)
    quantized = type(transformer).from_pretrained(tmp_path, quantization_config=config, dtype=dtype).eval()
    storage = {p.dtype for p in quantized.parameters()}
    assert storage & {torch.int8, torch.uint8}, f"nothing stored in 8 or 4 bits: {storage}"
    # float16, or float32 where the model keeps its first parameters in float32 (Wan's `_keep_in_fp32_modules`)
    assert_gates_float_and_exact_at_zero(quantized, _on(inputs, "cuda", dtype), (torch.float16, torch.float32))
