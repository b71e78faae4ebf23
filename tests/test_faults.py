"""The fault matrix: what a kill, a corrupt file or a second process does to runs and caches.

Rows here run ``prune_core`` in this process or in plain subprocesses (no Ray): a truncated or
altered cached base, a base trained on other data, a corrupt training or fine-tune checkpoint,
a corrupt saved pruned model, a kill between two checkpoint files, two processes that need the same
base, and a lock holder killed while it trains. Each asserts on the files, the epoch counters and
the one-line warning. README, "Reliability", lists what is guaranteed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _sweeps import trial_rows, write_sweep

from prune_core import SMOKE, ExperimentConfig, run
from prune_core.checkpoints import CorruptFile, load_checked, save_atomic, sidecar
from prune_core.pipeline import base_path, ensure_base

ROOT = Path(__file__).resolve().parents[1]


class Log(list):
    def __call__(self, msg: str) -> None:
        self.append(msg)

    def warnings(self):
        return [m for m in self if m.startswith("warning:")]


def smoke(cache, **dotted) -> ExperimentConfig:
    values = {**SMOKE, "runtime.cache_dir": str(cache), "runtime.device": "cpu", "data.limit_train": 128,
              "model.width": 0.5, **dotted}
    return ExperimentConfig.from_dict(values)


def aside(path: Path):
    return sorted(p for p in path.parent.glob(path.name + ".corrupt-*") if not p.name.endswith(".sha256"))


# --------------------------------------------------------------------------------------------
# checksummed files


def test_a_file_that_fails_its_checksum_or_is_truncated_is_refused(tmp_path):
    path = tmp_path / "f.pt"
    save_atomic({"w": torch.arange(1000.0)}, path)
    assert load_checked(path)["w"][-1] == 999.0
    assert sidecar(path).read_text().split()[1] == str(path.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the zip still opens, the checksum does not match
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match="SHA-256"):
        load_checked(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CorruptFile, match="truncated"):
        load_checked(path)
    sidecar(path).unlink()  # no checksum (a model saved by hand): torch still refuses half a file
    with pytest.raises(CorruptFile, match="not a readable torch file"):
        load_checked(path)


# --------------------------------------------------------------------------------------------
# the base cache


def test_a_corrupt_cached_base_is_moved_aside_and_trained_again(tmp_path):
    cfg = smoke(tmp_path)
    first = ensure_base(cfg, log=Log())
    assert first.source == "trained"
    path = base_path(cfg)
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as by a full disk or a copy cut short
    log = Log()
    again = ensure_base(cfg, log=log)
    assert again.source == "trained"
    (line,) = log.warnings()
    assert str(path) in line and "truncated" in line and "training the base again" in line
    assert len(aside(path)) == 1 and aside(path)[0].stat().st_size == 1000
    assert ensure_base(cfg, log=Log()).source == "cache"  # the retrained file passes its check
    for key, value in again.artifact["model"].items():  # same seed, same data: the same base
        assert torch.equal(value, first.artifact["model"][key]), key


def test_a_base_trained_on_other_data_is_not_reused(tmp_path):
    cfg = smoke(tmp_path)
    ensure_base(cfg, log=Log())
    path = base_path(cfg)
    artifact = load_checked(path)
    artifact["provenance"]["data"] = "0123456789abcdef"  # as if the dataset's files had been replaced
    save_atomic(artifact, path)
    log = Log()
    assert ensure_base(cfg, log=log).source == "trained"
    (line,) = log.warnings()
    assert "trained on other data" in line and "0123456789abcdef" in line
    assert load_checked(path)["provenance"]["data"] != "0123456789abcdef"


def test_base_key_covers_precision_device_determinism_and_versions(monkeypatch):
    cfg = ExperimentConfig.from_dict({"runtime.device": "cpu"})
    h = cfg.base_hash()
    assert cfg.replace(**{"runtime.amp": False}).base_hash() == h  # fp32 on the CPU either way
    assert cfg.replace(**{"runtime.cpu_bf16": True}).base_hash() != h  # bf16 autocast trains otherwise
    assert cfg.replace(**{"runtime.deterministic": True}).base_hash() != h
    cuda = cfg.replace(**{"runtime.device": "cuda"})
    assert cuda.base_hash() != h and cuda.replace(**{"runtime.amp": False}).base_hash() != cuda.base_hash()
    assert cfg.replace(**{"runtime.threads": 1, "runtime.progress": "off"}).base_hash() == h
    import prune_core.config as config

    monkeypatch.setattr(config, "major_versions", lambda: {"torch": "3", "torchvision": "0.40"})
    assert cfg.base_hash() != h


def test_killed_between_checkpoint_and_rewind_states_resumes_with_them(tmp_path):
    """fit writes its checkpoint, then early.pt: a kill between them leaves the last rewind state
    only in the checkpoint. Resuming takes it from there, and the base equals an unbroken one."""
    straight = ensure_base(smoke(tmp_path / "a", **{"train.epochs": 3}), log=Log())
    cfg = smoke(tmp_path / "b", **{"train.epochs": 3, "runtime.resume": True})
    import prune_core.pipeline as pipeline

    class Killed(Exception):
        pass

    real_save = pipeline.save_atomic

    def die_on_second_early(obj, path):
        if path.name == "early.pt" and 2 in obj:
            raise Killed  # epoch 2's checkpoint is written, its rewind state is not
        real_save(obj, path)

    pipeline.save_atomic = die_on_second_early
    try:
        with pytest.raises(Killed):
            ensure_base(cfg, log=Log())
    finally:
        pipeline.save_atomic = real_save
    assert sorted(load_checked(base_path(cfg).parent / "early.pt")) == [0, 1]
    log = Log()
    resumed = ensure_base(cfg, log=log)
    assert any("resumed from" in m and "at epoch 3" in m for m in log), log
    assert [r["epoch"] for r in resumed.artifact["history"]] == [1, 2, 3]
    assert sorted(resumed.artifact["early"]) == [0, 1, 2, 3]
    for epoch in (2, 3):
        for key, value in straight.artifact["early"][epoch].items():
            assert torch.allclose(resumed.artifact["early"][epoch][key], value), (epoch, key)


def test_a_corrupt_base_training_checkpoint_restarts_base_training(tmp_path):
    cfg = smoke(tmp_path, **{"train.epochs": 2, "runtime.resume": True})
    ensure_base(cfg, log=Log())
    folder = base_path(cfg).parent
    base_path(cfg).unlink()  # as if killed after the last epoch's checkpoint, before base.pt
    ckpt = folder / "train_ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    log = Log()
    again = ensure_base(cfg, log=log)
    assert again.source == "trained"
    assert any("train_ckpt.pt is bad" in w and "starts again from epoch 1" in w for w in log.warnings()), log
    assert [r["epoch"] for r in again.artifact["history"]] == [1, 2]  # every epoch once, from the start


# --------------------------------------------------------------------------------------------
# a run's own checkpoints


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("base_cache")


def test_a_corrupt_finetune_checkpoint_restarts_the_finetune(shared_cache, tmp_path):
    cfg = smoke(shared_cache, **{"finetune.epochs": 3, "runtime.workdir": str(tmp_path / "run")})

    class Killed(Exception):
        pass

    def die_after_two(m, _ckpt):
        if m.get("epoch") == 2:
            raise Killed

    with pytest.raises(Killed):
        run(cfg, reporter=die_after_two, log=Log())
    ckpt = tmp_path / "run" / "finetune_ckpt.pt"
    data = bytearray(ckpt.read_bytes())
    data[-5000] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    seen, log = [], Log()
    m = run(cfg.replace(**{"runtime.resume": True}), reporter=lambda r, c: seen.append(r.get("epoch")), log=log)
    assert seen[:-1] == [1, 2, 3]  # the fine-tune ran again from its first epoch, each epoch once
    assert m["finetune_epochs"] == 3
    (line,) = log.warnings()
    assert "finetune_ckpt.pt is bad" in line and "SHA-256" in line and "finetune starts again" in line
    assert len(aside(ckpt)) == 1


def test_a_corrupt_saved_pruned_model_prunes_again(shared_cache, tmp_path):
    cfg = smoke(shared_cache, **{"finetune.epochs": 2, "runtime.workdir": str(tmp_path / "run")})

    class Killed(Exception):
        pass

    def die_at_first(m, _ckpt):
        raise Killed

    with pytest.raises(Killed):
        run(cfg, reporter=die_at_first, log=Log())
    first = json.loads((tmp_path / "run" / "pre_finetune.json").read_text())  # what pruning gave
    pruned = tmp_path / "run" / "pruned_model.pt"
    pruned.write_bytes(pruned.read_bytes()[:200])
    seen, log = [], Log()
    m = run(cfg.replace(**{"runtime.resume": True}), reporter=lambda r, c: seen.append(r.get("epoch")), log=log)
    (line,) = log.warnings()
    assert "pruned model" in line and "pruning again" in line
    assert seen[:-1] == [1, 2]  # the old fine-tune checkpoint belonged to the bad file: not resumed
    assert m["flops_final"] == first["flops_final"] and m["acc_pruned"] == first["acc_pruned"]  # the same pruning


# --------------------------------------------------------------------------------------------
# processes that share a base


WORKER = """
import json, sys
from prune_core import SMOKE, ExperimentConfig
from prune_core.pipeline import ensure_base
cfg = ExperimentConfig.from_dict({**SMOKE, "runtime.cache_dir": sys.argv[1], "runtime.device": "cpu",
                                  "data.limit_train": 64 * int(sys.argv[3]), "data.batch_size": 64,
                                  "model.width": 0.5, "train.epochs": int(sys.argv[2]),
                                  "train.max_steps": int(sys.argv[3]), "runtime.resume": True,
                                  "runtime.threads": 1})
