"""The worked example of README's "Bring your own": examples/bring_your_own.yaml, a plug-in
criterion and model, run through Ray with two workers and analysed beside the built-ins; and a
plug-in file that reaches a Ray worker where its path does not exist (a cluster node)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from prune_sweep.analyze_cli import main as analyze
from prune_sweep.launch_cli import main as launch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bring_your_own.yaml"
# a few steps of everything, and one seed: the example's grid (4 criteria x 2 ratios) as it is
TINY = ["train.epochs=1", "train.max_steps=3", "finetune.epochs=1", "finetune.max_steps=3", "data.limit_train=256",
        "runtime.latency_repeats=2", "runtime.latency_batch=2"]

pytestmark = pytest.mark.usefixtures("isolated_registries")  # tests/conftest.py: the example's names leave with it


SHIPPED = ("from prune_core import register_criterion\nfrom prune_core.pruning import Criterion\n"
           "@register_criterion('shipped_l1')\nclass Shipped(Criterion):\n    units = ('kernel',)\n"
           "    def weight_saliency(self, weight, grad):\n        return weight.detach().abs()\n")


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    """One Ray for the module, its job carrying a plug-in file as a launch joining a cluster does
    (``driver.init_ray``: ``runtime_env={"py_modules": shipped_paths(...)}``)."""
    from prune_core.plugins import shipped_paths

    plugin = tmp_path_factory.mktemp("shipped") / "shipped_criterion.py"
    plugin.write_text(SHIPPED)
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"py_modules": shipped_paths([str(plugin)])})
    yield plugin
    ray.shutdown()


def test_the_example_plugin_sweep_runs_on_two_workers_and_its_criterion_is_analysed_beside_the_builtins(tmp_path):
    flags = [a for s in TINY for a in ("--set", s)]
    assert launch([str(EXAMPLE), "--storage", str(tmp_path), "--seeds", "1", "--no-quiet-latency", *flags]) == 0
    exp = tmp_path / "bring_your_own"
    stored = yaml.safe_load((exp / "sweep.yaml").read_text())
    assert stored["base"]["runtime"]["plugins"] == [str(ROOT / "examples" / "bring_your_own.py")]
    assert stored["base"]["model"]["name"] == "tiny_cnn"
    assert (exp / "sweep.source.yaml").read_text() == EXAMPLE.read_text()  # what --resume compares a file with
    launch_record = json.loads((exp / "provenance.json").read_text())["launches"][0]["driver"]
    # with its digest; the record holds every plug-in this process imported (an earlier test's file
    # references too: ``plugins.loaded``)
    assert launch_record["plugins"][str(ROOT / "examples" / "bring_your_own.py")]
    assert analyze([str(exp)]) == 0
    results = pd.read_csv(exp / "analysis" / "results.csv")
    assert len(results) == 8 and set(results["status"]) == {"done"}
    assert set(results["prune.criterion"]) == {"linf", "l1", "taylor", "random"}
    # the plug-in's model was pruned and rebuilt exactly, whatever its criterion
    finals = [json.loads(line) for p in exp.glob("*/result.json") for line in p.read_text().splitlines()
              if '"stage": "done"' in line]
    assert len(finals) == 8 and max(r["rebuild_max_abs_diff"] for r in finals) <= 1e-4
    assert all(0.1 < r["flops_kept_dense"] < 0.75 for r in finals)  # 0.3 and 0.6 of the channels removed
    # one method compared over criteria: each criterion is a series with its own front and hypervolume
    hv = pd.read_csv(exp / "analysis" / "hypervolume.csv").set_index("method")
    assert set(hv.index) == {"all", "channel/linf", "channel/l1", "channel/taylor", "channel/random"}
    assert (hv["hv_flops"] > 0).all()
    front = pd.read_csv(exp / "analysis" / "pareto.csv")
    assert set(front[front["axis"] == "flops"]["front"]) == set(hv.index)


def test_a_plugin_file_reaches_a_worker_where_its_path_does_not_exist(local_ray, tmp_path, monkeypatch):
    """On a cluster the job carries the file; a worker whose node lacks the driver's path imports
    it by its module name from what the job carried."""
    from prune_core.plugins import shipped_paths
    from prune_sweep import driver

    def registered(entry: str) -> list:
        from prune_core.plugins import load_plugins
        from prune_core.pruning import accepted_criteria

        load_plugins([entry])
        return list(accepted_criteria("kernel"))

    gone = str(tmp_path / "gone" / "shipped_criterion.py")  # the path as a driver elsewhere knew it
    assert "shipped_l1" in ray.get(ray.remote(registered).remote(gone), timeout=120)
    # what the launcher hands Ray when it joins a cluster: the files, not an installed package
    assert shipped_paths([str(local_ray), "yaml"]) == [str(local_ray)]
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    assert driver.init_ray("ray://head:10001", False, False, plugins=[str(local_ray), "yaml"])
    assert calls[0]["runtime_env"] == {"py_modules": [str(local_ray)]}
    driver.init_ray("ray://head:10001", False, False, plugins=["yaml"])
    assert calls[1]["runtime_env"] is None


NET = ("from torch import nn\n\ndef build(num_classes, in_channels, image_size, width):\n"
       "    c = max(1, round(WIDE * width))\n"
       "    return nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),\n"
       "                         nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),\n"
       "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))\n")


def _own_sweep(folder: Path, name: str) -> Path:
    sweep = folder / f"{name}.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": name, "base": {"model": {"name": "nets/own_net.py:build"}, "prune": {"method": "channel"},
                               "runtime": {"device": "cpu"}},
        "space": {"prune.ratio": {"grid": [0.5]}}, "search": {"algorithm": "grid"}, "scheduler": "fifo",
        "resources": {"cpu": 1}}))
    return sweep


def test_a_model_file_named_in_a_sweep_runs_and_editing_it_trains_a_new_base(tmp_path, capsys):
    """model.name: nets/own_net.py:build (relative to the sweep file): trials build it on the workers;
    once the file is edited, the next sweep in the same storage trains a new base (an unchanged file
    keeps its base hash: tests/test_zoo.py), and the Ray workers that imported the old file run the
    new one."""
    (tmp_path / "nets").mkdir()
    net = tmp_path / "nets" / "own_net.py"
    net.write_text("WIDE = 8\n" + NET)
    flags = [a for s in TINY for a in ("--set", s)]
    storage = tmp_path / "store"

    def run(name: str) -> tuple:
        capsys.readouterr()
        assert launch([str(_own_sweep(tmp_path, name)), "--storage", str(storage), "--no-quiet-latency", *flags]) == 0
        out = capsys.readouterr().out
        (result,) = [json.loads(line) for p in (storage / name).glob("*/result.json")
                     for line in p.read_text().splitlines() if '"stage": "done"' in line]
        return [p.name for p in (storage / name / "base_cache").iterdir()], out, result

    first, _, result = run("own_a")
    assert result["rebuild_max_abs_diff"] <= 1e-4 and result["layer_channels_final"]["0"] == 4  # 8 at 0.5
    net.write_text("WIDE = 12\n" + NET)  # an edited builder
    edited, out, result = run("own_b")
    assert edited != first and "training 1 base model" in out
    assert result["layer_channels_final"]["0"] == 6


def test_torchvision_models_on_an_image_folder_of_the_digits_sweep_through_ray_to_fronts(tmp_path):
    """sweeps/torchvision_digits.yaml with two small torchvision CNNs in place of its resnet18 and
    vit_b_16 (pruning ViTs is tests/test_model_families.py's; a vit_b_16 sweep here took 45 s): the
    embedded digits written as an image folder (examples/digits_imagefolder.py) and resized to
    32 px, models built as torchvision builds them, pruned, rebuilt exactly, and analysed with a
    front per model."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_imagefolder", ROOT / "examples" / "digits_imagefolder.py")
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    assert writer.write_digits(tmp_path / "digits", per_class=10) == {"train": 80, "test": 20}
    raw = yaml.safe_load((ROOT / "sweeps" / "torchvision_digits.yaml").read_text())
    models = ["torchvision:resnet18", "torchvision:squeezenet1_1"]
    raw["space"] = {"model.name": {"grid": models}, "prune.ratio": {"grid": [0.3]}}
    raw["base"]["data"]["root"] = str(tmp_path / "digits")
    sweep = tmp_path / "torchvision_digits.yaml"
    sweep.write_text(yaml.safe_dump(raw))
    flags = [a for s in TINY for a in ("--set", s)]
    assert launch([str(sweep), "--storage", str(tmp_path / "store"), "--no-quiet-latency", *flags]) == 0
    exp = tmp_path / "store" / "torchvision_digits"
    assert analyze([str(exp)]) == 0
    results = pd.read_csv(exp / "analysis" / "results.csv")
    assert set(results["status"]) == {"done"} and len(results) == 2
    assert set(results["model.name"]) == set(models)
    assert (results["rebuild_max_abs_diff"] <= 1e-4).all()
    assert (results["flops_final"] < results["flops_base"]).all()
    hv = pd.read_csv(exp / "analysis" / "hypervolume.csv").set_index("method")
    assert {"channel @ torchvision.resnet18", "channel @ torchvision.squeezenet1_1"} <= set(hv.index)
