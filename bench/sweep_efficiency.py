"""How much of a sweep's time goes into trials, and what one base per study saves.

    python bench/sweep_efficiency.py                 # 8 trials, 2 at a time, on the CPU
    python bench/sweep_efficiency.py --trials 4 --concurrency 2 --keep /tmp/bench

Runs one small CPU sweep (resnet20 on mnist5k, channel pruning at several ratios) through
``prune_sweep.launch_cli.main`` and prints, side by side:

* utilisation: the trials' compute time (the sum of each trial's ``time_total_s`` in Tune, from
  its trainable starting to its final report) against wall time of the trial phase x concurrency
  (goal: >= 0.85; what is missing is actor start-up, scheduling and checkpoint copies);
* the study's wall time (Ray start, one base, the trials) against the same trials run the seed
  projects' way: one ``python -m prune_core`` command per experiment, each training its own base,
  as many at once as the sweep runs trials.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = {"data": {"name": "mnist5k", "limit_train": 2000},
        "model": {"name": "resnet20"},
        "train": {"epochs": 3},
        "finetune": {"epochs": 2},
        "runtime": {"device": "cpu", "seed": 0}}


def sweep_file(out: Path, trials: int, concurrency: int) -> Path:
    ratios = [round(0.1 + 0.7 * i / max(1, trials - 1), 3) for i in range(trials)]
    sweep = {"name": "efficiency", "base": BASE, "space": {"prune.ratio": {"grid": ratios}},
             "search": {"algorithm": "grid", "max_concurrent": concurrency}, "resources": {"cpu": 1},
             "max_failures": 0}
    path = out / "efficiency.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def run_study(path: Path, storage: Path, concurrency: int) -> dict:
    import ray

    from prune_sweep import bases
    from prune_sweep.launch_cli import main

    marks = {}
    prepare = bases.prepare_bases

    def timed_prepare(*args, **kwargs):
        marks["bases_start"] = time.perf_counter()
        prepare(*args, **kwargs)
        marks["trials_start"] = time.perf_counter()

    bases.prepare_bases = timed_prepare
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=concurrency, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # workers import prune_sweep from any cwd
    t_ray = time.perf_counter() - t0
    try:
        code = main([str(path), "--storage", str(storage)])
    finally:
        end = time.perf_counter()
        ray.shutdown()
        bases.prepare_bases = prepare
    if code != 0:
        raise SystemExit(f"the sweep failed with exit code {code}")
    finals = []
    for result in (storage / "efficiency").glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        finals += [r for r in rows if r.get("stage") == "done"]
    return {"wall_s": end - t0, "ray_init_s": t_ray, "bases_s": marks["trials_start"] - marks["bases_start"],
            "trials_wall_s": end - marks["trials_start"], "compute_s": sum(r["time_total_s"] for r in finals),
            "trials": len(finals)}


def run_seed_way(path: Path, out: Path, concurrency: int) -> float:
    """Each experiment its own command and its own base (an empty cache each)."""
    sweep = yaml.safe_load(path.read_text())
    base = out / "seed_base.yaml"
    base.write_text(yaml.safe_dump(BASE))
    ratios = sweep["space"]["prune.ratio"]["grid"]

    def one(i_ratio):
        i, ratio = i_ratio
        cmd = [sys.executable, "-m", "prune_core", "--config", str(base), "--set", f"prune.ratio={ratio}",
               "--set", f"runtime.cache_dir={out / f'cache_{i}'}", "--set", "runtime.threads=1",
               "--output-dir", str(out / "seed_runs")]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, enumerate(ratios)))
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--keep", type=Path, help="keep the experiment here instead of a temporary directory")
    p.add_argument("--skip-seed-way", action="store_true", help="only the study")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        path = sweep_file(out, args.trials, args.concurrency)
        study = run_study(path, out / "runs", args.concurrency)
        seed = None if args.skip_seed_way else run_seed_way(path, out, args.concurrency)
    c = args.concurrency
    print(f"\nsweep: {study['trials']} trials (resnet20 / mnist5k, channel pruning), {c} at a time on the CPU")
    print(f"{'ray.init':38s} {study['ray_init_s']:8.1f} s")
    print(f"{'one base, trained as a Ray task':38s} {study['bases_s']:8.1f} s")
    print(f"{'trial phase, wall':38s} {study['trials_wall_s']:8.1f} s")
    print(f"{'sum of trial compute time':38s} {study['compute_s']:8.1f} s")
    print(f"{'wall x concurrency':38s} {study['trials_wall_s'] * c:8.1f} s")
    print(f"{'utilisation (goal >= 0.85)':38s} {study['compute_s'] / (study['trials_wall_s'] * c):8.2f}")
    print(f"{'study, all in':38s} {study['wall_s']:8.1f} s")
    if seed is not None:
        print(f"{'seed way: every trial its own base':38s} {seed:8.1f} s")
        print(f"{'study / seed way':38s} {study['wall_s'] / seed:8.2f}")


if __name__ == "__main__":
    main()
