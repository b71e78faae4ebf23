"""A sweep whose driver is killed mid-run finishes with ``--resume``: every trial once.

The driver runs as ``python launch.py`` in a subprocess (with its own local Ray), is killed with
SIGKILL once some trials have finished and another has started, and is started again with the
``--resume`` command the analysis prints. The analysis reads the trials' statuses at each stage:
running, then interrupted (never "stopped"), then done.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from _sweeps import trial_rows, write_sweep

from prune_sweep.analysis import unfinished_lines
from prune_sweep.results import AnalyzeError, load_experiments

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
RATIOS = [0.2, 0.3, 0.4, 0.5]


def sweep_file(tmp_path: Path) -> Path:
    return write_sweep(tmp_path, "killed", RATIOS, finetune=(EPOCHS, 6),
                       search={"algorithm": "grid", "max_concurrent": 2}, max_failures=1)


def launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args, "--no-dashboard"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finished(rows: list) -> bool:
    return any(r.get("stage") == "done" for r in rows)


def statuses(exp: Path) -> dict:
    """Trial id -> (status, trial folder) as the analysis reads them; empty before the first trial."""
    try:
        table = load_experiments([exp]).table
    except AnalyzeError:
        return {}
    return {r.trial_id: (r.status, r.trial_dir) for r in table.itertuples()}


def test_killed_driver_resumes_every_trial_once(tmp_path):
    sweep, exp = sweep_file(tmp_path), tmp_path / "killed"
    first = launch(str(sweep), "--storage", str(tmp_path))
    seen = set()  # statuses read while the first driver ran
    try:
        deadline, looked = time.time() + 300, 0.0
        while time.time() < deadline and first.poll() is None:
            runs = trial_rows(exp) if exp.exists() else {}
            if "running" not in seen and time.time() - looked > 1:  # once a second, until one is seen
                seen |= {status for status, _ in statuses(exp).values()}
                looked = time.time()
            done = sum(map(finished, runs.values()))
            if done >= 2 and len(runs) > done and "running" in seen:  # and a third trial has started
                break
            time.sleep(0.2)
        assert first.poll() is None, "the sweep ended before it could be killed:\n" + first.stdout.read()
        os.kill(first.pid, signal.SIGKILL)  # the driver only: Ray's own processes share its fate
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert "running" in seen and "stopped" not in seen, seen
    before = trial_rows(exp)
    done_before = {name for name, rows in before.items() if finished(rows)}
    assert 2 <= len(done_before) < len(RATIOS)
    assert json.loads((exp / ".driver.json").read_text())["pid"] == first.pid  # left behind by the kill
    killed = load_experiments([exp])  # the marker's pid is gone: every started, unfinished trial is interrupted
    read = list(zip(killed.table["status"], killed.table["trial_dir"]))
    assert {status for status, folder in read if folder in done_before} == {"done"}
    assert {status for status, folder in read if folder in before.keys() - done_before} == {"interrupted"}
    assert {status for status, folder in read if folder not in before} <= {"pending", "interrupted"}
    lines = unfinished_lines(killed.table, killed.experiments)
    assert len(lines) == 1 and " interrupted: resume with `python launch.py --resume" in lines[0], lines
    time.sleep(2)  # let the dead driver's Ray processes go

    second = launch(*shlex.split(lines[0].split("`")[1])[2:])  # the command the report prints
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert f"{len(RATIOS)} finished" in out

    after = trial_rows(exp)
    assert len(after) == len(RATIOS)  # no trial was created twice
    assert sorted(json.loads((exp / n / "params.json").read_text())["prune.ratio"] for n in after) == RATIOS
    for name, rows in after.items():
        assert sum(r.get("stage") == "done" for r in rows) == 1, name
        epochs = [r["epoch"] for r in rows if r.get("stage") == "finetune"]
        assert sorted(set(epochs)) == list(range(1, EPOCHS + 1)), (name, epochs)
        if name in done_before:
            assert rows == before[name], "a finished trial ran again"
        elif any(r.get("stage") == "finetune" for r in before.get(name, [])):
            assert epochs.count(1) == 1, (name, epochs)  # continued from its checkpoint, not from epoch 0
    assert sorted(status for status, _ in statuses(exp).values()) == ["done"] * len(RATIOS)
    assert json.loads((exp / ".driver.json").read_text())["ended"]  # the driver left: the marker says so
    logs = list((exp / "base_cache").glob("*/base_task.log"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 1  # the resumed sweep reused its base
