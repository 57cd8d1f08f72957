"""Wan-Animate-2 (`WanAnimate2Transformer3DModel`): the family's properties on its tiny model in both forward modes
(the reference pass that writes the KV cache, and the denoising step that reads it), and the modular
`WanAnimate2ModularPipeline` end to end.

The block lists are stated here, independently of the package: the ``blocks`` take and return the video stream
alone; text, CLIP image tokens and the cached reference keys / values are per-block conditions.

The transformer takes and returns *lists* of per-sample tensors, so the checks of `family_checks` (which compare
output tensors) are written out here for stacked outputs, with the same numbers.

The denoising step's block mask is made by ``create_block_mask(..., _compile=True)``: ``torch.compile`` on a CPU
costs ~15 s once per process. The `eager_block_masks` fixture makes the very same mask without compiling (checked
bitwise against the stock path in the slow test at the end).
"""

import pytest
import torch

from tiny_pipelines_wanlike2 import require

require("WanAnimate2Transformer3DModel")

from reference_loop import official_output  # noqa: E402

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo  # noqa: E402
from repvideo_diffusers.attention import capture_attention  # noqa: E402
from repvideo_diffusers.families import TinyModel, get_family, get_family_by_name, get_transformer_blocks  # noqa: E402
from repvideo_diffusers.families.wan_animate_2 import tiny_reference_inputs  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
]

BLOCK_LISTS = [("blocks", ("hidden_states",), None)]
FAMILY = get_family_by_name("Wan-Animate-2")
STEP = FAMILY.tiny  # kv_cache_mode="cached": a denoising step
REFERENCE = TinyModel("Wan-Animate-2", FAMILY.tiny.make_transformer, tiny_reference_inputs, 4)  # "extract"
MODES = {"step": STEP, "reference": REFERENCE}


@pytest.fixture
def eager_block_masks(monkeypatch):
    from diffusers.models.transformers import transformer_wan_animate_2 as module

    stock = module.create_block_mask
    monkeypatch.setattr(module, "create_block_mask",
                        lambda *args, **kwargs: stock(*args, **{**kwargs, "_compile": False}))


def stacked(output) -> torch.Tensor:
    return torch.stack(list(output))


def run(transformer, inputs) -> torch.Tensor:
    with torch.no_grad():
        return stacked(transformer(**inputs, return_dict=False)[0])


def official(transformer, inputs, gates, window) -> torch.Tensor:
    return stacked(official_output(transformer, inputs, gates, window, BLOCK_LISTS))


def test_the_class_belongs_to_its_family():
    from diffusers import WanAnimate2Transformer3DModel

    assert get_family(WanAnimate2Transformer3DModel).name == "Wan-Animate-2"


@pytest.mark.usefixtures("eager_block_masks")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_zero_gates_give_the_vanilla_output(mode):
    transformer, inputs = MODES[mode].build()
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.0))
    assert torch.equal(run(transformer, inputs), vanilla)


@pytest.mark.usefixtures("eager_block_masks")
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(mode, window):
    transformer, inputs = MODES[mode].build()
    assert len(get_transformer_blocks(transformer)) == len(transformer.blocks) == 4
    gates = torch.rand(4, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.1
    expected = official(transformer, inputs, gates, window)
    vanilla = run(transformer, inputs)
    applied = apply_repvideo(transformer, RepVideoConfig(window=window))
    with torch.no_grad():
        applied.gate.copy_(gates)
    actual = run(transformer, inputs)
    assert (actual - expected).abs().max().item() <= 1e-5
    assert (actual - vanilla).abs().max().item() > 1e-4


@pytest.mark.usefixtures("eager_block_masks")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_remove_gives_the_original_bitwise(mode):
    transformer, inputs = MODES[mode].build()
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.7))
    assert not torch.equal(run(transformer, inputs), vanilla)
    remove_repvideo(transformer)
    assert torch.equal(run(transformer, inputs), vanilla)
    assert not hasattr(transformer, "repvideo_gates")
    assert all(not hasattr(b, "_diffusers_hook") and "forward" not in vars(b) for b in transformer.blocks)


def _checkpoint_with_keywords(module, *args, **kwargs):
    return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False, **kwargs)


def _loss_and_grads(tiny, checkpointing: bool):
    transformer, inputs = tiny.build(seed=0)
    transformer.train()
    gates = apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.5))
    with torch.no_grad():
        gates.gate.copy_(torch.linspace(0.2, 0.8, gates.gate.numel()))
    if checkpointing:
        transformer.enable_gradient_checkpointing(gradient_checkpointing_func=_checkpoint_with_keywords)
    loss = stacked(transformer(**inputs, return_dict=False)[0]).square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in transformer.named_parameters() if p.grad is not None}


def test_stock_checkpointing_fails_without_repvideo_too():
    """diffusers 0.42.1 calls its checkpoint function with keyword arguments (``kv_cache=...``) that the default one
    (``_gradient_checkpointing_func(module, *args)``) does not take: a diffusers limit, not RepVideo's."""
    transformer, inputs = REFERENCE.build()
    transformer.train()
    transformer.enable_gradient_checkpointing()
    with pytest.raises(TypeError, match="unexpected keyword argument 'kv_cache'"):
        transformer(**inputs, return_dict=False)


