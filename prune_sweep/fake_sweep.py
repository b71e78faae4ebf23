"""Fake experiment directories in the layout launch.py and Ray Tune write, for tests and benchmarks.

Values follow ``prune_core.schema.METRICS`` and the shape of a resnet20 sweep on CIFAR-10: structured
methods shrink dense FLOPs, unstructured ones only effective FLOPs; accuracy falls faster the more
is removed. Validation accuracy reads a little above test accuracy, each with its own noise, so a
choice on one can differ from a choice on the other; configurations can repeat with several seeds;
the epoch keys follow each method's training (IMP retrains inside pruning, SNIP trains from
scratch). Some trials error, some stop early (no ``stage == "done"`` row, as under ASHA), one is
still pending. ``analyze.py --smoke-test``, the tests and ``bench/analyze_scale.py`` analyse them.

>>> from prune_sweep.fake_sweep import make_experiment
>>> expdir = make_experiment(tmp_path / "quick", n_trials=24)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["LAYERS", "epoch_keys", "make_experiment", "write_trial", "trial_rows"]

# resnet20: a stem conv and three stages of three basic blocks with two convs each
LAYERS = [("conv1", 16)] + [
    (f"layer{s}.{b}.conv{c}", width)
    for s, width in ((1, 16), (2, 32), (3, 64))
    for b in range(3)
    for c in (1, 2)
]

BASE = {
    "acc_base": 91.6,
    "acc5_base": None,  # top-5 is null below 100 classes
    "num_classes": 10,
    "flops_base": 81_307_648.0,
    "flops_nz_base": 81_307_648.0,
    "macs_base": 40_653_824.0,
    "params_base": 272_474,
    "params_nz_base": 272_474,
    "latency_ms_base": 2.40,
    "latency_ms_base_batch": 11.8,
    "latency_device": "cpu (2 threads)",
}

PATTERN_KEPT = 4 / 9  # intra_kernel: weights of a 3x3 kernel its pattern keeps (prune.pattern_keep 4)

# method -> how dense FLOPs / effective FLOPs / params scale with ratio r, and the accuracy lost: the
# simulated study's data. What the methods are (their criteria, what trains after them) is read from
# prune_core's registry (``_registry``), which is imported when a trial is first written
SHAPES: Dict[str, Dict[str, Any]] = {
    "channel": dict(dense=lambda r: (1 - r) ** 1.8,
                    nz=lambda r: (1 - r) ** 1.8, params=lambda r: (1 - r) ** 1.9, loss=lambda r: 28 * r ** 3),
    "kernel": dict(dense=lambda r: 1 - 0.95 * r, nz=lambda r: 1 - 0.95 * r,
                   params=lambda r: 1 - 0.95 * r, loss=lambda r: 14 * r ** 3),
    # PatDNN patterns keep 4 of the 9 weights of every 3x3 kernel (all of resnet20's convs), then
    # connectivity pruning removes the fraction r of kernels; masks leave dense FLOPs as they were
    "intra_kernel": dict(dense=lambda r: 1.0, nz=lambda r: PATTERN_KEPT * (1 - r),
                         params=lambda r: PATTERN_KEPT * (1 - r), loss=lambda r: 0.8 + 8 * r ** 3),
    "imp": dict(dense=lambda r: 1.0, nz=lambda r: 1 - r, params=lambda r: 1 - r,
                loss=lambda r: 4 * r ** 4),
    # pruned at initialisation, then trained from scratch for the base budget
    "snip": dict(dense=lambda r: 1.0, nz=lambda r: 1 - r, params=lambda r: 1 - r,
                 loss=lambda r: 0.5 + 6 * r ** 3),
    "random_init": dict(dense=lambda r: 1.0, nz=lambda r: 1 - r, params=lambda r: 1 - r,
                        loss=lambda r: 1.0 + 12 * r ** 3),
}
IMP_LEVELS = 3  # IMP's levels: every level but the last retrains T - k epochs inside pruning
REWIND = 1  # k: IMP retrains from this base epoch
VAL_GAP = 0.4  # validation reads a little higher than test, with its own noise: the two can pick apart


def _registry():
    """(``METHODS``, ``accepted_criteria``) of prune_core's registry, imported when first needed:
    it imports torch, which an analysis of a real sweep never needs."""
    from prune_core import METHODS, accepted_criteria

    return METHODS, accepted_criteria


def epoch_keys(method: str, finetune: int, base_epochs: int) -> Dict[str, int]:
    """``epochs_base``, ``epochs_prune``, ``finetune_epochs``, ``epochs_trial`` and
    ``epochs_teacher`` (no distillation) as prune_core records them, by what the method's record says trains after it: a rewinding method (IMP)
    retrains T - k per level, one at initialisation trains T from scratch."""
    retrain = _registry()[0][method].retrain
    if retrain == "rewind":
        prune, finetune = (IMP_LEVELS - 1) * (base_epochs - REWIND), base_epochs - REWIND
    elif retrain == "train":
        prune, finetune = 0, base_epochs
    else:
        prune = 0
    return {"finetune_epochs": finetune, "epochs_base": base_epochs, "epochs_prune": prune,
            "epochs_trial": prune + finetune, "epochs_teacher": 0}


def trial_rows(method: str, ratio: float, scope: str, lr: float, seed: int, trial_id: str,
               epochs: int = 4, rng: Optional[np.random.Generator] = None, done: bool = True,
               layer_channels: bool = True, num_classes: int = 10, costs_in_epochs: bool = False,
               base_epochs: Optional[int] = None) -> List[Dict[str, Any]]:
    """The result.json rows of one trial: one per fine-tune epoch, then the final metrics.

    ``costs_in_epochs`` repeats the pruned model's FLOPs and parameters in every epoch row.
    ``base_epochs`` (T) is the base model's training, ``epochs + 1`` by default (k = 1 for IMP).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    shape = SHAPES[method]
    loss = shape["loss"](ratio) * (0.85 if scope == "global" else 1.0) * (1 + 0.3 * abs(math.log10(lr / 0.01)))
    acc_final = float(np.clip(BASE["acc_base"] - loss + rng.normal(0, 0.3), 100 / num_classes, 100))
    val_final = round(float(np.clip(BASE["acc_base"] - loss + VAL_GAP + rng.normal(0, 0.4), 100 / num_classes, 100)), 3)
    acc_pruned = float(max(100 / num_classes, acc_final - 25 * ratio - rng.uniform(0, 10)))
    dense, nz, params = shape["dense"](ratio), shape["nz"](ratio), shape["params"](ratio)
    costs = {"flops_base": BASE["flops_base"], "flops_final": round(BASE["flops_base"] * dense),
             "flops_nz_base": BASE["flops_nz_base"], "flops_nz_final": round(BASE["flops_base"] * nz),
             "params_nz_base": BASE["params_nz_base"], "params_nz_final": round(BASE["params_base"] * params)}
    rows: List[Dict[str, Any]] = []
    t = 0.0
    for epoch in range(1, epochs + 1):
        t += 3.0 + rng.uniform(0, 0.5)
        progress = 1 - math.exp(-1.5 * epoch)
        rows.append({"stage": "finetune", "epoch": epoch,
                     "val_acc": val_final if epoch == epochs else
                     round(acc_pruned + (val_final - acc_pruned) * progress + rng.normal(0, 0.2), 3),
                     "train_loss": round(1.5 * math.exp(-0.6 * epoch) + 0.1, 4), "lr": lr,
                     **(costs if costs_in_epochs else {}), **_ray_keys(trial_id, epoch, t)})
    if not done:
        return rows
    latency = BASE["latency_ms_base"] * (0.25 + 0.75 * dense) * rng.uniform(0.97, 1.05)
    final = dict(BASE)
    final.update({
        "num_classes": num_classes,
        "acc_pruned": round(acc_pruned, 3),
        "acc_final": round(acc_final, 3),
        "val_acc_final": val_final,
        "acc5_final": None,
        **costs,
        "macs_final": round(BASE["flops_base"] * dense / 2),
        "flops_kept_dense": dense,
        "flops_kept_effective": nz,
        "params_final": round(BASE["params_base"] * (params if dense < 1 else 1.0)),
        "params_nz_final": round(BASE["params_base"] * params),
        "sparsity": round(1 - params, 4) if dense == 1 else 0.0,
        "latency_ms_final": round(latency, 4),
        "latency_ms_final_batch": round(latency * 4.9, 4),
        "speedup": round(BASE["latency_ms_base"] / latency, 4),
        "speedup_batch": round(BASE["latency_ms_base"] / latency, 4),
        "rebuild_max_abs_diff": 1e-6,
        "base_cached": 1,
        **epoch_keys(method, epochs, base_epochs if base_epochs is not None else epochs + 1),
        "time_base_s": 0.4, "time_prune_s": 1.2, "time_rebuild_s": 0.3, "time_finetune_s": t,
        "time_eval_s": 2.0, "time_total_s": t + 3.9,
        "stage": "done",
        **_ray_keys(trial_id, epochs + 1, t + 3.9),
    })
    if layer_channels and dense < 1:
        keep = 1 - ratio
        final["layer_channels_base"] = dict(LAYERS)
        final["layer_channels_final"] = {
            name: max(1, int(round(width * (keep if scope == "local" else min(1.0, keep * (0.6 + 0.2 * i / 6))))))
            for i, (name, width) in enumerate(LAYERS)}
    rows.append(final)
    return rows


