"""Runtime properties of the feature cache: lifetime, batching, cost per block, gradients, checkpointing."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.testing import TINY_MODELS
from repvideo_diffusers.tiny import build_tiny_transformer


def run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def cogvideox(seed=0, batch_size=2):
    return TINY_MODELS["CogVideoX"].build(seed=seed, batch_size=batch_size)


def test_cache_state_lives_for_one_forward_call_only():
    transformer, inputs = cogvideox()
    _, other_inputs = cogvideox(seed=5)
    apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.6))
    first = run(transformer, inputs)
    run(transformer, other_inputs)  # a different call in between (another step, another prompt)
    again = run(transformer, inputs)
    assert torch.equal(first, again)
    state = transformer._repvideo_state.state
    assert state.means is None and not state.active  # no tensors held between calls


def test_cache_state_is_cleared_when_a_forward_call_fails():
    transformer, inputs = cogvideox()
    apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.6))

    def fail(module, args):
        raise RuntimeError("block 2 failed")

    handle = transformer.transformer_blocks[2].register_forward_pre_hook(fail)  # fails mid-way, cache filled
    with pytest.raises(RuntimeError, match="block 2 failed"):
        run(transformer, inputs)
    handle.remove()
    state = transformer._repvideo_state.state
    assert state.means is None and not state.active
    assert torch.equal(run(transformer, inputs), run(transformer, inputs))


def test_samples_of_a_cfg_batch_do_not_mix():
    transformer, inputs = cogvideox(batch_size=2)
    apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.6))
    batched = run(transformer, inputs)
    for i in range(2):
        single = {k: v[i : i + 1] if torch.is_tensor(v) and v.ndim > 0 else v for k, v in inputs.items()}
        assert (run(transformer, single)[0] - batched[i]).abs().max().item() <= 1e-5


class _CountOpsPerBlock(TorchDispatchMode):
    """Counts aten ops, attributed to the transformer block running at the time."""

    def __init__(self, blocks):
        super().__init__()
        self.block = None
        self.ops = [0] * len(blocks)
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(lambda m, a, i=i: setattr(self, "block", i)))
            self.handles.append(block.register_forward_hook(lambda m, a, o: setattr(self, "block", None)))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.block is not None:
            self.ops[self.block] += 1
        return func(*args, **(kwargs or {}))

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)


def test_work_per_block_does_not_grow_with_the_cache():
    # The official code re-stacks the whole cache before every block (O(window)); a running mean is O(1).
    torch.manual_seed(0)
    transformer = build_tiny_transformer(num_layers=12)
    _, inputs = cogvideox()
    counts = []
    for enabled in (False, True):
        if enabled:
            apply_repvideo(transformer, RepVideoConfig(window=12, gate_init=0.5))
        with _CountOpsPerBlock(transformer.transformer_blocks) as mode, torch.no_grad():
            transformer(**inputs, return_dict=False)
        counts.append(mode.ops)
    extra = [with_cache - vanilla for vanilla, with_cache in zip(*counts)]
    # blocks 2..11 see caches of 2..11 tensors: the same extra work for each
    assert extra[2] > 0
    assert extra[2:] == [extra[2]] * 10


def test_cache_holds_one_tensor_per_stream_whatever_its_length():
    transformer, inputs = cogvideox()
    apply_repvideo(transformer, RepVideoConfig(window=4, gate_init=0.5))
    state = transformer._repvideo_state.state
    seen = []
    handles = [
        block.register_forward_hook(lambda m, a, o: seen.append((state.count, len(state.means))))
        for block in transformer.transformer_blocks
    ]
    run(transformer, inputs)
    for handle in handles:
        handle.remove()
    # seen after each block's own cache update: the cache aggregates 1, 2, 3, 4 block outputs
    assert [count for count, _ in seen] == [1, 2, 3, 4]
    assert all(streams == 2 for _, streams in seen)  # hidden + encoder stream, one tensor each


@pytest.mark.parametrize("family", ["CogVideoX", "Wan"])
def test_gates_receive_gradients(family):
    transformer, inputs = TINY_MODELS[family].build(seed=0)
    transformer.requires_grad_(False)
    gates = apply_repvideo(transformer, RepVideoConfig(window=6, gate_init=0.5))
    loss = transformer(**inputs, return_dict=False)[0].square().mean()
    loss.backward()
    grad = gates.gate.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[:2].abs().max().item() == 0.0  # blocks 0 and 1 see mean(cache) == h
    assert grad[2:].abs().min().item() > 0.0


def _loss_and_grads(family, checkpointing, seed=0):
    transformer, inputs = TINY_MODELS[family].build(seed=seed)
    transformer.train()
    gates = apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.5))
    with torch.no_grad():
        gates.gate.copy_(torch.linspace(0.2, 0.8, gates.gate.numel()))
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    loss = transformer(**inputs, return_dict=False)[0].square().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in transformer.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("family", ["CogVideoX", "Wan", "HunyuanVideo"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(family):
    loss, grads = _loss_and_grads(family, checkpointing=False)
    loss_ckpt, grads_ckpt = _loss_and_grads(family, checkpointing=True)
    assert abs(loss.item() - loss_ckpt.item()) <= 1e-5
    assert grads.keys() == grads_ckpt.keys()
    assert "repvideo_gates.gate" in grads
    worst = max((grads[k] - grads_ckpt[k]).abs().max().item() for k in grads)
    assert worst <= 1e-5


def test_gradient_checkpointing_enabled_before_repvideo_also_matches():
    transformer, inputs = cogvideox()
    transformer.train()
    transformer.enable_gradient_checkpointing()
    gates = apply_repvideo(transformer, RepVideoConfig(window=3, gate_init=0.5))
    with torch.no_grad():
        gates.gate.copy_(torch.linspace(0.2, 0.8, gates.gate.numel()))
    transformer(**inputs, return_dict=False)[0].square().mean().backward()
    _, reference = _loss_and_grads("CogVideoX", checkpointing=False)
    assert (gates.gate.grad - reference["repvideo_gates.gate"]).abs().max().item() <= 1e-5


def test_gates_follow_the_transformer_and_are_its_parameters():
    transformer, _ = cogvideox()
    gates = apply_repvideo(transformer)
    assert transformer.repvideo_gates is gates
    assert any(p is gates.gate for p in transformer.parameters())
    transformer.to(torch.float16)
    assert gates.gate.dtype == torch.float16
    assert gates.gate.ndim == 1 and gates.gate.numel() == 4
