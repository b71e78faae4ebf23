"""What a comparison held equal: each trial's training compute and, per method, base, epochs, data, seeds.

A trial's training compute is ``compute_epochs = epochs_trial + epochs_teacher / 3 + epochs_base / n``:
the epochs it trained after the base, a third of an epoch for each epoch a distillation teacher
ran forward (``TEACHER_SHARE``: a forward pass is about a third of a training step's forward and
backward), plus its share of the base, which the ``n`` trials of the experiment with the same
values of ``BASE_KEYS`` that prune it trained share (prune_core trains a base once;
ARCHITECTURE.md, contract 7; SNIP, which prunes at initialisation, records ``epochs_base`` 0).
A method that trains more (IMP's levels, SNIP's training from scratch) buys accuracy with compute;
the report warns when methods on one front differ in it by more than ``COMPUTE_RATIO``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from prune_core.sections import BASE_KEYS, DEFAULTS

from .configs import REPORT, SELECT
from .results import Experiment

COMPUTE_RATIO = 2.0  # methods on one front whose median training compute differs more are flagged
# an epoch of a teacher's forward passes, in training epochs: forward + backward cost about 3 forwards
# (backward computes gradients of both activations and weights), the convention of Kaplan et al. 2020
TEACHER_SHARE = 1.0 / 3.0
# config keys compared across methods; prune.budget_epochs: the equal-budget mode (0 = off);
# finetune.kd_alpha: distillation from the dense base (0 = off)
HELD = ("data.name", "data.limit_train", "finetune.epochs", "prune.budget_epochs", "finetune.kd_alpha")


def config_values(table: pd.DataFrame, exp: Experiment, key: str, defaults: Dict[str, Any]) -> pd.Series:
    """The value of ``key`` in each trial's full config: its params, else base.yaml, else the default."""
    fallback = exp.base_config.get(key, defaults.get(key))
    if key not in table:
        return pd.Series([fallback] * len(table), index=table.index, dtype=object)
    col = table[key].astype(object)
    return col.where(col.notna(), fallback)


def base_ids(table: pd.DataFrame, exps: Sequence[Experiment]) -> pd.Series:
    """A short id per trial (8 hex digits of a hash of its BASE_KEYS values); equal ids, one base."""
    defaults = DEFAULTS
    out = pd.Series("", index=table.index, dtype=object)
    for exp in exps:
        sub = table[table["experiment"] == exp.name]
        if sub.empty:
            continue
        # a key no trial sets is one value for the whole experiment: it enters the hash, not the grouping
        present = [k for k in BASE_KEYS if k in sub]
        fixed = [str(config_values(sub.iloc[:1], exp, k, defaults).iloc[0]) for k in BASE_KEYS if k not in sub]
        vals = pd.DataFrame({k: config_values(sub, exp, k, defaults).map(str) for k in present}, index=sub.index)
        groups = (vals.groupby(present, sort=False).ngroup() if present
                  else pd.Series(0, index=sub.index))
        first = groups.drop_duplicates()
        digest = {g: hashlib.sha1(json.dumps([*vals.loc[i], *fixed]).encode()).hexdigest()[:8]
                  for i, g in first.items()}
        out[sub.index] = groups.map(digest)
    return out


def compute_epochs(table: pd.DataFrame, bases: pd.Series) -> pd.Series:
    """``epochs_trial + TEACHER_SHARE * epochs_teacher + epochs_base / n`` per trial; NaN where a
    trial lacks the epoch keys. ``n`` counts the trials of that base that use it trained
    (``epochs_base > 0``, or unknown for a trial that never reported): a method that prunes at
    initialisation (SNIP) records 0 and takes no share. Results from before ``epochs_teacher`` was
    recorded had no distillation: 0."""
    uses = table["epochs_base"].fillna(1) > 0  # a trial without a final report used its base too
    n = uses.groupby([table["experiment"], bases], sort=False).transform("sum")
    share = (table["epochs_base"] / n.where(n > 0)).where(uses, 0.0)
    teacher = table["epochs_teacher"].fillna(0.0) if "epochs_teacher" in table else 0.0
    return (table["epochs_trial"] + TEACHER_SHARE * teacher + share).where(table["epochs_base"].notna())


