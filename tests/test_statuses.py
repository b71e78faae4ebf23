"""Trial statuses read from Ray Tune's experiment state and the driver's marker, without Ray.

Each experiment directory is built by hand: trial folders (params.json, result.json rows,
error.txt) and an ``experiment_state-*.json`` in the format Ray 2.60 writes
(``TuneController.save_to_dir``: ``trial_data`` holds, per trial, ``Trial.get_json_state()``, a
pair of JSON strings; the fixture below is a real file of a 5-trial Tune run, trimmed to the keys
around the ones read, the pickled ones shortened).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prune_sweep import liveness
from prune_sweep.analysis import analyze_results
from prune_sweep.fake_sweep import trial_rows, write_trial
from prune_sweep.report import summary_text
from prune_sweep.results import load_experiments, read_tune_state
from prune_sweep.storage import Store

PICKLED = {"_type": "CLOUDPICKLE_FALLBACK", "value": "8005952c000000000000008c157261792e"}  # shortened


def trial_state(trial_id: str, status: str, dirname: str, config: dict) -> str:
    """``Trial.get_json_state()[0]``: the Trial's attributes as a JSON string (indent 2, as Tune)."""
    return json.dumps({
        "stub": False, "trainable_name": "run_trial", "trial_id": trial_id, "storage": PICKLED, "config": config,
        "_Trial__unresolved_config": config, "evaluated_params": {}, "experiment_tag": trial_id[-1],
        "stopping_criterion": {}, "placement_group_factory": "800595aa0000", "log_to_file": [None, None],
        "max_failures": 1, "status": status, "relative_logdir": dirname, "trial_dirname_creator": PICKLED,
        "custom_trial_name": None, "custom_dirname": dirname, "restore_path": None, "_state_json": None,
        "results": "80054e2e", "extra_arg": "80054e2e", "_resources": "80054e2e"}, indent=2)


def run_metadata(error: bool = False) -> str:
    """``Trial.get_json_state()[1]``: the run metadata (not read, but there in every real file)."""
    return json.dumps({"start_time": 1795623685.57, "num_failures": int(error), "num_failures_after_restore": 0,
                       "error_filename": "error.txt" if error else None, "pickled_error_filename": None,
                       "last_result": {}, "last_result_time": 1795623690.6, "metric_analysis": {},
                       "_n_steps": [5, 10], "metric_n_steps": {}, "checkpoint_manager": PICKLED})


def write_state(exp: Path, trials: dict, session: str = "2026-11-25_16-21-12") -> Path:
    """experiment_state-<session>.json with ``trials``: trial id -> (Tune status, folder, config)."""
    data = {"trial_data": [[trial_state(tid, status, dirname, config), run_metadata(status == "ERROR")]
                           for tid, (status, dirname, config) in trials.items()],
            "runner_data": {"_reuse_actors": True, "_max_pending_trials": 200, "_session_str": session,
                            "_checkpoint_period": "auto", "_stopper": PICKLED, "_resumed": False},
            "stats": {"start_time": 1795623672.4}}
    path = exp / f"experiment_state-{session}.json"
    path.write_text(json.dumps(data))
    return path


def folder(exp: Path, tid: str, ratio: float, kind: str) -> str:
    """A trial folder as launch.py leaves it: done (final report), stopped (two epochs), error,
    started (one epoch so far) or empty (params.json only). Returns its name."""
    name = f"{tid}_{ratio:g}"
    params = {"prune.method": "channel", "prune.ratio": ratio}
    rng = np.random.default_rng(0)
    rows = trial_rows("channel", ratio, "local", 0.01, 0, tid, epochs=2, rng=rng, done=kind == "done")
    rows = {"done": rows, "stopped": rows, "error": rows[:1], "started": rows[:1], "empty": []}[kind]
    write_trial(exp, name, params, rows, error="ValueError: ratio leaves no channels" if kind == "error" else None)
    return name


