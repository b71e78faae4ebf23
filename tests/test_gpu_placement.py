"""Trials spread over GPUs, as Ray places them: sweeps on a Ray that declares 2 logical GPUs on this
CPU machine (``ray.init(num_gpus=2)``; Ray sets ``CUDA_VISIBLE_DEVICES`` for each task and trial).

The sweeps' ``runtime.device: cpu`` is the hook that says a worker needs no CUDA
(``prune_sweep.placement``): trials hold their GPU share and compute on the CPU. Each model is a
probe, a builder file that logs, in every process that builds it (base task, trials, quiet latency
pass), the GPU ids and the share Ray gave it; in a trial it also waits until a whole wave of trials
has started (30 s at most), so trials that may run at once are seen to. A Tune callback on the
driver gives each trial's span. With ``runtime.device: auto`` the same logical GPU is refused in
one line naming the node and the id, in the base task and in a trial alike.

Its own module: its own Ray, with 8 logical CPUs and 2 logical GPUs, so the GPUs bind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import ray
import yaml
from _sweeps import trial_rows
from ray import tune

from prune_sweep import driver
from prune_sweep.launch_cli import main as launch

pytestmark = pytest.mark.usefixtures("isolated_registries")  # the probe files' models leave with the module

PROBE = '''import json, os, time

from torch import nn

LOG, WAVE, DRIVER = {log!r}, {wave}, {driver}
_waited = set()


def _trials():
    with open(LOG) as fh:
        return {{json.loads(line).get("trial") for line in fh if line.endswith("\\n")}} - {{None}}


def build(num_classes, in_channels, image_size, width):
    import ray

    rec = {{"t": time.time(), "pid": os.getpid(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "trial": None}}
    if os.getpid() != DRIVER and ray.is_initialized():
        ctx = ray.get_runtime_context()
        rec.update(ids=[str(i) for i in ray.get_gpu_ids()], gpus=ctx.get_assigned_resources().get("GPU", 0.0))
        if ctx.get_actor_id() is not None:  # a Tune trial (base task and latency pass are tasks)
            from ray import tune

            rec["trial"] = tune.get_context().get_trial_id()
    with open(LOG, "a") as fh:
        fh.write(json.dumps(rec) + "\\n")
    if rec["trial"] and rec["trial"] not in _waited:
        _waited.add(rec["trial"])
        t0 = time.time()
        while len(_trials()) < WAVE and time.time() < t0 + 30:
            time.sleep(0.05)
        with open(LOG, "a") as fh:
            fh.write(json.dumps({{"t": time.time(), "released": rec["trial"], "waited": time.time() - t0,
                                 "wave_met": len(_trials()) >= WAVE}}) + "\\n")
    c = max(2, round(8 * width))
    return nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
'''


class Spans(tune.Callback):
    """Each trial's start and end as Tune saw them on the driver."""

    def __init__(self) -> None:
        self.events: List[Tuple[float, int, str]] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.events.append((time.time(), 1, trial.trial_id))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.append((time.time(), -1, trial.trial_id))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.events.append((time.time(), -1, trial.trial_id))

    def spans(self) -> Dict[str, Tuple[float, float]]:
        start = {tid: t for t, d, tid in self.events if d == 1}
        return {tid: (start[tid], t) for t, d, tid in self.events if d == -1}


