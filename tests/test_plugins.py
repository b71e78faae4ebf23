"""Plug-ins: a method, criterion, model or dataset registered from outside the package through the
doors the built-ins use, its rules read from its one record everywhere, and a broken plug-in
refused in one line before anything runs."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import prune_core
from prune_core.config import ConfigError, ExperimentConfig
from prune_core.models import build_model
from prune_core.plugins import PluginError, load_plugins
from prune_core.pruning import (CRITERIA, METHODS, UNITS, FilterImportance, PruneContext, accepted_criteria,
                                prune_model, rebuild)
from prune_core.pruning.criteria import FilterNormImportance
from prune_core.pruning.graph import build_graph
from prune_sweep.spec import SweepError, parse_sweep

ROOT = Path(__file__).resolve().parents[1]

# a weight-unit method that prunes at initialisation and trains from scratch, reads a flag of its
# own, checks its own config, and a kernel criterion: every rule a record holds, from one file
PLUGIN = '''
import torch
from prune_core import register_criterion, register_method, register_model
from prune_core.errors import ConfigError
from prune_core.pruning import CRITERIA, Criterion, PruningPlan
from prune_core.pruning.masks import apply_masks, weight_layers
from torch import nn


def check(p):
    if p.ratio > 0.9:
        raise ConfigError(f"prune.ratio={p.ratio}: expected at most 0.9 for plug_magnitude")


@register_method("plug_magnitude", unit="weight", base="init", calib_batches=2, flags=("shuffle",), check=check)
def plug_magnitude(model, ctx):
    p = ctx.cfg.prune
    criterion = CRITERIA[p.criterion]()
    masks = {}
    for name, layer in weight_layers(model):
        scores = criterion.weight_saliency(layer.weight, None)
        k = int(round(p.ratio * scores.numel()))
        keep = torch.ones(scores.numel())
        keep[scores.flatten().argsort()[:k]] = 0
        masks[name] = keep.reshape(layer.weight.shape)
    return PruningPlan("plug_magnitude", ratio=p.ratio, masks=apply_masks(model, masks), stats={"unit_ratio": p.ratio})


@register_criterion("plug_kernel_max")
class KernelMax(Criterion):
    units = ("kernel",)

    def weight_saliency(self, weight, grad):
        return weight.detach().abs()


@register_model("plug_net")
def plug_net(num_classes, in_channels, image_size, width):
    c = max(1, round(8 * width))
    return nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
'''


pytestmark = pytest.mark.usefixtures("isolated_registries")  # tests/conftest.py


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plug") / "plug_rules.py"
    path.write_text(PLUGIN)
    assert load_plugins([str(path)]) == ["plug_rules"]
    assert load_plugins([str(path)]) == ["plug_rules"]  # idempotent: a reused worker imports nothing twice
    return path


def test_a_plugin_method_is_one_record_and_every_rule_is_read_from_it(plugin):
    spec = METHODS["plug_magnitude"]
    assert (spec.unit, spec.base, spec.retrain, spec.calib_batches) == ("weight", "init", "train", 2)
    # a method of an open unit takes every criterion that scores it, its first as the default
    assert accepted_criteria("plug_magnitude") == tuple(c for c, cls in CRITERIA.items() if "weight" in cls.units)
    cfg = ExperimentConfig.from_dict({"prune.method": "plug_magnitude"})
    assert (cfg.prune.criterion, cfg.prune.calib_batches) == ("l1", 2)
    with pytest.raises(ConfigError, match=r"^prune.ratio=0.95: expected at most 0.9 for plug_magnitude$"):
        ExperimentConfig.from_dict({"prune.method": "plug_magnitude", "prune.ratio": 0.95})
    with pytest.raises(ConfigError, match=r"^prune.target='latency': expected unit or flops for method "
                                          r"plug_magnitude \(latency: channel\)$"):
        ExperimentConfig.from_dict({"prune.method": "plug_magnitude", "prune.target": "latency"})
    with pytest.raises(ConfigError, match=r"^prune.lamp=True: expected false for method plug_magnitude"):
        ExperimentConfig.from_dict({"prune.method": "plug_magnitude", "prune.scope": "global", "prune.lamp": True})
    with pytest.raises(ConfigError, match=r"^prune.criterion='bn_scale': expected one of l1, l2, taylor, random"):
        ExperimentConfig.from_dict({"prune.method": "plug_magnitude", "prune.criterion": "bn_scale"})
    # a flag a method declares is refused with every method that does not
    ExperimentConfig.from_dict({"prune.method": "plug_magnitude", "prune.shuffle": True})
    with pytest.raises(ConfigError, match=r"^prune.shuffle=True: expected false unless prune.method is imp or snip or "
                                          r"plug_magnitude$"):
        ExperimentConfig.from_dict({"prune.method": "kernel", "prune.shuffle": True})
    with pytest.raises(ConfigError, match=r"^prune.reinit=True: expected false unless prune.method is imp$"):
        ExperimentConfig.from_dict({"prune.method": "plug_magnitude", "prune.reinit": True})


def test_provenance_names_the_plugins_a_run_imported_with_their_files_digests(plugin):
    import hashlib

    from prune_core import provenance

    recorded = provenance.record("cpu")["plugins"]
    assert recorded[str(plugin)] == hashlib.sha256(plugin.read_bytes()).hexdigest()[:16]


def test_a_plugin_criterion_joins_every_method_of_its_unit(plugin):
    assert "plug_kernel_max" in accepted_criteria("kernel") and "plug_kernel_max" in accepted_criteria("intra_kernel")
    assert "plug_kernel_max" not in accepted_criteria("channel") + accepted_criteria("plug_magnitude")
    cfg = ExperimentConfig.from_dict({"prune.method": "kernel", "prune.criterion": "plug_kernel_max", "prune.ratio": 0.5})
    model, x = build_model("plug_net", 10, 1, 28), torch.randn(2, 1, 28, 28)
    plan = prune_model(model, PruneContext(cfg, example_input=x))
    assert plan.stats["unit_ratio"] == pytest.approx(0.5, abs=0.02)


def test_the_pipeline_reads_the_record_a_method_at_initialisation_trains_from_scratch(plugin, tmp_path):
    cfg = ExperimentConfig.from_dict({
        "data.name": "synthetic", "data.image_size": 8, "data.channels": 1, "data.num_samples": 128,
        "data.batch_size": 32, "model.name": "plug_net", "train.epochs": 2, "train.max_steps": 2,
        "finetune.epochs": 1, "prune.method": "plug_magnitude", "prune.ratio": 0.5, "prune.bn_recalib_batches": 1,
        "runtime.device": "cpu", "runtime.latency_repeats": 1, "runtime.latency_batch": 2,
        "runtime.cache_dir": str(tmp_path / "cache"), "runtime.progress": "off", "runtime.plugins": [str(plugin)]})
    metrics = prune_core.run(cfg)
    # base "init": the trained base is not what it prunes; retrain "train": train.epochs from scratch
    assert metrics["epochs_base"] == 0
    assert metrics["finetune_epochs"] == cfg.train.epochs
    assert metrics["flops_kept_effective"] < 0.8


def test_filter_importance_ranks_as_the_l1_filter_norm(one_thread):
    model = build_model("resnet20", 10, 3, 32).eval()
    graph = build_graph(model, torch.randn(2, 3, 32, 32))
    generic, reference = FilterImportance(lambda rows: rows.abs().sum(1)), FilterNormImportance(p=1)
    for group in graph.channel_groups():
        assert torch.allclose(generic(group.group).float(), reference(group.group).float(), rtol=1e-5)


def test_broken_plugins_are_refused_in_one_line_naming_them(tmp_path):
    raises = tmp_path / "raises_on_import.py"
    raises.write_text("x = 1 / 0\n")
    with pytest.raises(PluginError, match=rf"^plugin {raises}: ZeroDivisionError: division by zero$"):
        load_plugins([str(raises)])
    with pytest.raises(PluginError, match=r"^plugin .*nowhere\.py: no such file; expected a \.py file"):
        load_plugins([str(tmp_path / "nowhere.py")])
    with pytest.raises(PluginError, match=r"^plugin no_such_plugin_module: no module named 'no_such_plugin_module'"):
        load_plugins(["no_such_plugin_module"])
    taken = tmp_path / "takes_l1.py"
    taken.write_text("from prune_core import register_criterion\nfrom prune_core.pruning import Criterion\n"
                     "@register_criterion('l1')\nclass Mine(Criterion):\n    units = ('channel',)\n")
    with pytest.raises(PluginError, match=r"^plugin .*takes_l1.py: ConfigError: criterion 'l1' is already registered "
                                          r"\(by prune_core.pruning.criteria\); choose another name$"):
        load_plugins([str(taken)])
    (tmp_path / "sub").mkdir()
    shadow = tmp_path / "sub" / "yaml.py"  # a module name another module holds
    shadow.write_text("")
    with pytest.raises(PluginError, match=r"^plugin .*yaml.py: its module name 'yaml' is taken by .*; rename the file$"):
        load_plugins([str(shadow)])
    with pytest.raises(ConfigError, match=r"^model name 'My-Net': expected lowercase letters"):
        prune_core.register_model("My-Net")


def test_an_edited_model_plugin_trains_a_new_base_and_a_criterion_plugin_does_not(tmp_path):
    path = tmp_path / "edited_net.py"
    path.write_text("from prune_core import register_model\nfrom torch import nn\n"
                    "@register_model('edited_net')\ndef edited_net(nc, cin, size, width):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(cin * size * size, nc))\n")
    cfg = ExperimentConfig.from_dict({"model.name": "edited_net", "runtime.plugins": [str(path)]})
    before = cfg.base_hash()
    assert cfg.base_key()["model"]["code"]
    path.write_text(path.read_text() + "# a changed line\n")
    assert cfg.base_hash() != before
    builtin = ExperimentConfig.from_dict({"model.name": "resnet20"})
    assert "code" not in builtin.base_key()["model"] and "code" not in builtin.base_key()["data"]
    # runtime.plugins itself is not part of a base: a criterion plug-in shares the built-ins' bases
    assert builtin.base_hash() == builtin.replace(**{"runtime.plugins": [str(path)]}).base_hash()



def test_a_plugin_file_edited_in_a_running_process_is_imported_again_with_its_names(tmp_path):
    """A long-lived process (a Ray worker of an earlier sweep, a notebook) runs the code its base
    key was hashed from: the edited file is imported again, its names registered anew."""
    from prune_core.models import build_model

    path = tmp_path / "live_net.py"
    code = ("from prune_core import register_model\nfrom torch import nn\n@register_model('live_net')\n"
            "def live_net(nc, cin, size, width):\n    return nn.Sequential(nn.Flatten(), nn.Linear(cin * size * size, {}))\n")
    path.write_text(code.format("nc"))
    ExperimentConfig.from_dict({"model.name": "live_net", "runtime.plugins": [str(path)]})
    assert build_model("live_net", 10, 1, 4)[1].out_features == 10
    path.write_text(code.format("nc + 1"))
    ExperimentConfig.from_dict({"model.name": "live_net", "runtime.plugins": [str(path)]})  # no "already registered"
    assert build_model("live_net", 10, 1, 4)[1].out_features == 11


def sweep_file(tmp_path: Path, **extra) -> Path:
    raw = {"name": "plugged", "base": {"data.name": "mnist5k"}, "space": {"prune.ratio": {"grid": [0.3]}}, **extra}
    path = tmp_path / "plugged.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_sweep_imports_its_plugins_first_and_stores_them_for_every_trial(tmp_path):
    (tmp_path / "sweep_side.py").write_text(  # named relative to the sweep file
        "from prune_core import register_model\nfrom torch import nn\n@register_model('sweep_net')\n"
        "def sweep_net(nc, cin, size, width):\n    return nn.Sequential(nn.Conv2d(cin, 4, 3), nn.ReLU(), "
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, nc))\n")
    path = sweep_file(tmp_path, plugins=["sweep_side.py"], base={"model.name": "sweep_net"})
    sweep = parse_sweep(yaml.safe_load(path.read_text()), str(path))
    assert sweep.base["runtime.plugins"] == [str(tmp_path / "sweep_side.py")]
    stored = sweep.to_yaml()
    assert stored["base"]["runtime"]["plugins"] == [str(tmp_path / "sweep_side.py")]
    again = parse_sweep(yaml.safe_load(yaml.safe_dump(stored)), "sweep.yaml")  # --resume reads it back
    assert again.base["runtime.plugins"] == sweep.base["runtime.plugins"]
    with pytest.raises(SweepError, match=r"space.runtime.plugins: plug-ins are listed under plugins: at the top of the file; not swept$"):
        parse_sweep({"name": "x", "space": {"runtime.plugins": {"grid": [["a.py"]]}}}, "s.yaml")


def test_a_plugin_that_raises_stops_the_launch_in_one_line_before_ray_starts(tmp_path, capsys):
    import ray

    from prune_sweep.launch_cli import main

    (tmp_path / "broken.py").write_text("raise RuntimeError('cannot find my weights')\n")
    path = sweep_file(tmp_path, plugins=["broken.py"])
    assert main([str(path), "--storage", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"prune-sweep: error: {path}: plugins: plugin {tmp_path / 'broken.py'}: "
                   "RuntimeError: cannot find my weights")
    assert not ray.is_initialized() and not (tmp_path / "store").exists()


def test_prune_core_flags_accept_plugin_names_and_refuse_a_broken_plugin(plugin, tmp_path, capsys):
    from prune_core import cli

    cli._load_plugins(["--plugin", str(plugin)])
    args = cli.build_parser().parse_args(["--plugin", str(plugin), "--pruning-method", "plug_magnitude",
                                          "--model", "plug_net", "--criterion", "plug_kernel_max"])
    assert (getattr(args, "prune.method"), getattr(args, "runtime.plugins")) == ("plug_magnitude", [str(plugin)])
    (tmp_path / "broken_cli.py").write_text("import no_such_dependency_of_the_plugin\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--plugin", str(tmp_path / "broken_cli.py"), "--smoke-test"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"prune-core: error: plugin {tmp_path / 'broken_cli.py'}: ModuleNotFoundError: No module named "
        "'no_such_dependency_of_the_plugin'"]


# the modules that once held rules about particular methods now read them from the records
READ_THE_REGISTRY = ("prune_core/sections.py", "prune_core/config.py", "prune_core/pipeline.py",
                     "prune_core/pruning/masks.py", "prune_core/pruning/__init__.py", "prune_core/pruning/_base.py",
                     "prune_sweep/fake_sweep.py")


@pytest.mark.parametrize("path", READ_THE_REGISTRY)
def test_no_module_outside_a_method_file_names_a_method(path):
    """Method names that are not also unit names (channel, kernel) or a word (none) appear in no
    string of these modules' code (docstrings and comments aside); fake_sweep's simulated curves
    are data keyed by method and are exempt there."""
    tree = ast.parse((ROOT / path).read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    shapes = {id(k) for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "SHAPES"
              for k in n.value.keys}
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and id(n) not in docstrings | shapes and n.value in set(METHODS) - set(UNITS) - {"none"}}
    assert not named, f"{path} names methods {sorted(named)}: read their records (METHODS[name]) instead"
    assert "prune.method ==" not in (ROOT / path).read_text().replace("cfg.", "")


@pytest.mark.parametrize("kwargs, message", [
    ({"unit": "blob"}, r"unit='blob': expected one of channel, kernel, weight$"),
    ({"unit": "weight", "flags": ("ratio",)}, r"flags=\('ratio',\): expected boolean \(or mapping\) prune keys, lamp, shuffle, reinit, "
     r"stage_ratios$"),
    ({"unit": "weight", "calib_batches": 0}, r"calib_batches=0: expected a positive integer$"),
    ({"unit": "weight", "targets": ("flops",)}, r"targets=\('flops',\): expected unit and any of flops, latency$"),
    ({"unit": "weight", "criteria": ("l1",), "default_criterion": "l2"}, r"default_criterion='l2': expected one of"),
])
def test_a_bad_method_record_is_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=r"^method 'bad_record': " + message):
        prune_core.register_method("bad_record", **kwargs)(lambda model, ctx: None)
    assert "bad_record" not in METHODS


def test_a_bad_criterion_is_refused_in_one_line():
    from prune_core.pruning import Criterion

    with pytest.raises(ConfigError, match=r"^criterion 'no_units': units=\(\): expected one or more of channel"):
        prune_core.register_criterion("no_units")(type("NoUnits", (Criterion,), {}))
    with pytest.raises(ConfigError, match=r"^criterion 'not_a_class': expected a subclass of "):
        prune_core.register_criterion("not_a_class")(lambda weight, grad: weight)
    assert "no_units" not in CRITERIA and "not_a_class" not in CRITERIA


def test_an_installed_package_offers_plugins_through_its_entry_points(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from prune_core import plugins

    (tmp_path / "installed_plug.py").write_text(
        "from prune_core import register_criterion\nfrom prune_core.pruning import Criterion\n"
        "@register_criterion('installed_random')\nclass R(Criterion):\n    units = ('weight',)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint("installed", "installed_plug", plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: found if group == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    ExperimentConfig.from_dict({"prune.method": "imp"})  # any config loads them, once
    assert "installed_random" in CRITERIA
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    found[:] = [EntryPoint("broken", "no_such_installed_plug", plugins.ENTRY_POINT_GROUP)]
    with pytest.raises(PluginError, match=r"^plugin no_such_installed_plug \(entry point broken of prune_sweep.plugins\): "
                                          r"ModuleNotFoundError"):
        load_plugins([])


def test_a_plugin_file_never_shadows_a_module_that_is_not_imported_yet(tmp_path):
    import sys

    assert "tabnanny" not in sys.modules or pytest.skip("tabnanny already imported")
    shadow = tmp_path / "tabnanny.py"  # the standard library's, not imported by anything here
    shadow.write_text("")
    with pytest.raises(PluginError, match=r"^plugin .*tabnanny.py: its module name 'tabnanny' is taken by .*tabnanny"):
        load_plugins([str(shadow)])
    assert "tabnanny" not in sys.modules