def write_marker(exp: Path, **values) -> None:
    marker = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time() - 100,
              "heartbeat": time.time(), **values}
    (exp / liveness.DRIVER_FILE).write_text(json.dumps(marker))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def exp(tmp_path):
    """Every case of the state, with trial ids as Tune gives them (``<experiment>_<index>``)."""
    exp = tmp_path / "sweep"
    exp.mkdir()
    (exp / "sweep.yaml").write_text(f"name: sweep\nstorage: {tmp_path}\n")
    cfg = lambda r: {"prune.method": "channel", "prune.ratio": r}  # noqa: E731
    trials = {
        "ab12c_00000": ("TERMINATED", folder(exp, "ab12c_00000", 0.1, "done"), cfg(0.1)),
        "ab12c_00001": ("TERMINATED", folder(exp, "ab12c_00001", 0.2, "stopped"), cfg(0.2)),
        "ab12c_00002": ("ERROR", folder(exp, "ab12c_00002", 0.3, "error"), cfg(0.3)),
        "ab12c_00003": ("RUNNING", folder(exp, "ab12c_00003", 0.4, "started"), cfg(0.4)),
        "ab12c_00004": ("RUNNING", "ab12c_00004_0.5", cfg(0.5)),  # started, folder not synced yet
        "ab12c_00005": ("PENDING", "", cfg(0.6)),  # not started
        "ab12c_00006": ("PENDING", folder(exp, "ab12c_00006", 0.7, "started"), cfg(0.7)),  # resumed, queued
        "ab12c_00007": ("RUNNING", folder(exp, "ab12c_00007", 0.8, "done"), cfg(0.8)),  # finished since the save
        "ab12c_00009": ("RUNNING", folder(exp, "ab12c_00009", 0.95, "empty"), cfg(0.95)),  # no epoch yet
    }
    write_state(exp, trials)
    folder(exp, "ab12c_00008", 0.9, "empty")  # created after the state was saved: not in it, no row names its id
    return exp


def statuses(exp: Path) -> dict:
    table = load_experiments([exp]).table
    return dict(zip(table["trial_id"], table["status"]))


def test_every_status_while_the_driver_runs(exp):
    write_marker(exp)  # this process, on this host
    table = load_experiments([exp]).table.set_index("trial_id")
    assert table["status"].to_dict() == {
        "ab12c_00000": "done", "ab12c_00001": "stopped", "ab12c_00002": "error", "ab12c_00003": "running",
        "ab12c_00004": "running", "ab12c_00005": "pending", "ab12c_00006": "pending", "ab12c_00007": "done",
        "ab12c_00008_0.9": "running", "ab12c_00009": "running"}
    assert "scheduler" in table.loc["ab12c_00001", "reason"] and "last epoch 2" in table.loc["ab12c_00001", "reason"]
    assert table.loc["ab12c_00002", "reason"] == "ValueError: ratio leaves no channels"
    # a trial Tune created whose folder is not there yet: its config from the state, no metrics
    assert table.loc["ab12c_00005", "prune.ratio"] == 0.6 and np.isnan(table.loc["ab12c_00005", "acc_final"])
    assert table.loc["ab12c_00004", "trial_dir"] == "ab12c_00004_0.5"
    assert table.loc["ab12c_00009", "trial_dir"] == "ab12c_00009_0.95"  # id from Tune's record of the folder


def test_every_status_after_the_driver_died(exp):
    write_marker(exp, pid=dead_pid())
    assert statuses(exp) == {
        "ab12c_00000": "done", "ab12c_00001": "stopped", "ab12c_00002": "error", "ab12c_00003": "interrupted",
        "ab12c_00004": "interrupted", "ab12c_00005": "pending", "ab12c_00006": "interrupted",
        "ab12c_00007": "done", "ab12c_00008_0.9": "interrupted", "ab12c_00009": "interrupted"}


@pytest.mark.parametrize("marker, alive", [
    ({}, True),  # this process
    ({"ended": 0}, False),  # the driver left (Ctrl-C: fit() returns, trials still RUNNING)
    ({"host": "elsewhere", "pid": 1, "heartbeat": -5}, True),  # times: seconds from now
    ({"host": "elsewhere", "pid": 1, "heartbeat": -liveness.STALE_S - 5}, False),
    ({"pid": "dead"}, False),
])
def test_the_marker_says_whether_the_driver_runs(exp, marker, alive):
    marker = {k: time.time() + v if k in ("ended", "heartbeat") else v for k, v in marker.items()}
    write_marker(exp, **({**marker, "pid": dead_pid()} if marker.get("pid") == "dead" else marker))
    assert statuses(exp)["ab12c_00003"] == ("running" if alive else "interrupted")


@pytest.mark.parametrize("age, status", [(10, "running"), (liveness.STATE_STALE_S + 60, "interrupted")])
def test_without_a_marker_the_state_files_age_decides(exp, age, status):
    for path in exp.glob("experiment_state-*.json"):
        os.utime(path, (time.time() - age, time.time() - age))
    assert statuses(exp)["ab12c_00003"] == status


