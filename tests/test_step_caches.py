"""RepVideo under the step caches of diffusers (every one 0.42.1 ships) and cache-dit's DBCache (optional).

A step cache skips blocks (or their attention) at some denoising steps and reuses what it kept from earlier steps.
What these tests hold RepVideo to:

- at settings that skip nothing (proven by counting what ran), the output is RepVideo's alone;
- at settings that skip, the run completes with a finite output, and RepVideo's feature cache starts empty at every
  transformer call and takes in exactly the outputs of the blocks that ran in that call: a skipped block neither
  blends nor enters it, and it restarts at each block that runs whose index is a multiple of the window (or at the
  first block that runs, if a cache skipped block 0);
- RepVideo writes into no block output while a step cache is on (a cache may keep it for a later step);
- turning the cache off gives RepVideo's output again, and turning RepVideo off the original model's, bit for bit.
"""

import pytest
import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    HookRegistry,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    SeaCacheConfig,
    TaylorSeerCacheConfig,
    TextKVCacheConfig,
)

import tiny_pipelines
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.core.hooks import RepVideoBlockHook
from repvideo_diffusers.families import get_transformer_blocks


pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 4
WINDOW = 2  # two windows over the 4 tiny blocks, so a step cache can skip a whole window
ALL = [0, 1, 2, 3]
NONE: list = []


# --- the tiny pipelines -------------------------------------------------------------------------------------------


def _cogvideox(tiny_pipe):
    """The embedded tiny CogVideoX pipeline (4 blocks)."""
    return tiny_pipe


