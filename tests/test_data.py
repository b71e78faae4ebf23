"""prune_core.data: every registry entry either loads without files or says where its files are
missing; splits are disjoint, cover the data and follow the seed; batches are reproducible per
(seed, epoch); augmentation crops (and mirrors only where the dataset allows it)."""

import dataclasses

import pytest
import torch
from PIL import Image

from prune_core.config import DataConfig
from prune_core.data import DATASETS, DatasetMissing, load_data
from prune_core.loaders import crop_flip, stratified_order

CPU = torch.device("cpu")
# small enough for a 2-core machine; mnist5k is always its real 5,000 digits
SMALL = {"mnist5k": {}, "synthetic": {"num_samples": 300, "image_size": 16, "channels": 3, "num_classes": 4}}
NEEDS_FILES = ("cifar10", "cifar100", "fashionmnist", "flowers102", "imagefolder", "imagenet")
NO_DOWNLOAD = ("imagefolder",)  # read by reference: nothing to download


def _cfg(name="mnist5k", **kw) -> DataConfig:
    return DataConfig(name=name, **{**SMALL.get(name, {}), **kw})


def _pixels(x: torch.Tensor, data) -> torch.Tensor:
    """Normalised batch -> the uint8 pixels it was made from."""
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (x * std * 255 + mean * 255).round().clamp(0, 255).to(torch.uint8)


