"""What runs on Ray's workers: the base task (``train_base``) and Tune's trainable (``run_trial``),
one ``prune_core`` experiment reporting every fine-tune epoch with a checkpoint.

Ray pickles these by reference to this module, so a worker, a restarted trial and a resumed sweep
import them from here. The driver imports this module too; prune_core's pipeline (torch) is
imported inside the functions, where they run.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import ray
from ray import tune

from prune_core import NotRetryable
from prune_core.config import ExperimentConfig
from prune_core.schema import flops_kept
from prune_sweep.placement import claim_device
from prune_sweep.storage import BASE_FILE, BASE_LOG, BASE_SUM, Store, base_rel, cache_dir, is_uri


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its swept keys."""

    base: Dict[str, Any]  # flat config every trial starts from
    exp: str  # experiment directory: local/NFS path or cloud URI
    threads: int  # torch threads per trial (the trial's CPUs)
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # one launch; see TrialFailed


class TrialFailed(RuntimeError):
    """A trial that failed in a way a retry cannot change (NaN loss, failed rebuild check, bad
    config): recorded by its first attempt so Tune's retries end at once with the same reason."""


def _fetch_base(cfg: ExperimentConfig, exp: str) -> None:
    """With cloud storage, copy the trained base to this node's cache if it is not there yet."""
    if not is_uri(exp):
        return
    from prune_core import base_path

    local = base_path(cfg)
    store = Store(exp)
    if not local.exists() and store.exists(base_rel(cfg.base_hash())):
        for name in (BASE_SUM, BASE_FILE):  # the checksum first: base.pt appears checked
            if store.exists(base_rel(cfg.base_hash(), name)):
                store.get(base_rel(cfg.base_hash(), name), local.parent / name)


def train_base(flat: Dict[str, Any], exp: str, progress: Any = None) -> Dict[str, Any]:
    """Ray task: train (or find) the base of ``flat`` in the sweep's base cache. With ``progress``
    (a ``ray.util.queue.Queue``), each epoch's record and each in-epoch progress line's goes there
    with the base's hash, for the driver's table."""
    from prune_core import ensure_base

    cfg = ExperimentConfig.from_dict({**flat, "runtime.cache_dir": cache_dir(exp), "runtime.resume": True,
                                      "runtime.progress": "off"})
    place = claim_device(cfg.runtime.device, f"base {cfg.base_hash()}")
    if cfg.runtime.threads:
        import torch

        torch.set_num_threads(cfg.runtime.threads)
    _fetch_base(cfg, exp)
    t0 = time.perf_counter()
    def send(record: Dict[str, Any]) -> None:  # an epoch's record or an in-epoch line's, to the driver
        if progress is not None:
            try:
                progress.put_nowait({**record, "hash": cfg.base_hash()})
            except Exception:  # the driver's table is a courtesy: training goes on without it
                pass

    base = ensure_base(cfg, log=queued_log(send), on_epoch=send)
    trained, seconds, path = base.trained, time.perf_counter() - t0, base.path
    if trained:
        with open(path.parent / BASE_LOG, "a") as fh:
            fh.write(f"trained {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.uname().nodename} "
                     f"in {seconds:.1f} s, val_acc {base.val_acc:.2f}\n")
        if is_uri(exp):
            store = Store(exp)
            for name in (BASE_SUM, BASE_FILE, BASE_LOG):
                store.put(path.parent / name, base_rel(cfg.base_hash(), name))
    return {"hash": cfg.base_hash(), "trained": trained, "seconds": seconds, "val_acc": base.val_acc,
            "node_ip": place["node_ip"], "gpu_ids": place["gpu_ids"]}


def queued_log(put: Callable[[Dict[str, Any]], None]) -> Callable[[str], None]:
    """A base task's ``log``: every line printed (the task's output, the driver's with ``-v``), and
    the numbers of an in-epoch progress line (``prune_core.train.ProgressLine.record``) to ``put``."""
    def log(line: str) -> None:
        print(line)
        record = getattr(line, "record", None)
        if record is not None:
            put(dict(record))

    return log


class TuneReporter:
    """prune_core's reporter: every fine-tune epoch and the final metrics go to ``tune.report``,
    epochs with the run's working directory as a ``tune.Checkpoint``.

    Every report carries ``val_acc`` (ASHA's metric; the final one repeats ``val_acc_final``) and
    ``flops_kept_dense`` / ``flops_kept_effective`` (known once the model is pruned), so a searcher
    can read its objectives from any report, ``node_id``, the Ray node that ran it, ``gpu_ids``,
    the GPUs Ray gave it there (``prune_sweep.placement``; empty without one), and ``started_at``,
    when this run of the trial began (epoch seconds: Tune's ``timestamp`` counts whole seconds)."""

    def __init__(self, workdir: Path, keep_final_model: bool, place: Dict[str, Any]):
        self.workdir = workdir
        self.keep_final_model = keep_final_model  # runtime.save_model: the rebuilt model as a last checkpoint
        self.node_id = place["node_id"]
        self.gpu_ids = place["gpu_ids"]
        self.started_at = time.time()

    def __call__(self, metrics: Dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        row = dict(metrics)
        if row.get("stage") == "done":
            row["val_acc"] = row.get("val_acc_final")
            row["epoch"] = row.get("finetune_epochs")
            checkpoint_dir = self.workdir if self.keep_final_model else None
        else:
            row.update(flops_kept(row))
        row["node_id"] = self.node_id
        row["gpu_ids"] = self.gpu_ids
        row["started_at"] = self.started_at
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(row, checkpoint=checkpoint)


def run_trial(params: Dict[str, Any], setup: TrialSetup) -> None:
    """Tune's trainable: one prune_core experiment, resumed from the trial's last checkpoint."""
    store = Store(setup.exp)
    marker = f".trial_errors/{setup.session}/{tune.get_context().get_trial_id()}.txt"
    recorded = store.read_text(marker)
    if recorded:
        raise TrialFailed(f"{recorded} (not retried: the same trial fails the same way)")
    from prune_core import run

    workdir = Path(tempfile.mkdtemp(prefix="prune_trial_"))
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(str(workdir))
        values = {**setup.base, **params, "runtime.workdir": str(workdir), "runtime.resume": checkpoint is not None,
                  "runtime.cache_dir": cache_dir(setup.exp), "runtime.progress": "off"}
        values.setdefault("runtime.threads", setup.threads)
        cfg = ExperimentConfig.from_dict(values)
        place = claim_device(cfg.runtime.device, f"trial {tune.get_context().get_trial_id()}")
        _fetch_base(cfg, setup.exp)
        try:
            run(cfg, reporter=TuneReporter(workdir, cfg.runtime.save_model, place), log=print)
        except NotRetryable as exc:
            store.write_text(marker, f"{type(exc).__name__}: {exc}")
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def trial_dirname(trial: Any) -> str:
    """``<trial id>_<swept values>``: short, unique and readable in a file browser."""
    values = "_".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in trial.config.values())
    return re.sub(r"[^A-Za-z0-9_.=-]", "", f"{trial.trial_id}_{values}")[:100]
