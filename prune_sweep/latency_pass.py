"""The quiet latency pass of a sweep: every finished trial's base and pruned model timed again, alone.

Inside a trial, latency is timed while other trials share the machine (one resnet20 timed against
itself varied 0.92-1.08 even on an idle 2-core machine; ARCHITECTURE.md, measured facts). When a
sweep's trials are done, one Ray task holding a whole node (all its CPUs, and one GPU when the
trials used GPUs) reads every finished trial (the final ``stage == "done"`` row of its
``result.json``, its config from ``base.yaml`` and ``params.json``), rebuilds the base and the
pruned architecture from their recorded per-layer widths (``prune_core.pruning.build_architecture``:
weights random, latency does not depend on them), times each distinct architecture once, each
base interleaved forward by forward with the distinct pruned models of its trials
(``prune_core.metrics.time_interleaved``: ``runtime.latency_repeats`` forwards at batch 1 and at
``runtime.latency_batch``, with the trials' thread count), and writes ``latency.json`` in the
experiment directory. Mask methods are timed the same way: their rebuilt architecture is dense,
so no speedup is expected (a pruned architecture equal to its base gets the base's timing and
speedup 1.0 exactly).

``latency.json``: one object per finished trial, keyed by Ray Tune's trial id::

    {"<trial_id>": {"latency_ms_base": 1.92, "latency_ms_final": 1.21,
                    "latency_ms_base_batch": 9.8, "latency_ms_final_batch": 5.6,
                    "latency_ms_base_iqr": 0.04, "latency_ms_final_iqr": 0.03,
                    "latency_ms_base_batch_iqr": 0.2, "latency_ms_final_batch_iqr": 0.1,
                    "speedup": 1.59, "speedup_batch": 1.75,
                    "latency_device": "cpu x2 threads", "latency_pass": "quiet"}, ...}

The keys and their meanings are those of ``prune_core.schema.METRICS``; they replace the values
the trial measured itself (``latency_pass == "trial"``) in its ``result.json``, which stays as it
was. A trial without a final report, or whose report lacks ``layer_channels_*``, is left out.
"""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import ray

from prune_core.yamlfile import parse_yaml
from prune_sweep.placement import claim_device
from prune_sweep.storage import RESULT_FILE, Store, json_rows

LATENCY_FILE = "latency.json"

Key = Tuple  # prune_core.pruning.architecture_key


@dataclass(frozen=True)
class Finished:
    """What the pass needs of one finished trial."""

    trial_id: str
    model: Tuple[str, int, Tuple[int, ...], float]  # name, classes, input shape (C, H, W), width
    base: Dict[str, int]  # layer_channels_base
    final: Dict[str, int]  # layer_channels_final
    repeats: int
    batch: int


def finished_trials(exp: Store) -> List[Finished]:
    """Every trial folder of ``exp`` with a final report, in folder order."""
    from prune_core.config import ExperimentConfig
    from prune_core.sections import flatten

    base = flatten(parse_yaml(exp.read_text("base.yaml") or "") or {})
    shapes: Dict[Any, Tuple[int, ...]] = {}
    out = []
    for name in exp.subdirs():
        params = exp.read_text(posixpath.join(name, "params.json"))
        final = next((r for r in reversed(json_rows(exp.read_text(posixpath.join(name, RESULT_FILE))))
                      if r.get("stage") == "done"), None)
        if params is None or final is None:
            continue
        if not (isinstance(final.get("layer_channels_base"), dict) and isinstance(final.get("layer_channels_final"),
                                                                                   dict)):
            continue
        cfg = ExperimentConfig.from_dict({**base, **flatten(json.loads(params))})
        shape = final.get("input_shape")
        if not shape:  # recorded since the quiet pass exists; older trials: ask the dataset
            if cfg.data not in shapes:
                from prune_core import open_dataset

                shapes[cfg.data] = tuple(open_dataset(cfg.data).train.shape)
            shape = shapes[cfg.data]
        out.append(Finished(trial_id=str(final.get("trial_id") or name),
                            model=(cfg.model.name, int(final["num_classes"]), tuple(int(s) for s in shape),
                                   float(cfg.model.width)),
                            base=final["layer_channels_base"], final=final["layer_channels_final"],
                            repeats=cfg.runtime.latency_repeats, batch=cfg.runtime.latency_batch))
    return out


