"""The sweep language: a YAML file of a base config, a search space of dotted config keys, a
searcher, a scheduler, resources and storage, parsed into a frozen ``Sweep``.

Everything here reads and checks without Ray; a bad key, value or combination raises
``SweepError`` with one line naming the key. Expanding a sweep into its trials is
``prune_sweep.expand``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from prune_core.errors import ConfigError
from prune_core.plugins import CONFIG_KEY as PLUGINS_KEY, absolute_reference, file_reference, with_plugins
from prune_core.sections import DEFAULTS, SMOKE, canonical, flat_value, flatten, mapping_entry, nest
from prune_sweep.checks import MAX_CPU, MAX_GPU, SweepError, as_mapping, as_number, check_name, fail
from prune_sweep.loggers import DEFAULT_LOGGERS, Logger, parse_loggers

if TYPE_CHECKING:
    from prune_core.config import ExperimentConfig

CONFIG_KEYS = frozenset(DEFAULTS)


def experiment_config() -> "type[ExperimentConfig]":
    """``prune_core.config.ExperimentConfig``, imported when a sweep is first checked: it fills
    the registries (torch), which ``--help`` and argument errors need not wait for."""
    from prune_core.config import ExperimentConfig

    return ExperimentConfig

_HERE = Path(__file__).resolve().parent
# the shipped sweeps: sweeps/ of a source checkout, which an installed wheel carries as prune_sweep/sweeps
SWEEPS_DIR = _HERE / "sweeps" if (_HERE / "sweeps").is_dir() else _HERE.parent / "sweeps"
DEFAULT_SWEEP = SWEEPS_DIR / "quickstart.yaml"

DEFAULT_STORAGE = "ray_results"  # relative to where launch.py is started, like Ray's own default
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
ALGORITHMS = ("grid", "random", "optuna")
SAMPLERS = ("tpe", "nsga2")
SCHEDULERS = ("fifo", "asha", "mo_asha")  # mo_asha: prune_sweep.moasha, on search.objectives
# metrics present in every report of a trial (per epoch and final), so searchers may use them
# realisable (dense) and theoretical (effective, non-zero) costs are separate objectives: a search on
# effective FLOPs drifts to mask methods that no kernel runs faster
OBJECTIVES = ("val_acc", "flops_kept_dense", "flops_kept_effective", "flops_final", "flops_nz_final", "params_nz_final")
DEFAULT_OBJECTIVES = {"val_acc": "max", "flops_kept_dense": "min"}
# keys the launcher sets for every trial itself
RESERVED = ("runtime.workdir", "runtime.resume", "runtime.cache_dir", "runtime.progress")
TOP_LEVEL = ("name", "description", "plugins", "base", "space", "controls", "search", "scheduler", "resources",
             "storage", "max_failures", "seeds", "budget", "loggers", "smoke_test")
# controls: what a sweep file's controls: names, as prune.control values (prune_core.controls)
CONTROL_ARMS = {"scratch": ("scratch_e", "scratch_b"), "scratch_e": ("scratch_e",), "scratch_b": ("scratch_b",),
                "narrow": ("narrow",)}


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
    # optuna: the first trials' values of some swept keys, the rest drawn by the sampler (Tune's
    # points_to_evaluate, Optuna's enqueue_trial), e.g. the ends of a ratio range
    points_to_evaluate: Tuple[Tuple[Tuple[str, Any], ...], ...] = ()


@dataclass(frozen=True)
class Scheduler:
    name: str = "fifo"
    grace_period: int = 1  # asha, mo_asha: epochs every trial gets before it can be stopped
    reduction_factor: float = 2.0  # asha, mo_asha: keep the best 1/reduction_factor at each rung
    max_t: int = 0  # asha, mo_asha: epochs of the longest trial (0 = derived from the configs)


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
    seeds: int = 1  # every configuration runs with this many seeds: runtime.seed, runtime.seed + 1, ...
    loggers: Tuple[Logger, ...] = tuple(Logger(n) for n in DEFAULT_LOGGERS)  # trackers of the results
    smoke_test: bool = False
    controls: Tuple[str, ...] = ()  # prune.control arms added beside every channel trial (expand.with_controls)
    source: str = ""  # the file it came from, for messages
    base_flat: Dict[str, Any] = field(default_factory=dict, repr=False)  # every config key, resolved

    @property
    def keys(self) -> Tuple[str, ...]:
        return (tuple(self.space) + (("runtime.seed",) if self.seeds > 1 else ())
                + (("prune.control",) if self.controls else ()))

    @property
    def seed_values(self) -> Tuple[int, ...]:
        """The seeds every configuration runs with (each seed trains its own base)."""
        first = int(self.base_flat.get("runtime.seed", 0))
        return tuple(range(first, first + self.seeds))

    def base_config(self) -> "ExperimentConfig":
        return experiment_config().from_dict(self.base)

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
            cfg = experiment_config().from_dict({**self.base, **values})
        except ConfigError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            raise SweepError(f"{self.source}: {exc} (in the trial {shown})") from None
        flat = cfg.to_flat()
        return {k: flat_value(flat, k) for k in self.keys}

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
        search["points_to_evaluate"] = [dict(p) for p in self.search.points_to_evaluate]
        out["search"] = search
        out["scheduler"] = dataclasses.asdict(self.scheduler)
        out["resources"] = dataclasses.asdict(self.resources)
        out["storage"] = self.storage
        out["max_failures"] = self.max_failures
        if self.seeds > 1:
            out["seeds"] = self.seeds
        out["loggers"] = [lg.to_yaml() for lg in self.loggers]
        if self.smoke_test:
            out["smoke_test"] = True
        if self.controls:
            out["controls"] = list(self.controls)
        return out


def _config_key(key: Any, source: str, where: str) -> str:
    """``key`` if it names an ExperimentConfig field, else the config's own one-line error."""
    if not isinstance(key, str) or "." not in key:
        raise fail(source, where, f"{key!r}: expected a dotted config key such as prune.ratio")
    if key not in CONFIG_KEYS and not mapping_entry(key)[0]:
        try:
            experiment_config().from_dict({key: None})
        except ConfigError as exc:
            raise fail(source, where, str(exc)) from None
    return key