def test_checkpointing_gives_the_same_loss_and_gradients():
    """With a checkpoint function that takes keywords (see above), on the reference pass (dense SDPA): the denoising
    step's flex attention has no backward on a CPU."""
    loss, grads = _loss_and_grads(REFERENCE, checkpointing=False)
    loss_ckpt, grads_ckpt = _loss_and_grads(REFERENCE, checkpointing=True)
    assert abs(loss.item() - loss_ckpt.item()) <= 1e-5
    assert grads.keys() == grads_ckpt.keys() and "repvideo_gates.gate" in grads
    assert grads["repvideo_gates.gate"][2:].abs().max().item() > 0.0
    assert max((grads[k] - grads_ckpt[k]).abs().max().item() for k in grads) <= 1e-5


def test_the_reference_pass_caches_the_keys_and_values_of_the_blended_stream():
    """Blocks 0 and 1 see a no-op blend (the cache holds only their input): their cached keys are the vanilla ones;
    from block 2 on, the keys come from the blended stream."""
    transformer, inputs = REFERENCE.build()
    run(transformer, inputs)
    vanilla = [layer.key.clone() for layer in inputs["kv_cache"].layer_caches]
    apply_repvideo(transformer, RepVideoConfig(window=6, gate_init=0.6))
    run(transformer, inputs)  # overwrites the cache
    gated = [layer.key for layer in inputs["kv_cache"].layer_caches]
    assert torch.equal(gated[0], vanilla[0]) and torch.equal(gated[1], vanilla[1])
    assert all((g - v).abs().max().item() > 1e-4 for g, v in zip(gated[2:], vanilla[2:]))


@pytest.mark.parametrize("window", [3, 5])
def test_the_unconditional_branch_skips_block_9_without_a_gate_or_cache_update(window):
    """``is_uncondtion=True`` skips block 9: block 10 keeps gate 10 and blends with the cache left by block 8 (with
    window 3, block 9 would have restarted it)."""
    model = TinyModel("Wan-Animate-2", lambda: _transformer(num_layers=11), tiny_reference_inputs, 11)
    transformer, inputs = model.build()
    inputs["kv_cache"] = type(inputs["kv_cache"])(11)
    inputs["is_uncondtion"] = True
    calls = []
    handle = transformer.blocks[9].register_forward_pre_hook(lambda *a: calls.append(9))
    gates = torch.rand(11, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    expected = official(transformer, inputs, gates, window)
    applied = apply_repvideo(transformer, RepVideoConfig(window=window))
    with torch.no_grad():
        applied.gate.copy_(gates)
    assert (run(transformer, inputs) - expected).abs().max().item() <= 1e-5
    handle.remove()
    assert calls == []


def _transformer(num_layers):
    from diffusers import WanAnimate2Transformer3DModel

    return WanAnimate2Transformer3DModel(
        patch_size=(1, 2, 2), text_len=16, in_dim=8, dim=16, ffn_dim=32, freq_dim=16, text_dim=16, out_dim=4,
        num_heads=2, num_layers=num_layers, use_img_emb=True,
    )


def test_no_attention_facts_so_capture_is_refused_with_the_reason():
    transformer, _ = STEP.build()
    assert get_family(transformer).attention is None  # the denoising step's self-attention is flex only
    with pytest.raises(ValueError, match="declares no attention facts"):
        with capture_attention(transformer):
            pass


@pytest.mark.slow
@pytest.mark.usefixtures("eager_block_masks")
def test_modular_pipeline():
    """The modular pipeline (reference pass + guided denoising steps per segment) through `apply_repvideo` on its
    transformer: it is no `DiffusionPipeline`, so it has no ``enable_repvideo``."""
    from tiny_pipelines_wanlike2 import as_array, wan_animate_2_frames, wan_animate_2_pipeline

    pipe = wan_animate_2_pipeline()
    assert not hasattr(pipe, "enable_repvideo")
    vanilla = as_array(wan_animate_2_frames(pipe))
    apply_repvideo(pipe.transformer, RepVideoConfig(gate_init=0.0))
    assert (as_array(wan_animate_2_frames(pipe)) == vanilla).all()
    remove_repvideo(pipe.transformer)
    apply_repvideo(pipe.transformer, RepVideoConfig(gate_init=0.6))
    gated = as_array(wan_animate_2_frames(pipe))
    assert abs(gated - vanilla).max() > 1e-4
    remove_repvideo(pipe.transformer)
    assert (as_array(wan_animate_2_frames(pipe)) == vanilla).all()


@pytest.mark.slow
def test_the_stock_compiled_block_mask_gives_the_same_numbers():
    """Without the fixture: the stock ``torch.compile``-built mask gives bitwise the eager mask's outputs, vanilla and
    gated, so the tests above check the real thing."""
    from diffusers.models.transformers import transformer_wan_animate_2 as module

    gates = torch.linspace(0.2, 0.8, 4)
    results = {}
    for compiled in (True, False):
        stock = module.create_block_mask
        if not compiled:
            module.create_block_mask = lambda *a, **k: stock(*a, **{**k, "_compile": False})
        try:
            transformer, inputs = STEP.build()
            vanilla = run(transformer, inputs)
            applied = apply_repvideo(transformer, RepVideoConfig(window=3))
            with torch.no_grad():
                applied.gate.copy_(gates)
            results[compiled] = (vanilla, run(transformer, inputs))
        finally:
            module.create_block_mask = stock
    assert torch.equal(results[True][0], results[False][0])
    assert torch.equal(results[True][1], results[False][1])