def time_trials(exp_location: str, threads: int, device_name: str) -> Dict[str, Any]:
    """Ray task: time every finished trial of the experiment on ``device_name`` (the trials' own:
    ``cuda`` or ``cpu``; on CUDA the GPU Ray gave the task must answer, ``placement.claim_device``);
    returns ``{"latency": what latency.json holds, "trials": n, "models": architectures timed,
    "device": str, "gpu_ids": str, "seconds": float}``."""
    import torch

    from prune_core import (ArchitectureMismatch, architecture_key, build_architecture, latency_metrics,
                            time_interleaved)

    t0 = time.perf_counter()
    place = claim_device(device_name, "the quiet latency pass") if ray.is_initialized() else {"gpu_ids": ""}
    device = torch.device(device_name)
    trials = finished_trials(Store(exp_location))
    # one interleaved measurement per distinct base: the base and the distinct pruned models of its trials
    groups: Dict[Tuple[Key, int, int], Dict[Key, Dict[str, int]]] = {}
    keys = []
    for t in trials:
        kb, kf = architecture_key(*t.model, t.base), architecture_key(*t.model, t.final)
        group = groups.setdefault((kb, t.repeats, t.batch), {kb: t.base})
        group.setdefault(kf, t.final)
        keys.append((kb, kf))
    timed: Dict[Tuple[Key, int, int], Dict[Key, Any]] = {}
    skipped: List[str] = []
    where = str(device)
    old_threads = torch.get_num_threads()
    # building traces each model on the CPU: with the trials' threads, not the node's (tiny forwards
    # on every core of a 2-core machine another process also used took 30x as long)
    torch.set_num_threads(threads or old_threads)
    try:
        for (kb, repeats, batch), archs in groups.items():
            try:
                models = [build_architecture(*k[:4], widths).to(device) for k, widths in archs.items()]
            except ArchitectureMismatch as exc:  # e.g. widths recorded before heads were: its trials keep their latency
                skipped.append(str(exc))
                continue
            lats = time_interleaved(models, kb[2], batch, repeats, threads=threads)
            timed[(kb, repeats, batch)] = dict(zip(archs, lats))
            where = lats[0].device
            del models
    finally:
        torch.set_num_threads(old_threads)
    latency = {}
    for t, (kb, kf) in zip(trials, keys):
        lat = timed.get((kb, t.repeats, t.batch))
        if lat is not None:
            latency[t.trial_id] = latency_metrics(lat[kb], lat[kf], "quiet")
    return {"latency": latency, "trials": len(latency), "models": sum(len(timed[k]) for k in timed),
            "device": where, "gpu_ids": place["gpu_ids"], "seconds": time.perf_counter() - t0,
            "skipped": sorted(set(skipped))}


def node_cpus(gpu: bool) -> int:
    """CPUs of the largest alive node (with a GPU when ``gpu``): what the pass's one task holds."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if gpu:
        nodes = [r for r in nodes if r.get("GPU", 0) >= 1]
    return int(max((r.get("CPU", 0) for r in nodes), default=0))


def run_quiet_pass(exp: Store, gpu: bool, threads: int, device: str = "cpu", log: Callable[[str], None] = print
                   ) -> Optional[Dict[str, Any]]:
    """Time the finished trials of ``exp`` alone on one node, on ``device`` (the trials' own), and
    write ``latency.json``; with ``gpu`` (the trials held GPUs) the task holds a whole GPU of that
    node too. Returns the task's summary (without the latency table), or None when there was
    nothing to time."""
    cpus = node_cpus(gpu)
    if cpus < 1:
        log(f"latency: no alive node with a CPU{' and a GPU' if gpu else ''}; quiet pass skipped")
        return None
    task = ray.remote(time_trials).options(num_cpus=cpus, num_gpus=1 if gpu else 0)
    result = ray.get(task.remote(exp.location, threads, device))
    for reason in result.get("skipped", ()):
        log(f"latency: not timed alone: {reason}")
    if not result["trials"]:
        log("latency: no finished trial to time alone")
        return None
    exp.write_text(LATENCY_FILE, json.dumps(result.pop("latency"), indent=1, sort_keys=True))
    gpu_ids = f" (Ray's GPU {result['gpu_ids']})" if result.get("gpu_ids") else ""
    log(f"latency: {result['models']} distinct models timed alone on {result['device']}{gpu_ids} in "
        f"{result['seconds']:.1f} s ({result['trials']} trials -> {exp.uri(LATENCY_FILE)})")
    return result
