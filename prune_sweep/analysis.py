"""Cost fractions, Pareto fronts, hypervolume, budget winners and seed statistics of a results table.

Every choice (front membership, budget winners, hyperparameters, hypervolume) reads validation
accuracy of configurations, the means over their seeds (``configs``); test accuracy is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd

from prune_core.sections import name_label

from .configs import REPORT, SELECT, config_ids, configurations, usable
from .fairness import base_ids, compute_epochs, control_column, fairness
from .pareto import hypervolume_2d, pareto_front
from .results import DRIVER_GONE, GROUP_KEYS, Experiment, Results, resume_command


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
# deployment axes, drawn only where trials measured them (runtime.export: onnx): ``present_axes``
OPTIONAL_AXES: Tuple[Axis, ...] = (
    Axis("latency_ort", "latency_ms_final_ort", "latency_ms_base_ort", "latency_ms_base_ort",
         "ONNX Runtime latency", "ms", 1.0),
)
AXIS = {a.key: a for a in AXES + OPTIONAL_AXES}

DEFAULT_BUDGETS = (0.25, 0.5, 0.75)
MAX_LISTED = 50  # longer lists in the report point to results.csv instead


FRONTS = (*(a.key for a in AXES), "compute")  # the compute front puts accuracy against training epochs


def present_axes(table: pd.DataFrame) -> Tuple[Axis, ...]:
    """``AXES``, and each optional axis whose cost column holds a value for some trial."""
    return AXES + tuple(a for a in OPTIONAL_AXES if a.cost in table and table[a.cost].notna().any())


def cost_column(key: str) -> str:
    """The column a front minimises: a cost fraction, or a trial's training epochs for ``compute``."""
    return "compute_epochs" if key == "compute" else f"{key}_frac"


@dataclass
class Analysis:
    """Fronts, hypervolumes and budget winners computed from ``Results.table``, chosen on validation."""

    table: pd.DataFrame  # Results.table plus <axis>_frac, base_id, compute_epochs, config, front_* (its config's)
    configs: pd.DataFrame  # one row per configuration: means over seeds (configs.configurations), front_*
    fronts: pd.DataFrame  # long: one row per (axis, front, configuration on it)
    hypervolume: pd.DataFrame
    budgets: pd.DataFrame
    seeds: pd.DataFrame
    budget_levels: Tuple[float, ...] = DEFAULT_BUDGETS
    notes: List[str] = field(default_factory=list)
    fairness: pd.DataFrame = field(default_factory=pd.DataFrame)
    fairness_lines: List[str] = field(default_factory=list)
    repeated: bool = False  # some configuration ran with more than one seed
    unfinished: List[str] = field(default_factory=list)  # one line per experiment still running or interrupted
    axes: Tuple[Axis, ...] = AXES  # the cost axes of this table: AXES plus the optional ones measured

    @property
    def front_keys(self) -> Tuple[str, ...]:
        """``FRONTS`` with the optional axes this table has, before ``compute``."""
        return (*(a.key for a in self.axes), "compute")


