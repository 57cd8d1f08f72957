"""RepVideo's cost against the base model and the official-style feature cache, in one run.

    python benchmarks/bench_repvideo.py                 # CPU: medium size; CUDA: CogVideoX-2B shapes
    python benchmarks/bench_repvideo.py --size tiny     # seconds: the CI smoke run

Same code as ``repvideo bench`` (see ``repvideo_diffusers/bench.py``): writes bench-<size>.json and .png, prints
time ratios and extra peak memory in hidden-state tensors.
"""

import sys

from repvideo_diffusers.bench import main

if __name__ == "__main__":
    sys.exit(main())
