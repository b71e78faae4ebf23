"""Bad input, careless or hostile, to each command line: every case ends in one line on stderr
naming the bad value, with the documented exit code (README "Bad input"), and no traceback.

Each row: an id, the command (``launch``: ``launch.py``'s ``main``; ``core``: ``prune-core``'s;
``analyze``: ``analyze.py``'s), the files the case writes into a fresh folder (name -> text or
bytes; ``{d}`` in argv stands for that folder), the arguments, the exit code and a pattern the one
line must match. Nothing here starts Ray or trains: every case is refused before either.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Callable, Dict, List, Tuple, Union

import pytest
import yaml

from prune_core.cli import main as core_main
from prune_sweep.analyze_cli import main as analyze_main
from prune_sweep.launch_cli import main as launch_main

MAINS: Dict[str, Callable[[List[str]], int]] = {"launch": launch_main, "core": core_main, "analyze": analyze_main}
PREFIX = {"launch": "prune-sweep: error: ", "core": "prune-core: error: ", "analyze": "prune-analyze: error: "}

GOOD: Dict[str, Any] = {
    "name": "h",
    "base": {"data": {"name": "mnist5k"}, "model": {"name": "lenet300"}},
    "space": {"prune.method": {"grid": ["channel", "imp"]},
              "prune.ratio": {"grid": [0.3, 0.5]},
              "prune.criterion": [{"grid": ["l1", "l2"], "when": {"prune.method": ["channel"]}}]},
}
Files = Dict[str, Union[str, bytes]]


def sweep(**changes: Any) -> Files:
    """GOOD with top-level keys replaced (None removes one); ``space__KEY`` / ``base__KEY``
    replace one entry of those sections (dots in KEY written as a single underscore)."""
    out = copy.deepcopy(GOOD)
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        target = out.setdefault(section, {}) if sub else out
        name = sub.replace("_", ".", 1) if sub else section
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return {"s.yaml": yaml.safe_dump(out, sort_keys=False)}


def text(body: Union[str, bytes]) -> Files:
    return {"s.yaml": body}


def good_plus(line: str) -> Files:
    """GOOD's YAML with ``line`` appended."""
    return {"s.yaml": yaml.safe_dump(GOOD, sort_keys=False) + line}


def bomb(levels: int = 9) -> str:
    """A billion-laughs anchor chain: 9 ** levels strings from a few hundred bytes."""
    rows = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


BOMB_DESCRIPTION = "x: \n" + bomb() + "name: h\ndescription: *a8\n"
DRY = ["{d}/s.yaml", "--dry-run", "--storage", "{d}/st"]
SWEEP = ["{d}/s.yaml", "--storage", "{d}/st"]
NAME = "expected a name of letters, digits"
TOO_MANY = r"more than 100,000 trials .*--max-trials N"
NEVER = "never takes this value here, so the condition never holds"
FAST = ["--dataset", "mnist5k", "--model", "lenet300", "--output-dir", "{d}/out"]