@pytest.fixture(scope="module", autouse=True)
def logical_gpus():
    ray.init(address="local", num_cpus=8, num_gpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def spans(monkeypatch):
    recorder = Spans()
    make = driver.make_callbacks
    monkeypatch.setattr(driver, "make_callbacks", lambda *a: [*make(*a), recorder])
    return recorder


def write_sweep(folder: Path, name: str, ratios: List[float], gpu: float, wave: int, device: str = "cpu",
                **base) -> Tuple[Path, Path]:
    """A sweep of the probe model; returns it and the probe's log."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "probe.jsonl"
    log.touch()
    (folder / f"probe_{name}.py").write_text(PROBE.format(log=str(log), wave=wave, driver=os.getpid()))
    sweep = folder / f"{name}.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": name,
        "base": {"data": {"name": "mnist5k", "limit_train": 128, "batch_size": 64},
                 "model": {"name": f"probe_{name}.py:build", **base}, "prune": {"method": "channel"},
                 "train": {"epochs": 1, "max_steps": 2}, "finetune": {"epochs": 1, "max_steps": 2},
                 "runtime": {"device": device, "latency_repeats": 2, "latency_batch": 2}},
        "space": {"prune.ratio": {"grid": ratios}}, "search": {"algorithm": "grid"}, "scheduler": "fifo",
        "resources": {"cpu": 1, "gpu": gpu}, "max_failures": 0}))
    return sweep, log


def records(log: Path) -> List[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def most_at_once(spans: Dict[str, Tuple[float, float]], ids: Dict[str, str]) -> Tuple[int, Dict[str, int]]:
    """The most trials running at once, in all and on each GPU id."""
    events = sorted((t, d, tid) for tid, (a, b) in spans.items() for t, d in ((a, 1), (b, -1)))
    running: Dict[str, int] = {}
    most, per_id = 0, {}
    for _, d, tid in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running[ids[tid]] = running.get(ids[tid], 0) + d
        most = max(most, sum(running.values()))
        for gid, n in running.items():
            per_id[gid] = max(per_id.get(gid, 0), n)
    return most, per_id


def final_rows(exp: Path) -> Dict[str, dict]:
    out = {}
    for rows in trial_rows(exp).values():
        done = [r for r in rows if r.get("stage") == "done"]
        if done:
            out[done[0]["trial_id"]] = done[0]
    return out


def test_half_a_gpu_runs_four_trials_two_per_gpu_while_base_and_latency_pass_hold_whole_gpus(tmp_path, spans,
                                                                                               capsys):
    sweep, log = write_sweep(tmp_path / "half", "half", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], gpu=0.5, wave=4)
    assert launch([str(sweep), "--storage", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    finals = final_rows(tmp_path / "store" / "half")
    assert len(finals) == 6, out
    # every trial saw exactly one GPU id, the one its rows record; both GPUs were used
    probe = records(log)
    seen = {r["trial"]: r for r in probe if r.get("trial")}
    assert seen.keys() == finals.keys()
    for tid, r in seen.items():
        assert r["ids"] == [r["cvd"]] and r["ids"][0] in {"0", "1"} and r["gpus"] == 0.5, r
        assert finals[tid]["gpu_ids"] == r["cvd"]
    ids = {tid: r["cvd"] for tid, r in seen.items()}
    assert set(ids.values()) == {"0", "1"}
    # four at once, two per GPU: the first wave met at the probe, and never more (Tune's spans)
    released = [r for r in probe if "released" in r]
    assert len(released) == 6 and all(r["wave_met"] for r in released), released
    most, per_id = most_at_once(spans.spans(), ids)
    assert most == 4 and per_id == {"0": 2, "1": 2}, (spans.events, ids)
    # the base task and the quiet pass each held a whole GPU, and no trial ran beside them
    tasks = [r for r in probe if not r.get("trial") and "ids" in r]
    first_start = min(a for a, _ in spans.spans().values())
    last_end = max(b for _, b in spans.spans().values())
    base = [r for r in tasks if r["t"] < first_start]
    timing = [r for r in tasks if r["t"] > last_end]
    assert base and timing and len(base) + len(timing) == len(tasks), (tasks, spans.events)
    for r in base + timing:
        assert r["gpus"] == 1.0 and r["ids"] == [r["cvd"]] and r["cvd"] in {"0", "1"}, r
    assert "training 1 base model" in out and f"on GPU {base[0]['cvd']} of " in out
    latency_line = next(ln for ln in out.splitlines() if ln.startswith("latency: "))
    assert f"timed alone on cpu x1 threads (Ray's GPU {timing[0]['cvd']})" in latency_line, latency_line
    assert json.loads((tmp_path / "store" / "half" / "latency.json").read_text()).keys() == finals.keys()


def test_a_whole_gpu_runs_two_trials_one_per_gpu(tmp_path, spans):
    sweep, log = write_sweep(tmp_path / "whole", "whole", [0.3, 0.5, 0.7], gpu=1, wave=2)
    assert launch([str(sweep), "--storage", str(tmp_path / "store"), "--no-quiet-latency"]) == 0
    seen = {r["trial"]: r for r in records(log) if r.get("trial")}
    assert len(seen) == 3 and all(r["gpus"] == 1.0 and r["ids"] == [r["cvd"]] for r in seen.values()), seen
    ids = {tid: r["cvd"] for tid, r in seen.items()}
    most, per_id = most_at_once(spans.spans(), ids)
    assert most == 2 and max(per_id.values()) == 1, (spans.events, ids)


def test_a_gpu_cuda_cannot_use_fails_in_one_line_naming_node_and_id_never_on_the_cpu(tmp_path, capsys):
    """``runtime.device: auto`` with a GPU share resolves to CUDA (``expand.trial_base``); here the
    GPU Ray gave is logical, CUDA does not answer, and the worker says so instead of running on the
    CPU: the base task (the sweep stops) and a trial (its error, listed in the summary)."""
    node_ip = ray.util.get_node_ip_address()
    sweep, _ = write_sweep(tmp_path / "auto", "auto", [0.3], gpu=0.5, wave=1, device="auto")
    capsys.readouterr()
    assert launch([str(sweep), "--storage", str(tmp_path / "store")]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("prune-sweep: error: base training failed: base ")
    for words in (f"on node {node_ip} (", "Ray gave it GPU 0 (CUDA_VISIBLE_DEVICES=0)",
                  "torch.cuda.is_available() is False", "resources.gpu: 0"):
        assert words in captured.err, captured.err
    # a given model trains no base: the trial itself finds the GPU unusable
    import torch

    weights = tmp_path / "given.pt"
    sweep, log = write_sweep(tmp_path / "given", "given", [0.3], gpu=1, wave=1, device="auto",
                             pretrained_path=str(weights))
    torch.save(build_probe(tmp_path / "given" / "probe_given.py").state_dict(), weights)
    assert launch([str(sweep), "--storage", str(tmp_path / "store"), "--no-quiet-latency"]) == 1
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if "Ray gave it GPU" in ln]
    assert "trial " in line and f"on node {node_ip} (" in line and "(CUDA_VISIBLE_DEVICES=0)" in line, line
    assert "trials: 0 finished, 0 stopped early by the scheduler, 1 errored" in out
    assert not [r for r in records(log) if r.get("trial")]  # it never built a model on the CPU


def build_probe(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_given", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(10, 1, 28, 1.0)