info = ensure_base(cfg, log=lambda m: print(m, flush=True))
print(json.dumps({"source": info.source, "epochs": [r["epoch"] for r in info.artifact["history"]]}), flush=True)
"""


def start(cache: Path, epochs: int, steps: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, not another install of it
    return subprocess.Popen([sys.executable, "-c", WORKER, str(cache), str(epochs), str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def outcome(proc: subprocess.Popen) -> dict:
    """The worker's result line, with its log as ``log``."""
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    *log, last = out.strip().splitlines()
    return {**json.loads(last), "log": log}


def test_two_processes_needing_one_base_train_it_once(tmp_path):
    procs = [start(tmp_path, 2, 4) for _ in range(2)]
    results = [outcome(p) for p in procs]
    assert sorted(r["source"] for r in results) == ["cache", "trained"]
    assert all(r["epochs"] == [1, 2] for r in results)


def test_a_killed_lock_holder_is_taken_over_and_its_training_resumed(tmp_path):
    """The process training a base is SIGKILLed after its first epoch: the lease it held names a
    dead process on this host, so the next one takes it at once and resumes at epoch 2."""
    holder = start(tmp_path, 3, 20)
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("*/train_ckpt.pt")):
        assert holder.poll() is None, holder.communicate()[0]
        time.sleep(0.05)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    (lock,) = tmp_path.glob("*/base.lock")  # left behind by the killed holder
    t0 = time.time()
    second = outcome(start(tmp_path, 3, 20))
    assert second["source"] == "trained"
    assert second["epochs"] == [1, 2, 3]
    resumed = [ln for ln in second["log"] if "resumed from" in ln]
    assert resumed and "at epoch 1" not in resumed[0], second["log"]  # epoch 1 was not trained again
    assert not lock.exists()  # taken over, then released
    assert time.time() - t0 < 120