Case = Tuple[str, str, Files, List[str], int, str]
CASES: List[Case] = [
    # ---- the sweep file as bytes and YAML ---------------------------------------------------
    ("missing file", "launch", {}, ["{d}/nope.yaml", "--dry-run"], 2, r"nope.yaml: cannot read it \(No such file"),
    ("a folder", "launch", {"d.yaml/x": ""}, ["{d}/d.yaml", "--dry-run"], 2, r"d.yaml: cannot read it \(Is a directory"),
    ("empty file", "launch", text(""), DRY, 2, r"s.yaml: expected a mapping with keys name"),
    ("a list", "launch", text("- 1\n- 2\n"), DRY, 2, r"s.yaml: expected a mapping with keys"),
    ("a scalar", "launch", text("hello\n"), DRY, 2, r"s.yaml: expected a mapping with keys"),
    ("png bytes", "launch", text(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), DRY, 2, r"binary data \(a NUL byte\)"),
    ("utf-16", "launch", text("name: h\n".encode("utf-16")), DRY, 2, r"s.yaml: (binary data|not UTF-8)"),
    ("latin-1", "launch", text("name: caf\xe9\n".encode("latin-1")), DRY, 2, r"not UTF-8 text \(byte 9\)"),
    ("over 1 MiB", "launch", text("# " + "x" * (1 << 20) + "\n"), DRY, 2, r"expected a file under 1,048,576 bytes"),
    ("unclosed bracket", "launch", text("name: [h\n"), DRY, 2, r"s.yaml: not YAML \(while parsing"),
    ("tab indent", "launch", text("name: h\nbase:\n\tmodel: x\n"), DRY, 2, r"s.yaml: not YAML"),
    ("python tag", "launch", text("name: !!python/object/apply:os.system [echo hi]\n"), DRY, 2,
     r"not YAML \(could not determine a constructor"),
    ("alias bomb in description", "launch", text(BOMB_DESCRIPTION), DRY, 2, r"more than 100,000 values once aliases"),
    ("alias bomb in a grid", "launch", text(bomb() + "space:\n  prune.ratio: {grid: *a8}\n"), DRY, 2,
     r"more than 100,000 values once aliases"),
    ("alias bomb as the name", "launch", text(bomb() + "name: *a8\n"), DRY, 2, r"more than 100,000 values once"),
    ("alias bomb in loggers", "launch", text(bomb() + "loggers: *a8\n"), DRY, 2, r"more than 100,000 values once"),
    ("5,000 nested lists", "launch", text("name: " + "[" * 5000 + "]" * 5000 + "\n"), DRY, 2,
     r"nested deeper than 50 levels"),
    ("100 nested mappings", "launch", text("".join(" " * i + f"k{i}:\n" for i in range(100))), DRY, 2,
     r"line \d+: nested deeper than 50 levels"),
    ("200,000 values", "launch", text("name: h\ndescription: [" + "1," * 200_000 + "1]\n"), DRY, 2,
     r"more than 100,000 values; expected at most 100,000"),
    ("duplicate top key", "launch", good_plus("name: other\n"), DRY, 2, r"line \d+: key 'name' is given twice"),
    ("duplicate base key", "launch", text("name: h\nbase:\n  model.name: lenet300\n  model.name: resnet20\n"), DRY,
     2, r"key 'model.name' is given twice"),
    ("duplicate space key", "launch",
     text("name: h\nspace:\n  prune.ratio: {grid: [0.3]}\n  prune.ratio: {grid: [0.5]}\n"), DRY, 2,
     r"key 'prune.ratio' is given twice"),
    # ---- top-level keys -----------------------------------------------------------------------
    ("unknown top key", "launch", sweep(nmae="x"), DRY, 2, r"s.yaml: nmae: unknown key; a sweep file has name"),
    ("no name", "launch", sweep(name=None), DRY, 2, rf"s.yaml: name: None: {NAME}"),
    ("name with a slash", "launch", sweep(name="a/b"), DRY, 2, rf"name: 'a/b': {NAME}"),
    ("name ..", "launch", sweep(name=".."), DRY, 2, rf"name: '..': {NAME}"),
    ("name absolute", "launch", sweep(name="/etc"), DRY, 2, rf"name: '/etc': {NAME}"),
    ("name a number", "launch", sweep(name=12), DRY, 2, rf"name: 12: {NAME}"),
    ("name with a space", "launch", sweep(name="a b"), DRY, 2, rf"name: 'a b': {NAME}"),
    ("name 5,000 characters", "launch", sweep(name="n" * 5000), DRY, 2, r"name: 'n+'\.\.\. \(5000 characters\)"),
    ("name empty", "launch", sweep(name=""), DRY, 2, rf"name: '': {NAME}"),
    ("base a list", "launch", sweep(base=[1, 2]), DRY, 2, r"base: expected a mapping of config keys"),
    ("base unknown key", "launch", sweep(base__model_nmae="x"), DRY, 2, r"model.nmae"),
    ("base unknown model", "launch", sweep(base__model={"name": "nope"}), DRY, 2,
     r"base: model.name='nope': expected one of"),
    ("base unknown dataset", "launch", sweep(base__data={"name": "nope"}), DRY, 2, r"data.name='nope': expected one of"),
    ("base reserved key", "launch", sweep(base__runtime_workdir="x"), DRY, 2,
     r"base.runtime.workdir: set by launch.py"),
    ("base lr inf", "launch", sweep(base__finetune={"lr": float("inf")}), DRY, 2, r"finetune.lr=inf: expected a number"),
    ("base lr nan", "launch", sweep(base__train={"lr": ".nan"}), DRY, 2, r"train.lr='.nan': expected a number"),
    ("base epochs a word", "launch", sweep(base__train={"epochs": "many"}), DRY, 2,
     r"train.epochs='many': expected an integer"),
    ("base ratio 1.5", "launch", sweep(base__prune={"ratio": 1.5}, space__prune_ratio=None), DRY, 2,
     r"prune.ratio=1.5: expected a number in \[0, 1\)"),
    ("plugins: a missing module", "launch", sweep(plugins=["no_such_module_xyz"]), DRY, 2,
     r"plugins: .*no_such_module_xyz"),
    ("plugins: a missing file", "launch", sweep(plugins=["missing_plugin.py"]), DRY, 2, r"plugins: .*missing_plugin.py"),
    ("device cuda without a gpu", "launch", sweep(base__runtime={"device": "cuda"}), DRY, 2,
     r"runtime.device: cuda needs resources.gpu > 0"),
    # ---- space ----------------------------------------------------------------------------------
    ("no space", "launch", sweep(space=None), DRY, 2, r"space: expected a mapping of dotted config keys"),
    ("space empty", "launch", sweep(space={}), DRY, 2, r"space: expected a mapping of dotted config keys"),
    ("space a list", "launch", sweep(space=[1]), DRY, 2, r"space: expected a mapping"),
    ("space unknown key", "launch", sweep(space__prune_ratoi={"grid": [0.3]}), DRY, 2, r"prune.ratoi"),
    ("space a bare value", "launch", sweep(space__prune_ratio=0.5), DRY, 2,
     r"space.prune.ratio: 0.5: expected a distribution such as"),
    ("space unknown distribution", "launch", sweep(space__prune_ratio={"normal": [0, 1]}), DRY, 2,
     r"'normal': expected exactly one of"),
    ("space two distributions", "launch", sweep(space__prune_ratio={"grid": [0.3], "choice": [0.5]}), DRY, 2,
     r"'grid, choice': expected exactly one of"),
    ("grid empty", "launch", sweep(space__prune_ratio={"grid": []}), DRY, 2, r"prune.ratio.grid: \[\]: expected a non-empty"),
    ("grid a scalar", "launch", sweep(space__prune_ratio={"grid": 0.3}), DRY, 2, r"grid: 0.3: expected a non-empty list"),
    ("grid bad value", "launch", sweep(space__prune_ratio={"grid": [0.3, 7]}), DRY, 2, r"prune.ratio=7"),
    ("grid unknown method", "launch", sweep(space__prune_method={"grid": ["channel", "nomethod"]}), DRY, 2,
     r"prune.method='nomethod'"),
    ("uniform one end", "launch", sweep(space__prune_ratio={"uniform": [0.3]}), DRY, 2, r"expected \[low, high\]"),
    ("uniform reversed", "launch", sweep(space__prune_ratio={"uniform": [0.5, 0.3]}), DRY, 2, r"expected low < high"),
    ("uniform words", "launch", sweep(space__prune_ratio={"uniform": ["a", "b"]}), DRY, 2, r"'a': expected a number"),
    ("uniform infinite", "launch", sweep(space__finetune_lr={"uniform": [0.01, float("inf")]}), DRY, 2,
     r"finetune.lr=inf: expected a number|expected a number"),
    ("loguniform from 0", "launch", sweep(space__finetune_lr={"loguniform": [0, 0.1]}), DRY, 2,
     r"expected 0 < low < high"),
    ("randint floats", "launch", sweep(space__finetune_epochs={"randint": [1.5, 3]}), DRY, 2, r"1.5: expected an integer"),
    ("when a list", "launch", sweep(space__prune_criterion={"grid": ["l1"], "when": ["x"]}), DRY, 2,
     r"when: \['x'\]: expected a mapping such as"),
    ("when on itself", "launch", sweep(space__prune_criterion={"grid": ["l1"], "when": {"prune.criterion": ["l1"]}}),
     DRY, 2, r"a key cannot depend on itself"),
    ("when unknown key", "launch", sweep(space__prune_criterion={"grid": ["l1"], "when": {"prune.mehtod": ["x"]}}), DRY,
     2, r"prune.mehtod"),
    ("when unknown method", "launch",
     sweep(space__prune_criterion={"grid": ["l1", "l2"], "when": {"prune.method": ["nomethod"]}}), DRY, 2,
     rf"when.prune.method: 'nomethod': prune.method {NEVER}; prune.method takes channel, imp"),
    ("when misspelt method", "launch",
     sweep(space__prune_criterion={"grid": ["l1", "l2"], "when": {"prune.method": ["chanel"]}}), DRY, 2,
     rf"'chanel': prune.method {NEVER}"),
    ("when a value not swept", "launch",
     sweep(space__prune_criterion={"grid": ["l1", "l2"], "when": {"prune.method": ["snip"]}}), DRY, 2,
     rf"'snip': prune.method {NEVER}; prune.method takes channel, imp"),
    ("when on a base key", "launch",
     sweep(space__prune_ratio={"grid": [0.3], "when": {"model.name": ["resnet20"]}}), DRY, 2,
     rf"'resnet20': model.name {NEVER}; model.name is not swept; it is lenet300"),
    ("when outside a range", "launch",
     sweep(space__finetune_lr={"uniform": [0.01, 0.1]},
           space__prune_ratio={"grid": [0.3], "when": {"finetune.lr": [0.5]}}), DRY, 2,
     rf"0.5: finetune.lr {NEVER}; finetune.lr takes \[0.01, 0.1\]"),
    ("when in a cycle", "launch",
     sweep(space__prune_ratio={"grid": [0.3], "when": {"prune.criterion": ["l1"]}},
           space__prune_criterion={"grid": ["l1"], "when": {"prune.ratio": [0.3]}}), DRY, 2,
     r"depend on each other in a cycle"),
    ("alternatives without when", "launch", sweep(space__prune_ratio=[{"grid": [0.3]}, {"grid": [0.5]}]), DRY, 2,
     r"several alternatives need a `when` condition each"),
    ("overlapping alternatives", "launch",
     sweep(space__prune_ratio=[{"grid": [0.3], "when": {"prune.method": ["channel"]}},
                               {"grid": [0.5], "when": {"prune.method": ["channel", "imp"]}}]), DRY, 2,
     r"two alternatives apply at once"),
    ("space reserved key", "launch", sweep(space__runtime_workdir={"grid": ["a"]}), DRY, 2,
     r"set by launch.py for every trial; it cannot be swept"),
    ("1,000 x 1,000 grid", "launch",
     sweep(space__prune_ratio={"grid": [round(0.001 * i, 3) for i in range(1, 1000)]},
           space__finetune_lr={"grid": [round(1e-5 * i, 5) for i in range(1, 1001)]}), DRY, 2, TOO_MANY),
    # ---- search, scheduler, resources, seeds, failures, storage, loggers, controls, budget -----
    ("search unknown algorithm", "launch", sweep(search={"algorithm": "bayes"}), DRY, 2,
     r"search.algorithm: 'bayes': expected one of grid, random, optuna"),
    ("search unknown key", "launch", sweep(search={"samples": 3}), DRY, 2, r"search.samples: unknown key"),
    ("search a list", "launch", sweep(search=[1]), DRY, 2, r"search: expected a mapping"),
    ("num_samples 0", "launch", sweep(search={"num_samples": 0}), DRY, 2, r"search.num_samples: 0"),
    ("num_samples -1", "launch", sweep(search={"num_samples": -1}), DRY, 2, r"search.num_samples: -1"),
    ("num_samples a word", "launch", sweep(search={"num_samples": "many"}), DRY, 2, r"search.num_samples: 'many'"),
    ("num_samples 1e9 grid", "launch", sweep(search={"num_samples": 10 ** 9}), DRY, 2,
     r"more than 100,000 trials \(search.num_samples: 1,000,000,000\)"),
    ("num_samples 1e9 random", "launch",
     sweep(search={"algorithm": "random", "num_samples": 10 ** 9}, space__prune_ratio={"uniform": [0.1, 0.9]}), DRY,
     2, TOO_MANY),
    ("num_samples 1e9 optuna", "launch",
     sweep(search={"algorithm": "optuna", "num_samples": 10 ** 9}, space__prune_ratio={"uniform": [0.1, 0.9]},
           space__prune_method={"choice": ["channel", "imp"]},
           space__prune_criterion=[{"choice": ["l1", "l2"], "when": {"prune.method": ["channel"]}}]), DRY, 2,
     TOO_MANY),
    ("grid under optuna", "launch", sweep(search={"algorithm": "optuna", "num_samples": 4}), DRY, 2,
     r"grid is not available with search.algorithm optuna"),
    ("points under grid", "launch", sweep(search={"points_to_evaluate": [{"prune.ratio": 0.3}]}), DRY, 2,
     r"needs search.algorithm optuna"),
    ("seed a word", "launch", sweep(search={"seed": "x"}), DRY, 2, r"search.seed: 'x'"),
    ("max_concurrent -1", "launch", sweep(search={"max_concurrent": -1}), DRY, 2, r"search.max_concurrent: -1"),
    ("sampler unknown", "launch", sweep(search={"algorithm": "optuna", "sampler": "cmaes"}), DRY, 2,
     r"search.sampler: 'cmaes'"),
    ("scheduler unknown", "launch", sweep(scheduler="hyperband"), DRY, 2, r"scheduler.name: 'hyperband': expected one of"),
    ("scheduler unknown key", "launch", sweep(scheduler={"name": "asha", "rungs": 3}), DRY, 2,
     r"scheduler.rungs: unknown key"),
    ("resources a list", "launch", sweep(resources=[1]), DRY, 2, r"resources: expected a mapping with keys cpu, gpu"),
    ("resources unknown key", "launch", sweep(resources={"tpu": 1}), DRY, 2, r"resources.tpu: unknown key"),
    ("cpu -1", "launch", sweep(resources={"cpu": -1}), DRY, 2, r"resources.cpu: -1: expected 0 to 1024 CPUs"),
    ("cpu a word", "launch", sweep(resources={"cpu": "all"}), DRY, 2, r"resources.cpu: 'all'"),
    ("cpu 1e6", "launch", sweep(resources={"cpu": 10 ** 6}), DRY, 2, r"resources.cpu: 1000000: expected 0 to 1024"),
    ("gpu 1000", "launch", sweep(resources={"gpu": 1000}), DRY, 2, r"resources.gpu: 1000: expected 0 to 16 GPUs"),
    ("gpu 1.5", "launch", sweep(resources={"gpu": 1.5}), DRY, 2, r"resources.gpu: 1.5: expected a fraction below 1"),
    ("no cpu no gpu", "launch", sweep(resources={"cpu": 0, "gpu": 0}), DRY, 2, r"a trial needs some cpu or gpu"),
    ("seeds 0", "launch", sweep(seeds=0), DRY, 2, r"seeds: 0: expected an integer >= 1"),
    ("seeds 1.5", "launch", sweep(seeds=1.5), DRY, 2, r"seeds: 1.5: expected an integer >= 1"),
    ("seeds 1e9", "launch", sweep(seeds=10 ** 9), DRY, 2, r"more than 100,000 trials \(6 configurations x 1,000,000,000"),
    ("seeds and runtime.seed swept", "launch", sweep(seeds=2, space__runtime_seed={"grid": [0, 1]}), DRY, 2,
     r"runtime.seed is already swept"),
    ("max_failures -2", "launch", sweep(max_failures=-2), DRY, 2, r"max_failures: -2: expected an integer >= -1"),
    ("storage a number", "launch", sweep(storage=5), DRY, 2, r"storage: 5: expected a path"),
    ("loggers unknown", "launch", sweep(loggers=["neptune"]), DRY, 2, r"loggers.*'neptune'"),
    ("loggers a number", "launch", sweep(loggers=5), DRY, 2, r"loggers"),
    ("controls unknown", "launch", sweep(controls=["thin"]), DRY, 2, r"controls: 'thin': expected a list of scratch"),
    ("controls with asha", "launch", sweep(controls=["narrow"], scheduler="asha"), DRY, 2,
     r"controls: expected search.algorithm grid or random and scheduler fifo"),
    ("budget epochs 0", "launch", sweep(budget={"epochs": 0}), DRY, 2, r"budget.epochs: 0: expected a whole number"),
    ("budget unknown key", "launch", sweep(budget={"flops": 0.5}), DRY, 2, r"budget.flops: unknown key"),
    # ---- launch.py's flags ------------------------------------------------------------------------
    ("--name ../x", "launch", sweep(), [*DRY, "--name", "../x"], 2, rf"--name: '../x': {NAME}"),
    ("--name ../../x real launch", "launch", sweep(), [*SWEEP, "--name", "../../x"], 2, rf"--name: '../../x': {NAME}"),
    ("--name absolute", "launch", sweep(), [*DRY, "--name", "/tmp/x"], 2, rf"--name: '/tmp/x': {NAME}"),
    ("--name .", "launch", sweep(), [*DRY, "--name", "."], 2, rf"--name: '.': {NAME}"),
    ("--name ..", "launch", sweep(), [*DRY, "--name", ".."], 2, rf"--name: '..': {NAME}"),
    ("--name a/b/c", "launch", sweep(), [*DRY, "--name", "a/b/c"], 2, rf"--name: 'a/b/c': {NAME}"),
    ("--name empty", "launch", sweep(), [*DRY, "--name", ""], 2, rf"--name: '': {NAME}"),
    ("--name 5,000 characters", "launch", sweep(), [*DRY, "--name", "n" * 5000], 2, r"--name: 'n+'\.\.\. \(5000 char"),
    ("--name with a newline", "launch", sweep(), [*DRY, "--name", "a\nb"], 2, rf"--name: 'a\\nb': {NAME}"),
    ("--set without =", "launch", sweep(), [*DRY, "--set", "finetune.epochs"], 2, r"--set 'finetune.epochs': expected KEY=VALUE"),
    ("--set unknown key", "launch", sweep(), [*DRY, "--set", "finetune.epoch=3"], 2, r"finetune.epoch"),
    ("--set a swept key", "launch", sweep(), [*DRY, "--set", "prune.ratio=0.4"], 2, r"--set: prune.ratio is swept"),
    ("--set lr inf", "launch", sweep(), [*DRY, "--set", "finetune.lr=inf"], 2, r"finetune.lr='inf': expected a number"),
    ("--set lr .nan", "launch", sweep(), [*DRY, "--set", "finetune.lr=.nan"], 2, r"finetune.lr=nan: expected a number"),
    ("--set unclosed", "launch", sweep(), [*DRY, "--set", "finetune.epochs=[1"], 2, r"--set finetune.epochs: not YAML"),
    ("--set alias bomb", "launch", sweep(), [*DRY, "--set", "finetune.epochs=" + bomb()], 2,
     r"--set finetune.epochs: line \d+: more than 100,000 values once aliases"),
    ("--seeds 0", "launch", sweep(), [*DRY, "--seeds", "0"], 2, r"--seeds: 0: expected an integer >= 1"),
    ("--seeds a word", "launch", sweep(), [*DRY, "--seeds", "two"], 2, r"--seeds: invalid int value: 'two'"),
    ("--seeds 1e9", "launch", sweep(), [*DRY, "--seeds", "1000000000"], 2, TOO_MANY),
    ("--max-trials 0", "launch", sweep(), [*DRY, "--max-trials", "0"], 2, r"--max-trials: '0': expected a whole number"),
    ("--max-trials a word", "launch", sweep(), [*DRY, "--max-trials", "x"], 2, r"--max-trials: 'x': expected a whole"),
    ("--max-trials below the sweep", "launch", sweep(), [*DRY, "--max-trials", "5"], 2,
     r"more than 5 trials \(space, search.num_samples: 1\); expected at most 5"),
    ("unknown flag", "launch", sweep(), [*DRY, "--gpus", "2"], 2, r"unrecognized arguments: --gpus 2"),
    ("--logger unknown", "launch", sweep(), [*DRY, "--logger", "neptune"], 2, r"neptune"),
    ("--plugin missing module", "launch", sweep(), [*DRY, "--plugin", "no_such_module_xyz"], 2, r"no_such_module_xyz"),
    ("--plugin missing file", "launch", sweep(), [*DRY, "--plugin", "{d}/nope.py"], 2, r"nope.py"),
    ("--resume with nothing stored", "launch", sweep(), [*SWEEP, "--resume"], 2,
     r"--resume: .*holds no interrupted sweep to continue"),
    ("--resume with --set", "launch", sweep(), [*SWEEP, "--resume", "--set", "finetune.epochs=2"], 2,
     r"--set cannot change a sweep that is resumed"),
    ("--resume, stored sweep binary", "launch", {**sweep(), "st/h/sweep.yaml": b"\0\1\2"}, [*SWEEP, "--resume"], 2,
     r"--resume: .*sweep.yaml: binary data"),
    ("--resume, stored sweep a bomb", "launch", {**sweep(), "st/h/sweep.yaml": BOMB_DESCRIPTION}, [*SWEEP, "--resume"],
     2, r"--resume: .*sweep.yaml: line \d+: more than 100,000 values"),
    ("--resume, stored sweep with a duplicate key", "launch",
     {**sweep(), "st/h/sweep.yaml": yaml.safe_dump(GOOD) + "name: h\n"}, [*SWEEP, "--resume"], 2,
     r"--resume: .*sweep.yaml: line \d+: key 'name' is given twice"),
    ("--resume, stored sweep renamed", "launch",
     {**sweep(), "st/h/sweep.yaml": yaml.safe_dump({**GOOD, "name": "../evil"})}, [*SWEEP, "--resume"], 2,
     rf"name: '../evil': {NAME}"),
    ("--resume of an edited sweep file", "launch",
     {**sweep(), "st/h/sweep.yaml": yaml.safe_dump(GOOD), "st/h/sweep.source.yaml": "name: h\n"},
     [*SWEEP, "--resume"], 2, r"--resume: .*s.yaml changed since .*st/h was launched \(the difference is above\); "
     r"continue the sweep as launched with --resume --stored"),
    ("--resume --dry-run of an edited sweep file", "launch",
     {**sweep(), "st/h/sweep.yaml": yaml.safe_dump(GOOD), "st/h/sweep.source.yaml": "name: h\n"},
     [*DRY, "--resume"], 2, r"s.yaml changed since"),
    ("--storage 5,000 characters", "launch", sweep(), ["{d}/s.yaml", "--storage", "{d}/" + "x" * 5000], 2,
     r"storage .*\(5,\d+ characters\): File name too long; choose another --storage"),
    ("--stored without --resume", "launch", sweep(), [*DRY, "--stored"], 2, r"--stored: expected with --resume"),
    # ---- prune-core -----------------------------------------------------------------------------
    ("core --config missing", "core", {}, ["--config", "{d}/nope.yaml"], 2, r"--config .*nope.yaml: cannot read it"),
    ("core --config binary", "core", {"c.yaml": b"\x89PNG\0\0"}, ["--config", "{d}/c.yaml"], 2,
     r"--config .*c.yaml: cannot read it \(binary data"),
    ("core --config utf-16", "core", {"c.yaml": "train: {epochs: 1}".encode("utf-16")}, ["--config", "{d}/c.yaml"], 2,
     r"--config .*c.yaml: cannot read it"),
    ("core --config a folder", "core", {"c/x": ""}, ["--config", "{d}/c"], 2, r"--config .*c: cannot read it \(Is a dir"),
    ("core --config a bomb", "core", {"c.yaml": bomb()}, ["--config", "{d}/c.yaml"], 2,
     r"cannot read it \(line \d+: more than 100,000 values"),
    ("core --config duplicate keys", "core", {"c.yaml": "train:\n  epochs: 1\n  epochs: 2\n"}, ["--config", "{d}/c.yaml"],
     2, r"cannot read it \(line 3: key 'epochs' is given twice"),
    ("core --config a list", "core", {"c.yaml": "- 1\n"}, ["--config", "{d}/c.yaml"], 2,
     r"expected a mapping of config keys, got list"),
    ("core --config unknown key", "core", {"c.yaml": "train: {epoch: 1}\n"}, ["--config", "{d}/c.yaml"], 2, r"epoch"),
    ("core --learning-rate inf", "core", {}, [*FAST, "--learning-rate", "inf"], 2, r"train.lr=inf: expected a number"),
    ("core --learning-rate nan", "core", {}, [*FAST, "--learning-rate", "nan"], 2, r"train.lr=nan: expected a number"),
    ("core --learning-rate -1", "core", {}, [*FAST, "--learning-rate", "-1"], 2, r"train.lr=-1.0: expected a positive"),
    ("core --learning-rate a word", "core", {}, [*FAST, "--learning-rate", "fast"], 2, r"--learning-rate.*'fast'"),
    ("core --finetune-lr inf", "core", {}, [*FAST, "--finetune-lr", "inf"], 2, r"finetune.lr=inf: expected a number"),
    ("core --pruning-ratio 1.5", "core", {}, [*FAST, "--pruning-ratio", "1.5"], 2, r"prune.ratio=1.5: expected a number in"),
    ("core --pruning-ratio -0.1", "core", {}, [*FAST, "--pruning-ratio", "-0.1"], 2, r"prune.ratio=-0.1"),
    ("core --pruning-method unknown", "core", {}, [*FAST, "--pruning-method", "nomethod"], 2, r"nomethod"),
    ("core --criterion unknown", "core", {}, [*FAST, "--criterion", "nocriterion"], 2, r"nocriterion"),
    ("core --dataset unknown", "core", {}, ["--dataset", "nodata"], 2, r"nodata"),
    ("core --model unknown", "core", {}, ["--model", "nomodel"], 2, r"nomodel"),
    ("core --base-train-epochs -1", "core", {}, [*FAST, "--base-train-epochs", "-1"], 2, r"train.epochs=-1"),
    ("core --base-train-epochs 1.5", "core", {}, [*FAST, "--base-train-epochs", "1.5"], 2, r"--base-train-epochs.*'1.5'"),
    ("core --batch-size 0", "core", {}, [*FAST, "--batch-size", "0"], 2, r"data.batch_size=0"),
    ("core --seed a word", "core", {}, [*FAST, "--seed", "x"], 2, r"--seed.*'x'"),
    ("core --set without =", "core", {}, [*FAST, "--set", "train.epochs"], 2, r"--set 'train.epochs': expected KEY=VALUE"),
    ("core --set unknown key", "core", {}, [*FAST, "--set", "train.epoch=1"], 2, r"train.epoch"),
    ("core --set unclosed", "core", {}, [*FAST, "--set", "train.epochs=[1"], 2, r"--set train.epochs: not YAML"),
    ("core --set lr .inf", "core", {}, [*FAST, "--set", "train.lr=.inf"], 2, r"train.lr=inf: expected a number"),
    ("core unknown flag", "core", {}, [*FAST, "--epochs", "3"], 2, r"unrecognized arguments: --epochs 3"),
    ("core --plugin missing", "core", {}, [*FAST, "--plugin", "no_such_module_xyz"], 2, r"no_such_module_xyz"),
    ("core --output-dir in /proc", "core", {}, [*FAST[:4], "--output-dir", "/proc/nope"], 7,
     r"cannot write /proc/nope: .*must name a folder this user can write"),
    ("core --output-dir under a file", "core", {"f": "x"}, [*FAST[:4], "--output-dir", "{d}/f/out"], 7,
     r"cannot write .*f/out"),
    # ---- analyze.py -----------------------------------------------------------------------------
    ("analyze a missing folder", "analyze", {}, ["{d}/nope"], 2, r"nope: no such directory; expected an experiment"),
    ("analyze a file", "analyze", {"f.txt": "x"}, ["{d}/f.txt"], 2, r"f.txt"),
    ("analyze an empty folder", "analyze", {"e/.keep": ""}, ["{d}/e"], 2, r"e"),
    ("analyze no folder", "analyze", {}, [], 2, r"EXPERIMENT_DIR|experiment"),
    ("analyze --budgets words", "analyze", {}, ["{d}", "--budgets", "a,b"], 2, r"--budgets"),
    ("analyze --budgets 0", "analyze", {}, ["{d}", "--budgets", "0"], 2, r"--budgets"),
    ("analyze --budgets 2", "analyze", {}, ["{d}", "--budgets", "2"], 2, r"--budgets"),
    ("analyze unknown flag", "analyze", {}, ["{d}", "--front", "x"], 2, r"unrecognized arguments"),
    ("analyze binary params.json", "analyze", {"x/t_1/params.json": b"\0\1"}, ["{d}/x"], 2,
     r"t_1/params.json: not JSON .*expected a JSON object of config keys"),
    ("analyze result.json not JSON", "analyze", {"x/t_1/params.json": "{}", "x/t_1/result.json": "x\n{"}, ["{d}/x"],
     2, r"t_1/result.json: line 1 is not JSON"),
    ("analyze a base.yaml bomb", "analyze",
     {"x/base.yaml": bomb(), "x/t_1/params.json": "{}"}, ["{d}/x"], 2, r"base.yaml: line \d+: more than 100,000"),
    ("analyze a binary base.yaml", "analyze",
     {"x/base.yaml": b"\x00\x01", "x/t_1/params.json": "{}"}, ["{d}/x"], 2, r"base.yaml"),
    ("analyze a base.yaml list", "analyze",
     {"x/base.yaml": "- 1\n", "x/t_1/params.json": "{}"}, ["{d}/x"], 2, r"base.yaml: expected a mapping"),
    ("analyze latency.json a list", "analyze",
     {"x/latency.json": "[1, 2]", "x/t_1/params.json": "{}"}, ["{d}/x"], 2,
     r"latency.json: expected a JSON object of trial ids"),
]


