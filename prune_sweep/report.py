"""The analysis written to a folder: results and front tables, figures, report.html and report.md.

The report is a list of ``Block``s rendered twice, to one self-contained HTML page (figures
embedded as PNG) and to Markdown beside the figure files. ``write_atomically`` fills a fresh
folder and only then moves its contents into place, so a failed run leaves no half a report.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .analysis import AXIS, MAX_LISTED, Analysis, Axis, method_name
from .configs import REPORT, SELECT, acc_text
from .figures import all_figures
from .results import STATUSES, UNFINISHED, AnalyzeError, Results


VAL_COL = "val acc (%), chosen on"
TEST_COL = "test acc (%), reported"
COMPUTE_COL = "compute (epochs)"
SELECTION = ("Fronts, budget winners and hyperparameters are chosen on validation accuracy; test accuracy is "
             "reported for the chosen trials only.")


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
    digits = ".3g" if not axis.key.startswith("latency") else ".3f"
    return f"{value * axis.scale:{digits}} {axis.unit} ({_fmt(100 * frac, '.1f')}%)"


def _trial_frame(rows: pd.DataFrame, multi: bool, repeated: bool) -> pd.DataFrame:
    """The front / budget table columns the issue asks for, formatted for people; ``rows`` are
    configurations (means over seeds), chosen on validation, with test accuracy the number reported."""
    out = pd.DataFrame({
        **({"experiment": rows["experiment"]} if multi else {}),
        "method": rows["prune.method"], "criterion": rows["prune.criterion"], "scope": rows["prune.scope"],
        "ratio": rows["prune.ratio"].map(lambda v: _fmt(v, "g")),
        "FLOPs": [_cost(v, f, AXIS["flops"]) for v, f in zip(rows["flops_final"], rows["flops_frac"])],
        "eff. FLOPs": [_cost(v, f, AXIS["flops_nz"]) for v, f in zip(rows["flops_nz_final"], rows["flops_nz_frac"])],
        "params (non-zero)": [_cost(v, f, AXIS["params"]) for v, f in
                              zip(rows["params_nz_final"], rows["params_frac"])],
        "latency": [_cost(v, f, AXIS["latency"]) for v, f in zip(rows["latency_ms_final"], rows["latency_frac"])],
        **({"ONNX Runtime latency": [_cost(v, f, AXIS["latency_ort"]) for v, f in
                                     zip(rows["latency_ms_final_ort"], rows["latency_ort_frac"])]}
           if "latency_ort_frac" in rows else {}),
        **_acc_columns(rows, repeated),
        "trial": rows["trial_id"],
    })
    return out.reset_index(drop=True)


def _acc_columns(rows: pd.DataFrame, repeated: bool) -> Dict[str, Any]:
    """Validation accuracy (chosen on), test accuracy (reported), drop and training compute."""
    n = rows["seeds"] if "seeds" in rows else pd.Series(1, index=rows.index)
    return {VAL_COL: [acc_text(m, sd, k, repeated) for m, sd, k in zip(rows[SELECT], rows[f"{SELECT}_std"], n)],
            TEST_COL: [acc_text(m, sd, k, repeated) for m, sd, k in zip(rows[REPORT], rows[f"{REPORT}_std"], n)],
            "drop vs base (pp)": (rows["acc_base"] - rows[REPORT]).map(_fmt),
            COMPUTE_COL: rows["compute_epochs"].map(lambda v: _fmt(v, ".3g"))}


def _summary_frame(a: Analysis) -> pd.DataFrame:
    t = a.table
    counts = t.groupby(["experiment", "prune.method"], dropna=False)["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=_shown_statuses(t), fill_value=0)
    best = a.configs.sort_values(SELECT, ascending=False).drop_duplicates(["experiment", "prune.method"])
    best = best.set_index(["experiment", "prune.method"])
    rows = []
    hv = a.hypervolume.set_index(["experiment", "method"]) if not a.hypervolume.empty else None
    for (exp, method), c in counts.iterrows():
        top = best.loc[(exp, method)] if (exp, method) in best.index else None
        row = {"experiment": exp, "method": method, "trials": int(c.sum()), **{s: int(c[s]) for s in counts.columns},
               "best val acc (%)": _fmt(top[SELECT] if top is not None else np.nan),
               "its test acc (%)": _fmt(top[REPORT] if top is not None else np.nan)}
        for ax in a.axes:
            v = hv.loc[(exp, method), f"hv_{ax.key}"] if hv is not None and (exp, method) in hv.index else np.nan
            row[f"HV {ax.key}"] = _fmt(v)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame if t["experiment"].nunique() > 1 else frame.drop(columns="experiment")


def _shown_statuses(t: pd.DataFrame) -> List[str]:
    """Every status, but running and interrupted only where some trial has them."""
    present = set(t["status"])
    return [s for s in STATUSES if s not in UNFINISHED or s in present]


def _at_chance(r: Any) -> str:
    n = int(r["at_chance"])
    return f"{n} configuration{'s' * (n != 1)} this cheap, each at or below chance accuracy"


def _budget_frame(a: Analysis, multi: bool) -> pd.DataFrame:
    b = a.budgets
    models = "model" in b and bool((b["model"] != "").any())  # a study that swept model.name
    rows = []
    for _, r in b.iterrows():
        kind = AXIS[r["axis"]].label
        row = {**({"experiment": r["experiment"]} if multi else {}), **({"model": r["model"]} if models else {}),
               "budget": f"≤{100 * r['budget']:g}% {kind}"}
        if isinstance(r.get("trial_id"), str):
            row.update({"method": r["prune.method"], "criterion": r["prune.criterion"], "scope": r["prune.scope"],
                        "ratio": _fmt(r["prune.ratio"], "g"), "cost": f"{100 * r['cost_frac']:.1f}%",
                        **{k: list(v)[0] for k, v in _acc_columns(pd.DataFrame([r]), a.repeated).items()},
                        "trial": r["trial_id"]})
        else:
            row["method"] = (f"none above chance ({_at_chance(r)})" if r.get("at_chance", 0) > 0
                             else "no finished trial this cheap")
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _fairness_blocks(a: Analysis, multi: bool) -> List[Block]:
    blocks = [Block("h2", "Fairness of the comparison"),
              Block("p", "What was held equal across the methods of each experiment: the base model (8-digit ids "
                         "of the BASE_KEYS values; one set for all methods means one base), its epochs, the "
                         "fine-tune epochs, the data and the seeds. Training compute is a trial's epochs after the "
                         "base plus its share of the base (epochs_base / trials sharing it); per method, the "
                         "median over the configurations on its own dense-FLOPs front.")]
    blocks += [Block("p", line) for line in a.fairness_lines]
    if not a.fairness.empty:
        f = a.fairness.copy()
        col = "compute on its front (median epochs)"
        f[col] = f[col].map(lambda v: _fmt(v, ".3g"))
        blocks.append(Block("table", frame=f if multi else f.drop(columns="experiment")))
    return blocks


def _report_blocks(results: Results, a: Analysis, figs: List[Tuple[str, str, Optional[Figure]]]) -> List[Block]:
    t = a.table
    multi = len(results.experiments) > 1
    counts = t["status"].value_counts()
    blocks = [Block("p", f"{len(t)} trials in {', '.join(e.name for e in results.experiments)}: "
                         + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in _shown_statuses(t)) + ". Only finished "
                         "trials (status done: a final report with stage 'done') enter a front. Trials stopped early "
                         "by the scheduler are listed under 'Stopped early', and drawn as crosses at their last "
                         "validation accuracy where their epoch reports carry the pruned model's cost."),
              *(Block("p", line) for line in a.unfinished), Block("p", SELECTION)]
    if a.repeated:
        blocks.append(Block("p", "Seeds repeat: a configuration (every swept key but runtime.seed) is one point, the "
                                 "mean over its seeds, shown as mean ± sample std (n = seeds); fronts, budget winners "
                                 "and hypervolume are computed on these means."))
    blocks += [Block("p", n) for n in a.notes]
    blocks += [Block("h2", "Summary"), Block("table", frame=_summary_frame(a))]
    c, rep = a.configs, a.repeated
    front = c[c["front_flops"]].sort_values(["experiment", "flops_frac"])
    blocks += [Block("h2", "Pareto front: accuracy vs dense FLOPs"),
               Block("p", "Non-dominated finished configurations on validation accuracy, all methods together, "
                          "cheapest first. Costs in brackets are fractions of the dense base model; compute is "
                          "training epochs per trial (after the base, plus its share of the base)."),
               Block("table", frame=_trial_frame(front, multi, rep))]
    blocks += [Block("h2", "Best trial under a FLOPs budget"),
               Block("p", "The configuration with the best validation accuracy under each budget."),
               Block("table", frame=_budget_frame(a, multi))]
    blocks += _fairness_blocks(a, multi)
    hv = a.hypervolume.copy()
    if not hv.empty:
        shown = hv[["experiment", "method", "trials_done", *(f"hv_{ax.key}" for ax in a.axes)]].copy()
        for ax in a.axes:
            shown[f"hv_{ax.key}"] = [f"{_fmt(v)} ({_fmt(100 * f, '.1f')}%)"
                                     for v, f in zip(hv[f"hv_{ax.key}"], hv[f"hv_{ax.key}_fraction"])]
        shown.columns = ["experiment", "method", "done", *(f"HV {ax.label}" for ax in a.axes)]
        ref = hv.groupby("experiment", sort=False)["reference_acc"].first()
        refs = ", ".join(f"{e}: {_fmt(r)}%" for e, r in ref.items())
        blocks += [Block("h2", "Hypervolume"),
                   Block("p", "Area of the (cost fraction, validation accuracy) plane each front of configurations "
                              "dominates, with the reference point at the dense base model's cost (fraction 1.0) "
                              "and chance accuracy "
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
    for key in a.front_keys[1:]:
        label = AXIS[key].label if key in AXIS else "training compute"
        rows = c[c[f"front_{key}"]].sort_values(["experiment", "compute_epochs" if key == "compute" else f"{key}_frac"])
        blocks += [Block("details", f"Pareto front: accuracy vs {label}", frame=_trial_frame(rows, multi, rep))]
    if not a.seeds.empty:
        s = a.seeds.copy()
        s[VAL_COL] = [acc_text(m, sd, n, True) for m, sd, n in zip(s[SELECT], s[f"{SELECT}_std"], s["seeds"])]
        s[TEST_COL] = [acc_text(m, sd, n, True) for m, sd, n in zip(s[REPORT], s[f"{REPORT}_std"], s["seeds"])]
        s["FLOPs"] = (100 * s["flops_frac"]).map(lambda v: _fmt(v, ".1f") + "%")
        s[COMPUTE_COL] = s["compute_epochs"].map(lambda v: _fmt(v, ".3g"))
        drop = [SELECT, f"{SELECT}_std", REPORT, f"{REPORT}_std", "flops_frac", "compute_epochs"]
        blocks += [Block("h2", "Repeated seeds"),
                   Block("p", "Configurations run with several seeds: accuracy mean ± sample std (n = seeds)."),
                   Block("table", frame=s.drop(columns=drop if multi else [*drop, "experiment"]))]
    blocks += _listing("Failed trials", t[t["status"] == "error"], ["reason"], multi)
    blocks += _listing("Stopped early", t[t["status"] == "stopped"], ["reason", "val_acc_last"], multi)
    blocks += _listing("Running", t[t["status"] == "running"], ["reason", "val_acc_last"], multi)
    blocks += _listing("Interrupted", t[t["status"] == "interrupted"], ["reason", "val_acc_last"], multi)
    blocks += _listing("Pending", t[t["status"] == "pending"], [], multi)
    # the first seed's trial of each configuration in the tables
    repro = pd.concat([front[["experiment", "trial_id", "command"]],
                       t.loc[t["trial_id"].isin(a.budgets.get("trial_id", pd.Series(dtype=str))),
                             ["experiment", "trial_id", "command"]]])
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
        if e.launches:
            blocks += [Block("p", f"{e.name}: what each launch ran with (provenance.json)"),
                       Block("table", frame=provenance_frame(e.launches))]
    return blocks


def provenance_frame(launches: List[Dict[str, Any]]) -> pd.DataFrame:
    """One row per launch and machine: the driver's versions and commit, then each node's device and
    versions (a trial's node_id names its node)."""
    rows = []
    for i, launch in enumerate(launches, 1):
        what = f"{i}" + (" (resumed)" if launch.get("resumed") else "")
        machines = [("driver", launch.get("driver") or {})]
        machines += [(f"node {str(nid)[:8]}", rec) for nid, rec in (launch.get("nodes") or {}).items()]
        for role, rec in machines:
            if not isinstance(rec, dict):
                continue
            versions = rec.get("versions") if isinstance(rec.get("versions"), dict) else {}
            rows.append({"launch": what, "machine": role, "host": rec.get("host", ""),
                         "device": rec.get("device_name", ""),
                         "versions": ", ".join(f"{k} {v}" for k, v in versions.items() if v),
                         "commit": (rec.get("commit") or "")[:12] + ("-dirty" if str(rec.get("commit")).endswith(
                             "-dirty") else ""),
                         "plug-ins": ", ".join(f"{Path(str(k)).name} {v}" for k, v in (
                             rec.get("plugins") if isinstance(rec.get("plugins"), dict) else {}).items())})
    return pd.DataFrame(rows, columns=["launch", "machine", "host", "device", "versions", "commit", "plug-ins"])


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
    table = a.table.assign(**{"prune.method": method_name(a.table["prune.method"])})  # a trial's own method
    table.to_csv(out / "results.csv", index=False)
    _to_parquet(table, out / "results.parquet")
    a.fronts.to_csv(out / "pareto.csv", index=False)
    a.hypervolume.to_csv(out / "hypervolume.csv", index=False)
    timings["tables"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    figs = all_figures(results, a)
    (out / "figures").mkdir()
    png = {}
    for stem, _, fig in figs:
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        png[stem] = buf.getvalue()
        (out / "figures" / f"{stem}.png").write_bytes(png[stem])
        # the layout the PNG drew holds for the SVG: laying out every text again costs ~0.1 s a figure
        fig.set_layout_engine("none")
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
    except (TypeError, ValueError):
        # a config key whose values mix types across trials: store it as text
        mixed = table.copy()
        for col in mixed.columns[mixed.dtypes == object]:
            mixed[col] = mixed[col].map(lambda v: None if v is None else str(v))
        mixed.to_parquet(path, index=False)


def summary_text(a: Analysis) -> str:
    """The short table printed in the terminal."""
    lines = [_summary_frame(a).to_string(index=False)]
    for _, r in a.budgets[a.budgets["axis"] == "flops"].iterrows():
        model = f" of {r['model']}" if r.get("model") else ""
        head = f"  {r['experiment']}: best at ≤{100 * r['budget']:g}% dense FLOPs{model}: "
        if isinstance(r.get("trial_id"), str):
            lines.append(head + f"{r['prune.method']} ratio={r['prune.ratio']:g} {r['prune.scope']} "
                         f"val {r[SELECT]:.2f}%, test {r[REPORT]:.2f}% ({100 * r['cost_frac']:.1f}% FLOPs, "
                         f"trial {r['trial_id']})")
        else:
            lines.append(head + (f"none above chance ({_at_chance(r)})" if r.get("at_chance", 0) > 0 else "none"))
    # the compute warning, and every control that beats a method (the report has the rest)
    lines += [f"  {line}" for line in a.fairness_lines if "Warning" in line or " is dominated by " in line]
    lines += [f"  {line}" for line in a.unfinished]
    return "\n".join(lines)


def write_atomically(out: Path, fill: Callable[[Path], Any]) -> Any:
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
