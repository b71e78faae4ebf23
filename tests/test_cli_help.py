"""The three command lines explain themselves: every flag's help shows its default, the name flags
list and enforce their registries, ``--version`` prints the installed version, the first seed
project's spellings are accepted, and ``launch.py --strict`` fails a sweep with an errored trial."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch import nn

import prune_core
from prune_core import CRITERIA, DATASETS, METHODS, MODELS
from prune_core import cliargs
from prune_core.cli import build_parser as core_parser
from prune_core.cli import config_from_args
from prune_core.models import build_model
from prune_core.sections import DEFAULTS
from prune_sweep import driver
from prune_sweep.analyze_cli import build_parser as analyze_parser
from prune_sweep.launch_cli import build_parser as sweep_parser
from prune_sweep.storage import Store

ROOT = Path(__file__).resolve().parents[1]
PARSERS = {"prune-core": core_parser, "prune-sweep": sweep_parser, "prune-analyze": analyze_parser}


def _flags(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One flag's help as ``--help`` prints it, unwrapped."""
    return parser._get_formatter()._expand_help(action)


@pytest.mark.parametrize("prog", PARSERS)
def test_every_flag_has_help_that_shows_its_default(prog):
    parser = PARSERS[prog]()
    assert len(_flags(parser)) >= 4
    for action in _flags(parser):
        name = "/".join(action.option_strings) or action.dest
        text = _help(parser, action)
        assert action.help and action.help.strip(), f"{prog} {name}: no help"
        assert "default" in text and "None" not in text, f"{prog} {name}: {text}"


def test_a_flag_that_sets_a_config_key_shows_the_config_default():
    parser = core_parser()
    config_flags = [a for a in _flags(parser) if a.dest in DEFAULTS and a.dest != "prune.criterion"]
    assert len(config_flags) >= 20
    for action in config_flags:
        assert action.default is None  # the config supplies it, after --config and --set
        value = cliargs.shown(DEFAULTS[action.dest])
        shown = f"{action.dest}={value}" if action.nargs == 0 else value
        assert _help(parser, action).endswith(f"(default: {shown})"), action.option_strings


@pytest.mark.parametrize("flag,registry", [("--dataset", DATASETS), ("--model", MODELS),
                                           ("--pruning-method", METHODS), ("--criterion", CRITERIA)])
def test_name_flags_list_and_enforce_their_registry(flag, registry, capsys):
    parser = core_parser()
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    assert sorted(action.choices or registry) == sorted(registry)  # --model takes references too
    assert ", ".join(sorted(registry)) in _help(parser, action)
    with pytest.raises(SystemExit) as exit:
        parser.parse_args([flag, "nonesuch"])
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "'nonesuch'" in lines[0], lines
    assert all(repr(name) in lines[0] for name in registry), lines[0]


@pytest.mark.parametrize("command,prog", [([sys.executable, "-m", "prune_core"], "prune-core"),
                                          ([sys.executable, "launch.py"], "prune-sweep"),
                                          ([sys.executable, "analyze.py"], "prune-analyze")])
def test_version_prints_the_installed_version_and_exits_0(command, prog):
    proc = subprocess.run([*command, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{prog} {metadata.version('prune-sweep')}\n"


def test_version_falls_back_to_the_package_version(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cliargs.metadata, "version", missing)
    assert cliargs.version("prune_core") == "0+unknown"
    monkeypatch.setattr(prune_core, "__version__", "9.8.7", raising=False)
    assert cliargs.version("prune_core") == "9.8.7"


def test_seed_spellings_are_read_as_the_registry_names():
    args = core_parser().parse_args(["--pruning-method", "intra-kernel", "--model", "vgg16_bn"])
    assert vars(args)["prune.method"] == "intra_kernel" and vars(args)["model.name"] == "vgg16"
    cfg = config_from_args(core_parser().parse_args(["--pruning-method", "intra-kernel", "--model", "vgg16"]))
    assert cfg.prune.method == "intra_kernel" and cfg.model.name == "vgg16"
    # the registry's vgg16 is the batch-norm VGG-16: a norm after each of its 13 convolutions
    net = build_model("vgg16", num_classes=10, in_channels=3, image_size=32, width=0.125)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 13


# ---------------------------------------------------------------------------------------------
# launch.py --strict: the exit code summarize decides


def _trial(name: str, error: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(metrics={"trial_id": name, "stage": "epoch" if error else "done"},
                           error=RuntimeError(error) if error else None, path=f"/exp/{name}")


class _Results(list):
    """What ``summarize`` reads of Tune's ResultGrid."""

    @property
    def num_errors(self) -> int:
        return sum(r.error is not None for r in self)

    @property
    def num_terminated(self) -> int:
        return sum(r.error is None for r in self)


def test_strict_exits_1_when_any_trial_errored(tmp_path, capsys):
    assert sweep_parser().parse_args(["--strict"]).strict and not sweep_parser().parse_args([]).strict
    exp = Store(str(tmp_path))
    mixed = _Results([_trial("a"), _trial("b", "CUDA out of memory")])
    assert driver.summarize(mixed, exp, 2, "hint") == 0  # a trial finished
    assert driver.summarize(mixed, exp, 2, "hint", strict=True) == 1
    assert "b: CUDA out of memory" in capsys.readouterr().out
    clean = _Results([_trial("a"), _trial("c")])
    assert driver.summarize(clean, exp, 2, "hint", strict=True) == 0
    assert driver.summarize(_Results([_trial("b", "boom")]), exp, 1, "hint") == 1


@pytest.mark.parametrize("argv,needle", [(["--budgets", "3"], "'3': expected fractions"),
                                         ([], "give at least one EXPERIMENT_DIR")])
def test_analyze_argument_errors_are_one_line(argv, needle, capsys):
    from prune_sweep.analyze_cli import main

    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prune-analyze: error: ") and needle in lines[0], lines
