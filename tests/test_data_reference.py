"""Data by reference: ``data.name: imagefolder`` reads a folder tree into the splits the run's seed
completes; ``data.resize`` resizes any dataset; ``data.mean``/``data.std`` replace the statistics;
``data.name: "<module>:<callable>"`` opens a user's function, whose source is part of its bases'
key; ``fashionmnist`` reads the gzip idx files of Debian's package. Every bad layout is one line."""

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prune_core.data as data_mod
from prune_core import ExperimentConfig, run
from prune_core.errors import ConfigError, DatasetMissing
from prune_core.loaders import FileImages, TensorImages
from prune_core.sections import SMOKE, DataConfig, parse_overrides

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("isolated_registries")  # the reference tests import plug-in files


def _example():
    spec = importlib.util.spec_from_file_location("digits_imagefolder", ROOT / "examples" / "digits_imagefolder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The embedded digits as an image folder, 12 per class: 9 in train/, 3 in test/."""
    root = tmp_path_factory.mktemp("digits")
    counts = _example().write_digits(root, per_class=12)
    assert counts == {"train": 90, "test": 30}
    return root


def _load(root, **kw):
    return data_mod.load_data(DataConfig(name="imagefolder", root=str(root), num_workers=0, **kw), CPU, seed=0)


def _pixels(loader, data):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return torch.cat([(x * std * 255 + mean * 255).round().clamp(0, 255).to(torch.uint8) for x, _ in loader])


def _one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg


def _png(path: Path, size=(12, 10), mode="RGB", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    pixels = (np.arange(int(np.prod(shape))).reshape(shape) * 7 + value) % 256
    Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(path)


# ---------------------------------------------------------------------------------------------
# imagefolder


def test_a_folder_of_digits_reads_as_the_digits_it_was_written_from(digits):
    data = _load(digits, augment=False)
    assert (data.num_classes, data.input_shape) == (10, (1, 28, 28))  # all grayscale: one channel
    assert (data.train.num_samples + data.val.num_samples, data.test.num_samples) == (90, 30)  # test/ as given
    source = data_mod.DATASETS["mnist5k"](DataConfig()).train
    written = {bytes(source.x[source.y == k][i].numpy()) for k in range(10) for i in range(12)}
    read = [_pixels(loader, data) for loader in (data.train.unaugmented(), data.val, data.test)]
    assert {bytes(img.numpy()) for part in read for img in part} == written
    assert sum(len(part) for part in read) == 120
    # normalised with the training split's own statistics
    xs = torch.cat([x for x, _ in data.train.unaugmented()])
    assert xs.mean().abs() < 0.05 and (xs.std() - 1).abs() < 0.05


def test_without_test_folder_the_seed_holds_out_a_fifth(tmp_path):
    for cls in ("a", "b"):
        for i in range(10):
            _png(tmp_path / "train" / cls / f"{i}.png", value=i + 40 * (cls == "b"))
    data = _load(tmp_path)
    assert data.test.num_samples == 4 and data.train.num_samples + data.val.num_samples == 16
    assert data.input_shape == (3, 10, 12)  # RGB, native H x W kept


def test_one_colour_image_makes_the_folder_rgb_and_val_folder_is_used(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("x", "y"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", mode="L", value=i)
    assert _load(tmp_path).input_shape[0] == 1
    _png(tmp_path / "train" / "x" / "9.png", mode="RGB")
    data = _load(tmp_path)
    assert data.input_shape == (3, 10, 12) and data.val.num_samples == 4 and len(data.mean) == 3


def test_images_of_several_sizes_need_data_resize(tmp_path):
    _png(tmp_path / "train" / "a" / "0.png", size=(12, 10))
    _png(tmp_path / "train" / "b" / "0.png", size=(20, 16))
    with pytest.raises(ConfigError) as info:
        _load(tmp_path)
    _one_line(info, "data.resize", "a/0.png", "b/0.png", "12x10", "20x16")
    data = _load(tmp_path, resize=8, val_fraction=0.0)
    assert data.input_shape == (3, 8, 8)
    assert [x.shape for x, _ in data.train] == [(1, 3, 8, 8)]


def test_a_large_folder_streams_from_files_and_reads_the_same(digits, monkeypatch):
    in_memory = _load(digits, augment=False)
    monkeypatch.setattr(data_mod, "IN_MEMORY_BYTES", 0)
    raw = data_mod.open_dataset(DataConfig(name="imagefolder", root=str(digits)))
    assert isinstance(raw.train, FileImages) and isinstance(raw.test, FileImages)
    streamed = _load(digits)
    assert streamed.input_shape == in_memory.input_shape
    assert streamed.mean == pytest.approx(in_memory.mean, abs=1e-9)  # 81 training images: all sampled
    assert torch.equal(_pixels(streamed.test, streamed), _pixels(in_memory.test, in_memory))
    x, y = next(iter(streamed.train))
    assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize("case", ["no root", "no train", "no classes", "empty class", "classes differ",
                                  "unreadable", "empty split"])
def test_a_bad_folder_is_one_line_naming_what_is_wrong(tmp_path, case):
    root = tmp_path / "tree"
    needles = [root]
    if case != "no root":
        root.mkdir()
    if case not in ("no root", "no train"):
        (root / "train").mkdir()
    if case in ("empty class", "classes differ", "unreadable", "empty split"):
        for cls in ("cat", "dog"):
            _png(root / "train" / cls / "0.png")
    if case == "no train":
        needles.append("train/")
    elif case == "no classes":
        needles.append("no class folders")
    elif case == "empty class":
        (root / "train" / "emu").mkdir()
        needles += ["emu", "no images"]
    elif case == "classes differ":
        _png(root / "test" / "cat" / "0.png")
        _png(root / "test" / "cow" / "0.png")
        needles += ["test", "cow not in train/", "no dog"]
    elif case == "unreadable":
        (root / "train" / "dog" / "1.png").write_bytes(b"not a png")
        needles = [root / "train" / "dog" / "1.png", "cannot read"]
    elif case == "empty split":
        (root / "val" / "cat").mkdir(parents=True)
        (root / "val" / "dog").mkdir()
        needles += ["val", "no images"]
    with pytest.raises(DatasetMissing) as info:
        _load(root, val_fraction=0.0)
    assert _one_line(info, *needles).startswith("imagefolder: ")


# ---------------------------------------------------------------------------------------------
# data.resize, data.mean and data.std for every dataset


def test_resize_applies_to_an_in_memory_dataset_and_scales_its_crop():
    cfg = DataConfig(name="mnist5k", resize=56, limit_train=64, batch_size=32)
    raw = data_mod.open_dataset(cfg)
    assert isinstance(raw.train, TensorImages) and raw.train.shape == (1, 56, 56) and raw.train.pad == 4
    original = data_mod.DATASETS["mnist5k"](DataConfig()).train.x[:4]
    # bilinear with antialias from the 28-px digits: halving again gives them back closely
    back = torch.nn.functional.interpolate(raw.train.x[:4].float(), size=(28, 28), mode="bilinear", antialias=True)
    assert (back - original.float()).abs().mean() < 12 and raw.train.x.dtype == torch.uint8
    data = data_mod.load_data(cfg, CPU, seed=0)
    assert data.input_shape == (1, 56, 56) and next(iter(data.train))[0].shape == (32, 1, 56, 56)
    assert data.fingerprint != data_mod.load_data(DataConfig(name="mnist5k", limit_train=64), CPU, 0).fingerprint


def test_resize_applies_to_a_dataset_read_from_files(digits, monkeypatch):
    monkeypatch.setattr(data_mod, "IN_MEMORY_BYTES", 0)
    raw = data_mod.open_dataset(DataConfig(name="imagefolder", root=str(digits)))
    small = data_mod.resized(raw.test, 14)
    assert small.shape == (1, 14, 14) and small.eval_transform(raw.test.dataset[0][0]).shape == (1, 14, 14)


def test_given_mean_and_std_are_used_and_checked_against_the_channels():
    cfg = ExperimentConfig.from_dict(parse_overrides(["data.mean=[0.5]", "data.std=0.25", "data.limit_train=32"]))
    assert (cfg.data.mean, cfg.data.std) == ((0.5,), (0.25,))
    data = data_mod.load_data(cfg.data, CPU, seed=0)
    assert (data.mean, data.std) == ((0.5,), (0.25,))
    x = next(iter(data.test))[0]
    assert float(x.min()) == pytest.approx(-2.0)  # a black pixel: (0 - 0.5) / 0.25
    with pytest.raises(ConfigError) as info:
        data_mod.load_data(DataConfig(name="mnist5k", mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0)), CPU, 0)
    _one_line(info, "data.mean", "1 values, one per channel")
    for bad, key in (({"data.mean": [0.5]}, "data.std"), ({"data.mean": [0.5], "data.std": [0]}, "data.std"),
                     ({"data.mean": "grey"}, "data.mean"), ({"data.resize": -1}, "data.resize")):
        with pytest.raises(ConfigError, match=f"^{key}="):
            ExperimentConfig.from_dict(bad)


def test_new_data_keys_leave_existing_base_hashes_alone():
    plain = ExperimentConfig()
    assert plain.base_hash() == "f69b73f90c2290da"  # the default base's hash before these keys existed
    resized = plain.replace(**{"data.resize": 32})
    assert resized.base_hash() != plain.base_hash() and resized.base_key()["data"]["resize"] == 32
    stats = plain.replace(**{"data.mean": [0.1], "data.std": [0.3]})
    assert stats.base_key()["data"]["mean"] == [0.1] and stats.base_hash() != plain.base_hash()
    assert plain.replace(**{"data.resize": 0}).base_hash() == plain.base_hash()


def test_an_image_folder_is_keyed_by_its_folder(digits, tmp_path):
    a = ExperimentConfig.from_dict({"data.name": "imagefolder", "data.root": str(digits)})
    b = a.replace(**{"data.root": str(tmp_path)})
    assert a.base_key()["data"]["root"] == str(digits) and a.base_hash() != b.base_hash()


# ---------------------------------------------------------------------------------------------
# <module>:<callable>

OPENER = '''
import torch

def load(cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 9, 9), generator=g, dtype=torch.uint8)
    y = torch.arange(40) % 4
    return {"train": (x, y), "test": (x[:8].numpy(), y[:8].numpy()), "num_classes": 4}

def broken(cfg):
    return {"train": (torch.zeros(4, 9, 9), torch.zeros(4)), "num_classes": 4}

not_callable = 3
'''


def _opener_file(tmp_path, stem):
    path = tmp_path / f"{stem}.py"
    path.write_text(OPENER)
    return path


def test_a_callable_in_a_file_opens_the_dataset(tmp_path):
    path = _opener_file(tmp_path, "ref-data-a")  # a hyphen: a file name, not a registry spelling
    cfg = ExperimentConfig.from_dict({"data.name": f"{path}:load", "data.batch_size": 8})
    assert cfg.data.name == f"{path}:load"
    data = data_mod.load_data(cfg.data, CPU, seed=0)
    assert (data.num_classes, data.input_shape) == (4, (3, 9, 9))
    assert data.test.num_samples == 8 and data.train.num_samples + data.val.num_samples == 40
    key = cfg.base_key()["data"]
    assert key["name"] == "ref-data-a:load" and key["code"]


def test_a_callable_of_a_module_opens_the_dataset(tmp_path, monkeypatch):
    _opener_file(tmp_path, "ref_data_module")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = data_mod.open_dataset(DataConfig(name="ref_data_module:load"))
    assert raw.num_classes == 4 and raw.train.shape == (3, 9, 9) and raw.test_fraction == 0.2
    assert isinstance(raw.test, TensorImages) and raw.test.y.dtype == torch.int64


def test_editing_the_data_file_changes_the_base_hash(tmp_path):
    path = _opener_file(tmp_path, "ref_data_edit")
    cfg = ExperimentConfig.from_dict({"data.name": f"{path}:load"})
    before = cfg.base_hash()
    path.write_text(OPENER.replace("manual_seed(0)", "manual_seed(1)"))
    assert cfg.base_hash() != before


@pytest.fixture(scope="module")
def bad_opener(tmp_path_factory):
    return _opener_file(tmp_path_factory.mktemp("bad"), "ref_data_bad")  # one file: a stem imports once


@pytest.mark.parametrize("name,needles", [
    ("no_such_data_module:load", ["no module named 'no_such_data_module'"]),
    ("FILE:lod", ["has no callable 'lod'"]),
    ("FILE:not_callable", ["has no callable 'not_callable'"]),
    ("FILE:broken", ["train holds torch.float32 images", "uint8"]),
    ("FILE:", ["<module>:<callable>"]),
])
def test_a_bad_reference_is_one_line(bad_opener, name, needles):
    name = name.replace("FILE", str(bad_opener))
    with pytest.raises(ConfigError) as info:
        data_mod.open_dataset(DataConfig(name=name))
    assert _one_line(info, *needles).startswith(f"data.name={name!r}")


def test_a_sweep_accepts_these_names_and_makes_the_file_absolute(tmp_path, digits, monkeypatch):
    from prune_sweep.spec import parse_sweep

    _opener_file(tmp_path, "ref_data_sweep")
    monkeypatch.chdir(tmp_path)
    space = {"prune.ratio": {"grid": [0.5]}}
    sweep = parse_sweep({"name": "s", "base": {"data.name": "ref_data_sweep.py:load"}, "space": space}, "s.yaml")
    assert sweep.base["data.name"] == f"{tmp_path / 'ref_data_sweep.py'}:load"
    folder = parse_sweep({"name": "s", "base": {"data.name": "imagefolder", "data.root": str(digits)},
                          "space": space}, "s.yaml")
    assert folder.base["data.name"] == "imagefolder"


# ---------------------------------------------------------------------------------------------
# fashionmnist from idx files


def _idx(path: Path, array: np.ndarray, gz: bool = True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if gz else open)(path.with_name(path.name + (".gz" if gz else "")), "wb").write(
        header + array.astype(np.uint8).tobytes())


def _fashion(folder: Path, gz: bool = True):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10
    for prefix, n in (("train", 20), ("t10k", 10)):
        _idx(folder / f"{prefix}-images-idx3-ubyte", x[:n], gz)
        _idx(folder / f"{prefix}-labels-idx1-ubyte", y[:n], gz)
    return x, y


@pytest.mark.parametrize("layout", ["debian", "torchvision"])
def test_fashionmnist_reads_idx_files(tmp_path, layout):
    folder = tmp_path if layout == "debian" else tmp_path / "FashionMNIST" / "raw"
    x, y = _fashion(folder, gz=layout == "debian")
    raw = data_mod.DATASETS["fashionmnist"](DataConfig(name="fashionmnist", root=str(tmp_path)))
    assert torch.equal(raw.train.x, torch.from_numpy(x[:20].astype(np.uint8)).unsqueeze(1))
    assert raw.train.y.tolist() == y[:20].tolist() and raw.test.y.tolist() == y[20:].tolist()
    assert raw.num_classes == 10 and raw.train.y.dtype == torch.int64
    data = data_mod.load_data(DataConfig(name="fashionmnist", root=str(tmp_path), batch_size=8), CPU, 0)
    assert data.input_shape == (1, 28, 28) and data.test.num_samples == 10


def test_fashionmnist_default_root_falls_back_to_the_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    _fashion(debian)
    monkeypatch.setattr(data_mod, "DEBIAN_FASHIONMNIST", debian)
    monkeypatch.chdir(tmp_path)  # no ./data here
    assert len(data_mod.DATASETS["fashionmnist"](DataConfig(name="fashionmnist")).train) == 20
    with pytest.raises(DatasetMissing) as info:  # another root is never replaced by the package's
        data_mod.DATASETS["fashionmnist"](DataConfig(name="fashionmnist", root=str(tmp_path / "elsewhere")))
    _one_line(info, "dataset-fashion-mnist", tmp_path / "elsewhere")


def test_a_truncated_idx_file_is_one_line(tmp_path):
    _fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(DatasetMissing) as info:
        data_mod.DATASETS["fashionmnist"](DataConfig(name="fashionmnist", root=str(tmp_path)))
    _one_line(info, path, "idx")


# ---------------------------------------------------------------------------------------------
# end to end


@pytest.mark.usefixtures("one_thread")
def test_an_image_folder_of_digits_trains_and_prunes_end_to_end(digits, tmp_path):
    cfg = ExperimentConfig.from_dict({**SMOKE, "data.name": "imagefolder", "data.root": str(digits),
                                      "data.batch_size": 16, "model.name": "lenet300", "model.width": 0.5,
                                      "runtime.device": "cpu", "runtime.cache_dir": str(tmp_path),
                                      "runtime.workdir": str(tmp_path / "run"), "prune.ratio": 0.5})
    m = run(cfg, log=lambda *a, **k: None)
    assert m["input_shape"] == [1, 28, 28] and m["num_classes"] == 10
    assert m["flops_nz_final"] < 0.6 * m["flops_base"] and 0 <= m["acc_final"] <= 100


def test_the_example_writes_train_and_test_folders(tmp_path):
    counts = _example().write_digits(tmp_path, per_class=5, test_fraction=0.4)
    assert counts == {"train": 30, "test": 20}
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == [str(k) for k in range(10)]
    with Image.open(tmp_path / "train" / "7" / "0004.png") as image:
        assert (image.mode, image.size) == ("L", (28, 28))


def test_a_reference_names_its_run_directory_without_its_path(tmp_path):
    from prune_core.cli import run_dir

    path = _opener_file(tmp_path, "ref-data-dir")
    cfg = ExperimentConfig.from_dict({"data.name": f"{path}:load", "runtime.output_dir": str(tmp_path / "out")})
    where = run_dir(cfg, resume=False)
    assert where.parent == tmp_path / "out" / "ref-data-dir.load"
    assert ":" not in where.name and where.name.startswith("resnet20_channel_ref-data-dir.load_")
