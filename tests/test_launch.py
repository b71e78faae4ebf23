"""launch.py end to end on one local Ray (2 CPUs): tiny sweeps on mnist5k."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import optuna
import pyarrow.fs as pafs
import pytest
import ray
import yaml
from fsspec.implementations.local import LocalFileSystem
from ray import cloudpickle

from prune_core import provenance
from prune_sweep import bases, driver, trusted_state
from prune_sweep.analyze_cli import run as analyze_run
from prune_sweep.launch_cli import main
from prune_sweep.storage import node_cache
from prune_sweep.trial import queued_log


# a few steps of everything: a trial takes seconds on one core
TINY = {"data": {"name": "mnist5k", "limit_train": 256, "batch_size": 64},
        "model": {"name": "resnet20", "width": 0.5},
        "train": {"epochs": 1, "max_steps": 3},
        "finetune": {"epochs": 2, "max_steps": 3},
        "runtime": {"device": "cpu", "latency_repeats": 2, "latency_batch": 2}}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a cluster another test left
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    """One storage for the tests whose sweeps share the TINY base: the first trains it, the others
    adopt it (as a second sweep in a storage does)."""
    return tmp_path_factory.mktemp("storage")


def write_sweep(tmp_path: Path, name: str, space: dict, **extra) -> Path:
    sweep = {"name": name, "base": {**TINY, **extra.pop("base", {})}, "space": space,
             "search": {"algorithm": "grid", "max_concurrent": 2}, "resources": {"cpu": 1}, "max_failures": 1, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def trials(exp: Path) -> Dict[str, List[dict]]:
    """Trial folder -> its result.json rows."""
    out = {}
    for params in sorted(exp.glob("*/params.json")):
        result = params.parent / "result.json"
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()] if result.exists() else []
        out[params.parent.name] = rows
    return out


def params(exp: Path) -> List[dict]:
    return [json.loads(p.read_text()) for p in sorted(exp.glob("*/params.json"))]


def done_row(rows: List[dict]) -> dict:
    finals = [r for r in rows if r.get("stage") == "done"]
    assert len(finals) == 1, [r.get("stage") for r in rows]
    return finals[0]


def test_each_distinct_base_is_trained_once_and_reused_by_a_second_sweep(tmp_path, capsys):
    # storage as a URI: the path a cloud bucket takes (bases uploaded, fetched into each node's cache)
    storage = f"file://{tmp_path}"
    space = {"runtime.seed": {"grid": [0, 1]},  # two bases; seed 0 has two trials, seed 1 one
             "prune.scope": [{"grid": ["local", "global"], "when": {"runtime.seed": [0]}}]}
    try:
        assert main([str(write_sweep(tmp_path, "first", space)), "--storage", storage]) == 0
        first = tmp_path / "first"
        logs = sorted((first / "base_cache").glob("*/base_task.log"))
        assert len(logs) == 2 and len(list((first / "base_cache").glob("*/base.pt"))) == 2
        # without -v, each base's epochs show as they end (the table's last lines, at least)
        shown = re.findall(r"^base (\w+) \(resnet20 on mnist5k, seed (\d)\): epoch 1/1, loss \d+\.\d{4}, "
                           r"val acc \d+\.\d\d%, 0 s left$", capsys.readouterr().out, re.M)
        # each period in which an epoch ended reprints every base's latest line: a base that finished
        # a period before the other shows twice (a loaded machine), each shows at least once
        assert sorted({h for h, _ in shown}) == [log.parent.name for log in logs], shown
        assert sorted({seed for _, seed in shown}) == ["0", "1"]
        assert all(len(log.read_text().splitlines()) == 1 for log in logs)  # one training each
        assert len(runs := trials(first)) == 3
        assert all(done_row(rows)["base_cached"] == 1 for rows in runs.values())

        space = {"runtime.seed": {"grid": [1]}, "prune.ratio": {"grid": [0.4]}}
        capsys.readouterr()
        assert main([str(write_sweep(tmp_path, "second", space)), "--storage", storage]) == 0
        assert "reused" in capsys.readouterr().out
        second = tmp_path / "second"
        assert len(list((second / "base_cache").glob("*/base.pt"))) == 1
        assert not list((second / "base_cache").glob("*/base_task.log"))  # nothing trained
        assert all(len(log.read_text().splitlines()) == 1 for log in logs)
        assert [done_row(rows)["base_cached"] for rows in trials(second).values()] == [1]
    finally:
        for name in ("first", "second"):
            shutil.rmtree(node_cache(f"{storage}/{name}").parent, ignore_errors=True)


def test_multi_objective_optuna_search(tmp_path):
    space = {"prune.criterion": {"choice": ["l1", "l2"]}, "prune.ratio": {"uniform": [0.2, 0.6]},
             "prune.scope": {"choice": ["local", "global"]}, "finetune.lr": {"loguniform": [0.005, 0.05]}}
    search = {"algorithm": "optuna", "sampler": "tpe", "num_samples": 3, "max_concurrent": 2,
              "objectives": {"val_acc": "max", "flops_kept_dense": "min"}}
    path = write_sweep(tmp_path, "mo", space, search=search, scheduler={"name": "asha", "grace_period": 1})
    assert main([str(path), "--storage", str(tmp_path)]) == 0
    exp = tmp_path / "mo"
    assert [sorted(p) for p in params(exp)] == [sorted(space)] * 3
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3
    runs = list(trials(exp).values())
    finished = sorted(round(r["flops_kept_dense"], 6) for rows in runs for r in rows if r.get("stage") == "done")
    assert finished, "at least the first trial runs to the end"
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(round(t.values[1], 6) for t in complete) == finished and all(len(t.values) == 2 for t in complete)
    # a trial ASHA stopped reaches the study as pruned, not with its early accuracy
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in study.trials if t not in complete)
    # the searcher (with its SQLite study) is restored by --resume; a finished sweep stays finished
    assert main([str(path), "--storage", str(tmp_path), "--resume"]) == 0
    assert len(optuna.load_study(study_name="mo", storage=f"sqlite:///{exp / 'optuna.db'}").trials) == 3
    assert len(params(exp)) == 3


def test_a_diverging_trial_errors_with_its_reason_and_the_sweep_goes_on(tmp_path, storage, capsys):
    space = {"finetune.lr": {"grid": [0.01, 1.0e30]}}
    assert main([str(write_sweep(tmp_path, "nan", space)), "--storage", str(storage)]) == 0
    assert "1 finished" in (out := capsys.readouterr().out) and "1 errored" in out and "Diverged" in out
    exp = storage / "nan"
    errors = list(exp.glob("*/error.txt"))
    assert len(errors) == 1
    text = errors[0].read_text()
    assert "Diverged: finetune: loss is nan" in text
    assert "Failure # 2" in text and "not retried" in text.strip().splitlines()[-1]  # the retry ended at once
    finished = [rows for rows in trials(exp).values() if any(r.get("stage") == "done" for r in rows)]
    assert len(finished) == 1


def test_quiet_latency_pass_times_each_distinct_architecture_once(tmp_path, storage, capsys):
    # two trials differing only in distillation from the base (swept as any key is): one base, one
    # pruned architecture
    path = write_sweep(tmp_path, "quiet", {"finetune.kd_alpha": {"grid": [0.0, 0.5]}},
                       base={"prune": {"method": "channel", "ratio": 0.5}})
    assert main([str(path), "--storage", str(storage)]) == 0
    assert "latency: 2 distinct models timed alone on cpu x1 threads" in capsys.readouterr().out
    exp = storage / "quiet"
    ids = sorted(done_row(rows)["trial_id"] for rows in trials(exp).values())
    teacher = {p["finetune.kd_alpha"]: done_row(rows)["epochs_teacher"]
               for p, rows in zip(params(exp), trials(exp).values())}
    assert teacher == {0.0: 0, 0.5: TINY["finetune"]["epochs"]}  # the distilled trial ran its teacher each epoch
    quiet = json.loads((exp / "latency.json").read_text())
    assert sorted(quiet) == ids and len(ids) == 2
    for q in quiet.values():
        assert q["latency_pass"] == "quiet" and q["latency_device"] == "cpu x1 threads"
        assert min(q[k] for k in ("latency_ms_base", "latency_ms_final", "latency_ms_base_batch",
                                  "latency_ms_final_batch")) > 0
        assert all(q[f"latency_ms_{m}{b}_iqr"] >= 0 for m in ("base", "final") for b in ("", "_batch"))
        assert q["speedup"] == q["latency_ms_base"] / q["latency_ms_final"]
    a, b = quiet.values()
    assert a == b  # the same architectures, timed once, give both trials the same numbers
    # --resume times every finished trial again; --no-quiet-latency skips the pass
    (exp / "latency.json").unlink()
    assert main([str(path), "--storage", str(storage), "--resume"]) == 0
    assert sorted(json.loads((exp / "latency.json").read_text())) == ids
    (exp / "latency.json").unlink()
    capsys.readouterr()
    assert main([str(path), "--storage", str(storage), "--resume", "--no-quiet-latency"]) == 0
    assert "distinct models timed" not in capsys.readouterr().out and not (exp / "latency.json").exists()
    # provenance.json: one entry per launch, naming the node each trial ran on and its versions
    launches = json.loads((exp / "provenance.json").read_text())["launches"]
    assert [x["resumed"] for x in launches] == [False, True, True]
    nodes = {done_row(rows)["node_id"] for rows in trials(exp).values()}
    assert nodes <= set(launches[0]["nodes"]) and ray.is_initialized()  # the test's Ray: still running
    assert all(n["versions"] == provenance.versions() for x in launches for n in [x["driver"], *x["nodes"].values()])


def test_controls_beside_distilled_trials_run_through_ray_and_the_report_names_them(tmp_path, storage, capsys):
    path = write_sweep(tmp_path, "controls", {"finetune.kd_alpha": {"grid": [0.0, 0.5]}},
                       base={"prune": {"method": "channel", "ratio": 0.5, "scope": "global"}},
                       controls=["scratch", "narrow"])
    assert main([str(path), "--storage", str(storage)]) == 0
    assert "latency: 3 distinct models timed alone" in capsys.readouterr().out  # base, pruned, narrow
    exp = storage / "controls"
    done = {(p["prune.control"], p["finetune.kd_alpha"]): done_row(rows)
            for p, rows in zip(params(exp), trials(exp).values())}
    # two pruned trials (with and without distillation) and one twin per control arm
    assert sorted(done) == [("", 0.0), ("", 0.5), ("narrow", 0.0), ("scratch_b", 0.0), ("scratch_e", 0.0)]
    pruned = done[("", 0.0)]
    assert done[("scratch_e", 0.0)]["layer_channels_final"] == pruned["layer_channels_final"]
    assert done[("scratch_e", 0.0)]["finetune_epochs"] == TINY["train"]["epochs"] + TINY["finetune"]["epochs"]
    assert done[("", 0.5)]["epochs_teacher"] == TINY["finetune"]["epochs"] and done[("narrow", 0.0)]["control_width"] < 1
    out, analysis = analyze_run([exp], tmp_path / "analysis")
    assert {"channel", "scratch_e", "scratch_b", "narrow"} <= set(analysis.table["prune.method"])
    report = (out / "report.md").read_text()
    for arm in ("scratch_e", "scratch_b", "narrow"):  # each control is a series with a fairness line
        assert re.search(rf"controls: channel is (not )?dominated by {arm} ", report), arm


class FullDisk:
    """Local storage, for pyarrow's ``FSSpecHandler``, that is full while the file ``flag`` exists,
    from each trial's second checkpoint on: a trial saves one epoch, then its next write fails with
    ENOSPC. (A wrapper, not a subclass: fsspec classes hold a lock, and Ray's workers unpickle this
    class by value.)"""

    def __init__(self, flag: str):
        self.flag, self.local = flag, LocalFileSystem()

    def __getattr__(self, name):
        if name.startswith("__") or name == "local":  # unpickling asks before __dict__ is set
            raise AttributeError(name)
        return getattr(self.local, name)

    def open(self, path, mode="rb", **kwargs):
        if mode[0] in "wax" and "checkpoint_000001" in str(path) and os.path.exists(self.flag):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return self.local.open(path, mode, **kwargs)


def test_storage_full_stops_the_sweep_in_one_line_and_resume_finishes_every_trial_once(tmp_path, storage, capsys,
                                                                                         monkeypatch):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers unpickle FullDisk by value
    flag = tmp_path / "full"
    flag.touch()
    disk = pafs.PyFileSystem(pafs.FSSpecHandler(FullDisk(str(flag))))
    monkeypatch.setattr(driver, "make_tuner", functools.partial(driver.make_tuner, filesystem=disk))
    # Tune's state then holds FullDisk by value (code), which reading it back refuses
    # (prune_sweep.trusted_state): this test trusts its own storage
    for name in ("guarded", "guarded_resume"):
        monkeypatch.setattr(trusted_state, name, lambda exp: contextlib.nullcontext())
    path = write_sweep(tmp_path, "full", {"prune.ratio": {"grid": [0.3, 0.5]}},
                       base={"finetune": {"epochs": 3, "max_steps": 2}})
    exp = tmp_path / "full"

    assert main([str(path), "--storage", str(storage)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("prune-sweep: error:")]
    assert len(lines) == 1 and "storage full (trial " in lines[0] and "No space left on device" in lines[0], err
    assert "0 trials finished, 2 unfinished (each continues from its last checkpoint)" in lines[0] and lines[0].endswith(
        f"continue with: python launch.py {path} --resume --storage {storage}")
    exp = storage / "full"
    before = trials(exp)
    assert len(before) == 2 and not any(r.get("stage") == "done" for rows in before.values() for r in rows)
    assert all(list((exp / name).glob("checkpoint_000000")) for name in before)  # what was computed stays

    flag.unlink()  # space returns
    assert main([str(path), "--storage", str(storage), "--resume", "--no-quiet-latency"]) == 0
    assert "2 finished" in capsys.readouterr().out
    after = trials(exp)
    assert after.keys() == before.keys()  # no trial was created twice
    for name, rows in after.items():
        done_row(rows)  # exactly one final row
        epochs = [r["epoch"] for r in rows if r.get("stage") == "finetune"]
        assert epochs == [1, 2, 3], (name, epochs)  # epoch 1 from its checkpoint: run and reported once


def test_a_full_disk_while_bases_train_or_tune_saves_is_the_same_one_line(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("saving failed") from OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/s/base.pt")

    monkeypatch.setattr(bases, "prepare_bases", full)
    path = write_sweep(tmp_path, "fullbase", {"prune.ratio": {"grid": [0.3]}})
    assert main([str(path), "--storage", str(tmp_path)]) == 1
    # this module's Ray forwards its workers' output (``(run_trial pid=N) ...``: a trial actor stopped
    # at shutdown can print Ray's SystemExit); prune-sweep's own output is the rest
    raw = capsys.readouterr().err.strip()
    err = "\n".join(ln for ln in raw.splitlines() if not re.match(r"(\x1b\[\d+m)?\(\w+ pid=\d+", ln))
    assert err.startswith("prune-sweep: error: storage full ([Errno 28] No space left on device: '/s/base.pt'); "
                          "stopped: 0 trials finished, 1 unfinished") and "--resume" in err and "\n" not in err, raw
    assert driver.no_space("Failure # 2\nOSError: [Errno 28] No space left on device: 'x'\n") == (
        "OSError: [Errno 28] No space left on device: 'x'")
    assert driver.no_space(RuntimeError("disk quota")) is None and driver.no_space("") is None
    monkeypatch.setattr(bases, "prepare_bases", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")))
    assert main([str(path), "--storage", str(tmp_path), "--resume"]) == 2  # any other failure is not a full disk
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("prune-sweep:")]
    assert err == [f"prune-sweep: error: storage {tmp_path}: Permission denied; choose another --storage or --name"], err


def test_base_progress_lines_give_the_time_left_at_each_bases_pace():
    progress = bases.BaseProgress.__new__(bases.BaseProgress)  # no queue: the lines alone
    progress.names = {"aa": "resnet20 on mnist5k, seed 0"}
    progress.latest = {"aa": {"epoch": 7, "epochs": 100, "train_loss": 0.5, "val_acc": 91.234}}
    progress.seconds, progress.count = {"aa": 240.0}, {"aa": 2}  # resumed at epoch 6: 2 epochs seen, 120 s each
    assert progress.lines() == ["base aa (resnet20 on mnist5k, seed 0): epoch 7/100, loss 0.5000, val acc 91.23%, "
                                "3 h 06 min left"]
    progress.latest["aa"].update(epoch=99)
    assert progress.lines()[0].endswith("epoch 99/100, loss 0.5000, val acc 91.23%, 2 min 00 s left")


def test_a_bases_progress_line_within_an_epoch_reaches_the_quiet_view(capsys):
    """A base task's log (queued_log) prints every line and queues a progress line's numbers;
    the driver's view shows them until the epoch's record replaces them (counted alone in the pace)."""
    from prune_core.train import progress_line

    class Queue(list):  # what the base task and the driver call of the Ray queue between them
        put_nowait = list.append

        def qsize(self):
            return len(self)

        def get_nowait_batch(self, n):
            batch, self[:] = self[:n], self[n:]
            return batch

    queue = Queue()
    log = queued_log(lambda record: queue.put_nowait({**record, "hash": "aa"}))
    log(progress_line("base", 2, 30, 120, 469, 120 * 128, 37.3))  # 15,360 images in 37.3 s
    log("training base resnet20 on mnist5k")  # any other line: printed only
    progress = bases.BaseProgress.__new__(bases.BaseProgress)  # the Ray queue's place taken by the list
    progress.queue, progress.names = queue, {"aa": "resnet20 on mnist5k, seed 0"}
    progress.latest, progress.seconds, progress.count = {}, {}, {}
    progress.show()
    assert capsys.readouterr().out.splitlines() == [
        "base epoch 2/30: step 120/469, 412 img/s, 0:01:48 left", "training base resnet20 on mnist5k",
        "base aa (resnet20 on mnist5k, seed 0): epoch 2/30, step 120/469, 412 img/s, 1 min 48 s left in the epoch"]
    queue.put_nowait({"hash": "aa", "epoch": 2, "epochs": 30, "train_loss": 0.5, "val_acc": 91.234, "epoch_s": 120.0})
    progress.show()
    assert capsys.readouterr().out.splitlines() == [
        "base aa (resnet20 on mnist5k, seed 0): epoch 2/30, loss 0.5000, val acc 91.23%, 56 min 00 s left"]
    assert progress.count == {"aa": 1}


def test_mo_asha_stops_the_trial_its_rung_ranks_in_the_bottom_half(tmp_path, storage):
    # one objective (dense FLOPs, fixed by the ratio) and one trial at a time make the decisions
    # exact: 0.5 is first at the rung at epoch 1; 0.2 keeps more FLOPs (1 of 2 ahead: stopped);
    # 0.3 has 0.5 ahead only (1 < 3 / 2: continues)
    search = {"algorithm": "grid", "max_concurrent": 1, "objectives": {"flops_kept_dense": "min"}}
    path = write_sweep(tmp_path, "moasha", {"prune.ratio": {"grid": [0.5, 0.2, 0.3]}}, search=search,
                       scheduler={"name": "mo_asha", "grace_period": 1, "reduction_factor": 2}, loggers=[])
    assert main([str(path), "--storage", str(storage), "--no-quiet-latency"]) == 0
    exp = storage / "moasha"
    by_ratio = {p["prune.ratio"]: rows for p, rows in zip(params(exp), trials(exp).values())}
    epochs = {r: [row["epoch"] for row in rows if row.get("stage") == "finetune"] for r, rows in by_ratio.items()}
    assert epochs == {0.5: [1, 2], 0.2: [1], 0.3: [1, 2]}
    assert [any(row.get("stage") == "done" for row in by_ratio[r]) for r in (0.5, 0.2, 0.3)] == [True, False, True]
    # --resume: the trials Tune restores from the experiment, added to the scheduler as pickled
    # (empty rungs), put every trial's rung result back from its result.json in storage
    from ray.tune import ExperimentAnalysis

    from prune_sweep.moasha import MOASHAScheduler

    resumed = MOASHAScheduler([("flops_kept_dense", "min")], max_t=1, grace_period=1, reduction_factor=2)
    restored = ExperimentAnalysis(str(exp)).trials
    for trial in restored:
        resumed.on_trial_add(None, trial)
    flops = {t.trial_id: next(r["flops_kept_dense"] for r in trials(exp)[Path(t.storage.trial_fs_path).name]
                              if r.get("epoch") == 1) for t in restored}
    assert resumed._rungs == [(1.0, {k: (v,) for k, v in flops.items()})] and len(flops) == 3
