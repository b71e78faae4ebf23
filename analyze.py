"""Which pruning method wins at which cost: Pareto fronts, hypervolume and a report from a sweep.

Reads the experiment directories ``launch.py`` writes through Ray Tune (one folder per trial with
``params.json`` and ``result.json``) straight from disk: no running Ray is needed, and a sweep that
is still running or was interrupted reads as far as it got.

Usage::

    python analyze.py ray_results/quickstart                # -> ray_results/quickstart/analysis/
    python analyze.py ray_results/a ray_results/b --out cmp  # two sweeps compared in one report
    python analyze.py ray_results/quickstart --budgets 0.1,0.25,0.5
    python analyze.py --smoke-test                           # a tiny generated sweep, end to end

From Python (returns the exit code; 2 for a bad input, with a one-line message on stderr)::

    import analyze
    assert analyze.main(["ray_results/quickstart", "--out", "/tmp/qs"]) == 0

Writes ``results.csv`` and ``results.parquet`` (one row per trial: the swept config, the metrics of
``prune_core.schema.METRICS``, status, cost fractions, front membership and the command that
reproduces the trial), ``pareto.csv``, ``hypervolume.csv``, ``figures/*.png|svg``, ``report.html``
(one self-contained file) and ``report.md``.

Trial status: ``done`` (a final report with ``stage == "done"``; only these enter a front),
``stopped`` (results but no final report and no error: stopped early by the scheduler, e.g. ASHA,
or still running), ``error`` (``error.txt``; its last line is the reason), ``pending`` (no results).

Fronts are accuracy (``acc_final``, higher is better) against a cost (lower is better) given as a
fraction of the trial's own dense base model: dense FLOPs, effective (non-zero) FLOPs, non-zero
parameters and measured batch-1 latency. Hypervolume uses the reference point (cost 1.0 = the base
model, accuracy 100 / num_classes = chance); its unit is accuracy points x cost fraction, so its
largest possible value is 100 - chance.
"""

import sys

from prune_sweep.analyze_cli import main

if __name__ == "__main__":
    sys.exit(main())
