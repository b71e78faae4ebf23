"""Run a pruning sweep with Ray Tune: one YAML file in, one experiment directory out.

    python launch.py                                  # sweeps/quickstart.yaml on this machine
    python launch.py sweeps/cifar10_resnet18.yaml --dry-run
    python launch.py sweeps/cifar10_resnet18.yaml --set finetune.epochs=10 --name c10_long
    python launch.py sweeps/quickstart.yaml --resume  # continue an interrupted sweep
    python launch.py sweeps/imagenet_resnet50.yaml --address auto   # on a Ray cluster's head node
    python launch.py --smoke-test                     # tiny epochs and trials, for CI

The sweep file is validated completely before Ray starts: every trial configuration the space can
produce (grid, random) or every corner of it (optuna) is built as a ``prune_core.ExperimentConfig``;
a bad key, value or combination exits with code 2 and one line naming the key.

Before the trials, each distinct base model of the sweep is trained once, as a Ray task with a
trial's resources, into ``<experiment dir>/base_cache`` (``prune_core`` contract 7); every trial,
a resumed sweep and a later sweep in the same storage load it. Trials report every fine-tune epoch
with a checkpoint, so ASHA can stop weak ones and a trial whose node dies resumes from its last
epoch elsewhere. The experiment directory ``<storage>/<name>`` holds ``sweep.yaml`` (the resolved
sweep), ``base.yaml`` (usable as ``python -m prune_core --config base.yaml``), Ray Tune's trial
folders (``params.json`` = the swept keys, ``result.json``, ``error.txt``), ``optuna.db`` for an
Optuna search (``optuna-dashboard sqlite:///<dir>/optuna.db``), and is what ``analyze.py`` reads.

From Python (returns the exit code)::

    import launch
    assert launch.main(["sweeps/quickstart.yaml", "--smoke-test", "--storage", "/tmp/runs"]) == 0
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import math
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow.fs as pafs
import yaml

import ray
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from prune_core.config import BASE_KEYS, SMOKE, ConfigError, ExperimentConfig, flatten, nest, parse_overrides
from prune_core.errors import NotRetryable

__all__ = ["main", "load_sweep", "Sweep", "SweepError", "trial_configs", "DEFAULT_SWEEP"]

ROOT = Path(__file__).resolve().parent
DEFAULT_SWEEP = ROOT / "sweeps" / "quickstart.yaml"
DEFAULT_STORAGE = "ray_results"  # relative to where launch.py is started, like Ray's own default
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
ALGORITHMS = ("grid", "random", "optuna")
SAMPLERS = ("tpe", "nsga2")
SCHEDULERS = ("fifo", "asha")
# metrics present in every report of a trial (per epoch and final), so searchers may use them
OBJECTIVES = ("val_acc", "flops_kept", "flops_final", "flops_nz_final", "params_nz_final")
DEFAULT_OBJECTIVES = {"val_acc": "max", "flops_kept": "min"}
# keys launch.py sets for every trial itself
RESERVED = ("runtime.workdir", "runtime.resume", "runtime.cache_dir", "runtime.progress")
TOP_LEVEL = ("name", "description", "base", "space", "search", "scheduler", "resources", "storage",
             "max_failures", "smoke_test")
PROGRESS_PERIOD_S = 10  # the trial table is printed at most this often, and only when it changed


class SweepError(ValueError):
    """A bad sweep file or flag. The message is one line naming the key."""


# ---------------------------------------------------------------------------------------------
# The sweep file: parsed and validated without Ray


@dataclass(frozen=True)
class Dist:
    """One distribution of a swept key: ``{grid: [...]}``, ``{uniform: [low, high]}``, ..."""

    kind: str
    args: Tuple[Any, ...]

    @property
    def discrete(self) -> bool:
        return self.kind in ("grid", "choice")

    def sample(self, rng: np.random.Generator) -> Any:
        if self.discrete:
            return self.args[int(rng.integers(len(self.args)))]
        low, high = self.args
        if self.kind == "uniform":
            return float(rng.uniform(low, high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        return int(rng.integers(low, high))  # randint: high excluded, as in numpy and Ray Tune

    def corners(self) -> Tuple[Any, ...]:
        """Every value of a discrete distribution, the two ends of a continuous one."""
        if self.discrete:
            return self.args
        low, high = self.args
        return (low, high - 1) if self.kind == "randint" else (low, high)

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw from an Optuna trial (define-by-run)."""
        if self.discrete:
            return trial.suggest_categorical(name, list(self.args))
        low, high = self.args
        if self.kind == "randint":
            return trial.suggest_int(name, low, high - 1)
        return trial.suggest_float(name, low, high, log=self.kind == "loguniform")

    def to_yaml(self) -> Dict[str, List[Any]]:
        return {self.kind: list(self.args)}


@dataclass(frozen=True)
class Entry:
    """A distribution of ``key`` that applies when every ``when`` key holds one of its values."""

    key: str
    dist: Dist
    when: Tuple[Tuple[str, Tuple[Any, ...]], ...] = ()

    def applies(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when)

    def label(self) -> str:
        """Optuna parameter name of a conditional alternative: ``prune.criterion[prune.method=channel]``."""
        cond = ";".join(f"{k}={'|'.join(map(str, v))}" for k, v in self.when)
        return f"{self.key}[{cond}]" if cond else self.key

    def to_yaml(self) -> Dict[str, Any]:
        out: Dict[str, Any] = self.dist.to_yaml()
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        return out


@dataclass(frozen=True)
class Search:
    algorithm: str = "grid"  # grid: every combination; random: independent draws; optuna: TPE / NSGA-II
    num_samples: int = 1  # grid: repeats of the whole grid; random, optuna: number of trials
    max_concurrent: int = 0  # 0 = as many as the cluster's resources allow
    seed: int = 0  # random draws and the Optuna sampler
    sampler: str = "tpe"  # optuna: tpe (single- or multi-objective) or nsga2
    population_size: int = 0  # nsga2 population (0 = Optuna's default, 50)
    objectives: Tuple[Tuple[str, str], ...] = tuple(DEFAULT_OBJECTIVES.items())  # optuna: metric, mode


@dataclass(frozen=True)
class Scheduler:
    name: str = "fifo"
    grace_period: int = 1  # asha: epochs every trial gets before it can be stopped
    reduction_factor: float = 2.0  # asha: keep the best 1/reduction_factor at each rung
    max_t: int = 0  # asha: epochs of the longest trial (0 = derived from the configs)


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractions share a GPU between trials (0.5 = two trials per GPU)


