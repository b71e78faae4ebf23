"""Which pruning method wins at which cost: Pareto fronts, hypervolume and a report from a sweep.

The ``prune-analyze`` command line (``analyze.py`` at the repository root runs it): load the
experiment directories, analyse them, write the report and print a short summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

from prune_core.cliargs import HelpFormatter, add_version

from .analysis import DEFAULT_BUDGETS, Analysis, analyze_results
from .fake_sweep import make_experiment
from .report import summary_text, write_atomically, write_report
from .results import AnalyzeError, load_experiments


def _budgets(text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected fractions of the base FLOPs in (0, 1], e.g. 0.25,0.5")
    return values


class _Help(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default, and the description as written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prune-analyze", description=__doc__.split("\n\n")[0], formatter_class=_Help)
    add_version(p, "prune_sweep")
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT_DIR",
                   help="experiment directories (<storage>/<sweep name>); several are compared in one report "
                   "(no default: give one, or --smoke-test)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: <first EXPERIMENT_DIR>/analysis)")
    p.add_argument("--budgets", type=_budgets, default=DEFAULT_BUDGETS, metavar="F,F,...",
                   help="FLOPs budgets as fractions of the base model (default: %s)"
                   % ",".join(f"{b:g}" for b in DEFAULT_BUDGETS))
    p.add_argument("--smoke-test", action="store_true", help="analyse a tiny generated sweep in a temp folder")
    return p


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.experiments and not args.smoke_test:
        p.error("give at least one EXPERIMENT_DIR (or --smoke-test)")
    return args


def run(paths: Sequence[str | Path], out: Optional[Path] = None,
        budgets: Sequence[float] = DEFAULT_BUDGETS) -> Tuple[Path, Analysis]:
    """Load, analyse and write; returns the output folder and the analysis."""
    results = load_experiments(paths)
    analysis = analyze_results(results, budgets)
    out = Path(out) if out is not None else Path(paths[0]) / "analysis"
    write_atomically(out, lambda tmp: write_report(results, analysis, tmp))
    return out, analysis


def _smoke_test(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="prune-analyze-smoke-") as tmp:
        expdir = make_experiment(Path(tmp) / "smoke", n_trials=24, seeds=2, errors=1, stopped=2, pending=1)
        out, analysis = run([expdir], args.out or Path(tmp) / "analysis", args.budgets)
        if not (out / "report.html").is_file() or not analysis.table["front_flops"].any():
            print("prune-analyze: smoke test failed: no report or an empty front", file=sys.stderr)
            return 1
        print(summary_text(analysis))
        kept = "" if args.out else " (temporary; pass --out DIR to keep the report)"
        print(f"smoke test passed: {len(analysis.table)} trials analysed into {out}{kept}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point (``prune-analyze``); returns the exit code."""
    args = _parse_args(argv)
    try:
        if args.smoke_test:
            return _smoke_test(args)
        out, analysis = run(args.experiments, args.out, args.budgets)
    except AnalyzeError as exc:
        print(f"prune-analyze: error: {exc}", file=sys.stderr)
        return 2
    print(summary_text(analysis))
    print(f"report: {out / 'report.html'}")
    return 0

