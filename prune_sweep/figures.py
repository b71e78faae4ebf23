"""The report's figures, drawn with matplotlib's object API (``Figure``): no pyplot, no global backend.

Fronts against each cost axis, accuracy against the pruning ratio, fine-tune curves of the front's
trials and per-layer channels of the budget winners. Every function returns a ``Figure`` (or None
when there is nothing to draw); ``report.write_report`` saves them.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .analysis import AXIS, Analysis, cost_column, of_model, study_models
from .configs import REPORT, SELECT
from .results import Experiment, Results

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
LINESTYLES = ("-", "--", ":", "-.")
ERRORBARS = "± 1 std of test accuracy over seeds"  # legend and caption, only where seeds repeat


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


def _front_figure(a: Analysis, exps: List[Experiment], key: str) -> Figure:
    """Test accuracy of every trial (faint) and of the configurations each front chose on validation."""
    axis = AXIS.get(key)  # None: the compute front, in training epochs rather than a fraction of the base
    t, conf = a.table, a.configs
    x = cost_column(key)
    scale = 100.0 if axis is not None else 1.0
    colours = _colours(t["prune.method"].dropna().astype(str).unique())
    fig = Figure(figsize=(8.5, 5.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    done = t[(t["status"] == "done") & np.isfinite(t[x]) & np.isfinite(t[REPORT])]
    if axis is None:  # compute is nearly one value per method: its configurations say what its trials would
        done = conf[np.isfinite(conf[x]) & np.isfinite(conf[REPORT])]
    stopped = t[(t["status"] == "stopped") & np.isfinite(t[x]) & np.isfinite(t["val_acc_last"])]
    xs = pd.concat([done[x], stopped[x]]) * scale
    if axis is not None:
        low = max(0.1, float(xs.min()) / 1.3) if len(xs) else 1.0
        high = max(130.0, float(xs.max()) * 1.15) if len(xs) else 130.0
    else:
        low = max(0.01, float(xs.min()) / 1.3) if len(xs) else 1.0
        high = float(xs.max()) * 1.3 if len(xs) else 10.0
    many = len(done) > 2000  # rasterise the faint layer so the SVG stays small
    for e_i, exp in enumerate(exps):
        marker, ls = MARKERS[e_i % len(MARKERS)], LINESTYLES[e_i % len(LINESTYLES)]
        d = done[done["experiment"] == exp.name]
        for (method, scope), g in d.groupby(["prune.method", "prune.scope"], dropna=False):
            _points(ax, g[x] * scale, g[REPORT], colours.get(method, "grey"), scope == "global", marker,
                    s=14, alpha=0.25, linewidths=0.8, rasterized=many, zorder=2)
        s = stopped[stopped["experiment"] == exp.name]
        for method, g in s.groupby("prune.method", dropna=False):
            ax.scatter(g[x] * scale, g["val_acc_last"], marker="x", s=16, alpha=0.45,
                       color=colours.get(method, "grey"), linewidths=0.8, rasterized=many, zorder=2)
        c = conf[(conf["experiment"] == exp.name) & np.isfinite(conf[x]) & np.isfinite(conf[REPORT])]
        overall = c[c[f"front_{key}"]].sort_values(x)
        if len(overall):
            _staircase(ax, overall[x] * scale, overall[REPORT], high, color="0.55", lw=7, alpha=0.3,
                       ls=ls, zorder=1, solid_capstyle="butt")
        on = c[c[f"front_{key}_method"]]
        for (method, scope), g in on.groupby(["prune.method", "prune.scope"], dropna=False):
            colour = colours.get(method, "grey")
            if a.repeated:  # ± 1 std of test accuracy over the configuration's seeds
                ax.errorbar(g[x] * scale, g[REPORT], yerr=g[f"{REPORT}_std"].fillna(0), fmt="none", ecolor=colour,
                            elinewidth=1, capsize=2.5, zorder=3)
            _points(ax, g[x] * scale, g[REPORT], colour, scope == "global", marker, s=42, linewidths=1.5, zorder=4)
        for method, g in on.groupby("prune.method", dropna=False):
            g = g.sort_values(x)
            _staircase(ax, g[x] * scale, g[REPORT], high, color=colours.get(method, "grey"), lw=1.4, ls=ls, zorder=3)
        acc_base = t.loc[t["experiment"] == exp.name, "acc_base"].median()
        if axis is not None and np.isfinite(acc_base):
            ax.scatter([100], [acc_base], marker="*", s=260, color="gold", edgecolors="black", zorder=5)
    if axis is not None:
        _pct_axis(ax, low, high)
        ax.set_xlabel(f"{axis.label} (% of the dense base model, log scale)")
    else:
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=_log_subs(low, high)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training compute per trial (epochs after the base + its share of the base, log scale)")
    ax.set_ylabel("top-1 test accuracy (%) of the points chosen on validation")
    ax.grid(True, which="major", alpha=0.3)
    bases = t[axis.base].where(t[axis.base] > 0, t[axis.fallback]).dropna() if axis is not None else []
    if axis is not None and len(exps) == 1 and len(bases):  # one base model: show the absolute cost on top
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
                Line2D([], [], marker="o", ls="", mfc="none", color="k", label="local ranking")]
    if axis is not None:
        handles.append(Line2D([], [], marker="*", ls="", ms=13, mfc="gold", mec="black", label="dense base model"))
    handles.append(Line2D([], [], color="0.55", lw=7, alpha=0.3, label="front, all methods (on validation)"))
    if a.repeated:
        handles.append(Line2D([], [], marker="|", ms=12, ls="", color="k", label=ERRORBARS))
    if len(stopped):
        handles.append(Line2D([], [], marker="x", ls="", color="k", label="stopped early (last val acc)"))
    if len(exps) > 1:
        handles += [Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls=LINESTYLES[i % len(LINESTYLES)],
                           color="k", label=e.name) for i, e in enumerate(exps)]
    ax.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.85)
    if done.empty:
        finished = axis is None and (t["status"] == "done").any()
        why = "no trial recorded epochs_base and epochs_trial" if finished else "no finished trials yet"
        ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", color="0.4")
    label, faint = (axis.label, "trial") if axis is not None else ("training compute", "configuration")
    ax.set_title(f"Accuracy vs {label}: every {faint} faint, each method's front as a staircase")
    return fig


def _staircase(ax, x, y, right: float, **kw) -> None:
    xs = np.append(np.asarray(x, float), right)
    ys = np.append(np.asarray(y, float), float(np.asarray(y)[-1]))
    ax.step(xs, ys, where="post", **kw)


def _ratio_figure(a: Analysis, exps: List[Experiment]) -> Figure:
    t = a.table[(a.table["status"] == "done") & np.isfinite(a.table[REPORT])]
    methods = sorted(a.table["prune.method"].dropna().astype(str).unique())
    colours = _colours(methods)
    fig = Figure(figsize=(8.5, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    # one point per configuration (every swept key but the seed): at each ratio the configuration of
    # the method and scope with the best validation accuracy (its hyperparameters chosen on validation)
    best = a.configs.sort_values(SELECT, ascending=False).drop_duplicates(["prune.method", "prune.scope",
                                                                            "prune.ratio"])
    for i, method in enumerate(methods):
        colour = colours[method]
        offset = (i - (len(methods) - 1) / 2) * 0.004  # keep error bars of methods apart
        for scope, g in t[t["prune.method"] == method].groupby("prune.scope", dropna=False):
            _points(ax, g["prune.ratio"] + offset, g[REPORT], colour, scope == "global", "o",
                    s=10, alpha=0.2, linewidths=0.6, rasterized=len(t) > 2000)
            b = best[(best["prune.method"] == method) & (best["prune.scope"] == scope)].sort_values("prune.ratio")
            ax.errorbar(b["prune.ratio"] + offset, b[REPORT], yerr=b[f"{REPORT}_std"].fillna(0) if a.repeated else None,
                        fmt="o-" if scope == "global" else "o--", color=colour,
                        mfc=colour if scope == "global" else "white", capsize=3, lw=1.2, ms=4.5)
    ax.set_xlabel("prune.ratio (fraction of the method's unit removed)")
    ax.set_ylabel("top-1 test accuracy (%) of the points chosen on validation")
    how = "mean ± std across seeds" if a.repeated else "one seed"
    ax.set_title(f"Accuracy vs pruning ratio: configuration best on validation per ratio ({how})")
    handles = [Line2D([], [], marker="o", color=c, label=m) for m, c in colours.items()]
    handles += [Line2D([], [], marker="o", color="k", ls="-", label="global ranking"),
                Line2D([], [], marker="o", color="k", mfc="white", ls="--", label="local ranking")]
    if a.repeated:
        handles.append(Line2D([], [], marker="|", ms=12, ls="", color="k", label=ERRORBARS))
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
    """The trial with per-layer channel counts best on validation under each dense-FLOPs budget."""
    t = a.table
    has = [key in results.layers for key in zip(t["experiment"], t["trial_id"])]
    cand = t[np.asarray(has, bool) & (t["status"] == "done").to_numpy()]
    if not cand.empty:  # one network's layers: the first experiment's, its first model's
        cand = cand[cand["experiment"] == cand["experiment"].iloc[0]]
        cand = of_model(cand, (study_models(cand) or [""])[0])
    out = []
    for b in a.budget_levels:
        ok = cand[cand["flops_frac"] <= b + 1e-12]
        if not ok.empty:
            out.append((b, ok.sort_values([SELECT, "flops_frac"], ascending=[False, True]).iloc[0]))
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
                      f"{row[REPORT]:.2f}% test ({row['trial_id']})")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("channels kept")
    ax.set_title("Per-layer channels of the trial best on validation under each FLOPs budget")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def all_figures(results: Results, a: Analysis) -> List[Tuple[str, str, Optional[Figure]]]:
    """(file stem, caption, figure or None when there is nothing to draw) for the report."""
    bars = f"; error bars {ERRORBARS}" if a.repeated else ""
    figs: List[Tuple[str, str, Optional[Figure]]] = []
    for key in a.front_keys:
        label = AXIS[key].label if key in AXIS else "training compute (epochs)"
        figs.append((f"front_{key}", f"Accuracy vs {label} (fronts chosen on validation{bars})",
                     _front_figure(a, results.experiments, key)))
    figs.append(("acc_vs_ratio", f"Accuracy vs pruning ratio per method{bars.replace(';', ',')}",
                 _ratio_figure(a, results.experiments)))
    figs.append(("finetune_curves", "Fine-tune curves of the front's trials", _curves_figure(a, results)))
    figs.append(("layer_channels", "Per-layer channels at FLOPs budgets", _layers_figure(a, results)))
    return figs