@dataclass(frozen=True)
class Sweep:
    """A parsed, validated sweep file. ``base`` is flat (dotted keys)."""

    name: str
    base: Dict[str, Any]
    space: Dict[str, Tuple[Entry, ...]]  # key -> its alternatives, in the file's order
    order: Tuple[str, ...]  # swept keys, every key after the keys its conditions read
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    storage: str = DEFAULT_STORAGE
    max_failures: int = 2  # retries of a trial whose worker or node died (from its last epoch)
    description: str = ""
    smoke_test: bool = False
    source: str = ""  # the file it came from, for messages
    base_flat: Dict[str, Any] = field(default_factory=dict, repr=False)  # every config key, resolved

    @property
    def keys(self) -> Tuple[str, ...]:
        return tuple(self.space)

    def base_config(self) -> ExperimentConfig:
        return ExperimentConfig.from_dict(self.base)

    def active(self, key: str, values: Mapping[str, Any]) -> Optional[Entry]:
        """The alternative of ``key`` that applies given the values chosen so far (None: none does)."""
        context = {**self.base_flat, **values}
        hits = [e for e in self.space[key] if e.applies(context)]
        if len(hits) > 1:
            shown = ", ".join(dict.fromkeys(f"{k}={context.get(k)}" for k, _ in hits[0].when + hits[1].when))
            raise SweepError(f"{self.source}: space.{key}: two alternatives apply at once ({shown}); "
                             "make their `when` conditions disjoint")
        return hits[0] if hits else None

    def complete(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        """A trial's config: every swept key, those no alternative applies to at their resolved base
        value (a method's default criterion). Validates the whole ExperimentConfig."""
        try:
            cfg = ExperimentConfig.from_dict({**self.base, **values})
        except ConfigError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            raise SweepError(f"{self.source}: {exc} (in the trial {shown})") from None
        flat = cfg.to_flat()
        return {k: flat[k] for k in self.keys}

    def to_yaml(self) -> Dict[str, Any]:
        """The resolved sweep, as written to ``<experiment dir>/sweep.yaml``; it loads back unchanged."""
        out: Dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["base"] = nest(self.base)
        out["space"] = {k: [e.to_yaml() for e in es] if len(es) > 1 else es[0].to_yaml()
                        for k, es in self.space.items()}
        search = dataclasses.asdict(self.search)
        search["objectives"] = dict(self.search.objectives)
        out["search"] = search
        out["scheduler"] = dataclasses.asdict(self.scheduler)
        out["resources"] = dataclasses.asdict(self.resources)
        out["storage"] = self.storage
        out["max_failures"] = self.max_failures
        if self.smoke_test:
            out["smoke_test"] = True
        return out


def _fail(source: str, where: str, message: str) -> SweepError:
    return SweepError(f"{source}: {where}: {message}")


def _mapping(value: Any, source: str, where: str, allowed: Sequence[str]) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(source, where, f"expected a mapping with keys {', '.join(allowed)}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise _fail(source, f"{where}.{unknown[0]}", f"unknown key; expected one of {', '.join(allowed)}")
    return dict(value)


def _number(value: Any, source: str, where: str, kind: type = float, low: float = -math.inf,
            high: float = math.inf, accepted: str = "a number") -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not low <= value <= high:
        raise _fail(source, where, f"{value!r}: expected {accepted}")
    return kind(value)


def _config_key(key: Any, source: str, where: str) -> str:
    """``key`` if it names an ExperimentConfig field, else the config's own one-line error."""
    if not isinstance(key, str) or "." not in key:
        raise _fail(source, where, f"{key!r}: expected a dotted config key such as prune.ratio")
    if key not in ExperimentConfig().to_flat():
        try:
            ExperimentConfig.from_dict({key: None})
        except ConfigError as exc:
            raise _fail(source, where, str(exc)) from None
    return key


def _scalars(value: Any, source: str, where: str) -> Tuple[Any, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
        raise _fail(source, where, f"{value!r}: expected a value or a non-empty list of values")
    return tuple(values)


def _parse_dist(key: str, spec: Any, source: str, where: str) -> Entry:
    if not isinstance(spec, Mapping):
        raise _fail(source, where, f"{spec!r}: expected a distribution such as {{grid: [0.3, 0.5]}}; "
                    f"one of {', '.join(DISTRIBUTIONS)} (fixed values belong in base)")
    kinds = [k for k in spec if k != "when"]
    unknown = [k for k in kinds if k not in DISTRIBUTIONS]
    if unknown or len(kinds) != 1:
        bad = unknown[0] if unknown else ", ".join(kinds) or "nothing"
        raise _fail(source, where, f"{bad!r}: expected exactly one of {', '.join(DISTRIBUTIONS)} "
                    "(and optionally when)")
    kind = kinds[0]
    args = spec[kind]
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise _fail(source, f"{where}.{kind}", f"{args!r}: expected a non-empty list of values")
        values = _scalars(args, source, f"{where}.{kind}")
    else:
        if not isinstance(args, list) or len(args) != 2:
            raise _fail(source, f"{where}.{kind}", f"{args!r}: expected [low, high]")
        number = int if kind == "randint" else float
        accepted = "an integer" if kind == "randint" else "a number"
        low, high = (_number(a, source, f"{where}.{kind}", number, accepted=accepted) for a in args)
        if not low < high:
            raise _fail(source, f"{where}.{kind}", f"{args!r}: expected low < high")
        if kind == "loguniform" and low <= 0:
            raise _fail(source, f"{where}.{kind}", f"{args!r}: expected 0 < low < high")
        values = (low, high)
    when = spec.get("when") or {}
    if not isinstance(when, Mapping):
        raise _fail(source, f"{where}.when", f"{when!r}: expected a mapping such as {{prune.method: [channel]}}")
    conds = []
    for ckey, allowed in when.items():
        _config_key(ckey, source, f"{where}.when")
        if ckey == key:
            raise _fail(source, f"{where}.when", f"{ckey}: a key cannot depend on itself")
        conds.append((ckey, _scalars(allowed, source, f"{where}.when.{ckey}")))
    return Entry(key, Dist(kind, values), tuple(conds))


def _parse_space(raw: Any, source: str) -> Tuple[Dict[str, Tuple[Entry, ...]], Tuple[str, ...]]:
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(source, "space", "expected a mapping of dotted config keys to distributions, "
                    "e.g. prune.ratio: {grid: [0.3, 0.5]}")
    space: Dict[str, Tuple[Entry, ...]] = {}
    for key, spec in raw.items():
        where = f"space.{key}"
        _config_key(key, source, "space")
        if key in RESERVED:
            raise _fail(source, where, "set by launch.py for every trial; it cannot be swept")
        alternatives = spec if isinstance(spec, list) else [spec]
        if not alternatives:
            raise _fail(source, where, "expected a distribution or a list of conditional ones")
        entries = tuple(_parse_dist(key, s, source, f"{where}[{i}]" if isinstance(spec, list) else where)
                        for i, s in enumerate(alternatives))
        if len(entries) > 1 and not all(e.when for e in entries):
            raise _fail(source, where, "several alternatives need a `when` condition each")
        space[key] = entries
    return space, _dependency_order(space, source)


def _dependency_order(space: Mapping[str, Sequence[Entry]], source: str) -> Tuple[str, ...]:
    deps = {k: {c for e in es for c, _ in e.when if c in space} for k, es in space.items()}
    order: List[str] = []
    while len(order) < len(space):
        ready = [k for k in space if k not in order and deps[k] <= set(order)]
        if not ready:
            stuck = next(k for k in space if k not in order)
            raise _fail(source, f"space.{stuck}", "its `when` conditions depend on each other in a cycle")
        order.extend(ready)
    return tuple(order)


def _parse_search(raw: Any, source: str) -> Search:
    d = _mapping(raw, source, "search", [f.name for f in dataclasses.fields(Search)])
    algorithm = d.get("algorithm", "grid")
    if algorithm not in ALGORITHMS:
        raise _fail(source, "search.algorithm", f"{algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    sampler = d.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise _fail(source, "search.sampler", f"{sampler!r}: expected one of {', '.join(SAMPLERS)}")
    objectives = d.get("objectives", DEFAULT_OBJECTIVES)
    if not isinstance(objectives, Mapping) or not objectives:
        raise _fail(source, "search.objectives", f"{objectives!r}: expected a mapping such as "
                    "{val_acc: max, flops_kept: min}")
    for metric, mode in objectives.items():
        if metric not in OBJECTIVES:
            raise _fail(source, f"search.objectives.{metric}", f"unknown metric; expected one of {', '.join(OBJECTIVES)}")
        if mode not in ("max", "min"):
            raise _fail(source, f"search.objectives.{metric}", f"{mode!r}: expected max or min")
    return Search(
        algorithm=algorithm,
        num_samples=_number(d.get("num_samples", 1), source, "search.num_samples", int, 1, accepted="an integer >= 1"),
        max_concurrent=_number(d.get("max_concurrent", 0), source, "search.max_concurrent", int, 0,
                               accepted="an integer >= 0 (0 = no limit)"),
        seed=_number(d.get("seed", 0), source, "search.seed", int, accepted="an integer"),
        sampler=sampler,
        population_size=_number(d.get("population_size", 0), source, "search.population_size", int, 0,
                                accepted="an integer >= 0"),
        objectives=tuple(objectives.items()))


def _parse_scheduler(raw: Any, source: str) -> Scheduler:
    if isinstance(raw, str):
        raw = {"name": raw}
    d = _mapping(raw, source, "scheduler", [f.name for f in dataclasses.fields(Scheduler)])
    name = d.get("name", "fifo")
    if name not in SCHEDULERS:
        raise _fail(source, "scheduler.name", f"{name!r}: expected one of {', '.join(SCHEDULERS)}")
    return Scheduler(
        name=name,
        grace_period=_number(d.get("grace_period", 1), source, "scheduler.grace_period", int, 1,
                             accepted="an integer >= 1"),
        reduction_factor=_number(d.get("reduction_factor", 2), source, "scheduler.reduction_factor", float,
                                 1.000001, accepted="a number > 1"),
        max_t=_number(d.get("max_t", 0), source, "scheduler.max_t", int, 0, accepted="an integer >= 0"))


def _parse_resources(raw: Any, source: str) -> Resources:
    d = _mapping(raw, source, "resources", ("cpu", "gpu"))
    cpu = _number(d.get("cpu", 1), source, "resources.cpu", float, 0, accepted="a number >= 0")
    gpu = _number(d.get("gpu", 0), source, "resources.gpu", float, 0, accepted="a number >= 0 (0.5 shares a GPU)")
    if cpu == 0 and gpu == 0:
        raise _fail(source, "resources", "a trial needs some cpu or gpu")
    return Resources(cpu=cpu, gpu=gpu)


def parse_sweep(raw: Any, source: str, overrides: Optional[Mapping[str, Any]] = None,
                smoke_test: bool = False) -> Sweep:
    """Check a loaded sweep file and apply ``--set`` overrides (and, for ``--smoke-test``,
    ``prune_core.SMOKE``) to its base. Raises SweepError with one line naming the key."""
    if not isinstance(raw, Mapping):
        raise SweepError(f"{source}: expected a mapping with keys {', '.join(TOP_LEVEL[:-1])}")
    unknown = [k for k in raw if k not in TOP_LEVEL]
    if unknown:
        raise _fail(source, str(unknown[0]), f"unknown key; a sweep file has {', '.join(TOP_LEVEL[:-1])}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise _fail(source, "name", f"{name!r}: expected a name of letters, digits, '_', '-' or '.'")
    base_raw = raw.get("base") or {}
    if not isinstance(base_raw, Mapping):
        raise _fail(source, "base", "expected a mapping of config keys (nested or dotted)")
    base = flatten(base_raw)
    smoke = bool(raw.get("smoke_test", False)) or smoke_test
    if smoke and not raw.get("smoke_test"):
        base.update(SMOKE)
    space, order = _parse_space(raw.get("space"), source)
    for key, value in (overrides or {}).items():
        _config_key(key, source, "--set")
        if key in space:
            raise _fail(source, "--set", f"{key} is swept by the space; --set changes base keys only")
        base[key] = value
    for key in base:
        _config_key(key, source, "base")
        if key in RESERVED:
            raise _fail(source, f"base.{key}", "set by launch.py for every trial; remove it from the sweep")
    try:
        base_flat = ExperimentConfig.from_dict(base).to_flat()
    except ConfigError as exc:
        raise _fail(source, "base", str(exc)) from None
    base = _absolute_paths(base)
    max_failures = _number(raw.get("max_failures", 2), source, "max_failures", int, -1,
                           accepted="an integer >= -1 (-1 = retry forever)")
    storage = raw.get("storage") or DEFAULT_STORAGE
    if not isinstance(storage, str):
        raise _fail(source, "storage", f"{storage!r}: expected a path or a s3://, gs:// URI")
    sweep = Sweep(name=name, base=base, space=space, order=order, search=_parse_search(raw.get("search"), source),
                  scheduler=_parse_scheduler(raw.get("scheduler"), source),
                  resources=_parse_resources(raw.get("resources"), source), storage=storage,
                  max_failures=max_failures, description=str(raw.get("description") or ""),
                  smoke_test=smoke, source=source, base_flat=base_flat)
    if sweep.search.algorithm == "optuna":
        grids = [k for k, es in space.items() for e in es if e.dist.kind == "grid"]
        if grids:
            raise _fail(source, f"space.{grids[0]}", "grid is not available with search.algorithm optuna; use choice")
    return sweep


def _absolute_paths(base: Dict[str, Any]) -> Dict[str, Any]:
    """Trials run in their own working directories: relative paths are taken from where the sweep
    is launched (on a cluster, give paths that exist on every node)."""
    out = dict(base)
    for key in ("data.root", "model.pretrained_path"):
        value = out.get(key)
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            out[key] = os.path.abspath(value)
    return out


def load_sweep(path: str | Path, overrides: Optional[Mapping[str, Any]] = None, smoke_test: bool = False) -> Sweep:
    """Read, check and validate a sweep file: every trial it can produce (grid, random) or every
    corner of its space (optuna) must make a valid ExperimentConfig."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SweepError(f"{source}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{source}: not YAML ({' '.join(str(exc).split())})") from None
    sweep = parse_sweep(raw, source, overrides, smoke_test)
    validate(sweep)
    return sweep


# ---------------------------------------------------------------------------------------------
# The space: trials of a grid or random search, corners for validation, Optuna's define-by-run


def _expand(sweep: Sweep, pick: Callable[[Dist], Sequence[Any]], repeats: int) -> List[Dict[str, Any]]:
    """Walk the keys in dependency order; ``pick`` gives the values a distribution expands to."""
    out: List[Dict[str, Any]] = []
    for _ in range(repeats):
        partials: List[Dict[str, Any]] = [{}]
        for key in sweep.order:
            grown = []
            for values in partials:
                entry = sweep.active(key, values)
                if entry is None:
                    grown.append(values)
                else:
                    grown.extend({**values, key: v} for v in pick(entry.dist))
            partials = grown
        out.extend(partials)
    return out


def trial_configs(sweep: Sweep) -> List[Dict[str, Any]]:
    """The trials of a grid or random search, in order, each with every swept key.

    grid: every combination of the ``grid`` values (other distributions drawn once per
    combination), repeated ``num_samples`` times. random: ``num_samples`` independent draws.
    """
    rng = np.random.default_rng(sweep.search.seed)
    if sweep.search.algorithm == "grid":
        picks = _expand(sweep, lambda d: d.args if d.kind == "grid" else (d.sample(rng),), sweep.search.num_samples)
    elif sweep.search.algorithm == "random":
        picks = _expand(sweep, lambda d: (d.sample(rng),), sweep.search.num_samples)
    else:
        raise ValueError("an optuna search draws its trials while it runs")
    configs = [sweep.complete(p) for p in picks]
    return _smoke_subset(configs) if sweep.smoke_test else configs


def _smoke_subset(configs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One trial per pruning method (the first two trials when the method is not swept)."""
    if not configs or "prune.method" not in configs[0]:
        return configs[:2]
    seen: Dict[Any, Dict[str, Any]] = {}
    for c in configs:
        seen.setdefault(c["prune.method"], c)
    return list(seen.values())


def corner_configs(sweep: Sweep) -> List[Dict[str, Any]]:
    """Every combination of discrete values and ends of continuous ranges the space allows."""
    return [sweep.complete(p) for p in _expand(sweep, Dist.corners, 1)]


def validate(sweep: Sweep) -> List[Dict[str, Any]]:
    """Build every trial config (grid, random) or every corner (optuna); returns them."""
    if sweep.search.algorithm == "optuna":
        return corner_configs(sweep)
    corner_configs(sweep)  # ends of continuous ranges too, not only the values drawn
    return trial_configs(sweep)


def num_trials(sweep: Sweep) -> int:
    if sweep.search.algorithm == "optuna":
        return min(sweep.search.num_samples, 2) if sweep.smoke_test else sweep.search.num_samples
    return len(trial_configs(sweep))


def trial_epochs(sweep: Sweep, configs: Iterable[Mapping[str, Any]]) -> int:
    """Most epochs a trial trains after pruning (``prune_core.pruning.post_prune_training``: SNIP
    trains from scratch with the base budget, IMP with it from its rewind epoch)."""
    from prune_core.pruning import post_prune_training

    most = 1
    for c in configs:
        tcfg, start = post_prune_training(ExperimentConfig.from_dict({**sweep.base, **c}))
        most = max(most, tcfg.epochs - start)
    return most


def base_configs(sweep: Sweep, configs: Sequence[Mapping[str, Any]]) -> Dict[str, ExperimentConfig]:
    """Distinct bases (by ``base_hash``) of the trials; empty when a base key is drawn from a
    continuous range (each trial then trains or loads its own base under the cache's lock)."""
    continuous = [k for k, es in sweep.space.items() for e in es if not e.dist.discrete and k in BASE_KEYS]
    if continuous and sweep.search.algorithm == "optuna":
        return {}
    out: Dict[str, ExperimentConfig] = {}
    for c in configs:
        cfg = ExperimentConfig.from_dict({**sweep.base, **c})
        if not cfg.model.pretrained_path:  # a given base is loaded by each trial, nothing to train
            out.setdefault(cfg.base_hash(), cfg)
    return out


class OptunaSpace:
    """Optuna's define-by-run search space of a sweep: conditional keys are only drawn when their
    conditions hold, so no trial pairs e.g. ``imp`` with ``bn_scale``. An alternative of a key with
    several is its own Optuna parameter (``prune.criterion[prune.method=channel]``): Optuna keeps
    one value set per parameter name."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.labels = {k: [e.label() if len(es) > 1 else k for e in es] for k, es in sweep.space.items()}

    def __call__(self, trial: Any) -> Dict[str, Any]:
        values: Dict[str, Any] = {}
        for key in self.sweep.order:
            entry = self.sweep.active(key, values)
            if entry is not None:
                name = self.labels[key][self.sweep.space[key].index(entry)]
                values[key] = entry.dist.suggest(trial, name)
        return self.sweep.complete(values)


class SweepOptunaSearch(OptunaSearch):
    """OptunaSearch whose trial configs hold exactly the swept keys, and which tells Optuna that a
    trial without a final report (stopped early by ASHA) was pruned: its early accuracy stays off
    the study's Pareto front."""

    def __init__(self, *args: Any, keys: Sequence[str] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._keys = tuple(keys)

    def suggest(self, trial_id: str) -> Optional[Dict]:
        params = super().suggest(trial_id)
        if not isinstance(params, dict):
            return params
        return {k: params[k] for k in self._keys}

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        if result is not None and result.get("stage") != "done":
            result = None  # no value + no error = PRUNED in Optuna
        super().on_trial_complete(trial_id, result, error)


# ---------------------------------------------------------------------------------------------
# Storage: a local or NFS directory, or a cloud URI, through pyarrow's filesystems (as Ray Tune)


def is_uri(location: str) -> bool:
    return "://" in location


class Store:
    """Files under one directory of local, NFS or cloud (``s3://``, ``gs://``) storage. The
    filesystem is opened on first use, so naming a bucket costs nothing (``--dry-run``)."""

    def __init__(self, location: str):
        self.location = location.rstrip("/") if is_uri(location) else os.path.abspath(location)
        self.local = not is_uri(location)
        self._fs: Any = None
        self._root = self.location

    @property
    def fs(self) -> Any:
        if self._fs is None:
            if self.local:
                self._fs = pafs.LocalFileSystem()
            else:
                self._fs, self._root = pafs.FileSystem.from_uri(self.location)
        return self._fs

    def path(self, rel: str = "") -> str:
        """The filesystem path of ``rel`` (for a bucket: without the scheme)."""
        self.fs
        return posixpath.join(self._root, rel) if rel else self._root

    def uri(self, rel: str = "") -> str:
        return posixpath.join(self.location, rel) if rel else self.location

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_text(self, rel: str) -> Optional[str]:
        if not self.exists(rel):
            return None
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read().decode()

    def write_text(self, rel: str, text: str) -> None:
        self.fs.create_dir(posixpath.dirname(self.path(rel)), recursive=True)
        with self.fs.open_output_stream(self.path(rel)) as f:
            f.write(text.encode())

    def put(self, local: Path, rel: str) -> None:
        self.fs.create_dir(posixpath.dirname(self.path(rel)), recursive=True)
        pafs.copy_files(str(local), self.path(rel), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def get(self, rel: str, local: Path) -> None:
        """Copy to ``local`` through a temporary name: readers never see half a file."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
        pafs.copy_files(self.path(rel), str(tmp), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        os.replace(tmp, local)

    def subdirs(self, rel: str = "") -> List[str]:
        if not self.exists(rel):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel)))
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


BASE_FILE = "base.pt"
BASE_LOG = "base_task.log"  # one line per base training, written by the base task


def node_cache(exp_location: str) -> Path:
    """Where a node keeps bases of an experiment in cloud storage (local and NFS storage hold them
    in place)."""
    tag = hashlib.sha256(exp_location.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "prune-sweep" / tag / "base_cache"


# ---------------------------------------------------------------------------------------------
# What runs on the workers: the base task and the trial


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its swept keys."""

    base: Dict[str, Any]  # flat config every trial starts from
    exp: str  # experiment directory: local/NFS path or cloud URI
    threads: int  # torch threads per trial (the trial's CPUs)
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # one launch; see TrialFailed


class TrialFailed(RuntimeError):
    """A trial that failed in a way a retry cannot change (NaN loss, failed rebuild check, bad
    config): recorded by its first attempt so Tune's retries end at once with the same reason."""


def _cache_dir(exp: str) -> str:
    return posixpath.join(exp, "base_cache") if not is_uri(exp) else str(node_cache(exp))


def _fetch_base(cfg: ExperimentConfig, exp: str) -> None:
    """With cloud storage, copy the trained base to this node's cache if it is not there yet."""
    if not is_uri(exp):
        return
    from prune_core import base_path

    local = base_path(cfg)
    rel = f"base_cache/{cfg.base_hash()}/{BASE_FILE}"
    store = Store(exp)
    if not local.exists() and store.exists(rel):
        store.get(rel, local)


def train_base(flat: Dict[str, Any], exp: str) -> Dict[str, Any]:
    """Ray task: train (or find) the base of ``flat`` in the sweep's base cache."""
    from prune_core import ensure_base

    cfg = ExperimentConfig.from_dict({**flat, "runtime.cache_dir": _cache_dir(exp), "runtime.resume": True,
                                      "runtime.progress": "off"})
    if cfg.runtime.threads:
        import torch

        torch.set_num_threads(cfg.runtime.threads)
    _fetch_base(cfg, exp)
    t0 = time.perf_counter()
    base = ensure_base(cfg, log=print)
    trained, seconds, path = base.trained, time.perf_counter() - t0, base.path
    if trained:
        with open(path.parent / BASE_LOG, "a") as fh:
            fh.write(f"trained {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.uname().nodename} "
                     f"in {seconds:.1f} s, val_acc {base.val_acc:.2f}\n")
        if is_uri(exp):
            store = Store(exp)
            for name in (BASE_FILE, BASE_LOG):
                store.put(path.parent / name, f"base_cache/{cfg.base_hash()}/{name}")
    return {"hash": cfg.base_hash(), "trained": trained, "seconds": seconds, "val_acc": base.val_acc}


class TuneReporter:
    """prune_core's reporter: every fine-tune epoch and the final metrics go to ``tune.report``,
    epochs with the run's working directory as a ``tune.Checkpoint``.

    Every report carries ``val_acc`` (ASHA's metric; the final one repeats ``val_acc_final``) and
    ``flops_kept`` (known once the model is pruned), so a searcher can read both from any report,
    and ``node_id``, the Ray node that ran it."""

    def __init__(self, workdir: Path, keep_final_model: bool):
        self.workdir = workdir
        self.keep_final_model = keep_final_model  # runtime.save_model: the rebuilt model as a last checkpoint
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, metrics: Dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        row = dict(metrics)
        if row.get("stage") == "done":
            row["val_acc"] = row.get("val_acc_final")
            row["epoch"] = row.get("finetune_epochs")
            checkpoint_dir = self.workdir if self.keep_final_model else None
        else:
            row["flops_kept"] = row["flops_nz_final"] / row["flops_base"]
        row["node_id"] = self.node_id
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(row, checkpoint=checkpoint)


def run_trial(params: Dict[str, Any], setup: TrialSetup) -> None:
    """Tune's trainable: one prune_core experiment, resumed from the trial's last checkpoint."""
    store = Store(setup.exp)
    marker = f".trial_errors/{setup.session}/{tune.get_context().get_trial_id()}.txt"
    recorded = store.read_text(marker)
    if recorded:
        raise TrialFailed(f"{recorded} (not retried: the same trial fails the same way)")
    from prune_core import run

    workdir = Path(tempfile.mkdtemp(prefix="prune_trial_"))
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(str(workdir))
        values = {**setup.base, **params, "runtime.workdir": str(workdir), "runtime.resume": checkpoint is not None,
                  "runtime.cache_dir": _cache_dir(setup.exp), "runtime.progress": "off"}
        values.setdefault("runtime.threads", setup.threads)
        cfg = ExperimentConfig.from_dict(values)
        _fetch_base(cfg, setup.exp)
        try:
            run(cfg, reporter=TuneReporter(workdir, cfg.runtime.save_model), log=print)
        except NotRetryable as exc:
            store.write_text(marker, f"{type(exc).__name__}: {exc}")
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def trial_dirname(trial: Any) -> str:
    """``<trial id>_<swept values>``: short, unique and readable in a file browser."""
    values = "_".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in trial.config.values())
    return re.sub(r"[^A-Za-z0-9_.=-]", "", f"{trial.trial_id}_{values}")[:100]


# ---------------------------------------------------------------------------------------------
# The driver: Ray, bases, Tune


class TrialTable(tune.CLIReporter):
    """One table of trials (status, swept values, epoch, accuracy, FLOPs kept), printed when a
    trial changes status or epoch, at most every ``PROGRESS_PERIOD_S``."""

    def __init__(self, params: Mapping[str, str], total: int):
        super().__init__(metric_columns={"epoch": "epoch", "val_acc": "val acc", "acc_final": "test acc",
                                         "flops_kept": "FLOPs kept"},
                         parameter_columns=dict(params), total_samples=total, max_progress_rows=40,
                         max_error_rows=10, max_report_frequency=PROGRESS_PERIOD_S, print_intermediate_tables=True)
        self._shown: Tuple = ()

    def should_report(self, trials: List[Any], done: bool = False) -> bool:
        state = tuple((t.trial_id, t.status, (t.last_result or {}).get("epoch")) for t in trials)
        if done:
            return True
        if state == self._shown or time.time() - self._last_report_time < self._max_report_freqency:
            return False
        self._shown, self._last_report_time = state, time.time()
        return True

    def report(self, trials: List[Any], done: bool, *sys_info: str) -> None:
        text = self._progress_str(trials, done)  # without Tune's local staging directory: results go to storage
        self._print("\n".join(ln for ln in text.split("\n") if not ln.startswith("Result logdir:")))


def _short_name(key: str) -> str:
    return {"prune.method": "method", "prune.criterion": "criterion", "prune.ratio": "ratio",
            "prune.scope": "scope", "finetune.lr": "lr"}.get(key, key)


def quiet_environment(verbose: bool) -> None:
    """Ray's legacy reporter (our one table) instead of its new console output; no log spam."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0" if verbose else "1")
    # a forced experiment-state save after every epoch checkpoint keeps --resume exact; not a problem
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # quiet: errored trials are listed, with their reasons, at the end
    level = logging.INFO if verbose else logging.CRITICAL
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(level)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def init_ray(address: Optional[str], verbose: bool, dashboard: bool) -> bool:
    """Start (or join) Ray; returns whether this call started it. Prints the dashboard's address."""
    if ray.is_initialized():
        return False
    level = logging.INFO if verbose else logging.ERROR
    if address:
        ctx = ray.init(address=address, log_to_driver=verbose, logging_level=level)
    else:
        ctx = ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=verbose,
                       logging_level=level)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        token = Path.home() / ".ray" / "auth_token"
        note = f" (it asks for the token in {token})" if token.exists() else ""
        print(f"dashboard: http://{url}{note}")
    return True


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_resources(sweep: Sweep) -> None:
    """On a Ray this launch started (no autoscaler), a trial must fit, or it would wait forever."""
    have = ray.cluster_resources()
    cpu, gpu = have.get("CPU", 0), have.get("GPU", 0)
    if sweep.resources.cpu > cpu or sweep.resources.gpu > gpu:
        raise SweepError(f"resources: a trial needs {sweep.resources.cpu:g} CPU and {sweep.resources.gpu:g} GPU; "
                         f"this machine has {cpu:g} CPU and {gpu:g} GPU (run it on a cluster with --address)")


def check_shared_storage(storage: Store, shared: bool) -> None:
    nodes = alive_nodes()
    if storage.local and nodes > 1 and not shared:
        raise SweepError(f"storage {storage.location} is a local path but the cluster has {nodes} nodes; "
                         "use s3://... or gs://..., or pass --shared-storage if every node mounts it (NFS)")


def write_experiment_files(sweep: Sweep, exp: Store) -> None:
    """``sweep.yaml`` (the resolved sweep) and ``base.yaml`` (what the sweep fixes, for
    ``python -m prune_core --config base.yaml``), before any trial starts."""
    exp.write_text("sweep.yaml", yaml.safe_dump(sweep.to_yaml(), sort_keys=False))
    base = dict(sweep.base)
    if exp.local:
        base["runtime.cache_dir"] = posixpath.join(exp.location, "base_cache")  # the CLI reuses the sweep's bases
    exp.write_text("base.yaml", yaml.safe_dump(nest(base), sort_keys=False))


def adopt_bases(bases: Mapping[str, ExperimentConfig], storage: Store, name: str) -> List[str]:
    """Copy bases another sweep in the same storage already trained into this experiment."""
    adopted = []
    exp = Store(storage.uri(name))
    others = [d for d in storage.subdirs() if d != name]
    for h in bases:
        rel = f"base_cache/{h}/{BASE_FILE}"
        if exp.exists(rel):
            continue
        for other in others:
            src = Store(storage.uri(other))
            if not src.exists(rel):
                continue
            if exp.local:
                dst = Path(exp.path(rel))
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src.path(rel), dst)
                except OSError:
                    shutil.copyfile(src.path(rel), dst)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    src.get(rel, Path(tmp) / BASE_FILE)
                    exp.put(Path(tmp) / BASE_FILE, rel)
            adopted.append(f"{h} (from {other})")
            break
    return adopted


def prepare_bases(sweep: Sweep, configs: Sequence[Mapping[str, Any]], storage: Store, exp: Store) -> None:
    """Train each distinct base of the sweep once, in parallel Ray tasks with a trial's resources."""
    bases = base_configs(sweep, configs)
    if not bases:
        print("bases: none to train (model.pretrained_path, or a base key drawn from a continuous range: "
              "each trial then trains or loads its own)")
        return
    for line in adopt_bases(bases, storage, sweep.name):
        print(f"base {line}: reused")
    todo = {h: cfg for h, cfg in bases.items() if not exp.exists(f"base_cache/{h}/{BASE_FILE}")}
    for h in bases.keys() - todo.keys():
        print(f"base {h}: cached")
    if not todo:
        return
    print(f"training {len(todo)} base model{'s' * (len(todo) > 1)} "
          f"({', '.join(f'{c.model.name} on {c.data.name}, seed {c.runtime.seed}' for c in todo.values())})")
    task = ray.remote(train_base).options(num_cpus=sweep.resources.cpu, num_gpus=sweep.resources.gpu)
    t0 = time.perf_counter()
    refs = [task.remote({**cfg_flat(sweep, cfg), "runtime.threads": _threads(sweep)}, exp.location)
            for cfg in todo.values()]
    for info in ray.get(refs):
        what = f"trained in {info['seconds']:.1f} s" if info["trained"] else "cached"
        print(f"base {info['hash']}: {what}, val acc {info['val_acc']:.2f}%")
    print(f"bases ready in {time.perf_counter() - t0:.1f} s")


def cfg_flat(sweep: Sweep, cfg: ExperimentConfig) -> Dict[str, Any]:
    """The sweep's base with the values that distinguish ``cfg``'s base."""
    flat = cfg.to_flat()
    return {**sweep.base, **{k: flat[k] for k in sweep.keys}}


def _threads(sweep: Sweep) -> int:
    return int(sweep.base.get("runtime.threads") or max(1, int(sweep.resources.cpu)))


def make_searcher(sweep: Sweep, configs: List[Dict[str, Any]], exp: Store, local_dir: Path) -> Any:
    s = sweep.search
    if s.algorithm != "optuna":
        return BasicVariantGenerator(points_to_evaluate=configs, max_concurrent=s.max_concurrent)
    import optuna

    if s.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=s.seed, **({"population_size": s.population_size}
                                                                 if s.population_size else {}))
    else:
        sampler = optuna.samplers.TPESampler(seed=s.seed)
    db = (Path(exp.path()) if exp.local else local_dir) / "optuna.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    metrics, modes = [m for m, _ in s.objectives], [m for _, m in s.objectives]
    return SweepOptunaSearch(OptunaSpace(sweep), keys=sweep.keys, metric=metrics if len(metrics) > 1 else metrics[0],
                             mode=modes if len(modes) > 1 else modes[0], sampler=sampler, study_name=sweep.name,
                             storage=optuna.storages.RDBStorage(f"sqlite:///{db}"))


def make_scheduler(sweep: Sweep, configs: Sequence[Mapping[str, Any]]) -> Any:
    sch = sweep.scheduler
    if sch.name == "fifo":
        return tune.schedulers.FIFOScheduler()
    epochs = sch.max_t or trial_epochs(sweep, configs)
    # Rungs strictly below the last epoch, and no stop at max_t: a trial that survives every rung
    # always reaches its final report (Ray's ASHA stops trials *at* max_t otherwise).
    return tune.schedulers.ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max",
                                         max_t=max(sch.grace_period, epochs - 1), grace_period=sch.grace_period,
                                         reduction_factor=sch.reduction_factor, stop_last_trials=False)


def make_trainable(sweep: Sweep, exp: Store) -> Any:
    setup = TrialSetup(base=sweep.base, exp=exp.location, threads=_threads(sweep))
    trainable = tune.with_parameters(run_trial, setup=setup)
    return tune.with_resources(trainable, {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})


def make_tuner(sweep: Sweep, configs: List[Dict[str, Any]], storage: Store, exp: Store, verbose: bool) -> Any:
    total = num_trials(sweep)
    optuna = sweep.search.algorithm == "optuna"
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(sweep, configs, exp, node_cache(exp.location).parent),
        scheduler=make_scheduler(sweep, configs if not optuna else corner_configs(sweep)),
        num_samples=total,
        max_concurrent_trials=(sweep.search.max_concurrent or None) if optuna else None,
        reuse_actors=True,  # same resources for every trial: 8 short trials 8.2 s -> 1.9 s (ARCHITECTURE.md)
        trial_dirname_creator=trial_dirname)
    params = {k: _short_name(k) for k in sweep.keys}
    run_config = tune.RunConfig(
        name=sweep.name, storage_path=storage.location,
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the last epoch is all a restart needs
        progress_reporter=TrialTable(params, total), verbose=2 if verbose else 1)
    # grid and random trials are preset points; Tune checks each preset key against the space
    space = {k: tune.choice(list(dict.fromkeys(c[k] for c in configs))) for k in sweep.keys} if configs else {}
    return tune.Tuner(make_trainable(sweep, exp), param_space=space, tune_config=tune_config, run_config=run_config)


def summarize(results: Any, exp: Store, expected: int, resume_hint: str) -> int:
    """Counts, the reasons of errored trials, where the results are and what to run next.
    Exit code 0 when any trial finished (or none errored), else 1."""
    done = stopped = 0
    errors = []
    for r in results:
        metrics = r.metrics or {}
        if r.error is not None:
            lines = [ln.strip() for ln in str(r.error).strip().splitlines() if ln.strip()]
            tid = metrics.get("trial_id") or Path(str(r.path)).name
            errors.append(f"  {tid}: {lines[-1] if lines else type(r.error).__name__}")
        elif metrics.get("stage") == "done":
            done += 1
        else:
            stopped += 1
    unfinished = len(results) - results.num_terminated - results.num_errors + max(0, expected - len(results))
    print(f"trials: {done} finished, {stopped - min(stopped, unfinished)} stopped early by the scheduler, "
          f"{len(errors)} errored" + (f", {unfinished} unfinished" if unfinished else ""))
    for line in errors[:20]:
        print(line)
    if unfinished:
        print(f"continue with: {resume_hint}")
    print(f"results: {exp.location}")
    where = exp.location if exp.local else f"<a local copy of {exp.location}>"
    print(f"next:    python analyze.py {where}")
    return 0 if done or not errors else 1


# ---------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage block
        raise SweepError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prune-sweep", description="Run a pruning sweep (a YAML file) with Ray Tune.")
    a = p.add_argument
    a("sweep", nargs="?", default=str(DEFAULT_SWEEP), help="sweep file (default: sweeps/quickstart.yaml)")
    a("--address", help="an existing Ray cluster (auto: the one this machine belongs to)")
    a("--storage", help="where experiments go: a path, NFS mount, s3:// or gs:// URI (default: the sweep's)")
    a("--shared-storage", action="store_true", help="the local --storage path is mounted on every node (NFS)")
    a("--name", help="experiment name (default: the sweep's; smoke tests add -smoke)")
    a("--resume", action="store_true", help="continue the interrupted sweep <storage>/<name>")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="change a base key, e.g. finetune.epochs=5")
    a("--dry-run", action="store_true", help="print the trials and their count; start nothing")
    a("--smoke-test", action="store_true", help="tiny epochs and few trials (prune_core.SMOKE), for CI")
    a("--no-dashboard", action="store_true", help="start the local Ray without its dashboard")
    a("-v", "--verbose", action="store_true", help="Ray's and every trial's full output")
    return p


