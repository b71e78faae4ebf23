"""Do the methods reproduce their papers' effects? The study of ``sweeps/paper_effects_mnist5k.yaml``.

    python bench/paper_effects.py                       # every trial of the sweep file, one process
    python bench/paper_effects.py --set train.epochs=4 --out /tmp/effects

Runs each trial of the sweep file with ``prune_core.run`` (no Ray; bases shared through one cache,
each seed training its own), then prints, per variant and sparsity, test accuracy as mean ± std over
the seeds, and side by side the comparisons the papers make:

* IMP with rewinding against the same masks re-initialised (Frankle & Carbin 2019), and against
  its masks shuffled within each layer (open_lth's layerwise ``randomly_prune`` control);
* SNIP against uniform random pruning at initialisation, and SNIP against its masks shuffled within
  each layer (Frankle et al. 2021).

Each row says which variant is ahead by how many points and whether the gap exceeds the seeds'
spread (both standard deviations). Figures are reported as measured, whichever way they go.
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

import yaml  # noqa: E402

from bench.seeds import gap_row, mean_std, report  # noqa: E402
from prune_core import ExperimentConfig, run  # noqa: E402
from prune_sweep.expand import load_sweep, trial_configs  # noqa: E402  (the sweep language; no Ray)
from prune_sweep.spec import SWEEPS_DIR  # noqa: E402

SWEEP = SWEEPS_DIR / "paper_effects_mnist5k.yaml"


def variant(flat: Dict) -> str:
    m = flat["prune.method"]
    if m == "imp":
        return "imp (reinit)" if flat.get("prune.reinit") else "imp (shuffled)" if flat.get("prune.shuffle") else \
            "imp (rewind)"
    if m == "snip":
        return "snip (shuffled)" if flat.get("prune.shuffle") else "snip"
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", nargs="?", default=str(SWEEP))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a base key")
    ap.add_argument("--out", default="", help="keep the bases and write results.md here")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="paper_effects_"))
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    sweep = load_sweep(args.sweep, overrides)
    base, trials = sweep.base, trial_configs(sweep)
    acc: Dict[Tuple[str, float], List[float]] = {}
    t0 = time.perf_counter()
    for i, flat in enumerate(trials, 1):
        cfg = ExperimentConfig.from_dict({**base, **flat, "runtime.cache_dir": str(out / "base_cache"),
                                          "runtime.progress": "off"})
        m = run(cfg, log=lambda _msg: None)
        key = (variant(flat), cfg.prune.ratio)
        acc.setdefault(key, []).append(m["acc_final"])
        print(f"[{i}/{len(trials)} {time.perf_counter() - t0:.0f}s] {key[0]:<16} ratio {key[1]:.2f} "
              f"seed {cfg.runtime.seed}: test {m['acc_final']:.2f}%  sparsity {m['sparsity']:.3f}", flush=True)
    lines = ["| variant | sparsity | test accuracy (%), mean ± std | seeds |", "| --- | --- | --- | --- |"]
    for (name, ratio), xs in sorted(acc.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mu, sd = mean_std(xs)
        lines.append(f"| {name} | {ratio:.2f} | {mu:.2f} ± {sd:.2f} | {len(xs)} |")
    lines += ["", "| comparison | sparsity | difference (points) | beyond the spread |", "| --- | --- | --- | --- |"]
    for a, b in [("imp (rewind)", "imp (reinit)"), ("imp (rewind)", "imp (shuffled)"), ("snip", "random_init"),
                 ("snip", "snip (shuffled)")]:
        for ratio in sorted({r for _, r in acc}):
            if (a, ratio) in acc and (b, ratio) in acc:
                lines.append(gap_row(f"{a} − {b}", f"{ratio:.2f}", acc[(a, ratio)], acc[(b, ratio)]))
    report(out, lines, len(trials), t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
