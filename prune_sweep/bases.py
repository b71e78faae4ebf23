"""Each distinct base of a sweep, trained once before its trials: bases another sweep in the same
storage trained are adopted, the rest train in parallel Ray tasks under a lease per base (two
sweeps started together train a shared base once), with a progress line per base without ``-v``.
Also each launch's provenance (``provenance.json``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence

import ray

from prune_core import LEASE_S
from prune_core.config import ExperimentConfig
from prune_core.sections import flat_value
from prune_sweep.expand import base_configs, trial_base
from prune_sweep.spec import Sweep
from prune_sweep.storage import BASE_FILE, BASE_SUM, Store, base_rel
from prune_sweep.trial import train_base

LOCKS = ".base_locks"  # in the storage root: a lease per base a driver is preparing (storage_leases)
PROGRESS_PERIOD_S = 10  # progress (base lines, the trial table) is printed at most this often


def record_provenance(sweep: Sweep, exp: Store, resumed: bool) -> None:
    """Add this launch to ``<exp>/provenance.json``: the driver's versions and commit, and each alive
    node's versions and device (a zero-CPU task pinned to every node), so a trial's ``node_id``
    names what it ran on. A launch that cannot record it says so in one line and goes on."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from prune_core import provenance

    device = "cuda" if sweep.resources.gpu > 0 else "cpu"
    task = ray.remote(num_cpus=0)(provenance.record)
    try:
        refs = {n["NodeID"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(device if n.get("Resources", {}).get("GPU") else "cpu") for n in ray.nodes() if n.get("Alive")}
        nodes = dict(zip(refs, ray.get(list(refs.values()), timeout=120)))
        old = json.loads(exp.read_text(provenance.FILE) or "{}").get("launches", []) if resumed else []
        launch = {"resumed": resumed, "driver": provenance.record("cpu"), "nodes": nodes}
        exp.write_text(provenance.FILE, json.dumps({"launches": [*old, launch]}, indent=2) + "\n")
    except (ray.exceptions.RayError, OSError, ValueError, AttributeError) as exc:
        print(f"provenance: not recorded ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")


def adopt_bases(bases: Mapping[str, ExperimentConfig], storage: Store, name: str) -> List[str]:
    """Copy bases another sweep in the same storage already trained into this experiment."""
    adopted = []
    exp = Store(storage.uri(name))
    others = [d for d in storage.subdirs() if d != name]
    for h in bases:
        rel = base_rel(h)
        if exp.exists(rel):
            continue
        for other in others:
            src = Store(storage.uri(other))
            if not src.exists(rel):
                continue
            names = [n for n in (BASE_SUM, BASE_FILE) if src.exists(base_rel(h, n))]  # checksum first
            for name in names:
                if exp.local:
                    dst = Path(exp.path(base_rel(h, name)))
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(src.path(base_rel(h, name)), dst)
                    except OSError:
                        shutil.copyfile(src.path(base_rel(h, name)), dst)
                else:
                    with tempfile.TemporaryDirectory() as tmp:
                        src.get(base_rel(h, name), Path(tmp) / name)
                        exp.put(Path(tmp) / name, base_rel(h, name))
            adopted.append(f"{h} (from {other})")
            break
    return adopted


def prepare_bases(sweep: Sweep, configs: Sequence[Mapping[str, Any]], storage: Store, exp: Store,
                  quiet: bool = True) -> None:
    """Train each distinct base of the sweep once, in parallel Ray tasks with a trial's CPUs and
    whole GPUs (``base_gpus``); ``quiet`` (no ``-v``): with a line per base for each period in which
    epochs ended."""
    bases = base_configs(sweep, configs)
    if not bases:
        print("bases: none to train (model.pretrained_path, or a base key drawn from a continuous range: "
              "each trial then trains or loads its own)")
        return
    with storage_leases(storage, list(bases)):
        _adopt_or_train(sweep, bases, storage, exp, quiet)


def _adopt_or_train(sweep: Sweep, bases: Mapping[str, ExperimentConfig], storage: Store, exp: Store,
                    quiet: bool) -> None:
    for line in adopt_bases(bases, storage, sweep.name):
        print(f"base {line}: reused")
    todo = {h: cfg for h, cfg in bases.items() if not exp.exists(base_rel(h))}
    for h in bases.keys() - todo.keys():
        print(f"base {h}: cached")
    if not todo:
        return
    print(f"training {len(todo)} base model{'s' * (len(todo) > 1)} "
          f"({', '.join(f'{c.model.name} on {c.data.name}, seed {c.runtime.seed}' for c in todo.values())})")
    task = ray.remote(train_base).options(num_cpus=sweep.resources.cpu, num_gpus=base_gpus(sweep))
    t0 = time.perf_counter()
    progress = BaseProgress(todo) if quiet else None
    refs = [task.remote({**cfg_flat(sweep, cfg), "runtime.threads": threads(sweep)}, exp.location,
                        progress.queue if progress else None) for cfg in todo.values()]
    while progress is not None and ray.wait(refs, num_returns=len(refs), timeout=PROGRESS_PERIOD_S)[1]:
        progress.show()
    if progress is not None:
        progress.show()  # the epochs that ended since the last period
    for info in ray.get(refs):
        what = f"trained in {info['seconds']:.1f} s" if info["trained"] else "cached"
        on = f" on GPU {info['gpu_ids']} of {info['node_ip']}" if info.get("gpu_ids") else ""
        print(f"base {info['hash']}: {what}{on}, val acc {info['val_acc']:.2f}%")
    print(f"bases ready in {time.perf_counter() - t0:.1f} s")


def base_gpus(sweep: Sweep) -> int:
    """GPUs a base task holds: whole ones, even where trials share a GPU (``resources.gpu: 0.5``).
    A base is the longest job of a sweep and every one of its trials waits for it: it gets its GPU
    and that GPU's memory to itself (no trial runs while bases train: ``launch_cli._run``)."""
    return math.ceil(sweep.resources.gpu)


class BaseProgress:
    """The quiet mode's view of base training: every ``PROGRESS_PERIOD_S`` in which an epoch ended
    or an epoch's progress line came, one line per base: its last epoch's loss, validation accuracy
    and the time left at its pace, or where its epoch is (step, images per second, time left in the
    epoch). The base tasks put each epoch's record and each progress line's numbers in a Ray queue
    (an actor needing no CPU)."""

    def __init__(self, bases: Mapping[str, ExperimentConfig]):
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})
        self.names = {h: f"{c.model.name} on {c.data.name}, seed {c.runtime.seed}" for h, c in bases.items()}
        self.latest: Dict[str, Dict[str, Any]] = {}
        self.seconds: Dict[str, float] = {}  # each base's time in the epochs this launch saw
        self.count: Dict[str, int] = {}  # and how many (a resumed training starts past epoch 1)

    def show(self) -> None:
        try:
            records = self.queue.get_nowait_batch(self.queue.qsize())
        except Exception:  # a courtesy: never stops the sweep
            return
        for r in records:
            self.latest[r["hash"]] = r
            if "step" not in r:  # an epoch's record, not a progress line's
                self.seconds[r["hash"]] = self.seconds.get(r["hash"], 0.0) + float(r.get("epoch_s", 0.0))
                self.count[r["hash"]] = self.count.get(r["hash"], 0) + 1
        if records:
            for line in self.lines():
                print(line)

    def lines(self) -> List[str]:
        out = []
        for h, r in self.latest.items():
            done, total = int(r["epoch"]), int(r["epochs"])
            if "step" in r:
                out.append(f"base {h} ({self.names.get(h, '?')}): epoch {done}/{total}, step {r['step']}/{r['steps']}, "
                           f"{r['img_s']:.0f} img/s, {_duration(r['left_s'])} left in the epoch")
                continue
            pace = self.seconds[h] / max(self.count[h], 1)
            out.append(f"base {h} ({self.names.get(h, '?')}): epoch {done}/{total}, loss {r['train_loss']:.4f}, "
                       f"val acc {r['val_acc']:.2f}%, {_duration(pace * (total - done))} left")
        return out


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return (f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s" if seconds < 5400
            else f"{seconds // 3600} h {seconds % 3600 // 60:02d} min")