# --------------------------------------------------------------------------------------------
# a sweep on Ray: the base task and a trial's worker killed


def processes_named(prefix: str):
    """Pids whose command line starts with ``prefix`` (Ray titles a worker ``ray::<task>`` while it
    runs one)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(prefix):
                yield int(entry.name)


def test_killed_base_task_and_trial_worker_resume_from_their_checkpoints(tmp_path):
    """One sweep, two kills: the Ray task training the base is SIGKILLed after its first epoch
    (Ray retries it; the retry takes over the dead task's lock and resumes at epoch 2), then a
    trial's worker process is SIGKILLed mid-fine-tune (Tune restores the trial on a new worker from
    its last epoch's checkpoint). Every trial finishes once and every epoch is trained once."""
    ft_epochs = 3
    path = write_sweep(tmp_path, "kills", [0.3, 0.5], train=(3, 12), finetune=(ft_epochs, 15), limit_train=960,
                       search={"algorithm": "grid", "max_concurrent": 1}, max_failures=1)
    exp = tmp_path / "kills"
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), str(path), "--storage", str(tmp_path),
                             "--no-dashboard", "--no-quiet-latency", "-v"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def wait_for(check, what):
        deadline = time.time() + 240
        while time.time() < deadline:
            assert proc.poll() is None, f"the sweep ended before {what}:\n" + proc.stdout.read()
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def base_task():
        if not list(exp.glob("base_cache/*/train_ckpt.pt")):
            return None
        return next(iter(processes_named("ray::train_base")), None)

    def trial_mid_finetune():
        for name, rows in trial_rows(exp).items():
            if any(r.get("stage") == "finetune" for r in rows) and not any(r.get("stage") == "done" for r in rows):
                return name, rows[-1]["pid"]
        return None

    try:
        os.kill(wait_for(base_task, "the base task's first epoch"), signal.SIGKILL)
        killed_trial, pid = wait_for(trial_mid_finetune, "a trial's first fine-tune epoch")
        os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "2 finished" in out, out
    (log,) = exp.glob("base_cache/*/base_task.log")
    assert len(log.read_text().splitlines()) == 1  # the base was trained (and finished) once
    assert "base: resumed from" in out  # by the retried task, from the killed one's checkpoint
    base = load_checked(log.parent / "base.pt")
    assert [r["epoch"] for r in base["history"]] == [1, 2, 3]
    trials = trial_rows(exp)
    assert len(trials) == 2 and killed_trial in trials
    for name, rows in trials.items():
        assert sum(r.get("stage") == "done" for r in rows) == 1, name
        epochs = [r["epoch"] for r in rows if r.get("stage") == "finetune"]
        assert sorted(set(epochs)) == list(range(1, ft_epochs + 1)), (name, epochs)
        assert epochs.count(1) == 1, (name, epochs)  # the killed trial went on from its checkpoint
    assert pid not in {r["pid"] for r in trials[killed_trial] if r.get("stage") == "done"}