def _write(root, files: Files) -> None:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)


def test_the_table_holds_at_least_120_distinct_cases():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 120 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_line_with_its_exit_code(case: Case, tmp_path, capsys, monkeypatch):
    name, cli, files, argv, code, pattern = case
    monkeypatch.chdir(tmp_path)  # a relative plug-in file or storage lands in the case's folder
    _write(tmp_path, files)
    args = [a.replace("{d}", str(tmp_path)) for a in argv]
    try:
        rc = MAINS[cli](args)
    except SystemExit as exc:  # argparse's own exits (prune-core, analyze.py)
        rc = exc.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, (name, rc, err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err, (name, err[-2000:])
    assert lines[0].startswith(PREFIX[cli]), (name, lines[0][:500])
    assert re.search(pattern, lines[0]), (name, pattern, lines[0][:500])
    assert len(lines[0]) < 2000, (name, len(lines[0]))  # one readable line, not a dump of the input
    if cli == "launch":
        assert not (tmp_path.parent / "x").exists() and not (tmp_path / "st" / "x").exists()
        assert not list((tmp_path / "st").glob("*/provenance.json")) if (tmp_path / "st").exists() else True


def test_resume_runs_the_stored_sweep_and_shows_an_edited_file_as_a_difference(tmp_path, capsys):
    """--resume --dry-run prints what --resume would run: the sweep stored at launch. An edited
    sweep file is shown as a difference against its text at launch and refused; --stored runs
    the stored sweep anyway, and a resume naming no file runs it without a comparison."""
    stored = copy.deepcopy(GOOD)
    _write(tmp_path, {"st/h/sweep.yaml": yaml.safe_dump(stored, sort_keys=False),
                      "st/h/sweep.source.yaml": yaml.safe_dump(stored, sort_keys=False),
                      **sweep(space__prune_ratio={"grid": [0.3, 0.5, 0.7]})})
    args = [str(tmp_path / "s.yaml"), "--storage", str(tmp_path / "st"), "--resume", "--dry-run"]
    assert launch_main(args) == 2
    out, err = capsys.readouterr()
    assert "-  prune.ratio:\n" not in out and re.search(r"^\+ +- 0\.7$", out, re.M), out  # the difference
    assert "changed since" in err
    assert launch_main([*args, "--stored"]) == 0
    out, _ = capsys.readouterr()
    assert "continuing the sweep stored at launch" in out and "(--stored)" in out
    assert out.rstrip().endswith("6 trials"), out  # the stored 2 x 2 + 2, not the edited file's 9
    assert launch_main(["--storage", str(tmp_path / "st"), "--name", "h", "--resume", "--dry-run"]) == 0
    out, _ = capsys.readouterr()
    assert "changed since" not in out and out.rstrip().endswith("6 trials")
