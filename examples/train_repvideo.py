"""Train RepVideo gates: the same code path as `repvideo train` (see `repvideo train --help`).

    python examples/train_repvideo.py --data clips/ --out runs/gates --max-steps 200
    accelerate launch --multi_gpu --num_processes 2 examples/train_repvideo.py --data clips/ --out runs/ddp
"""

import sys

from repvideo_diffusers.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
