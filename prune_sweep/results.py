"""An experiment directory read from disk: one table row per trial, fine-tune curves, per-layer channels.

Reads the folders Ray Tune writes for ``launch.py`` (``params.json``, ``result.json`` or
``progress.csv``, ``error.txt``) without Ray. Of a trial's result rows it reads only the keys
``prune_core.schema`` declares (``METRICS``, ``DETAIL_KEYS``, ``EPOCH_KEYS``) and ones Ray Tune
adds to every result (``RAY_KEYS``).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import yaml

from prune_core.sections import DEFAULTS, flatten
from prune_core.schema import METRIC_KEYS, TEXT_METRICS

# config keys every row carries (from params.json, else base.yaml, else the config defaults)
GROUP_KEYS = ("prune.method", "prune.criterion", "prune.scope", "prune.ratio", "runtime.seed")

# keys Ray Tune itself adds to every result it writes (ray.tune.result: AUTO_RESULT_KEYS,
# DEBUG_METRICS and done); the trainable's own keys (node_id, from launch.py's reporter, is one)
# are not among them, and nothing here reads those
RAY_KEYS = ("trial_id", "experiment_id", "training_iteration", "done", "date", "timestamp", "pid", "hostname",
            "node_ip", "config", "time_this_iter_s", "time_total_s", "time_since_restore",
            "iterations_since_restore", "timesteps_since_restore", "timesteps_total", "episodes_total",
            "checkpoint_dir_name")


class AnalyzeError(Exception):
    """A bad input: the message names the path and what was expected."""


@dataclass
class Experiment:
    """One experiment directory: where it is and the settings it was run with."""

    name: str
    path: Path
    sweep_text: str  # sweep.yaml as written, "" when absent
    has_base_yaml: bool
    swept: List[str]  # dotted keys found in the trials' params.json
    base_config: Dict[str, Any] = field(default_factory=dict)  # base.yaml, flat (dotted keys)


@dataclass
class Results:
    """Everything read from disk: one row per trial, the fine-tune curves and per-layer channels."""

    table: pd.DataFrame
    curves: pd.DataFrame  # experiment, trial_id, epoch, val_acc, train_loss
    layers: Dict[Tuple[str, str], Tuple[Dict[str, float], Dict[str, float]]]
    experiments: List[Experiment]


@dataclass
class Trial:
    """What one trial folder holds."""

    record: Dict[str, Any]  # its row of Results.table, less the command
    params: Dict[str, Any]  # params.json, flat: the keys the sweep set for this trial
    curve: List[Tuple[Any, Any, Any]]  # (epoch, val_acc, train_loss) per fine-tune epoch report
    layers: Optional[Tuple[Dict[str, float], Dict[str, float]]]  # channels per layer, base and final


def load_experiments(paths: Sequence[str | Path]) -> Results:
    """Read every trial of every experiment directory into one table (``experiment`` column)."""
    exps: List[Experiment] = []
    trials: List[Trial] = []
    names = _experiment_names([Path(p) for p in paths])
    for path, name in zip(paths, names):
        exp, read = _load_experiment(Path(path), name)
        exps.append(exp)
        trials.extend(read)
    table = _build_table(trials, exps)
    curves = [(t.record["experiment"], t.record["trial_id"], *row) for t in trials for row in t.curve]
    layers = {(t.record["experiment"], t.record["trial_id"]): t.layers for t in trials if t.layers is not None}
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


def _load_experiment(path: Path, name: str) -> Tuple[Experiment, List[Trial]]:
    if not path.exists():
        raise AnalyzeError(f"{path}: no such directory; expected {_EXPECTED}")
    if not path.is_dir():
        raise AnalyzeError(f"{path}: not a directory; expected {_EXPECTED}")
    try:
        entries = sorted(e.path for e in os.scandir(path) if e.is_dir())
    except OSError as exc:
        raise AnalyzeError(f"{path}: cannot list it ({exc.strerror}); expected {_EXPECTED}") from None
    sweep_text = _read_optional_text(path / "sweep.yaml")
    base = flatten(_read_yaml(path / "base.yaml"))
    defaults = _config_defaults()
    quiet = _read_quiet_latency(path / "latency.json")
    trials = []
    for tdir in entries:
        trial = _read_trial(tdir, name)
        if trial is None:
            continue
        if trial.record["status"] == "done":  # latency timed alone replaces what the trial timed
            trial.record.update(quiet.get(trial.record["trial_id"], {}))
        for key in GROUP_KEYS:
            if key not in trial.params:
                trial.record[key] = base.get(key, defaults.get(key))
        trials.append(trial)
    if not trials:
        raise AnalyzeError(_no_trials_message(path, sweep_text, base))
    swept = list(dict.fromkeys(k for t in trials for k in t.params))
    exp = Experiment(name, path, sweep_text, (path / "base.yaml").is_file(), swept, base)
    return exp, trials


def _read_quiet_latency(path: Path) -> Dict[str, Dict[str, Any]]:
    """``latency.json`` of the sweep's quiet pass (``prune_sweep.latency_pass``): trial id -> its
    latency keys, declared METRICS keys only; empty when the pass did not run."""
    text = _read_optional_text(path)
    if not text:
        return {}
    table = _json_object(path, text, "a JSON object of trial ids (the quiet latency pass's table)")
    return {str(tid): {k: _scalar(v) for k, v in values.items() if k in METRIC_KEYS}
            for tid, values in table.items() if isinstance(values, dict)}


def _json_object(path: Path | str, data: str | bytes, expected: str) -> Dict[str, Any]:
    """``data`` read as one JSON object; else AnalyzeError naming ``path`` and what was ``expected``."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise AnalyzeError(f"{path}: not JSON ({exc}); expected {expected}") from None
    if not isinstance(value, dict):
        raise AnalyzeError(f"{path}: expected {expected}, got {type(value).__name__}")
    return value