def control_column(table: pd.DataFrame) -> pd.Series:
    """Each trial's ``prune.control`` ("" for a pruned trial, and where the sweep had no controls)."""
    if "prune.control" not in table:
        return pd.Series("", index=table.index, dtype=object)
    return table["prune.control"].astype(object).where(table["prune.control"].notna(), "").astype(str)


MATCH = 0.02  # a control whose dense FLOPs exceed a point's by at most 2 % (relative) is at the same cost


def dominance_lines(exp: str, conf: pd.DataFrame, controls: Sequence[str]) -> List[str]:
    """Per method and control of one experiment's configurations: where on the method's own
    dense-FLOPs front a control reads a higher validation accuracy at the same or lower FLOPs
    (within ``MATCH``), and by how much; test accuracy beside it, mean ± std over seeds."""
    lines = []
    done = conf[np.isfinite(conf[SELECT].astype(float)) & np.isfinite(conf["flops_frac"].astype(float))]
    for method in sorted(set(done["prune.method"].astype(str)) - set(controls)):
        front = done[(done["prune.method"] == method) & done["front_flops_method"]].sort_values("flops_frac")
        for control in sorted(set(controls) & set(done["prune.method"].astype(str))):
            ctl = done[done["prune.method"] == control]
            hits = []
            for _, p in front.iterrows():
                rivals = ctl[(ctl["flops_frac"] <= p["flops_frac"] * (1 + MATCH)) & (ctl[SELECT] > p[SELECT])]
                if len(rivals):
                    q = rivals.loc[rivals[SELECT].idxmax()]
                    hits.append((p, q))
            if not hits:
                lines.append(f"{exp}: {method} is not dominated by {control} on its dense-FLOPs front "
                             f"({len(front)} points).")
                continue
            p, q = max(hits, key=lambda h: h[1][SELECT] - h[0][SELECT])
            lo, hi = min(h[0]["flops_frac"] for h in hits), max(h[0]["flops_frac"] for h in hits)
            lines.append(f"{exp}: {method} is dominated by {control} at {len(hits)} of its {len(front)} front points "
                         f"(dense FLOPs {_span(lo, hi)} of the base); most at {p['flops_frac']:.2f}: {control} at "
                         f"{q['flops_frac']:.2f} reads {_pm(q, SELECT)} % validation (test {_pm(q, REPORT)}) against "
                         f"{_pm(p, SELECT)} % (test {_pm(p, REPORT)}), +{q[SELECT] - p[SELECT]:.2f} points.")
    return lines


def _pm(row: pd.Series, col: str) -> str:
    std = row.get(f"{col}_std", np.nan)
    return f"{row[col]:.2f}" + (f" ± {std:.2f}" if isinstance(std, float) and np.isfinite(std) else "")


def _span(lo: float, hi: float) -> str:
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"


def _values(series: pd.Series) -> str:
    vals = sorted({str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in series.dropna()})
    if not vals:
        return "–"  # results from before prune_core recorded the key
    return ", ".join(vals) if len(vals) <= 4 else f"{len(vals)} values"


