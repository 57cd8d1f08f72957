"""The properties every model family must have, as reusable checks (one test file per family calls them).

Each check takes the family's `TinyModel` and, where the independent reference is involved, the block lists as the
*test* states them (``[(attribute, stream parameter names, output positions or None)]``), never read from the
package.
"""

import torch

from reference_loop import official_output
from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.attention import capture_attention, reset_attention_kernel, set_attention_kernel
from repvideo_diffusers.attention.processors import attention_modules
from repvideo_diffusers.families import get_transformer_blocks


def run(transformer, inputs):
    with torch.no_grad():
        out = transformer(**inputs, return_dict=False)[0]
    return out


def assert_zero_gates_give_the_vanilla_output(tiny, seed: int = 0) -> None:
    transformer, inputs = tiny.build(seed=seed)
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.0))
    assert torch.equal(run(transformer, inputs), vanilla)


def assert_random_gates_match_the_official_loop(tiny, block_lists, window: int, seed: int = 0) -> None:
    transformer, inputs = tiny.build(seed=seed)
    num_blocks = sum(len(getattr(transformer, attribute)) for attribute, _, _ in block_lists)
    assert len(get_transformer_blocks(transformer)) == num_blocks == tiny.num_blocks
    gate_values = torch.rand(num_blocks, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.1  # in (0, 1)
    expected = official_output(transformer, inputs, gate_values, window, block_lists)
    vanilla = run(transformer, inputs)
    gates = apply_repvideo(transformer, RepVideoConfig(window=window))
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    actual = run(transformer, inputs)
    assert (actual - expected).abs().max().item() <= 1e-5
    assert (actual - vanilla).abs().max().item() > 1e-4  # the blend really changed something


def assert_remove_gives_the_original_bitwise(tiny, seed: int = 0) -> None:
    transformer, inputs = tiny.build(seed=seed)
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.7))
    assert not torch.equal(run(transformer, inputs), vanilla)
    remove_repvideo(transformer)
    assert torch.equal(run(transformer, inputs), vanilla)
    blocks = get_transformer_blocks(transformer)
    assert not hasattr(transformer, "repvideo_gates")
    assert all(not hasattr(block, "_diffusers_hook") and "forward" not in vars(block) for block in blocks)


def _loss_and_grads(tiny, checkpointing: bool, seed: int = 0):
    transformer, inputs = tiny.build(seed=seed)
    transformer.train()
    gates = apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.5))
    with torch.no_grad():
        gates.gate.copy_(torch.linspace(0.2, 0.8, gates.gate.numel()))
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    loss = transformer(**inputs, return_dict=False)[0].float().square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in transformer.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_checkpointing_gives_the_same_loss_and_gradients(tiny, seed: int = 0) -> None:
    loss, grads = _loss_and_grads(tiny, checkpointing=False, seed=seed)
    loss_ckpt, grads_ckpt = _loss_and_grads(tiny, checkpointing=True, seed=seed)
    assert abs(loss.item() - loss_ckpt.item()) <= 1e-5
    assert grads.keys() == grads_ckpt.keys() and "repvideo_gates.gate" in grads
    assert grads["repvideo_gates.gate"][2:].abs().max().item() > 0.0  # the gates really get gradients
    assert max((grads[k] - grads_ckpt[k]).abs().max().item() for k in grads) <= 1e-5


def assert_sdpa_routing_reproduces_the_stock_output_exactly(tiny, seed: int = 3) -> None:
    transformer, inputs = tiny.build(seed=seed)
    stock = run(transformer, inputs)
    before = {name: module.processor for name, module in attention_modules(transformer)}
    assert before, "the family declares no processor that this model uses"
    assert set_attention_kernel(transformer, "sdpa") == "sdpa"
    assert (run(transformer, inputs) - stock).abs().max().item() == 0.0
    reset_attention_kernel(transformer)
    after = {name: module.processor for name, module in attention_modules(transformer)}
    assert all(after[name] is before[name] for name in before)


def assert_capture_records_one_softmax_row_set_per_block(tiny, seed: int = 0) -> None:
    transformer, inputs = tiny.build(seed=seed)
    with capture_attention(transformer) as capture:
        run(transformer, inputs)
    assert len(capture.maps) == tiny.num_blocks
    t, _, _ = capture.grid
    for rows in capture.maps:
        assert rows.shape[:2] == (inputs_batch(inputs), t)  # one query per latent frame
        assert (rows.sum(-1) - 1).abs().max().item() < 1e-4  # rows of a softmax


def inputs_batch(inputs) -> int:
    return next(v.shape[0] for v in inputs.values() if torch.is_tensor(v) and v.ndim > 1)