def test_the_newest_state_file_is_read(exp):
    write_marker(exp)
    write_state(exp, {"ab12c_00003": ("TERMINATED", "ab12c_00003_0.4", {})}, session="2026-11-26_09-00-00")
    assert statuses(exp)["ab12c_00003"] == "stopped"


@pytest.mark.parametrize("text", [
    "half",  # the state file as far as it was written
    "{}",  # not Tune's
    json.dumps({"trial_data": "none"}),
    json.dumps({"trial_data": [[json.dumps({"trial_id": "ab12c_00003", "status": "WAITING"}), "{}"]]}),
    json.dumps({"trial_data": [[json.dumps([1, 2]), "{}"]]}),
])
def test_an_unreadable_state_falls_back_to_the_folders(exp, text):
    write_marker(exp)
    path = next(exp.glob("experiment_state-*.json"))
    path.write_text(path.read_text()[:len(path.read_text()) // 2] if text == "half" else text)
    assert read_tune_state(exp) is None
    got = statuses(exp)
    # the folder-based guess: rows without a final report read as stopped, a folder without rows as pending
    assert got["ab12c_00000"] == "done" and got["ab12c_00002"] == "error"
    assert got["ab12c_00003"] == "stopped" and got["ab12c_00009_0.95"] == "pending"
    assert "ab12c_00005" not in got  # trials known only from the state are gone with it


def test_the_report_says_what_is_unfinished_and_how_to_resume(exp, tmp_path):
    write_marker(exp, pid=dead_pid())
    results = load_experiments([exp])
    analysis = analyze_results(results)
    assert analysis.table.loc[analysis.table["front_flops"], "status"].eq("done").all()
    # the pending trial will not start either while no driver runs: it is counted, with the same hint
    assert analysis.unfinished == [f"5 trials interrupted, 1 never started: resume with `python launch.py --resume "
                                   f"--storage {tmp_path} --name sweep`"]
    pending = analysis.table[analysis.table["status"] == "pending"]
    assert pending["reason"].tolist() == ["not started; the sweep's driver is gone"]
    assert analysis.unfinished[0] in summary_text(analysis)
    write_marker(exp)
    analysis = analyze_results(load_experiments([exp]))
    assert analysis.unfinished == ["4 trials running: the sweep is still going; these results are as far as it got"]


def test_the_driver_marker_beats_and_says_when_the_driver_left(tmp_path):
    path = tmp_path / liveness.DRIVER_FILE
    with pytest.raises(KeyboardInterrupt):
        with liveness.driver_marker(Store(str(tmp_path)), period=0.05):
            first = json.loads(path.read_text())
            assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
            assert liveness.alive(tmp_path) is True
            time.sleep(0.3)
            assert json.loads(path.read_text())["heartbeat"] > first["heartbeat"]
            raise KeyboardInterrupt
    last = json.loads(path.read_text())
    assert last["ended"] >= last["started"] == first["started"]
    assert liveness.alive(tmp_path) is False
    assert [p.name for p in tmp_path.iterdir()] == [liveness.DRIVER_FILE]  # no temporary file left


def test_an_ended_trial_whose_final_report_is_cut_off_is_not_read_as_stopped_by_the_scheduler(tmp_path):
    """Tune ended the trial (TERMINATED) but result.json's last line, its final report, is half
    written (a write that failed: a full disk): its reason says so, where a trial the scheduler
    stopped reads "stopped by the scheduler"."""
    exp = tmp_path / "sweep"
    rows = trial_rows("channel", 0.5, "local", 0.01, 0, "t_00000", epochs=2, done=True)
    write_trial(exp, "t_00000_0.5", {"prune.method": "channel", "prune.ratio": 0.5}, rows, truncate_last=True)
    name = folder(exp, "t_00001", 0.3, "stopped")
    write_state(exp, {"t_00000": ("TERMINATED", "t_00000_0.5", {"prune.ratio": 0.5}),
                      "t_00001": ("TERMINATED", name, {"prune.ratio": 0.3})})
    write_marker(exp, pid=dead_pid())
    table = load_experiments([exp]).table.set_index("trial_id")
    assert table.loc["t_00000", "status"] == "stopped"
    assert table.loc["t_00000", "reason"].startswith("ended, but its last result.json line is cut off (last epoch 2)")
    assert table.loc["t_00001", "reason"] == "stopped by the scheduler (last epoch 2)"
