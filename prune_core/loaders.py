"""How images reach the model: seeded splits and orders, and loaders that serve ready batches.

``TensorImages`` (uint8 tensors on the device) and ``FileImages`` (files decoded by DataLoader
workers) are the two kinds of images a dataset opens to; ``TensorLoader`` and ``FileLoader`` serve
them in the order and with the augmentation of a given epoch, a pure function of (seed, epoch),
so a resumed run sees the batches it would have seen. ``prune_core.data`` names the datasets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

Batch = Tuple[torch.Tensor, torch.Tensor]
Stats = Tuple[float, ...]


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


class Normalise:
    """uint8 pixels -> (x / 255 - mean) / std as float32, on the device, in two in-place ops."""

    def __init__(self, mean: Stats, std: Stats, device: torch.device):
        self.shift = torch.tensor([255.0 * m for m in mean], device=device).view(1, -1, 1, 1)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32).sub_(self.shift).mul_(self.scale)


class TensorLoader(Loader):
    """Batches from uint8 images held on the device (see ``TensorImages``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, norm: Normalise, *,
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

    def __init__(self, images: "FileImages", batch_size: int, norm: Normalise, device: torch.device, *,
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

    def sample_bytes(self, index: torch.Tensor) -> bytes:
        """The stored pixels of the images at ``index`` (``prune_core.data.fingerprint``)."""
        return self.x[index].contiguous().numpy().tobytes()

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

    def loader(self, batch_size: int, device: torch.device, norm: Normalise, *, seed: int, train: bool,
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
    # > 0: ``pixel_stats`` decodes this many images spread over the split (``data.name: imagefolder``);
    # 0: the dataset states its statistics (decoding all of ImageNet would outlast the training)
    stats_samples: int = 0

    def __post_init__(self) -> None:
        if self.indices is None:
            self.indices = list(range(len(self.labels)))

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels[torch.as_tensor(self.indices, dtype=torch.long)]

    def take(self, index: torch.Tensor) -> "FileImages":
        return dataclasses.replace(self, indices=[self.indices[i] for i in index.tolist()])

    def sample_bytes(self, index: torch.Tensor) -> bytes:
        """The decoded, unaugmented pixels of the images at ``index``."""
        return b"".join(torch.as_tensor(self.eval_transform(self.dataset[self.indices[i]][0])).numpy().tobytes()
                        for i in index.tolist())

    def pixel_stats(self) -> Tuple[Stats, Stats]:
        """Per-channel mean and std of ``stats_samples`` unaugmented images spread over the split."""
        if not self.stats_samples:
            raise ValueError("datasets read from files state their mean and std; decoding every image to "
                             "compute them would take longer than the training")
        index = torch.linspace(0, len(self) - 1, min(self.stats_samples, len(self))).round().long().unique()
        x = torch.stack([torch.as_tensor(self.eval_transform(self.dataset[self.indices[i]][0]))
                         for i in index.tolist()])
        return TensorImages(x, torch.zeros(len(x), dtype=torch.int64)).pixel_stats()

    def loader(self, batch_size: int, device: torch.device, norm: Normalise, *, seed: int, train: bool,
               augment: bool, num_workers: int) -> Loader:
        return FileLoader(self, batch_size, norm, device, seed=seed, train=train, augment=augment,
                          num_workers=num_workers)