def _scalars(value: Any, source: str, where: str) -> Tuple[Any, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
        raise fail(source, where, f"{value!r}: expected a value or a non-empty list of values")
    return tuple(values)


def _parse_dist(key: str, spec: Any, source: str, where: str) -> Entry:
    if not isinstance(spec, Mapping):
        raise fail(source, where, f"{spec!r}: expected a distribution such as {{grid: [0.3, 0.5]}}; "
                   f"one of {', '.join(DISTRIBUTIONS)} (fixed values belong in base)")
    kinds = [k for k in spec if k != "when"]
    unknown = [k for k in kinds if k not in DISTRIBUTIONS]
    if unknown or len(kinds) != 1:
        bad = unknown[0] if unknown else ", ".join(kinds) or "nothing"
        raise fail(source, where, f"{bad!r}: expected exactly one of {', '.join(DISTRIBUTIONS)} "
                   "(and optionally when)")
    kind = kinds[0]
    args = spec[kind]
    if kind in ("grid", "choice"):
        if not isinstance(args, list) or not args:
            raise fail(source, f"{where}.{kind}", f"{args!r}: expected a non-empty list of values")
        values = tuple(canonical(key, v) for v in _scalars(args, source, f"{where}.{kind}"))
    else:
        if not isinstance(args, list) or len(args) != 2:
            raise fail(source, f"{where}.{kind}", f"{args!r}: expected [low, high]")
        number = int if kind == "randint" else float
        accepted = "an integer" if kind == "randint" else "a number"
        low, high = (as_number(a, source, f"{where}.{kind}", number, accepted=accepted) for a in args)
        if not low < high:
            raise fail(source, f"{where}.{kind}", f"{args!r}: expected low < high")
        if kind == "loguniform" and low <= 0:
            raise fail(source, f"{where}.{kind}", f"{args!r}: expected 0 < low < high")
        values = (low, high)
    when = spec.get("when") or {}
    if not isinstance(when, Mapping):
        raise fail(source, f"{where}.when", f"{when!r}: expected a mapping such as {{prune.method: [channel]}}")
    conds = []
    for ckey, allowed in when.items():
        _config_key(ckey, source, f"{where}.when")
        if ckey == key:
            raise fail(source, f"{where}.when", f"{ckey}: a key cannot depend on itself")
        allowed = _scalars(allowed, source, f"{where}.when.{ckey}")
        conds.append((ckey, tuple(canonical(ckey, v) for v in allowed)))
    return Entry(key, Dist(kind, values), tuple(conds))


def _parse_space(raw: Any, source: str) -> Tuple[Dict[str, Tuple[Entry, ...]], Tuple[str, ...]]:
    if not isinstance(raw, Mapping) or not raw:
        raise fail(source, "space", "expected a mapping of dotted config keys to distributions, "
                   "e.g. prune.ratio: {grid: [0.3, 0.5]}")
    space: Dict[str, Tuple[Entry, ...]] = {}
    for key, spec in raw.items():
        where = f"space.{key}"
        _config_key(key, source, "space")
        if key in (*RESERVED, PLUGINS_KEY):
            raise fail(source, where, "plug-ins are listed under plugins: at the top of the file; not swept"
                       if key == PLUGINS_KEY else "set by launch.py for every trial; it cannot be swept")
        alternatives = spec if isinstance(spec, list) else [spec]
        if not alternatives:
            raise fail(source, where, "expected a distribution or a list of conditional ones")
        entries = tuple(_parse_dist(key, s, source, f"{where}[{i}]" if isinstance(spec, list) else where)
                        for i, s in enumerate(alternatives))
        if len(entries) > 1 and not all(e.when for e in entries):
            raise fail(source, where, "several alternatives need a `when` condition each")
        space[key] = entries
    return space, _dependency_order(space, source)


def _dependency_order(space: Mapping[str, Sequence[Entry]], source: str) -> Tuple[str, ...]:
    deps = {k: {c for e in es for c, _ in e.when if c in space} for k, es in space.items()}
    order: List[str] = []
    while len(order) < len(space):
        ready = [k for k in space if k not in order and deps[k] <= set(order)]
        if not ready:
            stuck = next(k for k in space if k not in order)
            raise fail(source, f"space.{stuck}", "its `when` conditions depend on each other in a cycle")
        order.extend(ready)
    return tuple(order)


def _parse_search(raw: Any, source: str) -> Search:
    d = as_mapping(raw, source, "search", [f.name for f in dataclasses.fields(Search)])
    algorithm = d.get("algorithm", "grid")
    if algorithm not in ALGORITHMS:
        raise fail(source, "search.algorithm", f"{algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    sampler = d.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise fail(source, "search.sampler", f"{sampler!r}: expected one of {', '.join(SAMPLERS)}")
    objectives = d.get("objectives", DEFAULT_OBJECTIVES)
    if not isinstance(objectives, Mapping) or not objectives:
        raise fail(source, "search.objectives", f"{objectives!r}: expected a mapping such as "
                   "{val_acc: max, flops_kept_dense: min}")
    for metric, mode in objectives.items():
        if metric == "flops_kept":
            raise fail(source, f"search.objectives.{metric}", "ambiguous; name the cost: flops_kept_dense "
                       "(realisable by dense kernels) or flops_kept_effective (non-zero weights only)")
        if metric not in OBJECTIVES:
            raise fail(source, f"search.objectives.{metric}", f"unknown metric; expected one of {', '.join(OBJECTIVES)}")
        if mode not in ("max", "min"):
            raise fail(source, f"search.objectives.{metric}", f"{mode!r}: expected max or min")
    return Search(
        algorithm=algorithm,
        num_samples=as_number(d.get("num_samples", 1), source, "search.num_samples", int, 1,
                              accepted="an integer >= 1"),
        max_concurrent=as_number(d.get("max_concurrent", 0), source, "search.max_concurrent", int, 0,
                                  accepted="an integer >= 0 (0 = no limit)"),
        seed=as_number(d.get("seed", 0), source, "search.seed", int, accepted="an integer"),
        sampler=sampler,
        population_size=as_number(d.get("population_size", 0), source, "search.population_size", int, 0,
                                   accepted="an integer >= 0"),
        objectives=tuple(objectives.items()),
        points_to_evaluate=_points(d.get("points_to_evaluate", []), source))


def _points(raw: Any, source: str) -> Tuple[Tuple[Tuple[str, Any], ...], ...]:
    if not isinstance(raw, list) or not all(isinstance(p, Mapping) and p for p in raw):
        raise fail(source, "search.points_to_evaluate", f"{raw!r}: expected a list of mappings of swept keys to "
                   "values, such as [{prune.ratio: 0.8}, {prune.ratio: 0.2}]")
    return tuple(tuple(p.items()) for p in raw)


def _parse_scheduler(raw: Any, source: str) -> Scheduler:
    if isinstance(raw, str):
        raw = {"name": raw}
    d = as_mapping(raw, source, "scheduler", [f.name for f in dataclasses.fields(Scheduler)])
    name = d.get("name", "fifo")
    if name not in SCHEDULERS:
        raise fail(source, "scheduler.name", f"{name!r}: expected one of {', '.join(SCHEDULERS)}")
    return Scheduler(
        name=name,
        grace_period=as_number(d.get("grace_period", 1), source, "scheduler.grace_period", int, 1,
                                accepted="an integer >= 1"),
        reduction_factor=as_number(d.get("reduction_factor", 2), source, "scheduler.reduction_factor", float,
                                    1.000001, accepted="a number > 1"),
        max_t=as_number(d.get("max_t", 0), source, "scheduler.max_t", int, 0, accepted="an integer >= 0"))


def _parse_resources(raw: Any, source: str) -> Resources:
    d = as_mapping(raw, source, "resources", ("cpu", "gpu"))
    cpu = as_number(d.get("cpu", 1), source, "resources.cpu", float, 0, MAX_CPU, accepted=f"0 to {MAX_CPU} CPUs")
    gpu = as_number(d.get("gpu", 0), source, "resources.gpu", float, 0, MAX_GPU, accepted=f"0 to {MAX_GPU} GPUs, a "
                    "fraction below 1 or a whole number (0.5 shares a GPU; a trial runs on one node)")
    if gpu > 1 and not gpu.is_integer():
        raise fail(source, "resources.gpu", f"{gpu:g}: expected a fraction below 1 or a whole number of GPUs")
    if cpu == 0 and gpu == 0:
        raise fail(source, "resources", "a trial needs some cpu or gpu")
    return Resources(cpu=cpu, gpu=gpu)


def parse_sweep(raw: Any, source: str, overrides: Optional[Mapping[str, Any]] = None,
                smoke_test: bool = False, seeds: Optional[int] = None, plugins: Sequence[str] = ()) -> Sweep:
    """Check a loaded sweep file and apply ``--set`` overrides (and, for ``--smoke-test``,
    ``prune_core.SMOKE``) to its base; ``seeds`` (``--seeds``) replaces the file's ``seeds``.
    Raises SweepError with one line naming the key."""
    if not isinstance(raw, Mapping):
        raise SweepError(f"{source}: expected a mapping with keys {', '.join(TOP_LEVEL[:-1])}")
    unknown = [k for k in raw if k not in TOP_LEVEL]
    if unknown:
        raise fail(source, str(unknown[0]), f"unknown key; a sweep file has {', '.join(TOP_LEVEL[:-1])}")
    name = check_name(raw.get("name"), f"{source}: name")
    base_raw = raw.get("base") or {}
    if not isinstance(base_raw, Mapping):
        raise fail(source, "base", "expected a mapping of config keys (nested or dotted)")
    base = flatten(base_raw)
    here = Path(source).resolve().parent if Path(source).is_file() else Path.cwd()
    base, raw_space, code = _code_references(base, raw.get("space"), here)
    try:  # plug-ins first (and --plugin's): a broken one stops here, before Ray starts
        base = with_plugins(base, raw.get("plugins"), [*plugins, *code], source)
    except ConfigError as exc:
        raise fail(source, "plugins", str(exc)) from None
    smoke = bool(raw.get("smoke_test", False)) or smoke_test
    if smoke and not raw.get("smoke_test"):
        base.update(SMOKE)
    space, order = _parse_space(raw_space, source)
    for key, value in (overrides or {}).items():
        _config_key(key, source, "--set")
        if key in space:
            raise fail(source, "--set", f"{key} is swept by the space; --set changes base keys only")
        base[key] = value
    budget = as_mapping(raw.get("budget"), source, "budget", ("epochs",))
    if budget:  # the equal-budget mode: every trial trains budget.epochs in all, its base included
        if "prune.budget_epochs" in base or "prune.budget_epochs" in space:
            raise fail(source, "budget", "prune.budget_epochs is set too; use one or the other")
        base["prune.budget_epochs"] = as_number(budget.get("epochs"), source, "budget.epochs", int, 1,
                                                 accepted="a whole number of epochs >= 1")
    for key in base:
        _config_key(key, source, "base")
        if key in RESERVED:
            raise fail(source, f"base.{key}", "set by launch.py for every trial; remove it from the sweep")
    try:
        base_flat = experiment_config().from_dict(base).to_flat()
    except ConfigError as exc:
        raise fail(source, "base", str(exc)) from None
    base = _absolute_paths({k: canonical(k, v) for k, v in base.items()})
    max_failures = as_number(raw.get("max_failures", 2), source, "max_failures", int, -1,
                              accepted="an integer >= -1 (-1 = retry forever)")
    where = "--seeds" if seeds is not None else "seeds"
    seeds = as_number(seeds if seeds is not None else raw.get("seeds", 1), source, where, int, 1,
                       accepted="an integer >= 1 (runs of every configuration, one seed each)")
    if seeds > 1 and "runtime.seed" in space:
        raise fail(source, where, f"{seeds}: runtime.seed is already swept by the space; use one or the other")
    storage = raw.get("storage") or DEFAULT_STORAGE
    if not isinstance(storage, str):
        raise fail(source, "storage", f"{storage!r}: expected a path or a s3://, gs:// URI")
    sweep = Sweep(name=name, base=base, space=space, order=order, search=_parse_search(raw.get("search"), source),
                  scheduler=_parse_scheduler(raw.get("scheduler"), source),
                  resources=_parse_resources(raw.get("resources"), source), storage=storage,
                  max_failures=max_failures, description=str(raw.get("description") or ""), seeds=seeds,
                  loggers=parse_loggers(raw["loggers"], source) if "loggers" in raw else Sweep.loggers,
                  smoke_test=smoke, source=source, base_flat=base_flat,
                  controls=_parse_controls(raw.get("controls"), source, space, base))
    if sweep.search.algorithm == "optuna" and seeds > 1:
        raise fail(source, where, f"{seeds}: repeating configurations over seeds needs search.algorithm grid or "
                   "random (an optuna study would treat each seed as a new point)")
    if sweep.controls and (sweep.search.algorithm == "optuna" or sweep.scheduler.name != "fifo"):
        raise fail(source, "controls", "expected search.algorithm grid or random and scheduler fifo: a control is "
                   "the twin of a planned trial, and trains more epochs than a fine-tune, which a scheduler would cut")
    if sweep.search.algorithm == "optuna":
        grids = [k for k, es in space.items() for e in es if e.dist.kind == "grid"]
        if grids:
            raise fail(source, f"space.{grids[0]}", "grid is not available with search.algorithm optuna; use choice")
    return sweep


def _parse_controls(raw: Any, source: str, space: Mapping[str, Any], base: Mapping[str, Any]) -> Tuple[str, ...]:
    if raw is None:
        return ()
    names = [raw] if isinstance(raw, str) else raw
    bad = [n for n in names if n not in CONTROL_ARMS] if isinstance(names, list) else [raw]
    if bad:
        raise fail(source, "controls", f"{bad[0]!r}: expected a list of {', '.join(CONTROL_ARMS)}")
    if "prune.control" in space or "prune.control" in base:
        raise fail(source, "controls", "prune.control is set too; use one or the other")
    return tuple(dict.fromkeys(arm for n in names for arm in CONTROL_ARMS[n]))


REFERENCE_KEYS = ("model.name", "data.name")


def _code_references(base: Dict[str, Any], space: Any, here: Path) -> Tuple[Dict[str, Any], Any, List[str]]:
    """``base`` and the raw ``space`` with every ``<file.py>:<callable>`` of ``model.name`` and
    ``data.name`` made absolute from the sweep file's directory (as ``plugins:`` are), and those
    files: listed as plug-ins, they are shipped to every node of a cluster."""
    files: List[str] = []

    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, Mapping):
            return {k: (fix(v) if k != "when" else v) for k, v in value.items()}
        new = absolute_reference(value, here)
        if new is not value:
            files.append(file_reference(new))
        return new

    base = {k: fix(v) if k in REFERENCE_KEYS else v for k, v in base.items()}
    if isinstance(space, Mapping):
        space = {k: fix(v) if k in REFERENCE_KEYS else v for k, v in space.items()}
    return base, space, list(dict.fromkeys(files))


def _absolute_paths(base: Dict[str, Any]) -> Dict[str, Any]:
    """Trials run in their own working directories: relative paths are taken from where the sweep
    is launched (on a cluster, give paths that exist on every node). A reference's file is taken
    from the sweep file's directory instead (``_code_references``)."""
    out = dict(base)
    for key in ("data.root", "model.pretrained_path"):
        value = out.get(key)
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            out[key] = os.path.abspath(value)
    return out