def _all(loader, data):
    xs, ys = zip(*[(_pixels(x, data), y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


# ---------------------------------------------------------------------------------------------
# the registry contract


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_entry_loads_or_names_its_missing_files(name, tmp_path):
    cfg = _cfg(name, root=str(tmp_path / "empty"), batch_size=64, num_workers=0)
    try:
        data = load_data(cfg, CPU, seed=0)
    except DatasetMissing as exc:
        msg = str(exc)
        assert isinstance(exc, FileNotFoundError)
        assert name in NEEDS_FILES
        assert "\n" not in msg and msg.startswith(f"{name}: ")
        assert str(tmp_path / "empty") in msg and ("download" in msg or name in NO_DOWNLOAD)
        return
    assert name not in NEEDS_FILES
    c, h, w = data.input_shape
    assert len(data.mean) == len(data.std) == c
    for loader in (data.train, data.val, data.test):
        batches = list(loader)
        assert len(batches) == len(loader) > 0
        assert sum(len(y) for _, y in batches) == loader.num_samples
        for x, y in batches:
            assert x.shape[1:] == (c, h, w) and x.dtype == torch.float32 and x.device == CPU
            assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
            assert 0 <= int(y.min()) and int(y.max()) < data.num_classes
    x, _ = _all(data.test, data)
    assert x.float().std() > 0  # images, not blanks
    xs = torch.cat([x for x, _ in data.train.unaugmented()])
    # normalised with the training split's own statistics
    assert xs.mean().abs() < 0.05 and (xs.std() - 1).abs() < 0.05


@pytest.mark.parametrize("name", sorted(SMALL))
def test_splits_are_disjoint_and_cover_the_data(name):
    cfg = _cfg(name)
    raw = DATASETS[name](cfg)
    assert raw.test is None and raw.val is None  # both carved by the seed
    data = load_data(cfg, CPU, seed=0)
    parts = [_all(data.train.unaugmented(), data), _all(data.val, data), _all(data.test, data)]
    keys = [{(bytes(img.numpy()), int(y)) for img, y in zip(*part)} for part in parts]
    everything = {(bytes(img.numpy()), int(y)) for img, y in zip(raw.train.x, raw.train.y)}
    assert len(everything) == len(raw.train)  # no duplicate images, so counting by content is exact
    assert [len(k) for k in keys] == [p[0].shape[0] for p in parts]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert keys[0] | keys[1] | keys[2] == everything
    n = len(raw.train)
    assert data.test.num_samples == round(0.2 * n)
    assert data.val.num_samples == round(cfg.val_fraction * (n - data.test.num_samples))


def test_mnist5k_is_the_embedded_digits():
    data = load_data(_cfg(), CPU, seed=0)
    assert (data.num_classes, data.input_shape) == (10, (1, 28, 28))
    assert (data.train.num_samples, data.val.num_samples, data.test.num_samples) == (3600, 400, 1000)
    _, y = _all(data.test, data)
    assert torch.bincount(y).tolist() == [100] * 10  # stratified: 1,000 = 100 per digit


def test_split_and_batches_follow_the_seed():
    a, b, other = (load_data(_cfg(), CPU, seed=s) for s in (0, 0, 1))
    assert _same(list(a.test), list(b.test)) and _same(list(a.val), list(b.val))
    assert _same(_batches(a.train, 2), _batches(b.train, 2))
    assert a.mean == b.mean and a.std == b.std
    assert not torch.equal(_all(a.test, a)[0], _all(other.test, other)[0])
    assert not torch.equal(next(iter(a.train))[0], next(iter(other.train))[0])


def test_set_epoch_makes_the_order_a_function_of_seed_and_epoch():
    data = load_data(_cfg(limit_train=512), CPU, seed=3)
    first = _batches(data.train, 1)
    zero = _batches(data.train, 0)
    assert not _same(first, zero)
    assert _same(first, _batches(data.train, 1))
    # a resumed run is a new process with a new loader: epoch 1 is still epoch 1
    torch.manual_seed(999)
    resumed = load_data(_cfg(limit_train=512), CPU, seed=3)
    assert _same(first, _batches(resumed.train, 1))
    # without set_epoch, iterating again moves on to the next epoch
    data.train.set_epoch(4)
    list(data.train)
    assert _same([(x, y) for x, y in data.train], _batches(resumed.train, 5))
    # every epoch is a permutation of the same images
    assert torch.equal(torch.cat([y for _, y in first]).sort().values, torch.cat([y for _, y in zero]).sort().values)


def test_evaluation_loaders_never_shuffle_or_augment():
    data = load_data(_cfg(), CPU, seed=0)
    one = list(data.val)
    data.val.set_epoch(7)
    assert _same(one, list(data.val)) and _same(list(data.test), list(data.test))


def test_limit_train_keeps_a_balanced_prefix():
    data = load_data(_cfg(limit_train=100, augment=False), CPU, seed=0)
    assert data.train.num_samples == 100 and len(data.train) == 1
    _, y = _all(data.train, data)
    assert torch.bincount(y, minlength=10).tolist() == [10] * 10
    # a lone last sample would break BatchNorm: that epoch serves one batch fewer
    lone = load_data(_cfg(limit_train=129, batch_size=64), CPU, seed=0)
    assert len(lone.train) == 2 and [len(y) for _, y in lone.train] == [64, 64]
    full = load_data(_cfg(augment=False), CPU, seed=0)
    assert torch.equal(_all(data.train.unaugmented(), data)[0],
                       _all(full.train.unaugmented(), full)[0][:100])


# ---------------------------------------------------------------------------------------------
# augmentation


def _shifted_versions(originals: torch.Tensor, pad: int) -> torch.Tensor:
    """Every crop of the zero-padded originals at every offset: (offsets * N, C, H, W)."""
    n, c, h, w = originals.shape
    padded = torch.nn.functional.pad(originals, (pad,) * 4)
    return torch.cat([padded[:, :, dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)])


def _matches(images: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    return (images[:, None] == candidates[None]).flatten(2).all(2).any(1)


def _augmented_and_originals(name, pad):
    data = load_data(_cfg(name, limit_train=16, batch_size=16), CPU, seed=0)
    originals = _all(data.train.unaugmented(), data)[0]
    data.train.set_epoch(0)
    x, _ = next(iter(data.train))
    return x, _pixels(x, data), originals, _shifted_versions(originals, pad)


def test_mnist5k_crops_and_never_mirrors():
    x, pixels, originals, shifts = _augmented_and_originals("mnist5k", pad=2)
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32
    assert _matches(pixels, shifts).all()  # each image is a 2-px translation of a training digit...
    assert not _matches(pixels, originals).all()  # ...and some were actually moved
    data = load_data(_cfg(augment=False, limit_train=16, batch_size=16), CPU, seed=0)
    plain = _pixels(next(iter(data.train))[0], data)
    assert _matches(plain, originals).all()  # augment: false serves the images untouched


def test_synthetic_crops_and_mirrors():
    _, pixels, originals, shifts = _augmented_and_originals("synthetic", pad=2)
    mirrored = _shifted_versions(originals.flip(3), pad=2)
    plain, flipped = _matches(pixels, shifts), _matches(pixels, mirrored)
    assert (plain | flipped).all()
    assert flipped.any() and not flipped.all()  # the mirror check above can see a mirror


def test_crop_flip_on_a_hand_sized_image():
    img = torch.arange(9, dtype=torch.uint8).view(1, 1, 3, 3)
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
    pick = torch.zeros(3, dtype=torch.long)
    out = crop_flip(padded, pick, torch.tensor([1, 0, 1]), torch.tensor([1, 0, 2]),
                    torch.tensor([False, False, True]), (3, 3))
    assert torch.equal(out[0, 0], img[0, 0])
    assert out[1, 0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 3, 4]]
    assert out[2, 0].tolist() == [[0, 2, 1], [0, 5, 4], [0, 8, 7]]  # shifted left by one, then mirrored


def test_stratified_order_keeps_every_prefix_balanced():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 3)
    order = stratified_order(labels, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(12))
    for k in (4, 8, 12):
        assert torch.bincount(labels[order[:k]], minlength=3).tolist() == [k // 2, k // 4, k // 4]


# ---------------------------------------------------------------------------------------------
# datasets read from files


COLOURS = {"a_red": (220, 20, 20), "b_green": (20, 220, 20), "c_blue": (20, 20, 220)}


def _fake_imagenet(root, val_classes=("b_green", "c_blue")):
    """A tiny ImageFolder tree: PNGs of assorted sizes, a class colour plus texture (so crops and
    mirrors differ), the colour giving the class."""
    gen = torch.Generator().manual_seed(0)
    for split, classes, per_class in (("train", COLOURS, 6), ("val", val_classes, 2)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                h, w = 30 + 5 * i, 40 + 7 * i
                texture = torch.randint(-20, 21, (h, w, 3), generator=gen)
                pixels = (torch.tensor(COLOURS[cls]) + texture).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(root / split / cls / f"{i}.png")


def test_imagenet_reads_an_image_folder(tmp_path):
    _fake_imagenet(tmp_path)
    cfg = DataConfig(name="imagenet", root=str(tmp_path), batch_size=5, eval_batch_size=4, num_workers=0,
                     val_fraction=0.25)
    data = load_data(cfg, CPU, seed=0)
    assert (data.num_classes, data.input_shape) == (3, (3, 224, 224))
    assert (data.train.num_samples, data.val.num_samples, data.test.num_samples) == (13, 5, 4)
    x, y = _all(data.test, data)
    assert x.shape == (4, 3, 224, 224) and y.dtype == torch.int64
    # test labels follow the training classes' names, though val/ lacks the first class
    assert y.tolist() == [1, 1, 2, 2]
    assert torch.equal(x.float().mean((2, 3)).argmax(1), y)
    xt, yt = _all(data.train, data)
    assert xt.shape == (13, 3, 224, 224) and torch.equal(xt.float().mean((2, 3)).argmax(1), yt)
    # augmentation is seeded per sample: worker processes give the batches the main process does
    first = _batches(data.train, 1)
    with_worker = load_data(dataclasses.replace(cfg, num_workers=1), CPU, seed=0)
    assert _same(first, _batches(with_worker.train, 1))
    assert not _same(first, _batches(data.train, 2))


def test_imagenet_without_its_test_folder_says_so(tmp_path):
    _fake_imagenet(tmp_path, val_classes=())
    with pytest.raises(DatasetMissing, match="val") as info:
        load_data(DataConfig(name="imagenet", root=str(tmp_path), num_workers=0), CPU, seed=0)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