def criterion_series(table: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    """The series of each experiment, written into its ``prune.method`` column: one per method.

    A study of one method that compares its criteria (a plug-in's against the built-ins, say)
    makes every criterion a series of its own, ``method/criterion``, so it gets its own front,
    hypervolume and fairness row; experiments of several methods keep one series per method (their
    criteria stay labels of the points). A study of several models (``model.name`` swept) makes
    each model's trials series of their own, ``method @ model``: the cost fractions of two networks
    are fractions of different dense costs, so one front over both would compare nothing. The
    trials of a control (``prune.control``: scratch_e, scratch_b, narrow) are series of their own,
    named after it."""
    notes = []
    control = control_column(table)
    table.loc[control != "", "prune.method"] = control[control != ""]  # a control is a series of its own
    for exp, sub in table.groupby("experiment", sort=False):
        pruned = sub[control[sub.index] == ""]
        methods = pruned["prune.method"].dropna().astype(str).unique()
        criteria = pruned["prune.criterion"].dropna().astype(str).unique()
        if len(methods) == 1 and len(criteria) > 1:
            table.loc[pruned.index, "prune.method"] = methods[0] + "/" + pruned["prune.criterion"].astype(str)
            notes.append(f"{exp}: one method ({methods[0]}) with {len(criteria)} criteria: each criterion is a series "
                         f"of its own ({methods[0]}/<criterion>)")
        models = study_models(sub)
        if models:
            labels = sub["model.name"].astype(str).map(name_label)
            table.loc[sub.index, "prune.method"] = table.loc[sub.index, "prune.method"].astype(str) + MODEL_SEP + labels
            notes.append(f"{exp}: {len(models)} models: each model's trials are series of their own (<method>"
                         f"{MODEL_SEP}<model>)")
    return table, notes


MODEL_SEP = " @ "



def method_name(series: pd.Series) -> pd.Series:
    """The method of a ``prune.method`` column that ``criterion_series`` may have labelled."""
    plain = series.astype("string").str.split(MODEL_SEP, regex=False).str[0].str.split("/").str[0]
    return plain.astype(object).where(series.notna(), series)


def analyze_results(results: Results, budgets: Sequence[float] = DEFAULT_BUDGETS) -> Analysis:
    """Cost fractions, configurations over seeds, fronts per experiment (all methods, and each
    method), hypervolume and budget winners, all chosen on validation accuracy; fairness."""
    table, series_notes = criterion_series(results.table.copy())
    exps = results.experiments
    axes = present_axes(table)
    fronts = (*(a.key for a in axes), "compute")
    for ax in axes:
        base = table[ax.base].where(table[ax.base] > 0, table[ax.fallback])
        table[f"{ax.key}_frac"] = table[ax.cost] / base.where(base > 0)
    table["base_id"] = base_ids(table, exps)
    table["compute_epochs"] = compute_epochs(table, table["base_id"])
    table["config"] = config_ids(table, exps)
    configs = configurations(table, exps, [f"{ax.key}_frac" for ax in axes])
    ok = usable(table).to_numpy()
    for key in fronts:
        for by, col in ((["experiment"], f"front_{key}"), (["experiment", "prune.method"], f"front_{key}_method")):
            configs[col] = False
            for _, sub in configs.groupby(by, sort=False, dropna=False):
                sub = above_chance(sub)  # a point no better than guessing is on no front
                mask = pareto_front(sub[[cost_column(key), SELECT]].to_numpy(dtype=float))
                configs.loc[sub.index[mask], col] = True
            on = set(configs.loc[configs[col], "config"])
            table[col] = ok & table["config"].isin(on).to_numpy()
    table = table[[c for c in table.columns if c not in ("trial_dir", "command")] + ["trial_dir", "command"]]
    notes = list(series_notes)
    if not ok.any():
        notes.append("No trial has finished yet (no final report with stage 'done' and a validation accuracy): "
                     "the fronts are empty.")
    fair, lines = fairness(table, configs, exps)
    repeated = bool((configs["seeds"] > 1).any()) if len(configs) else False
    return Analysis(table, configs, _front_table(configs, fronts), _hypervolume_table(table, configs, notes, axes),
                    _budget_table(table, configs, budgets), _seed_table(configs), tuple(budgets), notes, fair, lines,
                    repeated, unfinished_lines(table, exps), axes)


def unfinished_lines(table: pd.DataFrame, exps: Sequence[Experiment]) -> List[str]:
    """One line per experiment with trials running or interrupted: what they are and what to do."""
    lines = []
    for exp in exps:
        counts = table.loc[table["experiment"] == exp.name, "status"].value_counts()
        running, interrupted = int(counts.get("running", 0)), int(counts.get("interrupted", 0))
        mine = table[table["experiment"] == exp.name]
        waiting = int(((mine["status"] == "pending") & mine["reason"].astype(str).str.contains(DRIVER_GONE)).sum())
        if not running and not interrupted and not waiting:
            continue
        parts = [f"{running} trial{'s' * (running != 1)} running"] if running else []
        if interrupted:
            parts.append(f"{interrupted}{'' if running else ' trial' + 's' * (interrupted != 1)} interrupted")
        if waiting:
            parts.append(f"{waiting} never started")
        what = (f"resume with `{resume_command(exp)}`" if interrupted or waiting
                else "the sweep is still going; these results are as far as it got")
        lines.append(f"{exp.name + ': ' if len(exps) > 1 else ''}{', '.join(parts)}: {what}")
    return lines


def _chance(sub: pd.DataFrame) -> float:
    classes = sub["num_classes"].median()
    return 100.0 / classes if np.isfinite(classes) and classes > 0 else 0.0


def above_chance(sub: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``sub`` whose validation accuracy beats chance (100 / classes, each model its
    own): only these can be on a front or win a budget."""
    if sub.empty:
        return sub
    classes = sub["num_classes"].where(sub["num_classes"] > 0)
    return sub[(sub[SELECT] > 100.0 / classes) | classes.isna()]


def _front_table(configs: pd.DataFrame, fronts: Sequence[str] = FRONTS) -> pd.DataFrame:
    cols = ["experiment", "trial_id", "trials", "seeds", *(k for k in GROUP_KEYS if k != "runtime.seed"),
            SELECT, f"{SELECT}_std", REPORT, f"{REPORT}_std", "acc_base", "compute_epochs"]
    parts = []
    for key in fronts:
        cost = "compute_epochs" if key == "compute" else AXIS[key].cost
        for col, front in ((f"front_{key}", "all"), (f"front_{key}_method", None)):
            extra = [cost] if key == "compute" else [cost, cost_column(key)]
            sub = configs.loc[configs[col], cols + [c for c in extra if c not in cols]].copy()
            sub.insert(0, "front", sub["prune.method"] if front is None else front)
            sub.insert(0, "axis", key)
            sub["cost"] = sub[cost]
            sub["cost_frac"] = sub[cost_column(key)] if key != "compute" else np.nan
            sub = sub[[c for c in sub.columns if c not in extra or c == "compute_epochs"]]
            parts.append(sub.sort_values(["experiment", "front", "cost", SELECT]))
    fronts = pd.concat(parts, ignore_index=True)
    fronts["drop"] = fronts["acc_base"] - fronts[REPORT]
    return fronts


def _hypervolume_table(table: pd.DataFrame, configs: pd.DataFrame, notes: List[str],
                       axes: Sequence[Axis] = AXES) -> pd.DataFrame:
    rows = []
    done = table[table["status"] == "done"]
    for exp, sub in table.groupby("experiment", sort=False):
        fin = configs[configs["experiment"] == exp]
        chance = _chance(fin)
        if not fin.empty and chance == 0.0:
            notes.append(f"{exp}: num_classes is missing, so the hypervolume reference accuracy is 0.")
        groups = [("all", fin)] + [(m, g) for m, g in fin.groupby("prune.method", sort=True)]
        for method in sorted(sub["prune.method"].dropna().astype(str).unique()):
            if method not in {g for g, _ in groups}:
                groups.append((method, fin.iloc[:0]))
        for method, g in groups:
            n_done = done[(done["experiment"] == exp) & ((done["prune.method"] == method) | (method == "all"))]
            row = {"experiment": exp, "method": method, "trials_done": len(n_done), "configurations": len(g),
                   "reference_acc": chance, "reference_cost": 1.0}
            for ax in axes:
                pts = g[[f"{ax.key}_frac", SELECT]].to_numpy(dtype=float)
                hv = hypervolume_2d(pts, (1.0, chance))
                row[f"hv_{ax.key}"] = hv
                row[f"hv_{ax.key}_fraction"] = hv / (100.0 - chance)
                row[f"front_{ax.key}_size"] = int(pareto_front(pts).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def study_models(sub: pd.DataFrame) -> List[str]:
    """The ``model.name`` values of ``sub`` where it holds several (a study that sweeps the model), else
    []: each model's costs are fractions of its own dense costs (``criterion_series``)."""
    names = sub["model.name"].dropna().astype(str).unique() if "model.name" in sub else []
    return list(names) if len(names) > 1 else []


def of_model(sub: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of model ``name`` ("": all of them)."""
    return sub[sub["model.name"].astype(str) == name] if name else sub


def _budget_table(table: pd.DataFrame, configs: pd.DataFrame, budgets: Sequence[float]) -> pd.DataFrame:
    rows = []
    keys = [k for k in GROUP_KEYS if k != "runtime.seed"]
    for exp in table["experiment"].unique():
        trials = table[table["experiment"] == exp]
        fin = configs[configs["experiment"] == exp]
        for name in study_models(trials) or [""]:  # a budget is a fraction of each model's own dense FLOPs
            mine = of_model(fin, name)
            for key in ("flops", "flops_nz"):
                for b in budgets:
                    cheap = mine[mine[f"{key}_frac"] <= b + 1e-12]
                    ok = above_chance(cheap)
                    row = {"experiment": exp, "model": name_label(name) if name else "", "axis": key, "budget": b,
                           "at_chance": len(cheap) - len(ok)}  # configurations this cheap no better than guessing
                    if not ok.empty:
                        best = ok.sort_values([SELECT, f"{key}_frac", "trial_id"], ascending=[False, True, True]).iloc[0]
                        row.update(best[["trial_id", "trials", "seeds", *keys, SELECT, f"{SELECT}_std", REPORT,
                                         f"{REPORT}_std", "acc_base", f"{key}_frac", "compute_epochs", "flops_final",
                                         "params_nz_final", "latency_ms_final", "command"]].to_dict())
                        row["cost_frac"] = row.pop(f"{key}_frac")
                    rows.append(row)
    return pd.DataFrame(rows)


def _seed_table(configs: pd.DataFrame) -> pd.DataFrame:
    """The configurations that ran with several seeds: accuracies mean and sample std, seeds."""
    if configs.empty or not (configs["seeds"] > 1).any():
        return pd.DataFrame()
    cols = ["experiment", *(c for c in configs.columns if "." in c and c != "runtime.seed"), "seeds", "seed_values",
            SELECT, f"{SELECT}_std", REPORT, f"{REPORT}_std", "flops_frac", "compute_epochs"]
    return configs.loc[configs["seeds"] > 1, cols].reset_index(drop=True)