def _overrides(items: Sequence[str]) -> Dict[str, Any]:
    try:
        return parse_overrides(items, example="finetune.epochs=5")
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


def _experiment(args: argparse.Namespace) -> Tuple[Sweep, Store, Store]:
    """The sweep and its storage; with --resume, the sweep stored in the experiment directory."""
    sweep = load_sweep(args.sweep, _overrides(args.set), args.smoke_test)
    name = args.name or (f"{sweep.name}-smoke" if args.smoke_test else sweep.name)
    storage = Store(args.storage or sweep.storage)
    exp = Store(storage.uri(name))
    if args.dry_run:
        pass
    elif args.resume:
        if args.set:
            raise SweepError("--set cannot change a sweep that is resumed; start a new one with --name")
        text = exp.read_text("sweep.yaml")
        if text is None or not tune.Tuner.can_restore(exp.location):
            raise SweepError(f"--resume: {exp.location} holds no interrupted sweep to continue")
        stored = parse_sweep(yaml.safe_load(text), exp.uri("sweep.yaml"))
        validate(stored)
        sweep = stored
    elif tune.Tuner.can_restore(exp.location):
        raise SweepError(f"{exp.location} already holds a sweep; continue it with --resume or choose another --name")
    sweep = dataclasses.replace(sweep, name=name, storage=storage.location)
    return sweep, storage, exp


