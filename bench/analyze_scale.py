"""Time analyze.py on a synthetic 10,000-trial sweep (goal: under 10 s on a 2-core CPU).

    python bench/analyze_scale.py                 # 10,000 trials in a temp folder
    python bench/analyze_scale.py --trials 2000 --keep /tmp/big

Prints the end-to-end time of ``python analyze.py EXPDIR`` in a fresh process (imports included),
then the time of each stage measured in this process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prune_sweep.analysis import analyze_results  # noqa: E402
from prune_sweep.fake_sweep import make_experiment  # noqa: E402
from prune_sweep.report import write_report  # noqa: E402
from prune_sweep.results import load_experiments  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--keep", type=Path, help="write the synthetic sweep here and keep it")
    args = p.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="analyze-scale-"))
    try:
        expdir = root / "scale"
        if not (expdir / "sweep.yaml").exists():
            t0 = time.perf_counter()
            # a TPE-like sweep: many distinct ratios, three seeds, a few failures, many ASHA stops
            make_experiment(expdir, n_trials=args.trials, seeds=3, ratios=np.round(np.linspace(0.05, 0.9, 35), 3),
                            errors=args.trials // 200, stopped=args.trials // 10, pending=args.trials // 500,
                            epochs=4)
            print(f"generated {args.trials} trials in {time.perf_counter() - t0:.1f} s ({expdir})")
        os.sync()

        out = root / "analysis-cli"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(expdir), "--out", str(out)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"analyze.py failed ({proc.returncode}):\n{proc.stderr}")
        print(f"end to end: python analyze.py on {args.trials} trials: {wall:.2f} s (goal < 10 s)")

        stages = {}
        t0 = time.perf_counter()
        results = load_experiments([expdir])
        stages["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        analysis = analyze_results(results)
        stages["fronts, hypervolume, budgets"] = time.perf_counter() - t0
        stage_out = root / "analysis-stages"
        stage_out.mkdir(exist_ok=True)
        shutil.rmtree(stage_out)
        stage_out.mkdir()
        stages.update(write_report(results, analysis, stage_out))
        for name, seconds in stages.items():
            print(f"  {name:32s} {seconds:6.2f} s")
        print(f"  {'sum of stages':32s} {sum(stages.values()):6.2f} s "
              f"({len(results.table)} rows, {len(results.curves)} epoch rows)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
