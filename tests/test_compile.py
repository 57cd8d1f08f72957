"""torch.compile with RepVideo attached: the whole model as one graph with no break, regional compilation
(`compile_repeated_blocks`, `block.compile()`) as one graph per block class, outputs and gate gradients equal to
eager, and diffusers' own two compile checks passing with RepVideo attached.

Graphs are counted by the backend dynamo hands them to (`_compat.graph_counter`). The default backend is
``aot_eager``: dynamo's tracing and AOTAutograd's functional graph (forward and backward), without inductor's C++
code generation, which takes minutes on a CPU runner; one slow test runs inductor itself.
"""

import pytest
import torch

from repvideo_diffusers import RepVideoConfig, _compat, apply_repvideo, remove_repvideo
from repvideo_diffusers.families import get_transformer_blocks
from repvideo_diffusers.testing import TINY_MODELS

# Window 3 over 4 blocks: block 3 resets the cache, blocks 1 and 2 add to it, so blocks differ in where they sit in
# their window (the Python state a per-block guard would split graphs on). Blocks 0 and 1 see a cache equal to
# their input (the blend is a no-op, their gates get no gradient); the gates of blocks 2 and 3 are live.
CONFIG = RepVideoConfig(window=3, gate_init=0.6)
LIVE_GATES = slice(2, None)
FAMILIES = ["Wan", "CogVideoX"]  # Wan declares `_repeated_blocks`; CogVideoX does not (its blocks compile one by one)
CALLS = 3


@pytest.fixture(autouse=True)
def _fresh_compiler():
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def build(family):
    """(transformer with RepVideo, inputs, the output without RepVideo)."""
    transformer, inputs = TINY_MODELS[family].build(seed=0)
    vanilla = infer(transformer, inputs)
    apply_repvideo(transformer, CONFIG)
    return transformer, inputs, vanilla


def infer(model, inputs):
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def loss_and_gate_grad(model, transformer, inputs):
    transformer.zero_grad(set_to_none=True)
    output = model(**inputs, return_dict=False)[0]
    loss = output.float().square().mean()
    loss.backward()
    return loss.detach(), transformer.repvideo_gates.gate.grad.clone()


def compile_blocks(transformer, counter):
    """Regional compilation: diffusers' `compile_repeated_blocks` where the class declares its repeated blocks,
    else `Module.compile()` on every block (what `compile_repeated_blocks` does per block)."""
    if getattr(transformer, "_repeated_blocks", None):
        transformer.compile_repeated_blocks(backend=counter, fullgraph=True)
    else:
        for block in get_transformer_blocks(transformer):
            block.compile(backend=counter, fullgraph=True)


def assert_close(actual, expected, atol=1e-5):
    error = (actual - expected).abs().max().item()
    assert error <= atol, f"max abs error {error:.3g} > {atol}"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_whole_model_compiles_to_one_graph_without_a_break_and_matches_eager(family):
    transformer, inputs, vanilla = build(family)
    expected = infer(transformer, inputs)
    assert (expected - vanilla).abs().max().item() > 1e-3  # RepVideo changes the output: the graph must carry it

    counter = _compat.graph_counter()
    compiled = torch.compile(transformer, backend=counter, fullgraph=True)  # fullgraph: any graph break raises
    # diffusers' test_torch_compile_recompilation_and_graph_break, with RepVideo attached and one more call
    with _compat.fail_on_recompile():
        outputs = [infer(compiled, inputs) for _ in range(CALLS)]
    assert counter.frame_count == 1
    for output in outputs:
        assert_close(output, expected)


def vanilla_regional_graphs(family, grad=False):
    """How many graphs regional compilation builds for the model *without* RepVideo over `CALLS` calls (CogVideoX:
    2, its first block gets a strided slice of the embedding's output, the others contiguous tensors)."""
    transformer, inputs = TINY_MODELS[family].build(seed=0)
    counter = _compat.graph_counter()
    compile_blocks(transformer, counter)
    for _ in range(CALLS):
        if grad:
            transformer(**inputs, return_dict=False)[0].square().mean().backward()
        else:
            infer(transformer, inputs)
    torch.compiler.reset()
    return counter.frame_count


