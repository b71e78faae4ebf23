"""An experiment directory read from disk: one table row per trial, fine-tune curves, per-layer channels.

Reads the folders Ray Tune writes for ``launch.py`` (``params.json``, ``result.json`` or
``progress.csv``, ``error.txt``) and its experiment state (``experiment_state-*.json``) without
Ray. Of a trial's result rows it reads only the keys ``prune_core.schema`` declares (``METRICS``,
``DETAIL_KEYS``, ``EPOCH_KEYS``) and ones Ray Tune adds to every result (``RAY_KEYS``).

A trial's status (``STATUSES``) comes from Tune's state and whether the sweep's driver is alive
(``prune_sweep.liveness``): done (a final report, stage "done"), stopped (TERMINATED without one:
the scheduler stopped it), error, running, interrupted (started, unfinished, driver gone) or
pending (not started). Without a readable state (a sweep copied without it, a file half written,
a format this code does not know) it is guessed from the folder: done, error, stopped (rows but
no final report) or pending.
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

from prune_core.sections import DEFAULTS, flatten
from prune_core.schema import METRIC_KEYS, TEXT_METRICS
from prune_core.yamlfile import YamlError, parse_yaml
from prune_sweep import liveness

# config keys every row carries (from params.json, else base.yaml, else the config defaults)
GROUP_KEYS = ("prune.method", "prune.criterion", "prune.scope", "prune.ratio", "runtime.seed")

# keys Ray Tune itself adds to every result it writes (ray.tune.result: AUTO_RESULT_KEYS,
# DEBUG_METRICS and done); the trainable's own keys (node_id, from launch.py's reporter, is one)
# are not among them, and nothing here reads those
RAY_KEYS = ("trial_id", "experiment_id", "training_iteration", "done", "date", "timestamp", "pid", "hostname",
            "node_ip", "config", "time_this_iter_s", "time_total_s", "time_since_restore",
            "iterations_since_restore", "timesteps_since_restore", "timesteps_total", "episodes_total",
            "checkpoint_dir_name")


# every status a trial can have, in the order reports list them
STATUSES = ("done", "stopped", "error", "running", "interrupted", "pending")
DRIVER_GONE = "the sweep's driver is gone"  # the reason of a trial its driver will not run or finish
CUT = "its last result.json line is cut off"  # a write that did not end: its final report may be lost
UNFINISHED = ("running", "interrupted")  # a report built while these exist says so
STATE_GLOB = "experiment_state-*.json"  # ray.tune.execution.tune_controller: TuneController.CKPT_FILE_TMPL
TUNE_STATUSES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")  # ray.tune.experiment.trial.Trial


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
    launches: List[Dict[str, Any]] = field(default_factory=list)  # provenance.json: each launch's versions, nodes


@dataclass
class Results:
    """Everything read from disk: one row per trial, the fine-tune curves and per-layer channels."""

    table: pd.DataFrame
    curves: pd.DataFrame  # experiment, trial_id, epoch, val_acc, train_loss
    layers: Dict[Tuple[str, str], Tuple[Dict[str, float], Dict[str, float]]]
    experiments: List[Experiment]


@dataclass(frozen=True)
class TuneTrial:
    """One trial as Tune's experiment state records it."""

    status: str  # one of TUNE_STATUSES
    dirname: str  # its folder in the experiment directory (relative_logdir), "" if not recorded
    config: Dict[str, Any]  # the swept keys (params.json holds the same)


@dataclass(frozen=True)
class TuneState:
    """The newest ``experiment_state-*.json`` of an experiment: trial id -> trial, file time."""

    trials: Dict[str, TuneTrial]
    mtime: float


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
    state = read_tune_state(path)
    alive = liveness.alive(path, state.mtime) if state is not None else None
    folders = {t.dirname: tid for tid, t in state.trials.items() if t.dirname} if state is not None else {}
    trials = [t for t in (_read_trial(tdir, name, state, alive, folders) for tdir in entries) if t is not None]
    if state is not None:  # trials Tune created whose folder is not there yet: no metrics, no curve
        seen = {t.record["trial_id"] for t in trials}
        trials += [_state_only_trial(tid, t, name, alive) for tid, t in state.trials.items() if tid not in seen]
    for trial in trials:
        if trial.record["status"] == "done":  # latency timed alone replaces what the trial timed
            trial.record.update(quiet.get(trial.record["trial_id"], {}))
        for key in GROUP_KEYS:
            if key not in trial.params:
                trial.record[key] = base.get(key, defaults.get(key))
    if not trials:
        raise AnalyzeError(_no_trials_message(path, sweep_text, base))
    swept = list(dict.fromkeys(k for t in trials for k in t.params))
    exp = Experiment(name, path, sweep_text, (path / "base.yaml").is_file(), swept, base,
                     _read_launches(path / "provenance.json"))
    return exp, trials


