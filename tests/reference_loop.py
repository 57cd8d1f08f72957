"""The official RepVideo algorithm, written independently of the package, around an unmodified transformer.

Plain torch module hooks, the cache kept as a Python list and averaged with ``torch.stack(cache).mean(0)`` before
every block, the blend written as ``g * m + (1 - g) * h``, exactly as the official code does it. Which blocks run in
which order and which streams they pass on are stated by each test, not read from the package.
"""

import inspect

import torch


def official_output(transformer, inputs, gates, window, block_lists):
    """The transformer's output with RepVideo computed the official way.

    Args:
        block_lists: ``[(attribute, stream parameter names (video first), their output positions or None)]`` in
            execution order; ``None``: the block returns the video stream alone.
    """
    cache = []
    handles = []

    def make_hooks(i, block, names, outputs):
        signature = inspect.signature(block.forward)

        def pre(module, args, kwargs):
            bound = signature.bind(*args, **kwargs)
            streams = [bound.arguments[n] for n in names]
            if i == 0:
                cache[:] = [tuple(streams)]  # cache = [embedded input]
            g = gates[i]
            for position, (n, h) in enumerate(zip(names, streams)):
                m = torch.stack([entry[position] for entry in cache]).mean(0)
                bound.arguments[n] = g * m + (1 - g) * h
            return bound.args, bound.kwargs

        def post(module, args, kwargs, output):
            if outputs is None:
                outs = (output[0] if isinstance(output, (tuple, list)) else output,)
            else:
                outs = tuple(output[j] for j in outputs)
            if i % window == 0:
                cache[:] = [outs]
            else:
                cache.append(outs)

        return [block.register_forward_pre_hook(pre, with_kwargs=True),
                block.register_forward_hook(post, with_kwargs=True)]

    index = 0
    for attribute, names, outputs in block_lists:
        for block in getattr(transformer, attribute):
            handles += make_hooks(index, block, names, outputs)
            index += 1
    try:
        with torch.no_grad():
            return transformer(**inputs, return_dict=False)[0]
    finally:
        for handle in handles:
            handle.remove()
