"""Which per-layer ratios? Searched per-stage ratios against uniform (local) and global ranking at
matched FLOPs, over seeds: the study of ``sweeps/layerwise_resnet20_mnist5k.yaml``, without Ray.

    python bench/layerwise.py                          # 3 seeds, 12 searched trials each, 50 % FLOPs
    python bench/layerwise.py --seeds 1 --trials 6 --flops 0.3

Per seed, on the sweep file's base (resnet20 on 2,000 mnist5k digits, channel ``l1``):

* uniform: ``prune.scope: local``, ``prune.target: flops`` (every group loses one fraction, chosen
  so that ``--flops`` of the dense FLOPs stay);
* global: ``prune.scope: global``, ``prune.target: flops`` (one ranking, mean-normalised);
* searched: an Optuna TPE study (seeded) over ``prune.stage_ratios.<stage>`` in [0, 0.9] for every
  stage ``--list-groups`` names, maximising validation accuracy under the constraint
  ``flops_kept_dense <= --flops x 1.02``; its first trial is the uniform ratio in every stage.
  The best feasible trial on validation is the searched point.

Prints validation and test accuracy (mean ± std over seeds), FLOPs kept and the trials each spent.
Test accuracy is only reported; every choice reads validation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from prune_core import ExperimentConfig, run  # noqa: E402
from prune_core.pruning.channel import group_table  # noqa: E402
from prune_sweep.expand import load_sweep  # noqa: E402
from prune_sweep.spec import SWEEPS_DIR  # noqa: E402

SWEEP = SWEEPS_DIR / "layerwise_resnet20_mnist5k.yaml"
SLACK = 1.02  # a searched point may keep 2 % more FLOPs (relative) than the target: one channel's step


def measure(base: Dict, **dotted) -> Dict:
    m = run(ExperimentConfig.from_dict({**base, **dotted}), log=lambda _: None)
    return {"val": m["val_acc_final"], "test": m["acc_final"], "flops": m["flops_kept_dense"]}


def fresh(base: Dict, **dotted):
    """(config, an untrained model of it, two test images): what --list-groups and the FLOPs search read."""
    from prune_core.data import load_data
    from prune_core.pipeline import fresh_model

    cfg = ExperimentConfig.from_dict({**base, **dotted})
    data = load_data(cfg.data, torch.device("cpu"), cfg.runtime.seed)
    return cfg, fresh_model(cfg, data), next(iter(data.test))[0][:2], data.input_shape


def stages(base: Dict) -> List[str]:
    """The stages ``prune-core --list-groups`` names for the base's model, in the model's order."""
    _, model, x, shape = fresh(base)
    return list(dict.fromkeys(r["stage"] for r in group_table(model, x, shape)))


def search(base: Dict, names: List[str], start: float, flops: float, trials: int, seed: int) -> Dict:
    results: Dict[int, Dict] = {}

    def objective(trial: optuna.Trial) -> float:
        ratios = {f"prune.stage_ratios.{n}": trial.suggest_float(n, 0.0, 0.9) for n in names}
        results[trial.number] = measure(base, **ratios, **{"prune.ratio": 0.0})
        trial.set_constraint("flops", results[trial.number]["flops"] - flops * SLACK)  # feasible at <= 0
        return results[trial.number]["val"]

    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({n: start for n in names})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=trials)
    feasible = [i for i, r in results.items() if r["flops"] <= flops * SLACK]
    best = max(feasible, key=lambda i: results[i]["val"]) if feasible else max(results, key=lambda i: -results[i]["flops"])
    drawn = [i for i in feasible if i > 0]  # the trials the sampler drew, without the uniform start
    other = results[max(drawn, key=lambda i: results[i]["val"])] if drawn else None
    return {**results[best], "feasible": len(feasible), "drawn": other, "start_won": best == 0}


def solve_uniform(base: Dict, flops: float) -> float:
    """The unit ratio local pruning needs to keep ``flops`` of the dense FLOPs (prune_core's own
    search; it depends on the architecture only, so an untrained model answers it)."""
    from prune_core.pruning import PruneContext, prune_model

    cfg, model, x, _ = fresh(base, **{"prune.target": "flops", "prune.ratio": 1.0 - flops, "prune.scope": "local"})
    return float(prune_model(model, PruneContext(cfg, x)).ratio)


def pm(values: List[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=12, help="searched trials per seed (the first is uniform)")
    p.add_argument("--flops", type=float, default=0.5, help="fraction of the dense FLOPs kept")
    args = p.parse_args(argv)
    sweep = load_sweep(SWEEP)
    rows: Dict[str, List[Dict]] = {"uniform (local)": [], "global": [], "searched per stage": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="layerwise-") as cache:
        base = {**sweep.base, "runtime.cache_dir": cache, "runtime.latency_repeats": 3, "runtime.threads": 0}
        names = stages(base)
        for seed in range(args.seeds):
            b = {**base, "runtime.seed": seed}
            target = {"prune.target": "flops", "prune.ratio": 1.0 - args.flops}
            rows["uniform (local)"].append(measure(b, **target, **{"prune.scope": "local"}))
            rows["global"].append(measure(b, **target, **{"prune.scope": "global"}))
            # the uniform unit ratio that keeps --flops: where the search starts
            start = solve_uniform(b, args.flops)
            rows["searched per stage"].append(search(b, names, start, args.flops, args.trials, seed))
            print(f"seed {seed}: " + "; ".join(f"{k} val {v[-1]['val']:.2f} test {v[-1]['test']:.2f} "
                                               f"flops {v[-1]['flops']:.3f}" for k, v in rows.items()), flush=True)
    print(f"\nresnet20 on mnist5k, channel l1, {args.flops:.0%} of the dense FLOPs kept, {args.seeds} seeds, "
          f"stages {', '.join(names)}, {args.trials} searched trials per seed ({time.perf_counter() - t0:.0f} s)")
    print("| ranking | validation acc. (%) | test acc. (%) | FLOPs kept | trials per seed |")
    print("| --- | --- | --- | --- | --- |")
    for name, rs in rows.items():
        n = args.trials if name.startswith("searched") else 1
        print(f"| {name} | {pm([r['val'] for r in rs])} | {pm([r['test'] for r in rs])} | "
              f"{statistics.mean(r['flops'] for r in rs):.3f} | {n} |")
    searched = rows["searched per stage"]
    drawn = [r["drawn"] for r in searched if r["drawn"]]
    if drawn:
        print(f"| best drawn by the sampler (the uniform start left out) | {pm([r['val'] for r in drawn])} | "
              f"{pm([r['test'] for r in drawn])} | {statistics.mean(r['flops'] for r in drawn):.3f} | "
              f"{args.trials - 1} |")
    print(f"searched trials within the FLOPs target: {[r['feasible'] for r in searched]} of {args.trials} per seed; "
          f"the uniform start stayed best on validation in {sum(r['start_won'] for r in searched)} of "
          f"{len(searched)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