def read_tune_state(path: Path) -> Optional[TuneState]:
    """Each trial's status in the newest ``experiment_state-*.json`` of ``path``, read without
    Ray; None when there is none or it is not in the format this reads (half written, another
    Ray's), and the caller guesses statuses from the trial folders instead.

    The format (Ray 2.60: ``TuneController.save_to_dir``, ``Trial.get_json_state``) is
    ``{"trial_data": [[trial_json, run_metadata_json], ...], "runner_data": ..., "stats": ...}``,
    ``trial_json`` a JSON string of the Trial's attributes: ``trial_id``, ``status`` (saved as it
    was; RUNNING is made PENDING only when Tune restores it), ``relative_logdir``, ``config``."""
    files = sorted(path.glob(STATE_GLOB))
    if not files:
        return None
    newest = files[-1]  # the greatest name, as Tune itself picks (the session's start time)
    try:
        mtime = newest.stat().st_mtime
        entries = json.loads(newest.read_bytes())["trial_data"]
        if not isinstance(entries, list):
            return None
        trials = {}
        for entry in entries:
            trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            if not isinstance(trial, dict):
                return None
            tid, status, config = trial["trial_id"], trial["status"], trial.get("config") or {}
            if not isinstance(tid, str) or status not in TUNE_STATUSES or not isinstance(config, dict):
                return None
            scalars = {k: v for k, v in flatten(config).items() if v is None or isinstance(v, (str, int, float))}
            trials[tid] = TuneTrial(status, str(trial.get("relative_logdir") or ""), scalars)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return TuneState(trials, mtime)


def _read_quiet_latency(path: Path) -> Dict[str, Dict[str, Any]]:
    """``latency.json`` of the sweep's quiet pass (``prune_sweep.latency_pass``): trial id -> its
    latency keys, declared METRICS keys only; empty when the pass did not run."""
    text = _read_optional_text(path)
    if not text:
        return {}
    table = _json_object(path, text, "a JSON object of trial ids (the quiet latency pass's table)")
    return {str(tid): {k: _scalar(v) for k, v in values.items() if k in METRIC_KEYS}
            for tid, values in table.items() if isinstance(values, dict)}


def _read_launches(path: Path) -> List[Dict[str, Any]]:
    """The launches ``provenance.json`` records (``prune_sweep.bases.record_provenance``); empty
    when it is absent or unreadable: provenance informs the report, it never blocks the analysis."""
    text = _read_optional_text(path)
    try:
        launches = _json_object(path, text, "launches").get("launches", []) if text else []
    except AnalyzeError:
        return []
    return [x for x in launches if isinstance(x, dict)] if isinstance(launches, list) else []


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


def _read_trial(tdir: str, experiment: str, state: Optional[TuneState] = None, alive: Optional[bool] = None,
                folders: Optional[Mapping[str, str]] = None) -> Optional[Trial]:
    """One trial folder; None when it holds no params.json. With Tune's ``state`` (``folders``:
    folder name -> trial id in it) and whether the driver is ``alive``, its status comes from
    ``trial_status``; without, from the folder alone."""
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
    name = os.path.basename(tdir)
    trial_id = str(source.get("trial_id") or _trial_id_of(name, state, folders or {}) or name)
    epoch_rows = [r for r in rows if r.get("stage") == "finetune"]
    curve = [(r.get("epoch"), r.get("val_acc"), r.get("train_loss")) for r in epoch_rows]
    last = epoch_rows[-1].get("epoch") if epoch_rows else None
    if state is None:
        status, reason = _guess_status(final is not None, error, bool(rows), last)
    else:
        tune = state.trials.get(trial_id)
        status, reason = trial_status(tune.status if tune else None, final is not None, error, True, alive, last,
                                      rows.cut)
    layers = None
    if final is not None and isinstance(final.get("layer_channels_final"), dict):
        layers = (final.get("layer_channels_base") or {}, final["layer_channels_final"])
    rec = {"experiment": experiment, "trial_id": trial_id, "status": status, "reason": reason,
           "epochs": len({r.get("epoch") for r in epoch_rows}),
           "val_acc_last": epoch_rows[-1].get("val_acc") if epoch_rows else None,
           "trial_dir": name}
    rec.update({k: _scalar(v) for k, v in params.items()})
    rec.update({k: _scalar(source.get(k)) for k in METRIC_KEYS})
    return Trial(rec, params, curve, layers)


def _trial_id_of(dirname: str, state: Optional[TuneState], folders: Mapping[str, str]) -> Optional[str]:
    """The id of the trial in folder ``dirname`` (no result row names it): Tune's record of its
    folder, else the id its name starts with (``prune_sweep.trial.trial_dirname``)."""
    if dirname in folders or state is None:
        return folders.get(dirname)
    parts = dirname.split("_")
    return next(("_".join(parts[:n]) for n in range(len(parts), 0, -1) if "_".join(parts[:n]) in state.trials), None)


