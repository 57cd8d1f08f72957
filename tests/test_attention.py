"""Attention processors (xformers / SDPA routing) and attention capture: specifications with real numbers."""

import logging
import sys
import types

import diffusers
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from repvideo_diffusers import attention
from repvideo_diffusers.attention import (
    RepVideoAttnProcessorMixin,
    attention_rows,
    capture_attention,
    get_attention_kernel,
    reset_attention_kernel,
    set_attention_kernel,
)
from repvideo_diffusers.attention.processors import attention_modules
from repvideo_diffusers.families import registered_families
from repvideo_diffusers.testing import TINY_MODELS

# Every registered family whose attention the registry describes (and whose model this diffusers has: CI runs these
# tests on the lowest supported diffusers too, which predates some families).
FAMILIES = sorted(name for name, family in registered_families().items() if family.attention and family.tiny
                  and all(hasattr(diffusers, cls) for cls in family.transformers if isinstance(cls, str)))


def _processors(transformer):
    return {name: module.processor for name, module in attention_modules(transformer)}


def _forward(transformer, inputs):
    with torch.no_grad():
        out = transformer(**inputs, return_dict=False)[0]
    return out


@pytest.fixture
def no_xformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "xformers", None)  # `import xformers` raises ImportError
    monkeypatch.setitem(sys.modules, "xformers.ops", None)


def _fake_xformers(monkeypatch, memory_efficient_attention):
    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    package = types.ModuleType("xformers")
    package.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", package)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)