def test_two_sweeps_started_together_on_one_storage_train_their_base_once(tmp_path):
    """Sweeps "one" and "two" need the same base: one trains it, the other waits on its lease and
    reuses it. A third launch names "one" too: one of the two drives that experiment, the other is
    refused in one line (exit 2), so no Tune state is written by two drivers."""
    path = write_sweep(tmp_path, "together", [0.3], train=(1, 10), finetune=(1, 3), limit_train=640,
                       search={"algorithm": "grid"})
    procs = [subprocess.Popen([sys.executable, str(ROOT / "launch.py"), str(path), "--storage", str(tmp_path / "s"),
                               "--name", name, "--no-dashboard", "--no-quiet-latency"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("one", "two", "one")]
    runs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 0, 2], runs
    refused = codes.index(2)
    assert refused in (0, 2)  # a launch of "one"
    (line,) = runs[refused][1].strip().splitlines()
    assert line.startswith("prune-sweep: error: ") and str(tmp_path / "s" / "one") in line, line
    assert "is being run by" in line or "already holds a sweep" in line, line
    out_one, out_two = runs[2 if refused == 0 else 0][0], runs[1][0]
    for out in (out_one, out_two):
        assert "1 finished" in out, out
    assert len(list((tmp_path / "s" / "one").glob("*/result.json"))) == 1  # one trial, run by one launch
    logs = list((tmp_path / "s").glob("*/base_cache/*/base_task.log"))
    assert len(logs) == 1 and len(logs[0].read_text().splitlines()) == 1, logs  # trained once, by one sweep
    trained_by = logs[0].parts[-4]
    reused_by = "two" if trained_by == "one" else "one"
    assert ": reused" in (out_two if reused_by == "two" else out_one)
    assert (tmp_path / "s" / reused_by / "base_cache" / logs[0].parts[-2] / "base.pt").is_file()
