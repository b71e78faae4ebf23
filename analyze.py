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

from __future__ import annotations

import argparse
import base64
import html
import importlib.util
import io
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from prune_core.config import SECTIONS
from prune_core.schema import METRIC_KEYS, TEXT_METRICS

__all__ = [
    "AXES",
    "AnalyzeError",
    "Analysis",
    "Axis",
    "Experiment",
    "Results",
    "analyze_results",
    "hypervolume_2d",
    "load_experiments",
    "main",
    "pareto_front",
    "reproduce_command",
    "run",
    "summary_text",
    "write_report",
]


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

# config keys every row carries (from params.json, else base.yaml, else the config defaults)
GROUP_KEYS = ("prune.method", "prune.criterion", "prune.scope", "prune.ratio", "runtime.seed")
STATUSES = ("done", "stopped", "error", "pending")
DEFAULT_BUDGETS = (0.25, 0.5, 0.75)
MAX_LISTED = 50  # longer lists in the report point to results.csv instead
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
LINESTYLES = ("-", "--", ":", "-.")


class AnalyzeError(Exception):
    """A bad input: the message names the path and what was expected."""


# ---------------------------------------------------------------------------------------------
# Pure math


def pareto_front(points: Any) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points``, an (n, 2) array of (cost, accuracy).

    Cost is minimised, accuracy maximised. A row is dominated when another is no worse in both and
    better in one. Rows with NaN or inf are never on the front; of exact duplicates only the first
    is kept, so the result does not depend on anything but the input order.

    >>> pareto_front([(1.0, 90.0), (0.5, 90.0), (0.5, 80.0), (0.25, 70.0), (0.25, 70.0)]).tolist()
    [False, True, False, True, False]
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    mask = np.zeros(len(pts), dtype=bool)
    idx = np.flatnonzero(np.isfinite(pts).all(axis=1))
    if idx.size == 0:
        return mask
    cost, acc = pts[idx, 0], pts[idx, 1]
    order = np.lexsort((idx, -acc, cost))  # cheapest first; at equal cost the most accurate first
    acc_sorted = acc[order]
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], acc_sorted[:-1])))
    mask[idx[order[acc_sorted > best_before]]] = True
    return mask


def hypervolume_2d(points: Any, reference: Tuple[float, float]) -> float:
    """Area dominated by ``points`` (cost down, accuracy up) and bounded by ``reference``.

    ``reference`` is (cost, accuracy) of the worst point that still counts: here the dense base
    model's cost (1.0 as a fraction) and chance accuracy. Points that do not beat the reference in
    both coordinates add nothing; NaN and inf rows are ignored.

    >>> hypervolume_2d([(0.25, 80.0), (0.5, 90.0)], reference=(1.0, 10.0))
    57.5
    """
    ref_cost, ref_acc = float(reference[0]), float(reference[1])
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    pts = pts[(pts[:, 0] < ref_cost) & (pts[:, 1] > ref_acc)]
    if len(pts) == 0:
        return 0.0
    front = pts[pareto_front(pts)]
    front = front[np.argsort(front[:, 0], kind="stable")]  # on a front accuracy rises with cost
    widths = np.diff(np.append(front[:, 0], ref_cost))
    return float(np.sum(widths * (front[:, 1] - ref_acc)))


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Experiment:
    """One experiment directory: where it is and the settings it was run with."""

    name: str
    path: Path
    sweep_text: str  # sweep.yaml as written, "" when absent
    has_base_yaml: bool
    swept: List[str]  # dotted keys found in the trials' params.json


@dataclass
class Results:
    """Everything read from disk: one row per trial, the fine-tune curves and per-layer channels."""

    table: pd.DataFrame
    curves: pd.DataFrame  # experiment, trial_id, epoch, val_acc, train_loss
    layers: Dict[Tuple[str, str], Tuple[Dict[str, float], Dict[str, float]]]
    experiments: List[Experiment]


def load_experiments(paths: Sequence[str | Path]) -> Results:
    """Read every trial of every experiment directory into one table (``experiment`` column)."""
    exps, records, curves, layers = [], [], [], {}
    names = _experiment_names([Path(p) for p in paths])
    for path, name in zip(paths, names):
        exp, recs = _load_experiment(Path(path), name, curves, layers)
        exps.append(exp)
        records.extend(recs)
    table = _build_table(records, exps)
    curve_df = pd.DataFrame(curves, columns=["experiment", "trial_id", "epoch", "val_acc", "train_loss"])
    for col in ("epoch", "val_acc", "train_loss"):
        curve_df[col] = pd.to_numeric(curve_df[col], errors="coerce")
    # a trial restored from a checkpoint reports some epochs twice: the later report wins
    curve_df = curve_df.drop_duplicates(["experiment", "trial_id", "epoch"], keep="last")
    return Results(table, curve_df.reset_index(drop=True), layers, exps)


