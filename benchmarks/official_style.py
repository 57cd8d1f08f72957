"""The official RepVideo code's feature cache, as the baseline `bench_repvideo.py` measures this package against.

The official code (arXiv 2501.08994, github.com/Vchitect/RepVideo) keeps every cached block output in a list and
recomputes ``stack(cache).mean(0)`` before every block, then blends ``g*m + (1-g)*h``. It computes the same numbers
as the package's running mean and is the baseline to beat. It lives here, outside the package, because it is a
second implementation of the technique kept only to be measured.

It reuses the package's hook machinery (`RepVideoBlockHook` and the attachment `apply_repvideo` leaves on the
transformer): only the two halves of the technique, `blend_inputs` and `update_cache`, differ.

Usage (with this folder on ``sys.path``, as `bench_repvideo.py` arranges)::

    from official_style import apply_official_style
    gates = apply_official_style(transformer, RepVideoConfig(window=6))  # undo with remove_repvideo(transformer)
"""

from __future__ import annotations

import torch

from repvideo_diffusers import _compat
from repvideo_diffusers.core.hooks import _BLOCK_HOOK, _STATE_ATTRIBUTE, RepVideoBlockHook, apply_repvideo
from repvideo_diffusers.families import get_transformer_blocks


class OfficialStyleBlockHook(RepVideoBlockHook):
    """The official code's feature cache: a list of block outputs, ``stack(cache).mean(0)`` before every block.

    The cache list lives in the shared state's ``means`` slot (reset to ``None`` at every forward call), so the
    core's forward hooks and activation-checkpointing wrapper drive it unchanged.
    """

    def blend_inputs(self, args, kwargs):
        state = self.state
        streams = [self._get(args, kwargs, i) for i in range(len(self.argument_names))]
        if state.means is None:
            state.means = [tuple(streams)]  # the cache starts with the embedded input
        gate = self.gates.gate[self.index]
        for position, stream in enumerate(streams):
            mean = torch.stack([cached[position] for cached in state.means]).mean(0)
            weight = gate.to(device=stream.device, dtype=stream.dtype)
            args, kwargs = self._set(args, kwargs, position, weight * mean + (1 - weight) * stream)
        return args, kwargs

    def update_cache(self, output):
        outputs = self.outputs_of(output)
        if self.index % self.window == 0:
            self.state.means = [outputs]
        else:
            self.state.means.append(outputs)


def apply_official_style(transformer, config=None):
    """Attach RepVideo with the official-style feature cache instead of the running mean (benchmark baseline).

    Same gates, same numbers as `apply_repvideo` up to rounding; undo with `remove_repvideo`.
    """
    gates = apply_repvideo(transformer, config)
    attachment = getattr(transformer, _STATE_ATTRIBUTE)
    for block in get_transformer_blocks(transformer):
        core_hook = attachment.hooks[id(block)]
        hook = OfficialStyleBlockHook(core_hook.index, core_hook.window, gates, attachment.state, type(block),
                                      core_hook.block_list)
        registry = _compat.hook_registry(block)  # the one `apply_repvideo` just registered the core hook in
        registry.remove_hook(_BLOCK_HOOK, recurse=False)
        registry.register_hook(hook, _BLOCK_HOOK)
        attachment.hooks[id(block)] = hook
    return gates
