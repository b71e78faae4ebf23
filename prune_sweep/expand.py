"""The trials a sweep produces: every trial of a grid or random search, the corners of its space
(what validation builds), the distinct bases they need, and Optuna's define-by-run space.

``load_sweep`` reads a sweep file and validates it by building these; nothing here needs Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from prune_core.sections import BASE_KEYS
from prune_core.yamlfile import YamlError, load_yaml
from prune_sweep.checks import SweepError, fail
from prune_sweep.spec import Dist, Sweep, experiment_config, parse_sweep

if TYPE_CHECKING:
    from prune_core.config import ExperimentConfig


MAX_TRIALS = 100_000  # a sweep's trials, unless --max-trials raises it: counted before they are all built


def too_many(sweep: Sweep, limit: int, what: str) -> SweepError:
    """The error of a sweep with more than ``limit`` trials; ``what`` says where they come from."""
    return SweepError(f"{sweep.source}: more than {limit:,} trials ({what}); expected at most {limit:,}: sweep fewer "
                      "values, or raise the limit with --max-trials N")


def _expand(sweep: Sweep, pick: Callable[[Dist], Sequence[Any]], repeats: int,
            limit: int = MAX_TRIALS) -> List[Dict[str, Any]]:
    """Walk the keys in dependency order; ``pick`` gives the values a distribution expands to.
    More than ``limit`` results stop the walk as soon as they appear (``too_many``)."""
    if repeats > limit:
        raise too_many(sweep, limit, f"search.num_samples: {repeats:,}")
    out: List[Dict[str, Any]] = []
    for _ in range(repeats):
        partials: List[Dict[str, Any]] = [{}]
        for key in sweep.order:
            grown: List[Dict[str, Any]] = []
            for values in partials:
                entry = sweep.active(key, values)
                if entry is None:
                    grown.append(values)
                else:
                    grown.extend({**values, key: v} for v in pick(entry.dist))
                if len(out) + len(grown) > limit:
                    raise too_many(sweep, limit, f"space, search.num_samples: {repeats:,}")
            partials = grown
        out.extend(partials)
    return out


def trial_configs(sweep: Sweep, limit: int = MAX_TRIALS) -> List[Dict[str, Any]]:
    """The trials of a grid or random search, in order, each with every swept key.

    grid: every combination of the ``grid`` values (other distributions drawn once per
    combination), repeated ``num_samples`` times. random: ``num_samples`` independent draws.
    More than ``limit`` trials: SweepError, before they are built.
    """
    rng = np.random.default_rng(sweep.search.seed)
    n = sweep.search.num_samples
    if sweep.search.algorithm == "grid":
        picks = _expand(sweep, lambda d: d.args if d.kind == "grid" else (d.sample(rng),), n, limit)
    elif sweep.search.algorithm == "random":
        picks = _expand(sweep, lambda d: (d.sample(rng),), n, limit)
    else:
        raise ValueError("an optuna search draws its trials while it runs")
    if len(picks) * sweep.seeds * (1 + len(sweep.controls)) > limit:
        raise too_many(sweep, limit, f"{len(picks):,} configurations x {sweep.seeds:,} seeds"
                       + (" and their controls" if sweep.controls else ""))
    configs = [sweep.complete(p) for p in picks]
    configs = _smoke_subset(configs) if sweep.smoke_test else configs
    configs = with_controls(sweep, configs) if sweep.controls else configs
    if sweep.seeds > 1:  # every configuration once per seed, the seeds of one configuration side by side
        configs = [{**c, "runtime.seed": s} for c in configs for s in sweep.seed_values]
    return configs


def _smoke_subset(configs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One trial per pruning method (the first two trials when the method is not swept)."""
    if not configs or "prune.method" not in configs[0]:
        return configs[:2]
    seen: Dict[Any, Dict[str, Any]] = {}
    for c in configs:
        seen.setdefault(c["prune.method"], c)
    return list(seen.values())