def _experiment_names(paths: List[Path]) -> List[str]:
    names = [p.resolve().name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    seen: Dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


_EXPECTED = "an experiment directory written by launch.py (trial folders holding params.json)"


def _load_experiment(path: Path, name: str, curves: list, layers: dict) -> Tuple[Experiment, List[dict]]:
    if not path.exists():
        raise AnalyzeError(f"{path}: no such directory; expected {_EXPECTED}")
    if not path.is_dir():
        raise AnalyzeError(f"{path}: not a directory; expected {_EXPECTED}")
    try:
        entries = sorted(e.path for e in os.scandir(path) if e.is_dir())
    except OSError as exc:
        raise AnalyzeError(f"{path}: cannot list it ({exc.strerror}); expected {_EXPECTED}") from None
    sweep_text = _read_optional_text(path / "sweep.yaml")
    base = _flatten(_read_yaml(path / "base.yaml"))
    defaults = _config_defaults()
    records = []
    for tdir in entries:
        rec = _read_trial(tdir, name, curves, layers)
        if rec is None:
            continue
        for key in GROUP_KEYS:
            if key not in rec["_params"]:
                rec[key] = base.get(key, defaults.get(key))
        records.append(rec)
    if not records:
        raise AnalyzeError(_no_trials_message(path, sweep_text, base))
    swept = list(dict.fromkeys(k for r in records for k in r["_params"]))
    exp = Experiment(name, path, sweep_text, (path / "base.yaml").is_file(), swept)
    return exp, records


def _no_trials_message(path: Path, sweep_text: str, base: dict) -> str:
    markers = ("sweep.yaml", "base.yaml", "tuner.pkl")
    if sweep_text or base or any((path / m).exists() for m in markers) or any(path.glob("experiment_state-*.json")):
        return f"{path}: empty experiment, no trials yet (expected trial folders holding params.json)"
    inner = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "sweep.yaml").is_file())[:5]
    hint = f"; experiments inside it: {', '.join(inner)}" if inner else ""
    return f"{path}: not an experiment directory; expected {_EXPECTED}{hint}"


