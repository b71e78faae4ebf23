"""Does pruning beat a smaller network? The table of ``sweeps/controls_resnet20_mnist5k.yaml``.

    python launch.py sweeps/controls_resnet20_mnist5k.yaml        # 120 trials, about half an hour
    python bench/controls_study.py ray_results/controls_resnet20_mnist5k

Reads a finished experiment of that sweep (any sweep with ``controls:`` and ``finetune.kd_alpha``
swept over channel pruning) and prints, per FLOPs level and pruned architecture (criterion and
scope), test accuracy as mean ± std over the seeds of each arm: pruned and fine-tuned, the same
with distillation, Scratch-E, Scratch-B and narrow; then each arm's training compute and, per
level, which arm leads on validation accuracy (the analysis's choice; test is only reported).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from prune_sweep.analysis import analyze_results  # noqa: E402
from prune_sweep.configs import REPORT, SELECT  # noqa: E402
from prune_sweep.results import load_experiments  # noqa: E402

ARMS = ("pruned", "pruned + KD", "scratch_e", "scratch_b", "narrow")


def arm(row: pd.Series) -> str:
    if row["prune.method"] in ARMS:
        return row["prune.method"]
    return "pruned + KD" if float(row.get("finetune.kd_alpha", 0) or 0) > 0 else "pruned"


def pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path)
    args = p.parse_args(argv)
    a = analyze_results(load_experiments([args.experiment]))
    c = a.configs.copy()
    c["arm"] = c.apply(arm, axis=1)
    c["level"] = c["prune.ratio"].map(lambda r: f"{100 * (1 - r):.0f} %")
    print("| FLOPs kept (target) | architecture | " + " | ".join(ARMS) + " |")
    print("| --- | --- |" + " --- |" * len(ARMS))
    for (level, crit, scope), g in c.groupby(["level", "prune.criterion", "prune.scope"], sort=True):
        by = g.set_index("arm")
        cells = [pm(by.loc[x, REPORT], by.loc[x, f"{REPORT}_std"]) if x in by.index else "–" for x in ARMS]
        print(f"| {level} | {crit} {scope} | " + " | ".join(cells) + " |")
    print()
    print("| arm | FLOPs kept (measured) | training compute per trial (epochs, base share included) | seeds |")
    print("| --- | --- | --- | --- |")
    for (level, x), g in c.groupby(["level", "arm"], sort=True):
        print(f"| {x} at {level} | {g['flops_frac'].min():.3f}–{g['flops_frac'].max():.3f} | "
              f"{g['compute_epochs'].min():.2f}–{g['compute_epochs'].max():.2f} | {int(g['seeds'].min())} |")
    print()
    for level, g in c.groupby("level", sort=True):
        means = g.groupby("arm")[[SELECT, REPORT]].mean().sort_values(SELECT, ascending=False)
        order = ", ".join(f"{x} {v:.2f} (test {t:.2f})" for x, (v, t) in means.iterrows())
        print(f"at {level} FLOPs, mean validation accuracy over architectures and seeds: {order}")
    for line in a.fairness_lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
