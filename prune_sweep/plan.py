"""What ``--dry-run`` prints: the trials of a sweep (or, for Optuna, the space it draws from), its
bases and where its experiment directory would be. Starts nothing and needs no Ray."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from prune_sweep.expand import base_configs, corner_configs, num_trials, trial_configs
from prune_sweep.spec import Sweep
from prune_sweep.storage import Store


def print_plan(sweep: Sweep, exp: Store) -> None:
    s = sweep.search
    res = f"{sweep.resources.cpu:g} CPU" + (f" + {sweep.resources.gpu:g} GPU" if sweep.resources.gpu else "")
    print(f"sweep {sweep.name}: {s.algorithm} search, {sweep.scheduler.name} scheduler, {res} per trial"
          + (f", at most {s.max_concurrent} at once" if s.max_concurrent else ""))
    print(f"experiment directory: {exp.location}")
    trackers = ", ".join(lg.name for lg in sweep.loggers)
    print(f"results logged by Tune (CSV, JSON){' and ' + trackers if trackers else ''}")
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
    twins = sum(1 for c in configs if c.get("prune.control"))
    if twins:
        print(f"{twins} control trials ({', '.join(sweep.controls)}) train from scratch beside the channel trials")
    print(f"{len(configs)} trials")


def _bases_line(sweep: Sweep, configs: Sequence[Mapping[str, Any]]) -> str:
    n = len(base_configs(sweep, configs))
    if n:
        return f"{n} base model{'s' * (n > 1)} to train once"
    if sweep.base_config().model.pretrained_path:
        return f"base model given: {sweep.base_config().model.pretrained_path}"
    return "base models trained by each trial (a base key is drawn from a continuous range)"