def _read_trial(tdir: str, experiment: str, curves: list, layers: dict) -> Optional[dict]:
    """One trial folder as a flat record; None when the folder holds no params.json."""
    params_path = os.path.join(tdir, "params.json")
    try:
        with open(params_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnalyzeError(f"{params_path}: cannot read it ({exc.strerror}); expected the trial's config") from None
    try:
        params = json.loads(raw)
    except ValueError as exc:
        raise AnalyzeError(f"{params_path}: not JSON ({exc}); expected the trial's config as a JSON object") from None
    if not isinstance(params, dict):
        raise AnalyzeError(f"{params_path}: expected a JSON object of config keys, got {type(params).__name__}")
    params = _flatten(params)
    rows = _read_rows(tdir)
    error = _read_optional_text(os.path.join(tdir, "error.txt"))
    final = next((r for r in reversed(rows) if r.get("stage") == "done"), None)
    source = final if final is not None else (rows[-1] if rows else {})
    trial_id = str(source.get("trial_id") or os.path.basename(tdir))
    epoch_rows = [r for r in rows if r.get("stage") == "finetune"]
    for r in epoch_rows:
        curves.append((experiment, trial_id, r.get("epoch"), r.get("val_acc"), r.get("train_loss")))
    if final is not None:
        status, reason = "done", ""
    elif error:
        status, reason = "error", _error_reason(error)
    elif rows:
        status = "stopped"
        reason = f"no final report (last epoch {epoch_rows[-1].get('epoch')})" if epoch_rows else "no final report"
    else:
        status, reason = "pending", ""
    if final is not None and isinstance(final.get("layer_channels_final"), dict):
        layers[(experiment, trial_id)] = (final.get("layer_channels_base") or {}, final["layer_channels_final"])
    rec = {"experiment": experiment, "trial_id": trial_id, "status": status, "reason": reason,
           "epochs": len({r.get("epoch") for r in epoch_rows}),
           "val_acc_last": epoch_rows[-1].get("val_acc") if epoch_rows else None,
           "trial_dir": os.path.basename(tdir), "_params": params}
    rec.update({k: _scalar(v) for k, v in params.items()})
    rec.update({k: _scalar(source.get(k)) for k in METRIC_KEYS})
    return rec


def _read_rows(tdir: str) -> List[dict]:
    """result.json as dicts; falls back to progress.csv. A half-written last line is skipped."""
    path = os.path.join(tdir, "result.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return _read_progress_csv(os.path.join(tdir, "progress.csv"))
    except OSError as exc:
        raise AnalyzeError(f"{path}: cannot read it ({exc.strerror}); expected JSON lines") from None
    lines = data.split(b"\n")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            if n == len(lines):  # no newline after it: the trial is writing it right now
                break
            raise AnalyzeError(f"{path}: line {n} is not JSON ({exc}); expected one JSON object "
                               "per line, as Ray Tune writes") from None
        if not isinstance(row, dict):
            raise AnalyzeError(f"{path}: line {n} is a {type(row).__name__}; expected a JSON object per line")
        rows.append(row)
    return rows


def _read_progress_csv(path: str) -> List[dict]:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        if isinstance(exc, pd.errors.EmptyDataError):
            return []
        raise AnalyzeError(f"{path}: cannot read it ({exc}); expected Ray Tune's progress CSV") from None
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


def _error_reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = lines[-1] if lines else "error.txt is empty"
    return reason if len(reason) <= 300 else reason[:297] + "..."


def _read_optional_text(path: str | Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise AnalyzeError(f"{path}: cannot read it ({exc.strerror})") from None


def _read_yaml(path: Path) -> dict:
    text = _read_optional_text(path)
    if not text:
        return {}
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AnalyzeError(f"{path}: not YAML ({str(exc).splitlines()[0]}); expected config values") from None
    if values is not None and not isinstance(values, dict):
        raise AnalyzeError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values or {}


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _config_defaults() -> Dict[str, Any]:
    """Defaults of the grouping keys, for sweeps that neither sweep nor fix them."""
    out = {}
    for key in GROUP_KEYS:
        section, name = key.split(".", 1)
        for f in fields(SECTIONS[section]):
            if f.name == name:
                out[key] = f.default
    if out.get("prune.criterion") == "":  # the config resolves "" to the method's own default
        out["prune.criterion"] = "default"
    return out


def _scalar(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _build_table(records: List[dict], exps: List[Experiment]) -> pd.DataFrame:
    path_of = {e.name: e for e in exps}
    for rec in records:
        rec["command"] = reproduce_command(path_of[rec["experiment"]], rec.pop("_params"))
    table = pd.DataFrame.from_records(records)
    for key in METRIC_KEYS:
        if key not in table:
            table[key] = np.nan
        if key not in TEXT_METRICS:
            table[key] = pd.to_numeric(table[key], errors="coerce")
    table["val_acc_last"] = pd.to_numeric(table["val_acc_last"], errors="coerce")
    swept = sorted({k for e in exps for k in e.swept} - set(GROUP_KEYS))
    head = ["experiment", "trial_id", "status", "reason", *GROUP_KEYS, *swept, "epochs", "val_acc_last"]
    tail = ["trial_dir", "command"]
    rest = [c for c in table.columns if c not in head and c not in tail and c not in METRIC_KEYS]
    return table[head + list(METRIC_KEYS) + rest + tail]


def reproduce_command(exp: Experiment, params: Mapping[str, Any]) -> str:
    """The prune_core command line that reruns one trial: the sweep's base plus its swept keys."""
    parts = ["python", "-m", "prune_core"]
    if exp.has_base_yaml:
        parts += ["--config", str((exp.path / "base.yaml").resolve())]
    for key, value in params.items():
        parts += ["--set", f"{key}={_cli_value(value)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# Analysis


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


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot, no global backend)


def _colours(methods: Sequence[str]) -> Dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(methods))}


def _log_subs(low: float, high: float) -> Tuple[float, ...]:
    decades = math.log10(high / low)
    return (1, 1.5, 2, 3, 4, 5, 6, 7, 8) if decades < 1.3 else (1, 2, 3, 5, 7) if decades < 2.3 else (1, 2, 5)


def _pct_axis(ax, low: float, high: float) -> None:
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=_log_subs(low, high)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _points(ax, x, y, colour, scope_global: bool, marker: str, **kw) -> None:
    face = colour if scope_global else "none"
    ax.scatter(x, y, marker=marker, facecolors=face, edgecolors=[colour], **kw)


def _front_figure(a: Analysis, exps: List[Experiment], axis: Axis) -> Figure:
    t = a.table
    frac = f"{axis.key}_frac"
    colours = _colours(t["prune.method"].dropna().astype(str).unique())
    fig = Figure(figsize=(8.5, 5.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    done = t[(t["status"] == "done") & np.isfinite(t[frac]) & np.isfinite(t["acc_final"])]
    stopped = t[(t["status"] == "stopped") & np.isfinite(t[frac]) & np.isfinite(t["val_acc_last"])]
    xs = pd.concat([done[frac], stopped[frac]]) * 100
    low = max(0.1, float(xs.min()) / 1.3) if len(xs) else 1.0
    high = max(130.0, float(xs.max()) * 1.15) if len(xs) else 130.0
    many = len(done) > 2000  # rasterise the faint layer so the SVG stays small
    for e_i, exp in enumerate(exps):
        marker, ls = MARKERS[e_i % len(MARKERS)], LINESTYLES[e_i % len(LINESTYLES)]
        d = done[done["experiment"] == exp.name]
        for (method, scope), g in d.groupby(["prune.method", "prune.scope"], dropna=False):
            _points(ax, g[frac] * 100, g["acc_final"], colours.get(method, "grey"), scope == "global", marker,
                    s=14, alpha=0.25, linewidths=0.8, rasterized=many, zorder=2)
        s = stopped[stopped["experiment"] == exp.name]
        for method, g in s.groupby("prune.method", dropna=False):
            ax.scatter(g[frac] * 100, g["val_acc_last"], marker="x", s=16, alpha=0.45,
                       color=colours.get(method, "grey"), linewidths=0.8, rasterized=many, zorder=2)
        overall = d[d[f"front_{axis.key}"]].sort_values(frac)
        if len(overall):
            _staircase(ax, overall[frac] * 100, overall["acc_final"], high, color="0.55", lw=7, alpha=0.3,
                       ls=ls, zorder=1, solid_capstyle="butt")
        for (method, scope), g in d[d[f"front_{axis.key}_method"]].groupby(["prune.method", "prune.scope"],
                                                                            dropna=False):
            _points(ax, g[frac] * 100, g["acc_final"], colours.get(method, "grey"), scope == "global", marker,
                    s=42, linewidths=1.5, zorder=4)
        for method, g in d[d[f"front_{axis.key}_method"]].groupby("prune.method", dropna=False):
            g = g.sort_values(frac)
            _staircase(ax, g[frac] * 100, g["acc_final"], high, color=colours.get(method, "grey"), lw=1.4,
                       ls=ls, zorder=3)
        acc_base = t.loc[t["experiment"] == exp.name, "acc_base"].median()
        if np.isfinite(acc_base):
            ax.scatter([100], [acc_base], marker="*", s=260, color="gold", edgecolors="black", zorder=5)
    _pct_axis(ax, low, high)
    ax.set_xlabel(f"{axis.label} (% of the dense base model, log scale)")
    ax.set_ylabel("top-1 test accuracy after fine-tuning (%)")
    ax.grid(True, which="major", alpha=0.3)
    bases = t[axis.base].where(t[axis.base] > 0, t[axis.fallback]).dropna()
    if len(exps) == 1 and len(bases):  # one base model: show the absolute cost on top
        absolute = float(bases.median()) * axis.scale
        top = ax.secondary_xaxis("top", functions=(lambda p: p * absolute / 100, lambda v: v * 100 / absolute))
        # latency of the base is measured in every trial: the top axis then uses the median
        varies = "" if bases.nunique() == 1 else f"; of the median base, {absolute:.3g} {axis.unit}"
        top.set_xlabel(f"{axis.label} ({axis.unit}{varies})")
        top.xaxis.set_major_locator(LogLocator(base=10, subs=_log_subs(low, high)))
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        top.xaxis.set_minor_formatter(NullFormatter())
    handles = [Line2D([], [], marker="o", ls="", color=c, label=m) for m, c in colours.items()]
    handles += [Line2D([], [], marker="o", ls="", color="k", label="global ranking"),
                Line2D([], [], marker="o", ls="", mfc="none", color="k", label="local ranking"),
                Line2D([], [], marker="*", ls="", ms=13, mfc="gold", mec="black", label="dense base model"),
                Line2D([], [], color="0.55", lw=7, alpha=0.3, label="front, all methods")]
    if len(stopped):
        handles.append(Line2D([], [], marker="x", ls="", color="k", label="stopped early (last val acc)"))
    if len(exps) > 1:
        handles += [Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls=LINESTYLES[i % len(LINESTYLES)],
                           color="k", label=e.name) for i, e in enumerate(exps)]
    ax.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.85)
    if done.empty:
        ax.text(0.5, 0.5, "no finished trials yet", transform=ax.transAxes, ha="center", color="0.4")
    ax.set_title(f"Accuracy vs {axis.label}: every trial faint, each method's front as a staircase")
    return fig


def _staircase(ax, x, y, right: float, **kw) -> None:
    xs = np.append(np.asarray(x, float), right)
    ys = np.append(np.asarray(y, float), float(np.asarray(y)[-1]))
    ax.step(xs, ys, where="post", **kw)


def _ratio_figure(a: Analysis, exps: List[Experiment]) -> Figure:
    t = a.table[(a.table["status"] == "done") & np.isfinite(a.table["acc_final"])]
    methods = sorted(a.table["prune.method"].dropna().astype(str).unique())
    colours = _colours(methods)
    fig = Figure(figsize=(8.5, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    # one point per configuration (every swept key but the seed): mean and std over its seeds;
    # at each ratio the best configuration of the method and scope is drawn
    keys = [k for k in dict.fromkeys([*GROUP_KEYS, *(k for e in exps for k in e.swept)]) if k != "runtime.seed"]
    configs = (t.groupby(["experiment", *keys], dropna=False)["acc_final"].agg(["mean", "std", "count"])
               .reset_index())
    best = configs.sort_values("mean", ascending=False).drop_duplicates(["prune.method", "prune.scope", "prune.ratio"])
    repeats = bool((best["count"] > 1).any())
    for i, method in enumerate(methods):
        colour = colours[method]
        offset = (i - (len(methods) - 1) / 2) * 0.004  # keep error bars of methods apart
        for scope, g in t[t["prune.method"] == method].groupby("prune.scope", dropna=False):
            _points(ax, g["prune.ratio"] + offset, g["acc_final"], colour, scope == "global", "o",
                    s=10, alpha=0.2, linewidths=0.6, rasterized=len(t) > 2000)
            b = best[(best["prune.method"] == method) & (best["prune.scope"] == scope)].sort_values("prune.ratio")
            ax.errorbar(b["prune.ratio"] + offset, b["mean"], yerr=b["std"].fillna(0) if repeats else None,
                        fmt="o-" if scope == "global" else "o--", color=colour,
                        mfc=colour if scope == "global" else "white", capsize=3, lw=1.2, ms=4.5)
    ax.set_xlabel("prune.ratio (fraction of the method's unit removed)")
    ax.set_ylabel("top-1 test accuracy after fine-tuning (%)")
    how = "mean ± std across seeds" if repeats else "one seed"
    ax.set_title(f"Accuracy vs pruning ratio: best configuration per ratio ({how})")
    handles = [Line2D([], [], marker="o", color=c, label=m) for m, c in colours.items()]
    handles += [Line2D([], [], marker="o", color="k", ls="-", label="global ranking"),
                Line2D([], [], marker="o", color="k", mfc="white", ls="--", label="local ranking")]
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    ax.grid(True, alpha=0.3)
    return fig


def _curves_figure(a: Analysis, results: Results, limit: int = 12) -> Optional[Figure]:
    front = a.table[a.table["front_flops"]].sort_values("flops_frac")
    if front.empty or results.curves.empty:
        return None
    if len(front) > limit:
        front = front.iloc[np.linspace(0, len(front) - 1, limit).round().astype(int)]
    curves = results.curves.set_index(["experiment", "trial_id"]).sort_index()
    colours = _colours(a.table["prune.method"].dropna().astype(str).unique())
    fig = Figure(figsize=(8.5, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for _, row in front.iterrows():
        key = (row["experiment"], row["trial_id"])
        if key not in curves.index:
            continue
        c = curves.loc[[key]].sort_values("epoch")
        ax.plot(c["epoch"], c["val_acc"], marker="o", ms=3, color=colours.get(row["prune.method"], "grey"),
                ls="-" if row["prune.scope"] == "global" else "--",
                label=f"{row['prune.method']} r={row['prune.ratio']:g} {row['prune.scope']} "
                      f"({100 * row['flops_frac']:.0f}% FLOPs)")
        drawn += 1
    if not drawn:
        return None
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("fine-tune epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Fine-tuning of the trials on the accuracy-vs-FLOPs front")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    return fig


def _layer_choices(a: Analysis, results: Results) -> List[Tuple[float, pd.Series]]:
    """The most accurate trial with per-layer channel counts under each dense-FLOPs budget."""
    t = a.table
    has = [key in results.layers for key in zip(t["experiment"], t["trial_id"])]
    cand = t[np.asarray(has, bool) & (t["status"] == "done").to_numpy()]
    out = []
    for b in a.budget_levels:
        ok = cand[cand["flops_frac"] <= b + 1e-12]
        if not ok.empty:
            out.append((b, ok.sort_values(["acc_final", "flops_frac"], ascending=[False, True]).iloc[0]))
    return out


def _layers_figure(a: Analysis, results: Results) -> Optional[Figure]:
    choices = _layer_choices(a, results)
    if not choices:
        return None
    base, _ = results.layers[(choices[0][1]["experiment"], choices[0][1]["trial_id"])]
    names = list(base) or list(results.layers[(choices[0][1]["experiment"], choices[0][1]["trial_id"])][1])
    fig = Figure(figsize=(max(8.5, 0.32 * len(names) + 2), 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x, [base.get(n, np.nan) for n in names], color="0.85", edgecolor="0.6", label="dense base model")
    for b, row in choices:
        final = results.layers[(row["experiment"], row["trial_id"])][1]
        ax.plot(x, [final.get(n, np.nan) for n in names], marker="o", ms=4,
                label=f"≤{100 * b:g}% FLOPs: {row['prune.method']} r={row['prune.ratio']:g} {row['prune.scope']}, "
                      f"{row['acc_final']:.2f}% ({row['trial_id']})")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("channels kept")
    ax.set_title("Per-layer channels of the most accurate trial under each FLOPs budget")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _figures(results: Results, a: Analysis) -> List[Tuple[str, str, Optional[Figure]]]:
    """(file stem, caption, figure or None when there is nothing to draw) for the report."""
    figs: List[Tuple[str, str, Optional[Figure]]] = []
    for axis in AXES:
        figs.append((f"front_{axis.key}", f"Accuracy vs {axis.label}", _front_figure(a, results.experiments, axis)))
    figs.append(("acc_vs_ratio", "Accuracy vs pruning ratio per method", _ratio_figure(a, results.experiments)))
    figs.append(("finetune_curves", "Fine-tune curves of the front's trials", _curves_figure(a, results)))
    figs.append(("layer_channels", "Per-layer channels at FLOPs budgets", _layers_figure(a, results)))
    return figs


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class Block:
    """One piece of the report, rendered both to HTML and to Markdown."""

    kind: str  # h2 | p | table | figure | pre | details
    text: str = ""
    frame: Optional[pd.DataFrame] = None
    stem: str = ""  # figure file name without extension


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec) if isinstance(v, (int, float, np.number)) else str(v)


def _cost(value: Any, frac: Any, axis: Axis) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    digits = ".3g" if axis.key != "latency" else ".3f"
    return f"{value * axis.scale:{digits}} {axis.unit} ({_fmt(100 * frac, '.1f')}%)"


def _trial_frame(rows: pd.DataFrame, multi: bool) -> pd.DataFrame:
    """The front / budget table columns the issue asks for, formatted for people."""
    out = pd.DataFrame({
        **({"experiment": rows["experiment"]} if multi else {}),
        "method": rows["prune.method"], "criterion": rows["prune.criterion"], "scope": rows["prune.scope"],
        "ratio": rows["prune.ratio"].map(lambda v: _fmt(v, "g")),
        "FLOPs": [_cost(v, f, AXIS["flops"]) for v, f in zip(rows["flops_final"], rows["flops_frac"])],
        "eff. FLOPs": [_cost(v, f, AXIS["flops_nz"]) for v, f in zip(rows["flops_nz_final"], rows["flops_nz_frac"])],
        "params (non-zero)": [_cost(v, f, AXIS["params"]) for v, f in
                              zip(rows["params_nz_final"], rows["params_frac"])],
        "latency": [_cost(v, f, AXIS["latency"]) for v, f in zip(rows["latency_ms_final"], rows["latency_frac"])],
        "accuracy (%)": rows["acc_final"].map(_fmt),
        "drop vs base (pp)": (rows["acc_base"] - rows["acc_final"]).map(_fmt),
        "trial": rows["trial_id"],
    })
    return out.reset_index(drop=True)


def _summary_frame(a: Analysis) -> pd.DataFrame:
    t = a.table
    counts = t.groupby(["experiment", "prune.method"], dropna=False)["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=list(STATUSES), fill_value=0)
    best = t[t["status"] == "done"].groupby(["experiment", "prune.method"], dropna=False)["acc_final"].max()
    rows = []
    hv = a.hypervolume.set_index(["experiment", "method"]) if not a.hypervolume.empty else None
    for (exp, method), c in counts.iterrows():
        row = {"experiment": exp, "method": method, "trials": int(c.sum()), **{s: int(c[s]) for s in STATUSES},
               "best acc (%)": _fmt(best.get((exp, method), np.nan))}
        for ax in AXES:
            v = hv.loc[(exp, method), f"hv_{ax.key}"] if hv is not None and (exp, method) in hv.index else np.nan
            row[f"HV {ax.key}"] = _fmt(v)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame if t["experiment"].nunique() > 1 else frame.drop(columns="experiment")


def _budget_frame(a: Analysis, multi: bool) -> pd.DataFrame:
    b = a.budgets
    rows = []
    for _, r in b.iterrows():
        kind = AXIS[r["axis"]].label
        row = {**({"experiment": r["experiment"]} if multi else {}), "budget": f"≤{100 * r['budget']:g}% {kind}"}
        if isinstance(r.get("trial_id"), str):
            row.update({"method": r["prune.method"], "criterion": r["prune.criterion"], "scope": r["prune.scope"],
                        "ratio": _fmt(r["prune.ratio"], "g"), "cost": f"{100 * r['cost_frac']:.1f}%",
                        "accuracy (%)": _fmt(r["acc_final"]), "drop vs base (pp)": _fmt(r["acc_base"] - r["acc_final"]),
                        "trial": r["trial_id"]})
        else:
            row["method"] = "no finished trial this cheap"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _report_blocks(results: Results, a: Analysis, figs: List[Tuple[str, str, Optional[Figure]]]) -> List[Block]:
    t = a.table
    multi = len(results.experiments) > 1
    counts = t["status"].value_counts()
    blocks = [Block("p", f"{len(t)} trials in {', '.join(e.name for e in results.experiments)}: "
                         + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES) + ". Only finished trials "
                         "(status done: a final report with stage 'done') enter a front. Trials stopped early by the "
                         "scheduler are listed under 'Stopped early', and drawn as crosses at their last validation "
                         "accuracy where their epoch reports carry the pruned model's cost.")]
    blocks += [Block("p", n) for n in a.notes]
    blocks += [Block("h2", "Summary"), Block("table", frame=_summary_frame(a))]
    front = t[t["front_flops"]].sort_values(["experiment", "flops_frac"])
    blocks += [Block("h2", "Pareto front: accuracy vs dense FLOPs"),
               Block("p", "Non-dominated finished trials, all methods together, cheapest first. "
                          "Costs in brackets are fractions of the dense base model."),
               Block("table", frame=_trial_frame(front, multi))]
    blocks += [Block("h2", "Best trial under a FLOPs budget"), Block("table", frame=_budget_frame(a, multi))]
    hv = a.hypervolume.copy()
    if not hv.empty:
        shown = hv[["experiment", "method", "trials_done", *(f"hv_{ax.key}" for ax in AXES)]].copy()
        for ax in AXES:
            shown[f"hv_{ax.key}"] = [f"{_fmt(v)} ({_fmt(100 * f, '.1f')}%)"
                                     for v, f in zip(hv[f"hv_{ax.key}"], hv[f"hv_{ax.key}_fraction"])]
        shown.columns = ["experiment", "method", "done", *(f"HV {ax.label}" for ax in AXES)]
        ref = hv.groupby("experiment", sort=False)["reference_acc"].first()
        refs = ", ".join(f"{e}: {_fmt(r)}%" for e, r in ref.items())
        blocks += [Block("h2", "Hypervolume"),
                   Block("p", "Area of the (cost fraction, accuracy) plane each front dominates, with the reference "
                              "point at the dense base model's cost (fraction 1.0) and chance accuracy "
                              f"100 / num_classes ({refs}). Unit: accuracy points x cost fraction; in brackets the "
                              "share of the largest possible area (1.0 x (100 - chance))."),
                   Block("table", frame=shown if multi else shown.drop(columns="experiment"))]
    blocks.append(Block("h2", "Figures"))
    for stem, caption, fig in figs:
        if fig is None:
            why = ("no trial reported layer_channels_base / layer_channels_final" if stem == "layer_channels"
                   else "nothing to draw (no finished trial on the front with fine-tune epochs)")
            blocks.append(Block("p", f"{caption}: skipped, {why}."))
        else:
            blocks.append(Block("figure", caption, stem=stem))
    for ax in AXES[1:]:
        rows = t[t[f"front_{ax.key}"]].sort_values(["experiment", f"{ax.key}_frac"])
        blocks += [Block("details", f"Pareto front: accuracy vs {ax.label}", frame=_trial_frame(rows, multi))]
    if not a.seeds.empty:
        s = a.seeds.copy()
        s["accuracy (%)"] = [f"{m:.2f} ± {sd:.2f}" for m, sd in zip(s["acc_mean"], s["acc_std"])]
        s["FLOPs"] = (100 * s["flops_frac"]).map(lambda v: _fmt(v, ".1f") + "%")
        blocks += [Block("h2", "Repeated seeds"),
                   Block("p", "Configurations run with several seeds: accuracy mean ± sample std."),
                   Block("table", frame=s.drop(columns=["acc_mean", "acc_std", "flops_frac"]))]
    blocks += _listing("Failed trials", t[t["status"] == "error"], ["reason"], multi)
    blocks += _listing("Stopped early", t[t["status"] == "stopped"], ["reason", "val_acc_last"], multi)
    blocks += _listing("Pending", t[t["status"] == "pending"], [], multi)
    repro = pd.concat([front, t[t["trial_id"].isin(a.budgets.get("trial_id", pd.Series(dtype=str)))]])
    repro = repro.drop_duplicates(["experiment", "trial_id"])
    blocks += [Block("h2", "Reproduce"),
               Block("p", "Each trial of the tables above as a single prune_core run (results.csv has the command "
                          "of every trial in its 'command' column):"),
               Block("pre", "\n".join(f"# {r.experiment} {r.trial_id}\n{r.command}" for r in repro.itertuples()))]
    blocks.append(Block("h2", "Settings"))
    for e in results.experiments:
        blocks.append(Block("p", f"{e.name}: {e.path.resolve()}" + ("" if e.sweep_text else " (no sweep.yaml)")))
        if e.sweep_text:
            blocks.append(Block("pre", e.sweep_text.rstrip()))
    return blocks


def _listing(title: str, rows: pd.DataFrame, cols: List[str], multi: bool) -> List[Block]:
    if rows.empty:
        return []
    shown = rows[[*(["experiment"] if multi else []), "trial_id", "prune.method", "prune.ratio", "prune.scope", *cols]]
    more = len(rows) - MAX_LISTED
    blocks = [Block("h2", f"{title} ({len(rows)})"), Block("table", frame=shown.head(MAX_LISTED).fillna("–"))]
    if more > 0:
        blocks.append(Block("p", f"... and {more} more; see results.csv (status column)."))
    return blocks


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left}th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}pre{background:#f6f6f6;
padding:.8em;overflow-x:auto;font-size:.8em}figure{margin:1.2em 0}img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{font-size:.9em;color:#555}details{margin:.6em 0}"""


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v, 'g') if not isinstance(v, str) else v)}</td>"
                                    for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(frame: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return (v if isinstance(v, str) else _fmt(v, "g")).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(str(c)) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _render(blocks: List[Block], title: str, png: Mapping[str, bytes]) -> Tuple[str, str]:
    """(report.html, report.md) text."""
    h = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
         f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    md = [f"# {title}", ""]
    for b in blocks:
        if b.kind == "h2":
            h.append(f"<h2>{html.escape(b.text)}</h2>")
            md += [f"## {b.text}", ""]
        elif b.kind == "p":
            h.append(f"<p>{html.escape(b.text)}</p>")
            md += [b.text, ""]
        elif b.kind == "pre":
            h.append(f"<pre>{html.escape(b.text)}</pre>")
            md += ["```", b.text, "```", ""]
        elif b.kind == "table":
            h.append(_html_table(b.frame) if len(b.frame) else "<p><em>none</em></p>")
            md += [_md_table(b.frame) if len(b.frame) else "_none_", ""]
        elif b.kind == "details":
            inner = _html_table(b.frame) if len(b.frame) else "<p><em>none</em></p>"
            h.append(f"<details><summary>{html.escape(b.text)} ({len(b.frame)} trials)</summary>{inner}</details>")
            md += [f"### {b.text}", "", _md_table(b.frame) if len(b.frame) else "_none_", ""]
        elif b.kind == "figure":
            stem, caption = b.stem, b.text
            data = base64.b64encode(png[stem]).decode("ascii")
            h.append(f"<figure><img alt=\"{html.escape(caption)}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{html.escape(caption)} (figures/{stem}.svg)</figcaption></figure>")
            md += [f"![{caption}](figures/{stem}.png)", ""]
    h.append("</body></html>")
    return "".join(h), "\n".join(md)


def write_report(results: Results, a: Analysis, out: Path) -> Dict[str, float]:
    """Write every output file into ``out`` (an empty folder); returns seconds per stage."""
    timings = {}
    t0 = time.perf_counter()
    table = a.table
    table.to_csv(out / "results.csv", index=False)
    _to_parquet(table, out / "results.parquet")
    a.fronts.to_csv(out / "pareto.csv", index=False)
    a.hypervolume.to_csv(out / "hypervolume.csv", index=False)
    timings["tables"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    figs = _figures(results, a)
    (out / "figures").mkdir()
    png = {}
    for stem, _, fig in figs:
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        png[stem] = buf.getvalue()
        (out / "figures" / f"{stem}.png").write_bytes(png[stem])
        fig.savefig(out / "figures" / f"{stem}.svg", format="svg")
    timings["figures"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    title = "Pruning sweep: " + ", ".join(e.name for e in results.experiments)
    page, md = _render(_report_blocks(results, a, figs), title, png)
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "report.md").write_text(md, encoding="utf-8")
    timings["report"] = time.perf_counter() - t0
    return timings


def _to_parquet(table: pd.DataFrame, path: Path) -> None:
    try:
        table.to_parquet(path, index=False)
    except (TypeError, ValueError, ImportError) as exc:
        if isinstance(exc, ImportError):
            raise
        # a config key whose values mix types across trials: store it as text
        mixed = table.copy()
        for col in mixed.columns[mixed.dtypes == object]:
            mixed[col] = mixed[col].map(lambda v: None if v is None else str(v))
        mixed.to_parquet(path, index=False)


def summary_text(a: Analysis) -> str:
    """The short table printed in the terminal."""
    lines = [_summary_frame(a).to_string(index=False)]
    for _, r in a.budgets[a.budgets["axis"] == "flops"].iterrows():
        head = f"  {r['experiment']}: best at ≤{100 * r['budget']:g}% dense FLOPs: "
        if isinstance(r.get("trial_id"), str):
            lines.append(head + f"{r['prune.method']} ratio={r['prune.ratio']:g} {r['prune.scope']} "
                         f"{r['acc_final']:.2f}% ({100 * r['cost_frac']:.1f}% FLOPs, trial {r['trial_id']})")
        else:
            lines.append(head + "none")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Writing without leaving half a result behind


def _write_atomically(out: Path, fill: Callable[[Path], Any]) -> Any:
    """Run ``fill(tmp)`` on a fresh folder beside ``out``, then move its contents into ``out``."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as exc:
        raise AnalyzeError(f"--out {out}: cannot write there ({exc.strerror})") from None
    try:
        value = fill(tmp)
        out.mkdir(exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            target = out / entry.name
            if entry.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(entry, target)
        return value
    except OSError as exc:
        raise AnalyzeError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Command line


def _budgets(text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected fractions of the base FLOPs in (0, 1], e.g. 0.25,0.5")
    return values


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="prune-analyze", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT_DIR",
                   help="experiment directories (<storage>/<sweep name>); several are compared in one report")
    p.add_argument("--out", type=Path, help="output folder (default: <first EXPERIMENT_DIR>/analysis)")
    p.add_argument("--budgets", type=_budgets, default=DEFAULT_BUDGETS,
                   help="FLOPs budgets as fractions of the base model (default: 0.25,0.5,0.75)")
    p.add_argument("--smoke-test", action="store_true", help="analyse a tiny generated sweep in a temp folder")
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
    _write_atomically(out, lambda tmp: write_report(results, analysis, tmp))
    return out, analysis


def _smoke_test(args: argparse.Namespace) -> int:
    # the generator ships with the source checkout, beside the tests that use it
    source = Path(__file__).resolve().parent / "tests" / "_fake_sweep.py"
    if not source.is_file():
        raise AnalyzeError(f"{source}: not found; --smoke-test runs from a source checkout")
    spec = importlib.util.spec_from_file_location("_fake_sweep", source)
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    with tempfile.TemporaryDirectory(prefix="prune-analyze-smoke-") as tmp:
        expdir = fake.make_experiment(Path(tmp) / "smoke", n_trials=16, errors=1, stopped=2, pending=1)
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


if __name__ == "__main__":
    sys.exit(main())
