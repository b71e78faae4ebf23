"""How much of a sweep's wall time is compute, where the rest goes, and what one base per study saves.

    python bench/sweep_efficiency.py                 # 8 trials, 2 at a time, on the CPU
    python bench/sweep_efficiency.py --trials 4 --concurrency 2 --keep /tmp/bench

Runs one small CPU sweep (resnet20 on mnist5k, channel pruning at several ratios) through
``prune_sweep.launch_cli.main`` and prints:

* the study's overhead, ``study wall / (base compute + sum of trial compute / concurrency)``
  (goal: <= 1.05). *Study wall* runs from before ``ray.init`` to after ``ray.shutdown``, the quiet
  latency pass included. *Base compute* is the base task's own time as the task reports it
  (``base_task.log``: ``ensure_base``, which loads the data, trains and saves the base; not the
  worker's start nor its imports). *Trial compute* is Tune's ``time_total_s`` of each trial's
  final row: from the trainable's first step (on a reused actor, after its reset) to its final
  report, so it holds what the trainable does itself (loading the data, building the config,
  persisting each epoch's checkpoint) but not the actor's creation, which imports the trainable's
  module (torch, torchvision, Torch-Pruning), nor Tune's scheduling. Both are work the study
  needs; everything else in the wall time is overhead, and it is broken down: ``ray.init``, what
  comes before the bases (experiment files, provenance task), the base task's start-up (a worker
  and its imports), the gap between the base being ready and the first trial starting (tuner
  set-up, actor creation), idle trial slots (actor resets between trials, unequal ends), the end
  of ``fit`` after the last report, the quiet latency pass (its worker's start-up, then its own
  time) and the summary and Ray's shutdown;
* utilisation: trial compute against the trial phase's wall time (the first trial's start to the
  last final report) x concurrency (goal >= 0.85);
* the study's wall time against the same trials run the seed projects' way: one
  ``python -m prune_core`` command per experiment, each training its own base, as many at once as
  the sweep runs trials.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = {"data": {"name": "mnist5k", "limit_train": 2000},
        "model": {"name": "resnet20"},
        "train": {"epochs": 3},
        "finetune": {"epochs": 2},
        "runtime": {"device": "cpu", "seed": 0}}
STAGES = ("time_base_s", "time_prune_s", "time_rebuild_s", "time_eval_s", "time_finetune_s")  # a run's stages
RESULTS: List[Dict[str, Any]] = []  # (driver time, trial id, result) of every result Tune hands the driver


def sweep_file(out: Path, trials: int, concurrency: int) -> Path:
    ratios = [round(0.1 + 0.7 * i / max(1, trials - 1), 3) for i in range(trials)]
    sweep = {"name": "efficiency", "base": BASE, "space": {"prune.ratio": {"grid": ratios}},
             "search": {"algorithm": "grid", "max_concurrent": concurrency}, "resources": {"cpu": 1},
             "max_failures": 0}
    path = out / "efficiency.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def _clock_callback() -> Any:
    """A Tune callback noting when the driver receives each result (time.time, as the workers' clocks)."""
    from ray import tune

    class Clock(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            RESULTS.append({"at": time.time(), "trial": trial.trial_id, "pid": result.get("pid"),
                            "stage": result.get("stage"), "time_total_s": result.get("time_total_s"),
                            **{k: result.get(k) for k in STAGES}})

    return Clock()


def run_study(path: Path, storage: Path, concurrency: int) -> Dict[str, Any]:
    """The sweep through ``launch_cli.main``, with the driver's clock read at each step."""
    import ray

    from prune_sweep import bases, driver
    from prune_sweep.launch_cli import main

    marks: Dict[str, float] = {}
    saved = {"prepare_bases": (bases, bases.prepare_bases), "make_tuner": (driver, driver.make_tuner),
             "quiet_latency": (driver, driver.quiet_latency), "make_callbacks": (driver, driver.make_callbacks),
             "summarize": (driver, driver.summarize)}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            marks[f"{name}_start"] = time.time()
            try:
                out = fn(*args, **kwargs)
                if name == "latency" and isinstance(out, dict):
                    marks["latency_task"] = float(out.get("seconds", 0.0))  # the task's own time
                return out
            finally:
                marks[f"{name}_end"] = time.time()
        return wrapper

    def make_tuner(*args, **kwargs):
        tuner = saved["make_tuner"][1](*args, **kwargs)
        tuner.fit = timed("fit", tuner.fit)
        return tuner

    bases.prepare_bases = timed("bases", bases.prepare_bases)
    driver.make_tuner = timed("make_tuner", make_tuner)
    driver.quiet_latency = timed("latency", driver.quiet_latency)
    driver.summarize = timed("summary", driver.summarize)
    driver.make_callbacks = lambda *a, **k: [*saved["make_callbacks"][1](*a, **k), _clock_callback()]
    RESULTS.clear()
    # workers import prune_sweep from any cwd: through the environment Ray's processes inherit, not a
    # runtime_env, whose agent added 1-2 s to every worker's start (a launch has none)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    t0 = time.time()
    ray.init(address="local", num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
    marks["ray_init"] = time.time()
    try:
        code = main([str(path), "--storage", str(storage)])
    finally:
        marks["main_end"] = time.time()
        ray.shutdown()
        end = time.time()
        for name, (module, fn) in saved.items():
            setattr(module, name, fn)
    if code != 0:
        raise SystemExit(f"the sweep failed with exit code {code}")
    exp = storage / "efficiency"
    logs = list((exp / "base_cache").glob("*/base_task.log"))
    base_compute = sum(float(m) for log in logs for m in re.findall(r" in ([0-9.]+) s,", log.read_text()))
    return {"t0": t0, "end": end, "marks": marks, "results": list(RESULTS), "base_compute_s": base_compute,
            "concurrency": concurrency}


def breakdown(study: Dict[str, Any]) -> Dict[str, Any]:
    """The study's wall time cut at the driver's marks and the trials' clocks (see the docstring)."""
    m, c = study["marks"], study["concurrency"]
    finals = [r for r in study["results"] if r["stage"] == "done"]
    firsts = {}
    for r in study["results"]:
        firsts.setdefault(r["trial"], r)
    # a trial's trainable started at (driver time of its first result) - (Tune's clock at that result)
    starts = {t: r["at"] - r["time_total_s"] for t, r in firsts.items()}
    first_start = min(starts.values())
    last_final = max(r["at"] for r in finals)
    compute = sum(r["time_total_s"] for r in finals)
    stage_s = sum(sum(r[k] or 0.0 for k in STAGES) for r in finals)
    base = study["base_compute_s"]
    wall = study["end"] - study["t0"]
    phase = last_final - first_start
    b = {"trials": len(finals), "wall_s": wall, "base_compute_s": base, "trial_compute_s": compute,
         "trial_compute_per_slot_s": compute / c,
         "in_trial_startup_s": compute - stage_s,  # data loading, config, the final report
         "ray_init_s": m["ray_init"] - study["t0"],
         "before_bases_s": m["bases_start"] - m["ray_init"],
         "base_startup_s": (m["bases_end"] - m["bases_start"]) - base,
         "to_first_trial_s": first_start - m["bases_end"],
         "tuner_setup_s": m["fit_start"] - m["bases_end"],
         "trial_phase_s": phase,
         "idle_slots_s": phase - compute / c,
         "fit_end_s": m["fit_end"] - last_final,
         "latency_pass_s": m["latency_end"] - m["latency_start"],
         "latency_task_s": m.get("latency_task", 0.0),
         "rest_s": (m["latency_start"] - m["fit_end"]) + (study["end"] - m["latency_end"])}
    b["overhead"] = wall / (base + compute / c)
    b["utilisation"] = compute / (phase * c)
    return b


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
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        path = sweep_file(out, args.trials, args.concurrency)
        b = breakdown(run_study(path, out / "runs", args.concurrency))
        seed = None if args.skip_seed_way else run_seed_way(path, out, args.concurrency)
    c = args.concurrency
    line = "{:58s} {:8.1f} s".format
    print(f"\nsweep: {b['trials']} trials (resnet20 / mnist5k, channel pruning), {c} at a time on the CPU "
          f"(load average {load:.2f} before, {os.getloadavg()[0]:.2f} after)")
    sections = {
        "compute": [("  base compute (the base task's own time)", "base_compute_s"),
                    ("  sum of trial compute (Tune's time_total_s)", "trial_compute_s"),
                    ("    of which outside the run's stages (data, config)", "in_trial_startup_s"),
                    (f"  sum of trial compute / {c}", "trial_compute_per_slot_s")],
        "where the wall time goes": [
            ("  ray.init", "ray_init_s"), ("  experiment files, provenance", "before_bases_s"),
            ("  base task start-up (its wall time - its compute)", "base_startup_s"),
            ("  base compute", "base_compute_s"), ("  base ready -> first trial starts", "to_first_trial_s"),
            ("    of which the tuner's set-up, before fit", "tuner_setup_s"),
            ("  trial phase (first trial starts -> last final report)", "trial_phase_s"),
            ("    of which idle slots (actor start-ups, unequal ends)", "idle_slots_s"),
            ("  last final report -> fit returns", "fit_end_s"), ("  quiet latency pass", "latency_pass_s"),
            ("    of which its task's own time (building, timing)", "latency_task_s"),
            ("  summary, Ray shutdown", "rest_s")]}
    for title, rows in sections.items():
        print(title)
        for label, key in rows:
            print(line(label, b[key]))
    print(line("study wall", b["wall_s"]))
    print(f"{'utilisation of the trial phase (goal >= 0.85)':58s} {b['utilisation']:8.2f}")
    print(f"{'overhead = study wall / (base compute + sum of trial compute / ' + str(c) + ')':58s} "
          f"{b['overhead']:8.2f}  (goal <= 1.05)")
    if seed is not None:
        b["seed_way_s"] = seed
        print(line("seed way: every trial its own base", seed))
        print(f"{'study / seed way':58s} {b['wall_s'] / seed:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({**b, "load_before": load, "load_after": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