def _no_trials_message(path: Path, sweep_text: str, base: dict) -> str:
    markers = ("sweep.yaml", "base.yaml", "tuner.pkl")
    if sweep_text or base or any((path / m).exists() for m in markers) or any(path.glob("experiment_state-*.json")):
        return f"{path}: empty experiment, no trials yet (expected trial folders holding params.json)"
    inner = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "sweep.yaml").is_file())[:5]
    hint = f"; experiments inside it: {', '.join(inner)}" if inner else ""
    return f"{path}: not an experiment directory; expected {_EXPECTED}{hint}"


def _read_trial(tdir: str, experiment: str) -> Optional[Trial]:
    """One trial folder; None when it holds no params.json."""
    params_path = os.path.join(tdir, "params.json")
    try:
        with open(params_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnalyzeError(f"{params_path}: cannot read it ({exc.strerror}); expected the trial's config") from None
    params = flatten(_json_object(params_path, raw, "a JSON object of config keys (the trial's config)"))
    rows = _read_rows(tdir)
    error = _read_optional_text(os.path.join(tdir, "error.txt"))
    final = next((r for r in reversed(rows) if r.get("stage") == "done"), None)
    source = final if final is not None else (rows[-1] if rows else {})
    trial_id = str(source.get("trial_id") or os.path.basename(tdir))
    epoch_rows = [r for r in rows if r.get("stage") == "finetune"]
    curve = [(r.get("epoch"), r.get("val_acc"), r.get("train_loss")) for r in epoch_rows]
    if final is not None:
        status, reason = "done", ""
    elif error:
        status, reason = "error", _error_reason(error)
    elif rows:
        status = "stopped"
        reason = f"no final report (last epoch {epoch_rows[-1].get('epoch')})" if epoch_rows else "no final report"
    else:
        status, reason = "pending", ""
    layers = None
    if final is not None and isinstance(final.get("layer_channels_final"), dict):
        layers = (final.get("layer_channels_base") or {}, final["layer_channels_final"])
    rec = {"experiment": experiment, "trial_id": trial_id, "status": status, "reason": reason,
           "epochs": len({r.get("epoch") for r in epoch_rows}),
           "val_acc_last": epoch_rows[-1].get("val_acc") if epoch_rows else None,
           "trial_dir": os.path.basename(tdir)}
    rec.update({k: _scalar(v) for k, v in params.items()})
    rec.update({k: _scalar(source.get(k)) for k in METRIC_KEYS})
    return Trial(rec, params, curve, layers)


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


def _config_defaults() -> Dict[str, Any]:
    """Defaults of the grouping keys, for sweeps that neither sweep nor fix them."""
    out = {key: DEFAULTS[key] for key in GROUP_KEYS}
    if out.get("prune.criterion") == "":  # the config resolves "" to the method's own default
        out["prune.criterion"] = "default"
    return out


def _scalar(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def _build_table(trials: List[Trial], exps: List[Experiment]) -> pd.DataFrame:
    path_of = {e.name: e for e in exps}
    records = [{**t.record, "command": reproduce_command(path_of[t.record["experiment"]], t.params)}
               for t in trials]
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