def _naive_xformers(query, key, value, attn_bias=None, scale=None):
    """Reference attention in xformers' (batch, tokens, heads, dim) layout, written out by hand."""
    q, k, v = (t.permute(0, 2, 1, 3) for t in (query, key, value))
    scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if attn_bias is not None:
        scores = scores + attn_bias
    return (scores.softmax(-1) @ v).permute(0, 2, 1, 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_processors_reproduce_stock_outputs_exactly(family, no_xformers):
    transformer, inputs = TINY_MODELS[family].build(seed=3)
    stock = _forward(transformer, inputs)
    assert set_attention_kernel(transformer, "sdpa") == "sdpa"
    processors = _processors(transformer)
    assert processors and all(isinstance(p, RepVideoAttnProcessorMixin) for p in processors.values())
    routed = _forward(transformer, inputs)
    assert (routed - stock).abs().max().item() == 0.0  # the very same SDPA call, only routed


@pytest.mark.parametrize("family", FAMILIES)
def test_reset_puts_back_the_very_same_stock_processor_objects(family):
    transformer, inputs = TINY_MODELS[family].build()
    before = _processors(transformer)
    set_attention_kernel(transformer, "sdpa")
    assert all(before[name] is not p for name, p in _processors(transformer).items())
    reset_attention_kernel(transformer)
    after = _processors(transformer)
    assert after.keys() == before.keys() and all(after[name] is before[name] for name in before)
    assert get_attention_kernel(transformer) is None


def test_auto_falls_back_to_sdpa_without_xformers_and_logs_why(no_xformers, caplog):
    transformer, inputs = TINY_MODELS["CogVideoX"].build()
    with caplog.at_level(logging.WARNING, logger="repvideo_diffusers.attention"):
        assert set_attention_kernel(transformer, "auto") == "sdpa"
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "chose sdpa" in message and "cannot be imported" in message


def test_auto_falls_back_when_the_xformers_operator_raises_on_the_device(monkeypatch, caplog):
    def no_operator(*args, **kwargs):
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward` with inputs on cpu")

    _fake_xformers(monkeypatch, no_operator)
    transformer, inputs = TINY_MODELS["Mochi"].build()
    stock = _forward(transformer, inputs)
    with caplog.at_level(logging.WARNING, logger="repvideo_diffusers.attention"):
        assert set_attention_kernel(transformer, "auto") == "sdpa"
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "NotImplementedError" in message and "No operator found" in message and "cpu" in message
    assert (_forward(transformer, inputs) - stock).abs().max().item() <= 1e-6


def test_explicit_xformers_that_cannot_run_raises_and_leaves_processors_untouched(no_xformers):
    transformer, inputs = TINY_MODELS["CogVideoX"].build()
    before = _processors(transformer)
    with pytest.raises(ValueError, match="'xformers' was requested but cannot run.*Use 'sdpa'"):
        set_attention_kernel(transformer, "xformers")
    after = _processors(transformer)
    assert all(after[name] is before[name] for name in before)
    assert get_attention_kernel(transformer) is None


@pytest.mark.parametrize("family", ["CogVideoX", "Mochi"])
def test_xformers_route_hands_xformers_its_layout_and_matches_stock(family, monkeypatch):
    """With a hand-written kernel standing in for xformers (none runs on a CPU), the routed processors give the
    stock output: the layout transposes and arguments of the xformers route are right."""
    calls = []

    def kernel(query, key, value, attn_bias=None, scale=None):
        calls.append(query.shape)
        return _naive_xformers(query, key, value, attn_bias, scale)

    _fake_xformers(monkeypatch, kernel)
    transformer, inputs = TINY_MODELS[family].build(seed=1)
    stock = _forward(transformer, inputs)
    assert set_attention_kernel(transformer, "auto") == "xformers"
    calls.clear()
    routed = _forward(transformer, inputs)
    assert len(calls) >= TINY_MODELS[family].num_blocks  # every block's attention went through the kernel
    assert (routed - stock).abs().max().item() <= 1e-5


def test_unknown_backend_is_rejected_with_the_choices():
    transformer, _ = TINY_MODELS["Wan"].build()
    with pytest.raises(ValueError, match="one of auto, xformers, sdpa, got 'flash'"):
        set_attention_kernel(transformer, "flash")


def test_attention_rows_equal_full_softmax_rows_with_masks_and_tiny_chunks():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 40, 8, generator=generator), torch.randn(2, 3, 40, 8, generator=generator)
    keep = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    keep[1, ..., 30:] = False
    indices = torch.tensor([0, 17, 39])
    scores = q @ k.transpose(-1, -2) * 8**-0.5
    reference = scores.masked_fill(~keep, float("-inf")).softmax(-1).mean(1)[:, indices]
    got = attention_rows(q, k, indices, attn_mask=keep, max_elements=1)  # one head per chunk
    assert (got - reference).abs().max().item() < 1e-6
    assert got[1, :, 30:].abs().max().item() == 0.0
    additive = torch.zeros(2, 1, 1, 40).masked_fill(~keep, float("-inf"))
    assert (attention_rows(q, k, indices, attn_mask=additive) - reference).abs().max().item() < 1e-6


def test_captured_maps_equal_the_rows_of_the_full_attention_map(monkeypatch):
    transformer, inputs = TINY_MODELS["CogVideoX"].build(seed=2)
    seen = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        seen.append((query.detach().clone(), key.detach().clone()))
        return real_sdpa(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    _forward(transformer, inputs)  # stock processors: the spy sees every layer's query and key
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", real_sdpa)
    with capture_attention(transformer) as capture:
        _forward(transformer, inputs)
    assert len(capture.maps) == len(seen) == 4
    # one query per latent frame, the centre token: 16 text tokens, then 3 frames of 4 x 6 tokens
    assert capture.query_tokens.tolist() == [16 + 2 * 6 + 3, 16 + 24 + 15, 16 + 48 + 15]
    for (query, key), rows in zip(seen, capture.maps):
        full = (query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(-1).mean(1)  # (B, N, N)
        assert (rows - full[:, capture.query_tokens]).abs().max().item() < 1e-6


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:  # views allocate nothing
            return out
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def test_capture_at_cogvideox_2b_sequence_length_never_allocates_more_than_queries_x_tokens_per_chunk():
    tokens, heads, dim, queries = 17_776, 30, 64, 13  # CogVideoX-2B: 226 text + 13 frames x 30 x 45 tokens
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, tokens, dim, generator=generator)
    k = torch.randn(1, heads, tokens, dim, generator=generator)
    indices = torch.arange(queries) * 1350 + 226 + 675
    budget = queries * tokens  # one head per chunk
    with _LargestTensor() as mode:
        rows = attention_rows(q, k, indices, max_elements=budget)
    assert mode.largest <= queries * tokens
    assert mode.largest * 1000 < tokens * tokens  # a full map would be 1,367x larger
    assert rows.shape == (1, queries, tokens)
    assert (rows.sum(-1) - 1).abs().max().item() < 1e-4


def test_capture_rejects_query_indices_outside_the_sequence():
    transformer, inputs = TINY_MODELS["Wan"].build()
    with pytest.raises(ValueError, match=r"token indices in \[0, 48\), got \[5, 48\]"):
        with capture_attention(transformer, queries=[5, 48]):
            _forward(transformer, inputs)


def test_capture_leaves_a_set_backend_in_place_and_the_stock_processors_otherwise(no_xformers):
    transformer, inputs = TINY_MODELS["HunyuanVideo"].build()
    stock = _processors(transformer)
    with capture_attention(transformer):
        _forward(transformer, inputs)
    assert all(_processors(transformer)[name] is stock[name] for name in stock)
    set_attention_kernel(transformer, "sdpa")
    with capture_attention(transformer):
        _forward(transformer, inputs)
    assert get_attention_kernel(transformer) == "sdpa"
    assert all(p.kernel == "sdpa" and p.capture is None for p in _processors(transformer).values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: xformers has no CPU operator")
@pytest.mark.parametrize("family", FAMILIES)
def test_xformers_on_cuda_matches_sdpa_within_bf16_noise(family):
    problem = attention.probe_xformers("cuda", torch.bfloat16)
    if problem is not None:
        pytest.skip(f"xformers cannot run here: {problem}")
    transformer, inputs = TINY_MODELS[family].build(seed=4, dtype=torch.bfloat16)
    transformer.to("cuda")
    inputs = {k: v.to("cuda") if torch.is_tensor(v) else v for k, v in inputs.items()}
    assert set_attention_kernel(transformer, "sdpa") == "sdpa"
    sdpa = _forward(transformer, inputs).float()
    assert set_attention_kernel(transformer, "auto") == "xformers"
    fused = _forward(transformer, inputs).float()
    # bf16 keeps 8 bits of mantissa: two kernels summing in different orders differ by a few ulps of the output
    assert (fused - sdpa).abs().max().item() <= 0.03 * sdpa.abs().max().item() + 1e-2


@pytest.mark.parametrize("family, masked", [("HunyuanVideo", slice(57, 60)), ("Mochi", slice(56, 60))])
def test_capture_gives_padded_text_tokens_zero_attention(family, masked):
    transformer, inputs = TINY_MODELS[family].build()
    inputs["encoder_attention_mask"][0, 8 if family == "Mochi" else 9 :] = False  # sample 0: padded text
    with capture_attention(transformer) as capture:
        _forward(transformer, inputs)
    for rows in capture.maps:
        assert rows.shape == (2, 3, 60)  # 48 video + 12 text tokens for both samples
        assert rows[0, :, masked].abs().max().item() == 0.0
        assert rows[1, :, masked].min().item() > 0.0
        assert (rows.sum(-1) - 1).abs().max().item() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("family", ["Mochi", "Wan"])  # Mochi calls SDPA itself, Wan through diffusers' dispatch
@pytest.mark.parametrize("kernel", ["sdpa", "xformers"])
def test_torch_compile_fullgraph_traces_our_processors_without_a_graph_break(family, kernel, monkeypatch):
    import torch._dynamo
    from torch._dynamo.utils import counters

    if kernel == "xformers":  # a hand-written kernel stands in for xformers: the routing mode is active
        _fake_xformers(monkeypatch, _naive_xformers)
    transformer, inputs = TINY_MODELS[family].build(seed=5)
    stock = _forward(transformer, inputs)
    assert set_attention_kernel(transformer, kernel) == kernel
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(transformer, fullgraph=True)  # fullgraph: any graph break raises
    with torch.no_grad():
        out = compiled(**inputs, return_dict=False)[0]
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
    assert (out - stock).abs().max().item() <= 1e-5


def test_diffusers_names_are_accepted_and_a_diffusers_backend_in_the_way_is_refused(no_xformers):
    from diffusers.models.attention_dispatch import attention_backend

    # diffusers' `set_attention_backend` also sets the process-wide default backend: restore it afterwards.
    with attention_backend("native"):
        _assert_diffusers_backend_conflict_is_refused()


def _assert_diffusers_backend_conflict_is_refused():
    transformer, inputs = TINY_MODELS["Wan"].build()
    assert set_attention_kernel(transformer, "native") == "sdpa"  # diffusers' name for PyTorch SDPA
    reset_attention_kernel(transformer)
    transformer.set_attention_backend("_native_math")  # a diffusers backend that never calls F.sdpa's dispatcher
    before = _processors(transformer)
    with pytest.raises(ValueError, match=r"uses diffusers' attention backend '_native_math'.*reset_attention_backend"):
        set_attention_kernel(transformer, "sdpa")
    with pytest.raises(ValueError, match=r"capture_attention works through PyTorch"):
        with capture_attention(transformer):
            pass
    assert all(_processors(transformer)[name] is before[name] for name in before)
    transformer.reset_attention_backend()
    assert set_attention_kernel(transformer, "sdpa") == "sdpa"


def test_the_old_function_names_still_work_with_a_future_warning(no_xformers):
    import repvideo_diffusers

    transformer, inputs = TINY_MODELS["Mochi"].build()
    with pytest.warns(FutureWarning, match="set_attention_kernel"):
        assert repvideo_diffusers.set_attention_backend(transformer, "sdpa") == "sdpa"
    with pytest.warns(FutureWarning, match="get_attention_kernel"):
        assert attention.get_attention_backend(transformer) == "sdpa"
    with pytest.warns(FutureWarning, match="reset_attention_kernel"):
        attention.reset_attention_backend(transformer)
    assert get_attention_kernel(transformer) is None


def test_a_family_without_attention_facts_is_refused_and_left_alone():
    name = next(name for name, family in sorted(registered_families().items())
                if family.attention is None and family.tiny is not None)
    transformer, _ = TINY_MODELS[name].build()
    before = {n: m.processor for n, m in transformer.named_modules() if hasattr(m, "processor")}
    with pytest.raises(ValueError, match=rf"The {name} family declares no attention facts.*stock attention"):
        set_attention_kernel(transformer, "sdpa")
    with pytest.raises(ValueError, match="declares no attention facts"):
        with capture_attention(transformer):
            pass
    assert {n: m.processor for n, m in transformer.named_modules() if hasattr(m, "processor")} == before
    assert get_attention_kernel(transformer) is None
