"""How should a global ranking compare layers? Raw scores against scores divided by their layer's mean.

    python bench/global_scores.py                     # resnet20 on mnist5k, 2 seeds, 12 trials
    python bench/global_scores.py --seeds 0 --ratios 0.7 --smoke-test

For ``kernel`` pruning (criterion l1, global) and ``channel`` pruning with ``taylor`` (global, the
reference's raw ranking against the default mean-normalised one), at matched cost (``prune.target:
flops``: each ratio is the fraction of effective FLOPs removed), every
trial runs ``prune_core.run`` (no Ray; one base per seed, shared through one cache) with
``prune.global_scores: raw`` and ``mean``. Printed per method, ratio and ranking: test accuracy
after fine-tuning, validation accuracy, effective FLOPs kept, mean ± std over the seeds, and the
raw − mean difference with whether it exceeds the seeds' spread (both standard deviations).
The figures are reported as measured, whichever way they go; README's "Global ranking" gives them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.seeds import gap_row, mean_std, report  # noqa: E402
from prune_core import ExperimentConfig, run  # noqa: E402

BASE = {"data.name": "mnist5k", "model.name": "resnet20", "train.epochs": 3, "finetune.epochs": 3,
        "prune.scope": "global", "prune.target": "flops", "runtime.device": "cpu", "runtime.progress": "off"}
CASES = {"kernel": {"prune.method": "kernel", "prune.criterion": "l1"},
         "channel/taylor": {"prune.method": "channel", "prune.criterion": "taylor"}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75], help="kernel: FLOPs removed")
    ap.add_argument("--channel-ratios", type=float, nargs="+", default=[0.5], help="channel: FLOPs removed")
    ap.add_argument("--out", default="", help="keep the bases and write results.md here")
    ap.add_argument("--smoke-test", action="store_true", help="one epoch each, 400 training images")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="global_scores_"))
    base = dict(BASE, **({"train.epochs": 1, "finetune.epochs": 1, "data.limit_train": 400} if args.smoke_test else {}))
    runs = [(name, r, how, seed) for name in CASES
            for r in (args.ratios if name == "kernel" else args.channel_ratios)
            for how in ("raw", "mean") for seed in args.seeds]
    res: Dict[Tuple[str, float, str], List[Tuple[float, float, float]]] = {}
    t0 = time.perf_counter()
    for i, (name, ratio, how, seed) in enumerate(runs, 1):
        cfg = ExperimentConfig.from_dict({**base, **CASES[name], "prune.ratio": ratio, "prune.global_scores": how,
                                          "runtime.seed": seed, "runtime.cache_dir": str(out / "base_cache"),
                                          "runtime.output_dir": str(out / "runs")})
        m = run(cfg, log=lambda _msg: None)
        res.setdefault((name, ratio, how), []).append((m["acc_final"], m["val_acc_final"], m["flops_kept_effective"]))
        print(f"[{i}/{len(runs)} {time.perf_counter() - t0:.0f}s] {name} ratio {ratio} {how} seed {seed}: "
              f"test {m['acc_final']:.2f} val {m['val_acc_final']:.2f} eff. FLOPs kept "
              f"{m['flops_kept_effective']:.3f}", flush=True)
    lines = ["| method | ratio | ranking | test (%) | validation (%) | eff. FLOPs kept |", "| --- | --- | --- | --- | --- | --- |"]
    for (name, ratio, how), rows in sorted(res.items()):
        cols = [mean_std([r[k] for r in rows]) for k in range(3)]
        lines.append(f"| {name} | {ratio} | {how} | {cols[0][0]:.2f} ± {cols[0][1]:.2f} | {cols[1][0]:.2f} ± "
                     f"{cols[1][1]:.2f} | {cols[2][0]:.3f} |")
    lines += ["", "| method | ratio | raw − mean, test (points) | beyond the spread |", "| --- | --- | --- | --- |"]
    for (name, ratio, how) in sorted(res):
        if how == "raw" and (name, ratio, "mean") in res:
            lines.append(gap_row(name, str(ratio), *([r[0] for r in res[(name, ratio, h)]] for h in ("raw", "mean"))))
    report(out, lines, len(runs), t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