def fairness(table: pd.DataFrame, configs: pd.DataFrame, exps: Sequence[Experiment]
             ) -> Tuple[pd.DataFrame, List[str]]:
    """Per experiment and method, what the comparison held equal; the lines that summarise it.

    ``table`` holds the trials (``base_id``, ``compute_epochs``), ``configs`` the configurations
    with their front columns. Lines: what was equal or not per experiment among the pruning
    methods, a warning where those on the all-methods dense-FLOPs front differ in median training
    compute by > 2x, and where a control (``prune.control``) dominates a method's front.
    """
    defaults = DEFAULTS
    rows: List[Dict[str, Any]] = []
    lines: List[str] = []
    for exp in exps:
        trials = table[(table["experiment"] == exp.name) & (table["status"] == "done")]
        conf = configs[configs["experiment"] == exp.name]
        if trials.empty:
            continue
        held = {k: config_values(trials, exp, k, defaults) for k in HELD}
        ctl = control_column(trials)
        controls = sorted(set(trials.loc[ctl != "", "prune.method"].astype(str)))
        per = []
        for method, g in trials.groupby("prune.method", sort=True):
            fine = "–" if method in controls else None  # a control trains from scratch with train, no fine-tune
            front = conf[(conf["prune.method"] == method) & conf["front_flops_method"]]["compute_epochs"]
            bases = sorted(set(g["base_id"]))
            per.append({"experiment": exp.name, "method": method,
                        "base": ", ".join(bases) if len(bases) <= 3 else f"{len(bases)} bases",
                        "epochs_base": _values(g["epochs_base"]),
                        "finetune.epochs": fine or _values(held["finetune.epochs"][g.index]),
                        "budget (epochs)": _values(held["prune.budget_epochs"][g.index]),
                        "distillation (kd_alpha)": fine or _values(held["finetune.kd_alpha"][g.index]),
                        "compute on its front (median epochs)": float(front.median()) if len(front) else np.nan,
                        "data.name": _values(held["data.name"][g.index]),
                        "data.limit_train": _values(held["data.limit_train"][g.index]),
                        "seeds": _values(g["runtime.seed"]),
                        "_bases": frozenset(bases)})
        rows += per
        pruned = [p for p in per if p["method"] not in controls]  # controls differ on purpose: their lines follow
        if pruned:
            lines.append(_held_line(exp.name, pruned))
        warning = compute_warning(conf[conf["front_flops"] & ~conf["prune.method"].isin(controls)])
        if warning:
            lines.append(f"{exp.name}: {warning}")
        lines += dominance_lines(exp.name, conf, controls)
    frame = pd.DataFrame(rows)
    return (frame.drop(columns="_bases") if not frame.empty else frame), lines


def _held_line(exp: str, per: List[Dict[str, Any]]) -> str:
    if len(per) < 2:
        return f"{exp}: one method ({per[0]['method']}), nothing to compare."
    def same(key: str) -> bool:
        return len({str(p[key]) for p in per}) == 1
    # a method that prunes at initialisation records epochs_base 0: it shares the base, untrained
    trained = {str(p["epochs_base"]) for p in per if str(p["epochs_base"]) != "0"}
    checks = {"base (one base for all methods)": same("_bases") and len(trained) <= 1,
              "fine-tune epochs": same("finetune.epochs"), "budget": same("budget (epochs)"),
              "distillation": same("distillation (kd_alpha)"),
              "data": same("data.name") and same("data.limit_train"),
              "seeds": same("seeds")}
    medians = [p["compute on its front (median epochs)"] for p in per]
    finite = [m for m in medians if np.isfinite(m)]
    if len(finite) > 1:
        checks["training compute (within 2x)"] = max(finite) <= COMPUTE_RATIO * min(finite)
    equal = [k for k, ok in checks.items() if ok]
    differ = [k for k, ok in checks.items() if not ok]
    unknown = "" if len(finite) > 1 else "; training compute not recorded (no epochs_base / epochs_trial)"
    return (f"{exp}: held equal across methods: {', '.join(equal) or 'nothing'}"
            + (f"; differs: {', '.join(differ)}" if differ else "") + unknown + ".")


def compute_warning(front: pd.DataFrame) -> str:
    """The warning line when methods on one front differ in median compute by more than 2x, else ""."""
    medians = front.groupby("prune.method")["compute_epochs"].median().dropna()
    medians = medians[medians > 0]
    if len(medians) < 2:
        return ""
    hi, lo = medians.idxmax(), medians.idxmin()
    ratio = medians[hi] / medians[lo]
    if ratio <= COMPUTE_RATIO:
        return ""
    return (f"Warning: on the dense-FLOPs front, {hi} trained {ratio:.1f}x the compute of {lo} (median "
            f"{medians[hi]:.3g} vs {medians[lo]:.3g} epochs per trial); their accuracies are not a like-for-like "
            "comparison.")
