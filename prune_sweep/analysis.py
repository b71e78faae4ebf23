"""Cost fractions, Pareto fronts, hypervolume, budget winners and seed statistics of a results table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd

from .pareto import hypervolume_2d, pareto_front
from .results import GROUP_KEYS, Experiment, Results


@dataclass(frozen=True)
class Axis:
    """A cost axis of the fronts: the metric minimised and the base model's value it is divided by."""

    key: str  # short name used in column and file names
    cost: str  # METRICS key of the pruned model's cost
    base: str  # METRICS key of the dense base model's cost: the hypervolume reference
    fallback: str  # used where ``base`` is missing (the dense value of the same quantity)
    label: str
    unit: str  # absolute unit on the secondary axis and in tables
    scale: float  # absolute value x scale = value in ``unit``


AXES: Tuple[Axis, ...] = (
    Axis("flops", "flops_final", "flops_base", "flops_base", "dense FLOPs", "MFLOPs", 1e-6),
    Axis("flops_nz", "flops_nz_final", "flops_nz_base", "flops_base", "effective FLOPs", "MFLOPs", 1e-6),
    Axis("params", "params_nz_final", "params_nz_base", "params_base", "non-zero parameters", "M params", 1e-6),
    Axis("latency", "latency_ms_final", "latency_ms_base", "latency_ms_base", "latency (batch 1)", "ms", 1.0),
)
AXIS = {a.key: a for a in AXES}

STATUSES = ("done", "stopped", "error", "pending")
DEFAULT_BUDGETS = (0.25, 0.5, 0.75)
MAX_LISTED = 50  # longer lists in the report point to results.csv instead


@dataclass
class Analysis:
    """Fronts, hypervolumes and budget winners computed from ``Results.table``."""

    table: pd.DataFrame  # Results.table plus <axis>_frac, front_<axis> and front_<axis>_method
    fronts: pd.DataFrame  # long: one row per (axis, front, trial on it)
    hypervolume: pd.DataFrame
    budgets: pd.DataFrame
    seeds: pd.DataFrame
    budget_levels: Tuple[float, ...] = DEFAULT_BUDGETS
    notes: List[str] = field(default_factory=list)


def analyze_results(results: Results, budgets: Sequence[float] = DEFAULT_BUDGETS) -> Analysis:
    """Cost fractions, fronts per experiment (all methods, and each method), hypervolume, budgets."""
    table = results.table.copy()
    done = (table["status"] == "done").to_numpy()
    for ax in AXES:
        base = table[ax.base].where(table[ax.base] > 0, table[ax.fallback])
        table[f"{ax.key}_frac"] = table[ax.cost] / base.where(base > 0)
        table[f"front_{ax.key}"] = False
        table[f"front_{ax.key}_method"] = False
        for by, col in ((["experiment"], f"front_{ax.key}"),
                        (["experiment", "prune.method"], f"front_{ax.key}_method")):
            for _, sub in table[done].groupby(by, sort=False, dropna=False):
                mask = pareto_front(sub[[f"{ax.key}_frac", "acc_final"]].to_numpy(dtype=float))
                table.loc[sub.index[mask], col] = True
    table = table[[c for c in table.columns if c not in ("trial_dir", "command")] + ["trial_dir", "command"]]
    notes = []
    if not done.any():
        notes.append("No trial has finished yet (no final report with stage 'done'): the fronts are empty.")
    return Analysis(table, _front_table(table), _hypervolume_table(table, notes), _budget_table(table, budgets),
                    _seed_table(table, results.experiments), tuple(budgets), notes)


def _chance(sub: pd.DataFrame) -> float:
    classes = sub["num_classes"].median()
    return 100.0 / classes if np.isfinite(classes) and classes > 0 else 0.0