def _ray_keys(trial_id: str, iteration: int, t: float) -> Dict[str, Any]:
    # node_id, gpu_ids and started_at come from launch.py's reporter, the rest from Ray Tune
    return {"training_iteration": iteration, "trial_id": trial_id, "time_total_s": round(t, 3),
            "time_this_iter_s": 3.0, "timestamp": 1764000000 + iteration, "date": "2025-11-24_10-00-00",
            "pid": 4242, "hostname": "worker", "node_ip": "10.0.0.2", "done": False, "node_id": "a1b2c3",
            "gpu_ids": "", "started_at": 1764000000.0}


def write_trial(expdir: Path, name: str, params: Mapping[str, Any], rows: Sequence[Mapping[str, Any]] = (),
                error: Optional[str] = None, truncate_last: bool = False) -> Path:
    """Write one trial folder. ``truncate_last`` leaves a half-written last line (a running trial)."""
    tdir = Path(expdir) / name
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "params.json").write_text(json.dumps(dict(params), indent=2))
    if rows:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if truncate_last:
            text = text[: len(text) - len(json.dumps(rows[-1])) // 2 - 1]
        (tdir / "result.json").write_text(text)
    if error is not None:
        (tdir / "error.txt").write_text(
            "Failure # 1 (occurred at 2025-11-24_10-01-00)\nTraceback (most recent call last):\n"
            '  File "prune_core/pipeline.py", line 88, in run\n' + error + "\n\n")
    return tdir


def make_experiment(expdir: Path, n_trials: int = 30, seed: int = 0,
                    methods: Iterable[str] = tuple(SHAPES)[:4],
                    ratios: Sequence[float] = (0.2, 0.35, 0.5, 0.65, 0.8), seeds: int = 1,
                    errors: int = 2, stopped: int = 3, pending: int = 1, epochs: int = 4,
                    layer_channels: bool = True, num_classes: int = 10, running: int = 0) -> Path:
    """Write a whole experiment directory and return it.

    Trials cycle through ``methods`` x ``ratios``; each configuration repeats with ``seeds`` seeds.
    The first ``errors`` trials error, the next ``stopped`` stop early, the next ``pending`` have no
    results yet and the next ``running`` have a half-written last line.
    """
    expdir = Path(expdir)
    expdir.mkdir(parents=True, exist_ok=True)
    methods = list(methods)
    rng = np.random.default_rng(seed)
    (expdir / "sweep.yaml").write_text(
        f"name: {expdir.name}\nbase:\n  data.name: cifar10\n  model.name: resnet20\n  finetune.epochs: {epochs}\n"
        f"space:\n  prune.method: {{choice: {methods}}}\n  prune.ratio: {{choice: {list(ratios)}}}\n"
        "  prune.scope: {choice: [local, global]}\n  finetune.lr: {loguniform: [0.001, 0.05]}\n"
        "search: {algorithm: optuna, num_samples: %d}\nscheduler: {name: asha, grace_period: 1}\n"
        "resources: {cpu: 1}\n" % n_trials)
    (expdir / "base.yaml").write_text(
        f"data:\n  name: cifar10\nmodel:\n  name: resnet20\nfinetune:\n  epochs: {epochs}\nprune:\n  criterion: l1\n")
    (expdir / "experiment_state-2025-11-24_10-00-00.json").write_text("{}")
    configs = [(m, r) for r in ratios for m in methods]
    for i in range(n_trials):
        method, ratio = configs[(i // seeds) % len(configs)]
        crit_rng = np.random.default_rng(seed * 100_003 + i // seeds)
        scope = "global" if crit_rng.random() < 0.5 else "local"
        lr = float(round(10 ** crit_rng.uniform(-2.5, -1.5), 5))
        accepted = _registry()[1](method)
        criterion = accepted[int(crit_rng.integers(len(accepted)))]
        trial_id = f"{seed:05x}_{i:05d}"
        params = {"prune.method": method, "prune.ratio": ratio, "prune.scope": scope,
                  "prune.criterion": criterion, "finetune.lr": lr, "runtime.seed": i % seeds}
        name = (f"train_trial_{trial_id}_{i}_prune.method={method},prune.ratio={ratio:.4f},"
                f"prune.scope={scope}_2025-11-24_10-00-{i % 60:02d}")
        kind = ("error" if i < errors else "stopped" if i < errors + stopped
                else "pending" if i < errors + stopped + pending
                else "running" if i < errors + stopped + pending + running else "done")
        if kind == "pending":
            write_trial(expdir, name, params)
            continue
        rows = trial_rows(method, ratio, scope, lr, i % seeds, trial_id, epochs=epochs if kind == "done" else 1 + i % 2,
                          rng=rng, done=kind in ("done", "running"), layer_channels=layer_channels,
                          num_classes=num_classes, costs_in_epochs=kind == "stopped" and i % 2 == 1,
                          base_epochs=epochs + 1)
        error = None
        if kind == "error":
            rows = rows[:1]
            error = ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" if i % 2 == 0
                     else "ValueError: prune.ratio=0.95 leaves layer3.2.conv2 with no channels")
        write_trial(expdir, name, params, rows, error=error, truncate_last=kind == "running")
    return expdir


if __name__ == "__main__":  # python -m prune_sweep.fake_sweep OUTDIR [N_TRIALS]
    import sys

    out = make_experiment(Path(sys.argv[1]), n_trials=int(sys.argv[2]) if len(sys.argv) > 2 else 30)
    print(f"wrote {out} ({len(os.listdir(out))} entries)")