@contextlib.contextmanager
def storage_leases(storage: Store, hashes: Sequence[str]) -> Iterator[None]:
    """While this driver adopts or trains the bases ``hashes``, another sweep in the same local or
    NFS storage that needs one of them waits, then adopts what this one trained: two sweeps started
    together train a shared base once. A lease per base under ``<storage>/.base_locks`` (the lease
    files of ``prune_core``'s base cache), taken in hash order so two drivers cannot deadlock.
    Cloud storage has no exclusive create: there two sweeps started together each train it."""
    if not storage.local:
        yield
        return
    from filelock import SoftFileLease, Timeout

    with contextlib.ExitStack() as stack:
        for h in sorted(hashes):
            path = Path(storage.path(posixpath.join(LOCKS, f"{h}.lock")))
            path.parent.mkdir(parents=True, exist_ok=True)
            lease = SoftFileLease(str(path), lease_duration=LEASE_S)
            try:
                lease.acquire(timeout=0)
            except Timeout:
                print(f"base {h}: another sweep in {storage.location} is preparing it; waiting to reuse it")
                lease.acquire()
            stack.callback(lease.release)
        yield


def cfg_flat(sweep: Sweep, cfg: ExperimentConfig) -> Dict[str, Any]:
    """The sweep's base with the values that distinguish ``cfg``'s base."""
    flat = cfg.to_flat()
    return {**trial_base(sweep), **{k: flat_value(flat, k) for k in sweep.keys}}


def threads(sweep: Sweep) -> int:
    """Torch threads per trial or base task: ``runtime.threads``, else the trial's CPUs."""
    return int(sweep.base.get("runtime.threads") or max(1, int(sweep.resources.cpu)))
