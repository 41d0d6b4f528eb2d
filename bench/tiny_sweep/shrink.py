"""Copy a hubkit dataset with its images pre-resized to SIZE exactly as `hubkit train` resizes them.

    python bench/tiny_sweep/shrink.py SRC_DATASET DST_DATASET 128

Training on the copy feeds the model the same pixels (hubkit.training.data.resize_to is a no-op on them), and the copy
is small enough (~10 MB for 150 studies) to travel to the GPU machine.
"""

from __future__ import annotations

import sys

import datasets

from hubkit.training.data import resize_to


def main(src: str, dst: str, size: str) -> None:
    side = int(size)

    def shrink(ex: dict) -> dict:
        return {**ex, "images": [resize_to(im, side) for im in ex["images"]]}

    dd = datasets.load_from_disk(src)
    dd = datasets.DatasetDict({k: v.map(shrink) for k, v in dd.items()})
    dd.save_to_disk(dst)
    print(dst, {k: len(v) for k, v in dd.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