def _state_only_trial(trial_id: str, tune: TuneTrial, experiment: str, alive: Optional[bool]) -> Trial:
    """A trial Tune created whose folder is not written yet (or not synced): its config, its status."""
    status, reason = trial_status(tune.status, False, "", False, alive, None, False)
    rec = {"experiment": experiment, "trial_id": trial_id, "status": status, "reason": reason, "epochs": 0,
           "val_acc_last": None, "trial_dir": tune.dirname}
    rec.update({k: _scalar(v) for k, v in tune.config.items()})
    rec.update({k: None for k in METRIC_KEYS})
    return Trial(rec, dict(tune.config), [], None)


def trial_status(tune_status: Optional[str], final: bool, error: str, started: bool, alive: Optional[bool],
                 last_epoch: Any, cut: bool = False) -> Tuple[str, str]:
    """A trial's status and reason from what Tune's experiment state says (``tune_status``; None:
    the trial is not in it, being created after the state was saved) and what its folder holds:
    a ``final`` report, ``error.txt`` text, whether the folder exists (``started``: Tune writes
    params.json when a trial starts) and its last fine-tune epoch. ``alive``: the driver runs.
    ``cut``: result.json ends in a half-written line, which a trial Tune ended (TERMINATED) never
    leaves but where a write failed: its final report may be what was lost, so it is not read as
    stopped by the scheduler.

    Tune saves the state, then uploads it with the folders, which may have moved on meanwhile: a
    final report wins over any state."""
    epoch = f"last epoch {last_epoch}" if last_epoch is not None else "no epoch reported"
    if final:
        return "done", ""
    if tune_status == "ERROR":
        return "error", _error_reason(error) if error else "Tune recorded an error (no error.txt)"
    if tune_status == "TERMINATED":
        return "stopped", (f"ended, but {CUT} ({epoch}): its final report may be lost; run it again under "
                           "another --name" if cut else f"stopped by the scheduler ({epoch})")
    if tune_status in ("RUNNING", "PAUSED") or (tune_status is None and started):
        return ("running", epoch) if alive else ("interrupted", f"{DRIVER_GONE} ({epoch})")
    # PENDING: not started in this driver's session; with the driver gone, one that started in an
    # earlier session (its folder exists: a resumed sweep re-queues unfinished trials as PENDING)
    # is as unfinished as a RUNNING one
    if started and not alive:
        return "interrupted", f"{DRIVER_GONE} ({epoch})"
    return "pending", f"not started; {DRIVER_GONE}" if alive is False else ""


def _guess_status(final: bool, error: str, has_rows: bool, last_epoch: Any) -> Tuple[str, str]:
    """The status from the folder alone, for an experiment without a readable Tune state: a
    trial with rows but no final report may be stopped, running or interrupted; read as stopped."""
    if final:
        return "done", ""
    if error:
        return "error", _error_reason(error)
    if has_rows:
        return "stopped", f"no final report (last epoch {last_epoch})" if last_epoch is not None else "no final report"
    return "pending", ""


class Rows(list):
    """A trial's result rows; ``cut``: result.json's last line was half written (and skipped)."""

    cut = False


def _read_rows(tdir: str) -> Rows:
    """result.json as dicts; falls back to progress.csv. A half-written last line is skipped."""
    path = os.path.join(tdir, "result.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Rows(_read_progress_csv(os.path.join(tdir, "progress.csv")))
    except OSError as exc:
        raise AnalyzeError(f"{path}: cannot read it ({exc.strerror}); expected JSON lines") from None
    lines = data.split(b"\n")
    rows = Rows()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            if n == len(lines):  # no newline after it: the trial is writing it right now, or a write failed
                rows.cut = True
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
        values = parse_yaml(text)
    except YamlError as exc:
        raise AnalyzeError(f"{path}: {exc}; expected config values") from None
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


def resume_command(exp: Experiment) -> str:
    """The launch.py command line that continues the sweep in ``exp``: its storage is the folder
    holding it, or the bucket its sweep.yaml names (a local copy of a cloud sweep continues there)."""
    try:
        stored = parse_yaml(exp.sweep_text) if exp.sweep_text else None
    except YamlError:
        stored = None
    storage = stored.get("storage") if isinstance(stored, dict) else None
    where = Path(exp.path).resolve()
    storage = storage if isinstance(storage, str) and "://" in storage else str(where.parent)
    return " ".join(shlex.quote(p) for p in ["python", "launch.py", "--resume", "--storage", storage,
                                              "--name", where.name])


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)