def _front_table(table: pd.DataFrame) -> pd.DataFrame:
    cols = ["experiment", "trial_id", *GROUP_KEYS, "acc_final", "acc_base"]
    parts = []
    for ax in AXES:
        for col, front in ((f"front_{ax.key}", "all"), (f"front_{ax.key}_method", None)):
            sub = table.loc[table[col], cols + [ax.cost, f"{ax.key}_frac"]].copy()
            sub.insert(0, "front", sub["prune.method"] if front is None else front)
            sub.insert(0, "axis", ax.key)
            sub = sub.rename(columns={ax.cost: "cost", f"{ax.key}_frac": "cost_frac"})
            parts.append(sub.sort_values(["experiment", "front", "cost_frac", "acc_final"]))
    fronts = pd.concat(parts, ignore_index=True)
    fronts["drop"] = fronts["acc_base"] - fronts["acc_final"]
    return fronts


def _hypervolume_table(table: pd.DataFrame, notes: List[str]) -> pd.DataFrame:
    rows = []
    done = table[table["status"] == "done"]
    for exp, sub in table.groupby("experiment", sort=False):
        fin = done[done["experiment"] == exp]
        chance = _chance(fin)
        if not fin.empty and chance == 0.0:
            notes.append(f"{exp}: num_classes is missing, so the hypervolume reference accuracy is 0.")
        groups = [("all", fin)] + [(m, g) for m, g in fin.groupby("prune.method", sort=True)]
        for method in sorted(sub["prune.method"].dropna().astype(str).unique()):
            if method not in {g for g, _ in groups}:
                groups.append((method, fin.iloc[:0]))
        for method, g in groups:
            row = {"experiment": exp, "method": method, "trials_done": len(g), "reference_acc": chance,
                   "reference_cost": 1.0}
            for ax in AXES:
                pts = g[[f"{ax.key}_frac", "acc_final"]].to_numpy(dtype=float)
                hv = hypervolume_2d(pts, (1.0, chance))
                row[f"hv_{ax.key}"] = hv
                row[f"hv_{ax.key}_fraction"] = hv / (100.0 - chance)
                row[f"front_{ax.key}_size"] = int(pareto_front(pts).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def _budget_table(table: pd.DataFrame, budgets: Sequence[float]) -> pd.DataFrame:
    rows = []
    done = table[(table["status"] == "done") & np.isfinite(table["acc_final"])]
    for exp in table["experiment"].unique():
        fin = done[done["experiment"] == exp]
        for key in ("flops", "flops_nz"):
            for b in budgets:
                ok = fin[fin[f"{key}_frac"] <= b + 1e-12]
                row = {"experiment": exp, "axis": key, "budget": b}
                if not ok.empty:
                    best = ok.sort_values(["acc_final", f"{key}_frac", "trial_id"],
                                          ascending=[False, True, True]).iloc[0]
                    row.update(best[["trial_id", *GROUP_KEYS, "acc_final", "acc_base", f"{key}_frac",
                                     "flops_final", "params_nz_final", "latency_ms_final", "command"]].to_dict())
                    row["cost_frac"] = row.pop(f"{key}_frac")
                rows.append(row)
    return pd.DataFrame(rows)


def _seed_table(table: pd.DataFrame, exps: List[Experiment]) -> pd.DataFrame:
    """Mean and std of accuracy over seeds, for configurations that were run with several seeds."""
    done = table[table["status"] == "done"]
    keys = [k for k in dict.fromkeys([*GROUP_KEYS, *(k for e in exps for k in e.swept)]) if k != "runtime.seed"]
    if done.empty or done["runtime.seed"].nunique() < 2:
        return pd.DataFrame()
    grouped = done.groupby(["experiment", *keys], dropna=False, sort=True)
    stats = grouped.agg(seeds=("runtime.seed", "nunique"), acc_mean=("acc_final", "mean"),
                        acc_std=("acc_final", "std"), flops_frac=("flops_frac", "mean")).reset_index()
    return stats[stats["seeds"] > 1].reset_index(drop=True)