@pytest.mark.parametrize("order", ["compile-then-repvideo", "repvideo-then-compile"])
@pytest.mark.parametrize("family", FAMILIES)
def test_regional_compilation_builds_no_more_graphs_than_without_repvideo_and_matches_eager(family, order):
    vanilla_graphs = vanilla_regional_graphs(family)
    transformer, inputs = TINY_MODELS[family].build(seed=0)
    counter = _compat.graph_counter()
    if order == "compile-then-repvideo":
        compile_blocks(transformer, counter)
        apply_repvideo(transformer, CONFIG)
    else:
        apply_repvideo(transformer, CONFIG)
        compile_blocks(transformer, counter)
    reference, _ = TINY_MODELS[family].build(seed=0)
    apply_repvideo(reference, CONFIG)
    expected = infer(reference, inputs)

    # diffusers' test_torch_compile_repeated_blocks (recompile limit 1 for Wan), with RepVideo attached, 3 calls
    with _compat.recompile_limit(vanilla_graphs):
        outputs = [infer(transformer, inputs) for _ in range(CALLS)]
    assert counter.frame_count == vanilla_graphs
    if family == "Wan":  # identical blocks, one class: one graph, as diffusers' own test asks
        assert counter.frame_count == len({type(block) for block in get_transformer_blocks(transformer)}) == 1
    for output in outputs:
        assert_close(output, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_training_gives_the_gates_the_eager_gradients(family):
    transformer, inputs, _ = build(family)
    transformer.train()
    loss, grad = loss_and_gate_grad(transformer, transformer, inputs)
    assert torch.isfinite(grad).all() and grad[LIVE_GATES].abs().min().item() > 0

    counter = _compat.graph_counter()
    compiled = torch.compile(transformer, backend=counter, fullgraph=True)
    for _ in range(2):
        compiled_loss, compiled_grad = loss_and_gate_grad(compiled, transformer, inputs)
        assert_close(compiled_loss, loss)
        assert_close(compiled_grad, grad)
    assert counter.frame_count == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_regionally_compiled_training_gives_the_gates_the_eager_gradients(family):
    vanilla_graphs = vanilla_regional_graphs(family, grad=True)
    transformer, inputs, _ = build(family)
    transformer.train()
    loss, grad = loss_and_gate_grad(transformer, transformer, inputs)

    counter = _compat.graph_counter()
    compile_blocks(transformer, counter)
    with _compat.recompile_limit(vanilla_graphs):
        for _ in range(2):
            compiled_loss, compiled_grad = loss_and_gate_grad(transformer, transformer, inputs)
            assert_close(compiled_loss, loss)
            assert_close(compiled_grad, grad)
    assert counter.frame_count == vanilla_graphs


@pytest.mark.parametrize("regional", [pytest.param(False, id="whole-model", marks=pytest.mark.slow),
                                      pytest.param(True, id="regional")])
def test_compiled_training_with_gradient_checkpointing_gives_the_eager_gradients(regional):
    transformer, inputs, _ = build("Wan")
    transformer.train()
    transformer.enable_gradient_checkpointing()
    loss, grad = loss_and_gate_grad(transformer, transformer, inputs)

    counter = _compat.graph_counter()
    if regional:
        compile_blocks(transformer, counter)
        model = transformer
    else:
        model = torch.compile(transformer, backend=counter, fullgraph=True)
    for _ in range(2):
        compiled_loss, compiled_grad = loss_and_gate_grad(model, transformer, inputs)
        assert_close(compiled_loss, loss)
        assert_close(compiled_grad, grad)
    assert counter.frame_count == 1 and grad[LIVE_GATES].abs().min().item() > 0


def test_remove_repvideo_after_regional_compilation_gives_the_vanilla_output_back():
    transformer, inputs, vanilla = build("Wan")
    compile_blocks(transformer, _compat.graph_counter())
    infer(transformer, inputs)
    remove_repvideo(transformer)
    compiled_calls = {type(_compat.compiled_call(block)) for block in get_transformer_blocks(transformer)}
    assert compiled_calls == {type(torch.compile(lambda: None))}  # the compiled call itself, no RepVideo wrapper
    assert_close(infer(transformer, inputs), vanilla)


@pytest.mark.slow
def test_inductor_regional_compilation_matches_eager_in_training_and_inference():
    transformer, inputs, _ = build("Wan")
    expected = infer(transformer, inputs)
    transformer.train()
    loss, grad = loss_and_gate_grad(transformer, transformer, inputs)

    counter = _compat.graph_counter("inductor")
    transformer.compile_repeated_blocks(backend=counter, fullgraph=True)
    compiled_loss, compiled_grad = loss_and_gate_grad(transformer, transformer, inputs)
    transformer.eval()
    outputs = [infer(transformer, inputs) for _ in range(2)]
    assert counter.frame_count == 2  # one block graph with autograd (training), one without (inference)
    assert_close(compiled_loss, loss)
    assert_close(compiled_grad, grad)
    for output in outputs:
        assert_close(output, expected)
