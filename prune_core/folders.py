"""Images read from folders and files: an ImageFolder tree decoded to one size and channel count,
and the idx files of the MNIST family (plain or gzip).

``scan`` reads the layout of ``data.name: imagefolder`` (``root/train/<class>/<image>``, optional
``val/`` and ``test/`` with the same class folders; the layout of torchvision's ``ImageFolder``);
``Decode`` opens one image as the run sees it. ``read_idx`` parses the idx format of LeCun et al.'s
MNIST files (http://yann.lecun.com/exdb/mnist/, "file formats"), which torchvision's
``read_sn3_pascalvincent_tensor`` reads only unpacked. Every layout problem is one line
(``DatasetMissing``, or ``ConfigError`` where a config key fixes it).
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ConfigError, DatasetMissing

Samples = List[Tuple[str, int]]  # (path, label)

SPLITS = ("train", "val", "test")
# torchvision.datasets.folder.IMG_EXTENSIONS, without importing torchvision (1.6 s) to read a list
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# one channel only when every sampled image is grayscale: "1" is bilevel, "LA" grayscale with an
# alpha channel, which is dropped as RGBA's is; any other mode (RGB, RGBA, P, CMYK, ...) reads as RGB
GRAY_MODES = ("1", "L", "LA")
FORMAT_SAMPLES = 64  # images, spread over the training split, whose mode and size set the format


def scan(root: Path) -> Tuple[List[str], Dict[str, Samples]]:
    """(class names, {split: samples}) of the tree at ``root``: ``train`` always, ``val`` and
    ``test`` where their folders exist. Class folders are sorted by name (label = position), as
    torchvision's ``ImageFolder.find_classes`` sorts them; hidden files and folders are skipped."""
    layout = f"expected {root}/train/<class>/<image>, and optionally val/ and test/ with the same class folders"
    if not root.is_dir():
        raise DatasetMissing(f"imagefolder: no folder {root} ({layout}; set data.root to it)")
    if not (root / "train").is_dir():
        raise DatasetMissing(f"imagefolder: no train/ folder in {root} ({layout})")
    classes = _class_folders(root / "train")
    if not classes:
        raise DatasetMissing(f"imagefolder: no class folders in {root / 'train'} ({layout})")
    splits: Dict[str, Samples] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        found = _class_folders(folder)
        if found != classes:
            extra, lacking = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
            what = "; ".join([*([f"{', '.join(extra)} not in train/"] if extra else []),
                              *([f"no {', '.join(lacking)}"] if lacking else [])])
            raise DatasetMissing(f"imagefolder: the class folders of {folder} differ from train/'s ({what}); "
                                 "expected the same class folders in every split")
        splits[split] = [(str(p), label) for label, c in enumerate(classes) for p in _images(folder / c)]
        if not splits[split]:
            raise DatasetMissing(f"imagefolder: no images in the class folders of {folder} "
                                 f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})")
    counts = np.bincount([label for _, label in splits["train"]], minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise DatasetMissing(f"imagefolder: no images in {root / 'train' / empty[0]} (class {empty[0]!r}; "
                             "every training class needs images)")
    return classes, splits


def _class_folders(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def unreadable(path: str, exc: BaseException) -> DatasetMissing:
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return DatasetMissing(f"imagefolder: cannot read {path} as an image ({reason}); remove or replace it")


@dataclass(frozen=True)
class Decode:
    """Open one image file as a PIL image of ``mode`` and ``size`` (H, W): resized (bilinear, which
    Pillow antialiases when it shrinks) when ``resize``, else refused in one line if its size
    differs from ``reference``'s. A plain picklable object, so DataLoader workers can run it."""

    mode: str
    size: Tuple[int, int]
    resize: bool
    reference: str  # the image whose size is the native size

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (1 if self.mode == "L" else 3, *self.size)

    def __call__(self, path: str):
        from PIL import Image

        try:
            with Image.open(path) as image:
                image = image.convert(self.mode)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise unreadable(path, exc) from None
        h, w = self.size
        if image.size != (w, h):
            if not self.resize:
                raise mismatch(path, image.size, self.reference, (w, h))
            image = image.resize((w, h), Image.BILINEAR)
        return image


def mismatch(path: str, size: Tuple[int, int], reference: str, ref_size: Tuple[int, int]) -> ConfigError:
    return ConfigError(f"data.resize=0: {path} is {size[0]}x{size[1]} px but {reference} is "
                       f"{ref_size[0]}x{ref_size[1]}; set data.resize (a side in px) to resize every image to one size")


def decoder(train: Samples, resize: int) -> Decode:
    """The ``Decode`` of a training split: grayscale ("L") when every one of ``FORMAT_SAMPLES``
    images spread over it is grayscale, else RGB; ``resize`` x ``resize`` px, or (resize 0) the
    first image's native size, which every sampled image must share."""
    from PIL import Image

    picks = sorted({round(i) for i in np.linspace(0, len(train) - 1, min(FORMAT_SAMPLES, len(train)))})
    modes, sizes = [], []
    for i in picks:
        path = train[i][0]
        try:
            with Image.open(path) as image:
                modes.append(image.mode)
                sizes.append(image.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise unreadable(path, exc) from None
    mode = "L" if all(m in GRAY_MODES for m in modes) else "RGB"
    first = train[picks[0]][0]
    if not resize:
        for i, size in zip(picks, sizes):
            if size != sizes[0]:
                raise mismatch(train[i][0], size, first, sizes[0])
    w, h = (resize, resize) if resize else sizes[0]
    return Decode(mode, (h, w), bool(resize), first)


def read_all(samples: Samples, decode: Decode) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``samples`` decoded: uint8 (N, C, H, W) and int64 labels."""
    c, h, w = decode.shape
    x = torch.empty(len(samples), c, h, w, dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        x[i] = torch.from_numpy(np.array(decode(path), dtype=np.uint8).reshape(h, w, c)).permute(2, 0, 1)
    return x, labels(samples)


def labels(samples: Samples) -> torch.Tensor:
    return torch.tensor([label for _, label in samples], dtype=torch.int64)


class ImageList(Dataset):
    """(path, label) pairs opened by ``open_image`` (a picklable callable: ``Decode``, or
    torchvision's ``default_loader``)."""

    def __init__(self, samples: Sequence[Tuple[str, int]], open_image):
        self.samples, self.open_image = samples, open_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return self.open_image(path), label


# ---------------------------------------------------------------------------------------------
# the idx files of the MNIST family

IDX_UBYTE = 0x08  # the type code of unsigned bytes, the only one MNIST-family files use


def read_idx(path: Path) -> torch.Tensor:
    """The uint8 array of an idx file (gzip when its name ends in ``.gz``): a 4-byte magic number
    (0, 0, type, number of dimensions), each dimension as a big-endian int32, then the data."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetMissing(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
    ndim = data[3] if len(data) >= 4 else 0
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    count = math.prod(dims)
    if len(data) < 4 or data[:3] != bytes([0, 0, IDX_UBYTE]) or len(data) != 4 + 4 * ndim + count:
        raise DatasetMissing(f"{path}: not an idx file of unsigned bytes (expected the MNIST file format)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=4 + 4 * ndim, count=count).view(*dims)


def find_idx(folders: Sequence[Path], names: Sequence[str]) -> Dict[str, Path] | None:
    """{name: path} from the first folder holding every idx file of ``names``, gzip or unpacked."""
    for folder in folders:
        found = {}
        for name in names:
            found[name] = next((folder / f for f in (name, name + ".gz") if (folder / f).is_file()), None)
        if all(found.values()):
            return found
    return None