def print_plan(sweep: Sweep, exp: Store) -> None:
    s = sweep.search
    res = f"{sweep.resources.cpu:g} CPU" + (f" + {sweep.resources.gpu:g} GPU" if sweep.resources.gpu else "")
    print(f"sweep {sweep.name}: {s.algorithm} search, {sweep.scheduler.name} scheduler, {res} per trial"
          + (f", at most {s.max_concurrent} at once" if s.max_concurrent else ""))
    print(f"experiment directory: {exp.location}")
    if s.algorithm == "optuna":
        corners = corner_configs(sweep)
        goals = ", ".join(f"{m} {d}" for m, d in s.objectives)
        print(f"optuna ({s.sampler}; {goals}) draws {num_trials(sweep)} trials while it runs from:")
        for key, entries in sweep.space.items():
            for e in entries:
                cond = f"  when {', '.join(f'{k} in {list(v)}' for k, v in e.when)}" if e.when else ""
                print(f"  {key}: {e.dist.kind} {list(e.dist.args)}{cond}")
        print(f"{_bases_line(sweep, corners)}; {len(corners)} corners of the space validated")
        print(f"{num_trials(sweep)} trials")
        return
    configs = trial_configs(sweep)
    keys = list(sweep.keys)
    rows = [[str(i + 1)] + [f"{c[k]:.4g}" if isinstance(c[k], float) else str(c[k]) for k in keys]
            for i, c in enumerate(configs)]
    header = ["#"] + keys
    widths = [max(len(r[j]) for r in rows + [header]) for j in range(len(header))]
    for r in [header] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print(_bases_line(sweep, configs))
    print(f"{len(configs)} trials")