def _wan(_):
    """A Wan 2.1 text-to-video pipeline (4 blocks): the family diffusers' SeaCache has its built-in adapter for."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    tokenizer, text_encoder = tiny_pipelines.t5(umt5=True)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=tiny_pipelines.wan_vae(),
                       transformer=tiny_pipelines.wan_transformer(2, num_layers=4),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def _latents(pipe):
    """The denoised latents (what the transformer produces, before the VAE). CogVideoX with classifier-free guidance
    (one batched call per step, as FasterCache needs), Wan without (one call per step)."""
    common = dict(num_inference_steps=STEPS, max_sequence_length=16, output_type="latent",
                  generator=torch.Generator().manual_seed(0))
    if type(pipe).__name__ == "WanPipeline":
        return pipe("a fox in snow", num_frames=5, height=16, width=16, guidance_scale=1.0, **common).frames
    return pipe("a panda playing guitar", num_frames=9, guidance_scale=6.0, **common).frames


class Probe:
    """What really ran in each transformer call, counted by plain torch hooks on the blocks' insides: the blocks
    (their feed-forward) and their self-attention; and, from RepVideo's block hooks, which block outputs entered the
    feature cache and how many outputs it held right after."""

    def __init__(self, transformer, monkeypatch):
        self.calls = []
        self.blocks = get_transformer_blocks(transformer)
        self.state = HookRegistry.check_if_exists_or_initialize(self.blocks[0]).get_hook("repvideo_block").state
        self.handles = [transformer.register_forward_pre_hook(self._start)]  # after RepVideo's: sees its fresh state
        for i, block in enumerate(self.blocks):
            feed_forward = block.ff if hasattr(block, "ff") else block.ffn
            self.handles += [
                feed_forward.register_forward_hook(lambda *_, i=i: self.calls[-1]["ran"].append(i)),
                block.attn1.to_q.register_forward_hook(lambda *_, i=i: self.calls[-1]["attended"].append(i)),
                block.register_forward_hook(self._keep),
            ]
        update_cache = RepVideoBlockHook.update_cache

        def entering(hook, output):
            update_cache(hook, output)
            if self.handles:
                self.calls[-1]["entered"].append((hook.index, hook.state.count))

        monkeypatch.setattr(RepVideoBlockHook, "update_cache", entering)

    def _start(self, module, args):
        state = self.state
        self.calls.append({"start": (state.active, state.means is None, state.count), "ran": [], "attended": [],
                           "entered": [], "kept": []})

    def _keep(self, module, args, output):
        for tensor in output if isinstance(output, tuple) else (output,):
            if torch.is_tensor(tensor):
                self.calls[-1]["kept"].append((tensor, tensor.clone()))

    def ran(self):
        return [call["ran"] for call in self.calls]

    def attended(self):
        return [call["attended"] for call in self.calls]

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []


def assert_feature_cache_holds_the_blocks_that_ran(probe):
    """The specification, checked call by call against what the probe counted."""
    for call in probe.calls:
        assert call["start"] == (True, True, 0)  # active and empty: nothing carried over from the previous call
        assert [i for i, _ in call["entered"]] == call["ran"]  # exactly the blocks that ran, in order
        size = 0  # the official rule on the blocks that ran: restart at a multiple of the window, else append
        for i, count in call["entered"]:
            size = 1 if i % WINDOW == 0 or size == 0 else size + 1
            assert count == size, (call["entered"], i)
        # RepVideo blended into no block output: each is as the block returned it, whoever keeps it for later.
        assert all(torch.equal(kept, copy) for kept, copy in call["kept"])


# --- the caches, at settings that provably skip nothing, and at settings that skip ---------------------------------

_ATTENTION_1 = [r"transformer_blocks\.\d+\.attn1"]  # TaylorSeer's default names end in "attn": they miss "attn1"


def _timestep(pipe):
    return lambda: pipe.current_timestep


NO_SKIP = {
    # (pipeline, config): every block and every attention runs at every step
    "FirstBlockCache": (_cogvideox, lambda p: FirstBlockCacheConfig(threshold=-1.0)),  # relative diff >= 0 > -1
    "FirstBlockCache-Wan": (_wan, lambda p: FirstBlockCacheConfig(threshold=-1.0)),
    "PyramidAttentionBroadcast": (_cogvideox, lambda p: PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=1, spatial_attention_timestep_skip_range=(-1, 1001),
        current_timestep_callback=_timestep(p))),  # iteration % 1 == 0: always computed
    "TaylorSeerCache": (_cogvideox, lambda p: TaylorSeerCacheConfig(
        cache_interval=1, disable_cache_before_step=1, cache_identifiers=_ATTENTION_1)),  # every step a refresh
    "TaylorSeerCache-lite": (_cogvideox, lambda p: TaylorSeerCacheConfig(
        cache_interval=1, disable_cache_before_step=1, use_lite_mode=True)),
    "MagCache": (_cogvideox, lambda p: MagCacheConfig(
        mag_ratios=[1.0] * STEPS, num_inference_steps=STEPS, retention_ratio=1.0)),  # every step is retained
    "FasterCache": (_cogvideox, lambda p: FasterCacheConfig(
        spatial_attention_timestep_skip_range=(-1, -1), unconditional_batch_timestep_skip_range=(-1, -1),
        tensor_format="BFCHW", current_timestep_callback=_timestep(p))),  # -1 < t < -1 never holds
    "SeaCache-Wan": (_wan, lambda p: SeaCacheConfig(threshold=0.0)),  # accumulated distance >= 0: always computed
    "SeaCache-CogVideoX": (_cogvideox, lambda p: SeaCacheConfig(threshold=10.0)),  # CogVideoX passes no sigma: all run
    "TextKVCache": (_cogvideox, lambda p: TextKVCacheConfig()),  # caches only NucleusMoE-Image's blocks
}

SKIP = {
    # (pipeline, config, blocks that ran per call, self-attentions that ran per call)
    "FirstBlockCache": (_cogvideox, lambda p: FirstBlockCacheConfig(threshold=10.0),
                        [ALL, [0], [0], [0]], [ALL, [0], [0], [0]]),
    "FirstBlockCache-Wan": (_wan, lambda p: FirstBlockCacheConfig(threshold=10.0),
                            [ALL, [0], [0], [0]], [ALL, [0], [0], [0]]),
    "PyramidAttentionBroadcast": (_cogvideox, lambda p: PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1001),
        current_timestep_callback=_timestep(p)), [ALL] * 4, [ALL, NONE, ALL, NONE]),
    "TaylorSeerCache": (_cogvideox, lambda p: TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=1, cache_identifiers=_ATTENTION_1,
        taylor_factors_dtype=torch.float32), [ALL] * 4, [ALL, NONE, ALL, NONE]),
    "TaylorSeerCache-lite": (_cogvideox, lambda p: TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=1, use_lite_mode=True, taylor_factors_dtype=torch.float32),
        [ALL, NONE, ALL, NONE], [ALL, NONE, ALL, NONE]),
    "TaylorSeerCache-block-0": (_cogvideox, lambda p: TaylorSeerCacheConfig(  # block 1 is the first to run
        cache_interval=2, disable_cache_before_step=1, cache_identifiers=[r"transformer_blocks\.0"],
        taylor_factors_dtype=torch.float32), [ALL, [1, 2, 3], ALL, [1, 2, 3]], [ALL, [1, 2, 3], ALL, [1, 2, 3]]),
    "MagCache": (_cogvideox, lambda p: MagCacheConfig(
        mag_ratios=[1.0] * STEPS, num_inference_steps=STEPS, retention_ratio=0.25, threshold=1.0, max_skip_steps=3),
        [ALL, NONE, NONE, NONE], [ALL, NONE, NONE, NONE]),
    "FasterCache": (_cogvideox, lambda p: FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1001),
        unconditional_batch_skip_range=2, unconditional_batch_timestep_skip_range=(-1, 1001),
        attention_weight_callback=lambda _: 0.5, tensor_format="BFCHW", current_timestep_callback=_timestep(p)),
        [ALL] * 4, [ALL, NONE, ALL, NONE]),
    "SeaCache-Wan": (_wan, lambda p: SeaCacheConfig(
        threshold=10.0, retention_steps=1, cache_end_steps=0, max_consecutive_cached=0, residual_order=0),
        [ALL, NONE, NONE, NONE], [ALL, NONE, NONE, NONE]),
}


def test_the_step_caches_tested_here_are_all_that_diffusers_ships():
    import diffusers.hooks

    not_caches = {"LayerSkipConfig", "SmoothedEnergyGuidanceConfig"}  # guidance tools, not step caches
    shipped = {name for name in dir(diffusers.hooks) if name.endswith("Config")} - not_caches
    tested = {type(config(None)).__name__ for _, config in NO_SKIP.values()}
    assert tested == shipped
    assert {type(entry[1](None)).__name__ for entry in SKIP.values()} == shipped - {"TextKVCacheConfig"}


@pytest.mark.parametrize("name", list(NO_SKIP))
def test_a_cache_that_skips_nothing_gives_repvideo_alone(name, tiny_pipe, monkeypatch):
    build, config = NO_SKIP[name]
    pipe = build(tiny_pipe)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_repvideo(RepVideoConfig(window=WINDOW, gate_init=0.6))
    expected = _latents(pipe)

    pipe.transformer.enable_cache(config(pipe))
    probe = Probe(pipe.transformer, monkeypatch)
    cached = _latents(pipe)
    probe.remove()
    pipe.transformer.disable_cache()

    assert probe.ran() == [ALL] * STEPS and probe.attended() == [ALL] * STEPS  # nothing skipped
    assert (cached - expected).abs().max().item() <= 1e-6
    assert_feature_cache_holds_the_blocks_that_ran(probe)
    assert torch.equal(_latents(pipe), expected)


@pytest.mark.parametrize("name", list(SKIP))
def test_a_cache_that_skips_runs_repvideo_on_the_blocks_that_ran(name, tiny_pipe, monkeypatch):
    build, config, ran, attended = SKIP[name]
    pipe = build(tiny_pipe)
    pipe.set_progress_bar_config(disable=True)
    vanilla = _latents(pipe)
    pipe.enable_repvideo(RepVideoConfig(window=WINDOW, gate_init=0.6))
    expected = _latents(pipe)

    pipe.transformer.enable_cache(config(pipe))
    probe = Probe(pipe.transformer, monkeypatch)
    cached = _latents(pipe)
    probe.remove()
    again = _latents(pipe)  # the pipeline resets the cache's state after each call: the same result again
    pipe.transformer.disable_cache()

    assert probe.ran() == ran and probe.attended() == attended
    assert torch.isfinite(cached).all()
    assert (cached - expected).abs().max().item() > 1e-3  # the skips changed the result
    assert torch.equal(again, cached)
    assert_feature_cache_holds_the_blocks_that_ran(probe)
    assert torch.equal(_latents(pipe), expected)
    assert probe.state.in_place  # without a step cache RepVideo blends in place again (its memory saving)
    pipe.disable_repvideo()
    assert torch.equal(_latents(pipe), vanilla)


def test_block_outputs_a_cache_keeps_are_not_blended_into(tiny_pipe):
    # TaylorSeer keeps block outputs as its Taylor factors: in float32 it keeps the very tensor the block returned,
    # in float64 a copy. Had RepVideo blended into the next block's input (that tensor) the two would differ.
    tiny_pipe.set_progress_bar_config(disable=True)
    tiny_pipe.enable_repvideo(RepVideoConfig(window=WINDOW, gate_init=0.6))
    results = []
    for dtype in (torch.float32, torch.float64):
        tiny_pipe.transformer.enable_cache(TaylorSeerCacheConfig(
            cache_interval=2, disable_cache_before_step=1, cache_identifiers=[r"transformer_blocks\.[01]"],
            taylor_factors_dtype=dtype))
        results.append(_latents(tiny_pipe))
        tiny_pipe.transformer.disable_cache()
    assert (results[0] - results[1]).abs().max().item() <= 1e-5


def test_under_first_block_cache_a_skipped_step_caches_block_0_alone(tiny_pipe, monkeypatch):
    # FirstBlockCache sits outside RepVideo on each block: block 0 runs with RepVideo at every step (no blend, its
    # output starts the feature cache); at a skipped step the other blocks return their input untouched, so neither
    # blend nor cache update happens there, and the tail residual of the last full step is added after block 0.
    tiny_pipe.set_progress_bar_config(disable=True)
    tiny_pipe.enable_repvideo(RepVideoConfig(window=WINDOW, gate_init=0.6))
    tiny_pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=10.0))
    probe = Probe(tiny_pipe.transformer, monkeypatch)
    _latents(tiny_pipe)
    tiny_pipe.transformer.disable_cache()
    assert [call["entered"] for call in probe.calls] == [[(0, 1), (1, 2), (2, 1), (3, 2)]] + [[(0, 1)]] * 3


# --- cache-dit (optional extra) -----------------------------------------------------------------------------------


def _cache_dit():
    return pytest.importorskip("cache_dit", reason="cache-dit is an optional extra: pip install '.[cache-dit]'")


def test_cache_dit_dbcache_with_repvideo(tiny_pipe, monkeypatch):
    cache_dit = _cache_dit()
    from cache_dit import DBCacheConfig

    pipe = tiny_pipe
    pipe.set_progress_bar_config(disable=True)
    vanilla = _latents(pipe)
    pipe.enable_repvideo(RepVideoConfig(window=WINDOW, gate_init=0.6))
    expected = _latents(pipe)
    common = dict(enable_separate_cfg=False, num_inference_steps=STEPS)  # CogVideoX batches both guidance branches

    # warm-up covering every step: DBCache computes all blocks all the time
    cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(Fn_compute_blocks=2, Bn_compute_blocks=1,
                                                            max_warmup_steps=STEPS, **common))
    try:
        probe = Probe(pipe.transformer, monkeypatch)
        cached = _latents(pipe)
        probe.remove()
    finally:
        cache_dit.disable_cache(pipe)
    assert probe.ran() == [ALL] * STEPS
    assert (cached - expected).abs().max().item() <= 1e-6
    assert_feature_cache_holds_the_blocks_that_ran(probe)

    # one warm-up step, then the middle block (2) is skipped: blocks 0-1 (Fn) and 3 (Bn) run at every step
    cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(Fn_compute_blocks=2, Bn_compute_blocks=1,
                                                            max_warmup_steps=1, residual_diff_threshold=10.0, **common))
    try:
        probe = Probe(pipe.transformer, monkeypatch)
        cached = _latents(pipe)
        probe.remove()
    finally:
        cache_dit.disable_cache(pipe)
    assert probe.ran() == [ALL] + [[0, 1, 3]] * (STEPS - 1)
    assert torch.isfinite(cached).all()
    assert (cached - expected).abs().max().item() > 1e-3
    # cache-dit keeps the input of its middle blocks (block 1's output) to take the residual after them: intact
    assert_feature_cache_holds_the_blocks_that_ran(probe)

    assert torch.equal(_latents(pipe), expected)
    pipe.disable_repvideo()
    assert torch.equal(_latents(pipe), vanilla)