def with_controls(sweep: Sweep, configs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``configs`` and, after them, each one's control twins (``sweep.controls``): the same config
    with ``prune.control`` set and every ``finetune.*`` key at its base value (a control trains from
    scratch with ``train``, so configs that differ only in the fine-tune share their twins). Only
    trials of a method that removes channels from a trained base and fine-tunes get twins."""
    from prune_core import METHODS, controllable

    twins: Dict[tuple, Dict[str, Any]] = {}
    for c in configs:
        if not controllable(METHODS[c.get("prune.method", sweep.base_flat["prune.method"])]):
            continue
        for arm in sweep.controls:
            twin = {k: sweep.base_flat[k] if k.startswith("finetune.") else v for k, v in c.items()}
            twin = sweep.complete({**twin, "prune.control": arm})
            twins.setdefault(tuple(sorted((k, str(v)) for k, v in twin.items())), twin)
    if not twins:
        raise fail(sweep.source, "controls", "no trial removes channels from a trained base and fine-tunes (the "
                   "channel method): there is no pruned architecture for a control to train")
    return [*configs, *twins.values()]


def corner_configs(sweep: Sweep, limit: int = MAX_TRIALS) -> List[Dict[str, Any]]:
    """Every combination of discrete values and ends of continuous ranges the space allows."""
    return [sweep.complete(p) for p in _expand(sweep, Dist.corners, 1, limit)]


def validate(sweep: Sweep, limit: int = MAX_TRIALS) -> List[Dict[str, Any]]:
    """Build every trial config (grid, random) or every corner (optuna); returns them. More than
    ``limit`` trials (or corners) is a SweepError, raised before they are all built."""
    _check_points(sweep)
    _check_conditions(sweep)
    if sweep.base.get("runtime.device") == "cuda" and not sweep.resources.gpu:
        raise fail(sweep.source, "runtime.device", "cuda needs resources.gpu > 0 (Ray gives a trial a GPU only "
                   "when it asks for one, e.g. gpu: 1, or 0.5 to share one between two trials); expected auto or cpu "
                   "with resources.gpu: 0")
    if sweep.search.algorithm == "optuna":
        if sweep.search.num_samples > limit:
            raise too_many(sweep, limit, f"search.num_samples: {sweep.search.num_samples:,}")
        return corner_configs(sweep, limit)
    corner_configs(sweep, limit)  # ends of continuous ranges too, not only the values drawn
    return trial_configs(sweep, limit)


def _check_conditions(sweep: Sweep) -> None:
    """Every value a ``when:`` condition names is one its key can take in this sweep: a value the
    space sweeps it over, or its base value when it is not swept. A misspelt value (``[chanel]``)
    or one of another registry would silently switch the alternative off in every trial."""
    for key, entries in sweep.space.items():
        for i, entry in enumerate(entries):
            where = f"space.{key}" + (f"[{i}]" if len(entries) > 1 else "") + ".when"
            for ckey, allowed in entry.when:
                swept = sweep.space.get(ckey, ())
                takes = [v for e in swept if e.dist.discrete for v in e.dist.args]
                ranges = [e.dist.args for e in swept if not e.dist.discrete]
                if not any(not e.when for e in swept):  # not swept, or only under conditions of its own
                    takes.append(sweep.base_flat.get(ckey))
                for value in allowed:
                    number = isinstance(value, (int, float)) and not isinstance(value, bool)
                    if value in takes or (number and any(lo <= value <= hi for lo, hi in ranges)):
                        continue
                    shown = ", ".join(dict.fromkeys(str(v) for v in takes)) + "".join(
                        f"{', ' if takes else ''}[{lo}, {hi}]" for lo, hi in ranges)
                    how = "takes" if ckey in sweep.space else "is not swept; it is"
                    raise fail(sweep.source, f"{where}.{ckey}", f"{value!r}: {ckey} never takes this value here, "
                               f"so the condition never holds; {ckey} {how} {shown}")


def _check_points(sweep: Sweep) -> None:
    """Every value of ``search.points_to_evaluate`` names a key swept without a condition and lies
    in its space."""
    for i, point in enumerate(sweep.search.points_to_evaluate):
        where = f"search.points_to_evaluate[{i}]"
        if sweep.search.algorithm != "optuna":
            raise fail(sweep.source, where, f"needs search.algorithm optuna (a {sweep.search.algorithm} search "
                       "draws its own points)")
        for key, value in point:
            entries = sweep.space.get(key)
            if not entries:
                raise fail(sweep.source, f"{where}.{key}", f"not a swept key; expected one of {', '.join(sweep.space)}")
            if len(entries) > 1 or entries[0].when:
                raise fail(sweep.source, f"{where}.{key}", "swept under a condition (when:); expected a key swept "
                           "without one")
            d = entries[0].dist
            if d.discrete:
                inside = value in d.args
            else:
                low, high = d.args
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                inside = number and (low <= value < high if d.kind == "randint" else low <= value <= high)
            if not inside:
                raise fail(sweep.source, f"{where}.{key}", f"{value!r}: outside its space {d.to_yaml()}")


def num_trials(sweep: Sweep) -> int:
    if sweep.search.algorithm == "optuna":
        return min(sweep.search.num_samples, 2) if sweep.smoke_test else sweep.search.num_samples
    return len(trial_configs(sweep))


def trial_epochs(sweep: Sweep, configs: Iterable[Mapping[str, Any]]) -> int:
    """Most epochs a trial trains after pruning (``prune_core.pruning.post_prune_training``: SNIP
    trains from scratch with the base budget, IMP with it from its rewind epoch)."""
    from prune_core import post_prune_training

    most = 1
    for c in configs:
        tcfg, start = post_prune_training(experiment_config().from_dict({**sweep.base, **c}))
        most = max(most, tcfg.epochs - start)
    return most


def trial_base(sweep: Sweep) -> Dict[str, Any]:
    """The flat config every trial and base task starts from: the sweep's base, with
    ``runtime.device: auto`` resolved by the trial's resources. Ray leaves CUDA_VISIBLE_DEVICES
    alone for a task that asked for no GPU (Ray 2.60, ``set_visible_accelerator_ids``), so such a
    task would otherwise take the node's GPU, and the base's device type (part of its hash,
    ``ExperimentConfig.base_key``) must be the same on the driver as on the workers."""
    base = dict(sweep.base)
    if base.get("runtime.device", "auto") == "auto":
        base["runtime.device"] = "cuda" if sweep.resources.gpu > 0 else "cpu"
    return base


def base_configs(sweep: Sweep, configs: Sequence[Mapping[str, Any]]) -> Dict[str, "ExperimentConfig"]:
    """Distinct bases (by ``base_hash``) of the trials; empty when a base key is drawn from a
    continuous range (each trial then trains or loads its own base under the cache's lock)."""
    continuous = [k for k, es in sweep.space.items() for e in es if not e.dist.discrete and k in BASE_KEYS]
    if continuous and sweep.search.algorithm == "optuna":
        return {}
    out: Dict[str, "ExperimentConfig"] = {}
    for c in configs:
        cfg = experiment_config().from_dict({**trial_base(sweep), **c})
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


def load_sweep(path: str | Path, overrides: Optional[Mapping[str, Any]] = None, smoke_test: bool = False,
               seeds: Optional[int] = None, plugins: Sequence[str] = (), limit: int = MAX_TRIALS) -> Sweep:
    """Read, check and validate a sweep file: every trial it can produce (grid, random) or every
    corner of its space (optuna) must make a valid ExperimentConfig."""
    source = str(path)
    try:
        raw = load_yaml(path)
    except OSError as exc:
        raise SweepError(f"{source}: cannot read it ({exc.strerror})") from None
    except YamlError as exc:
        raise SweepError(f"{source}: {exc}") from None
    sweep = parse_sweep(raw, source, overrides, smoke_test, seeds, plugins)
    validate(sweep, limit)
    return sweep