def _bases_line(sweep: Sweep, configs: Sequence[Mapping[str, Any]]) -> str:
    n = len(base_configs(sweep, configs))
    if n:
        return f"{n} base model{'s' * (n > 1)} to train once"
    if sweep.base_config().model.pretrained_path:
        return f"base model given: {sweep.base_config().model.pretrained_path}"
    return "base models trained by each trial (a base key is drawn from a continuous range)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``prune-sweep``: validate a sweep file, train its bases, run (or resume) its trials."""
    try:
        args = build_parser().parse_args(argv)
        sweep, storage, exp = _experiment(args)
    except SweepError as exc:
        print(f"prune-sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_plan(sweep, exp)
        return 0
    quiet_environment(args.verbose)
    try:
        started = init_ray(args.address, args.verbose, dashboard=not args.no_dashboard)
    except ConnectionError as exc:
        print(f"prune-sweep: error: --address {args.address}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        if started and not args.address:
            check_resources(sweep)
        return _run(args, sweep, storage, exp)
    except SweepError as exc:
        print(f"prune-sweep: error: {exc}", file=sys.stderr)
        return 2
    except ray.exceptions.RayTaskError as exc:  # a base task failed: e.g. the dataset is missing
        cause = str(exc.cause if getattr(exc, "cause", None) else exc).strip().splitlines()
        print(f"prune-sweep: error: base training failed: {cause[-1] if cause else exc}", file=sys.stderr)
        return 1
    finally:
        if started:
            ray.shutdown()


def _run(args: argparse.Namespace, sweep: Sweep, storage: Store, exp: Store) -> int:
    check_shared_storage(storage, args.shared_storage)
    configs = trial_configs(sweep) if sweep.search.algorithm != "optuna" else []
    expected = num_trials(sweep)
    if not args.resume:
        write_experiment_files(sweep, exp)
    print(f"sweep {sweep.name}: {expected} trials, {sweep.search.algorithm} search, "
          f"{sweep.scheduler.name} scheduler -> {exp.location}")
    prepare_bases(sweep, configs or corner_configs(sweep), storage, exp)
    if args.resume:
        tuner = tune.Tuner.restore(exp.location, trainable=make_trainable(sweep, exp), resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = make_tuner(sweep, configs, storage, exp, args.verbose)
    hint = f"python launch.py {args.sweep} --resume" + (f" --name {sweep.name}" if args.name else "") + (
        " --smoke-test" if args.smoke_test else "") + (f" --storage {storage.location}" if args.storage else "")
    try:
        results = tuner.fit()
    except KeyboardInterrupt:
        print(f"interrupted; continue with: {hint}", file=sys.stderr)
        return 130
    if not exp.local and sweep.search.algorithm == "optuna":
        db = node_cache(exp.location).parent / "optuna.db"
        if db.exists():
            exp.put(db, "optuna.db")
    return summarize(results, exp, expected, hint)


if __name__ == "__main__":
    # run as the module ``launch`` so that what Tune pickles (trainable, searcher) refers to
    # ``launch.*``, whichever way the sweep is later resumed
    sys.path.insert(0, str(ROOT))
    import launch

    raise SystemExit(launch.main())
