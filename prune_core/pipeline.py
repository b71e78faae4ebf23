"""``run(config)``: base (trained once, then cached) -> prune -> rebuild -> fine-tune -> measure.

>>> from prune_core import ExperimentConfig, run
>>> metrics = run(ExperimentConfig.from_dict({"prune.method": "channel", "prune.ratio": 0.5}))  # doctest: +SKIP
>>> metrics["acc_final"], metrics["flops_kept_dense"], metrics["flops_kept_effective"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.utils.prune as torch_prune
from filelock import SoftFileLease
from torch import nn

from .checkpoints import CorruptFile, load_or_discard, move_aside, remove, warn
from .config import ConfigError, ExperimentConfig
from .controls import control_training
from .data import DataSplits, load_data
from .export import export_metrics, require_onnx
from .metrics import (WEIGHTED, count_flops, count_params, evaluate, latency_metrics, layer_channels, layer_params,
                      measure_latency, sparsity, time_interleaved)
from .models import build_model, load_weights
from .pruning import (METHODS, PruneContext, control_network, load_pruned, post_prune_training, prune_model, rebuild,
                      save_pruned)
from .schema import DETAIL_KEYS, EPOCH_COSTS, METRIC_KEYS, flops_kept
from .sections import precision_name
from .train import History, amp_dtype, fit, recalibrate_bn, save_atomic, seed_everything, set_determinism

Reporter = Callable[[Dict[str, Any], Optional[Path]], None]

REWIND_EPOCHS = 5  # the base keeps its weights at init and after epochs 1..5 for IMP rewinding


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda: no CUDA device is visible; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cache_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.runtime.cache_dir or Path(cfg.runtime.output_dir) / "base_cache")


def base_path(cfg: ExperimentConfig) -> Path:
    """Where the trained base of this configuration lives (ARCHITECTURE.md, contract 7)."""
    return cache_dir(cfg) / cfg.base_hash() / "base.pt"


LEASE_S = 60.0  # a base's lock holder refreshes its lease every LEASE_S / 3 s (filelock's heartbeat)


@contextlib.contextmanager
def _base_lock(path: Path) -> Iterator[None]:
    """Two processes that need the same base wait for one of them to train it. The lock is a lease
    file (``filelock.SoftFileLease``): created exclusively, which NFS honours where ``flock`` may
    not, and refreshed by a heartbeat thread. A holder that died on this host is seen at once; one
    that died on another host, after ``LEASE_S`` without a heartbeat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with SoftFileLease(str(path), lease_duration=LEASE_S):
        yield


def fresh_model(cfg: ExperimentConfig, data: DataSplits, log: Optional[Callable[[str], None]] = None) -> nn.Module:
    """The registry model of ``cfg`` for ``data``, initialised, or from torchvision's
    ``model.weights`` where shapes allow (``log`` says which tensors kept their initialisation)."""
    c, h, _ = data.input_shape
    model = build_model(cfg.model.name, data.num_classes, c, h, cfg.model.width)
    if cfg.model.weights:
        fresh = load_weights(model, cfg.model.name, cfg.model.weights, download=cfg.data.download)
        if log:
            shown = ", ".join(fresh[:6]) + (f" and {len(fresh) - 6} more" if len(fresh) > 6 else "")
            log(f"starting from torchvision's {cfg.model.weights} weights; initialised instead (other shapes "
                f"here): {shown or 'none'}")
    return model


def _fresh_state(cfg: ExperimentConfig, data: DataSplits) -> Callable[[int], Dict[str, torch.Tensor]]:
    """seed -> the state dict of ``fresh_model`` built under that seed (what ``ensure_base`` does
    with ``runtime.seed``), without touching the caller's random state."""
    def draw(seed: int) -> Dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return fresh_model(cfg, data).state_dict()

    return draw


@dataclass(frozen=True)
class BaseInfo:
    """What ``ensure_base`` found or made: the cached file, where the weights came from ("cache",
    "trained" by this call, or "given" by ``model.pretrained_path``, which is not cached), the
    validation accuracy (-1 for a given model) and the seconds the call took."""

    path: Path
    source: str
    val_acc: float
    seconds: float
    artifact: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)  # model, early, history

    @property
    def trained(self) -> bool:
        return self.source == "trained"


def ensure_base(cfg: ExperimentConfig, data: Optional[DataSplits] = None, device: Optional[torch.device] = None,
                log: Callable[[str], None] = print,
                on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None) -> BaseInfo:
    """Load the trained base of ``cfg`` from the cache at ``base_path(cfg)``, training and storing
    it first if absent (one process trains it; others wait on a lock). ``data`` and ``device`` are
    loaded and resolved from ``cfg`` when not given. ``on_epoch(record)`` receives each base
    training epoch's record (``train.fit``'s, plus ``epochs``, the number planned) once it is saved.

    ``BaseInfo.artifact`` = {"model": state dict, "early": {epoch: state dict}, "history": [...],
    "val_acc": float}.
    """
    t0 = time.perf_counter()
    device = device or resolve_device(cfg.runtime.device)
    data = data or load_data(cfg.data, device, cfg.runtime.seed)
    path = base_path(cfg)
    artifact, source = _load_or_train(cfg, data, device, path, log, on_epoch)
    return BaseInfo(path=path, source=source, val_acc=float(artifact["val_acc"]),
                    seconds=time.perf_counter() - t0, artifact=artifact)


def _load_or_train(cfg: ExperimentConfig, data: DataSplits, device: torch.device, path: Path, log,
                   on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None) -> Tuple[Dict[str, Any], str]:
    with _base_lock(path.with_suffix(".lock")):
        artifact = _cached_base(path, data, log)
        if artifact is not None:
            return artifact, "cache"
        seed_everything(cfg.runtime.seed)
        set_determinism(cfg.runtime.deterministic)
        model = fresh_model(cfg, data, log)
        if cfg.model.pretrained_path:
            model.load_state_dict(torch.load(cfg.model.pretrained_path, map_location="cpu", weights_only=True))
            artifact = {"model": model.state_dict(), "early": {0: model.state_dict()}, "history": [], "val_acc": -1.0}
            return artifact, "given"
        early_path, ckpt = path.parent / "early.pt", path.parent / "train_ckpt.pt"
        early = {0: _cpu_state(model)}
        if cfg.runtime.resume:
            early.update(_early_states_to_resume(early_path, ckpt, log))

        def keep_early(record, _ckpt):
            if record["epoch"] <= REWIND_EPOCHS:
                early[record["epoch"]] = _cpu_state(model)
                save_atomic(early, early_path)
            if on_epoch:
                on_epoch({**record, "epochs": cfg.train.epochs})

        log(f"training base {cfg.model.name} on {cfg.data.name} for {cfg.train.epochs} epochs "
            f"(cached as {path.parent.name})")
        history = fit(model, cfg.train, data, device=device, amp=cfg.runtime.amp, cpu_bf16=cfg.runtime.cpu_bf16,
                      amp_choice=cfg.runtime.amp_dtype, stage="base", checkpoint=ckpt, resume=cfg.runtime.resume,
                      on_epoch=keep_early, progress=cfg.runtime.progress, log=log)
        artifact = {"model": _cpu_state(model), "early": early, "history": history.epochs,
                    "val_acc": history.best_val_acc, "provenance": _provenance(cfg, data, device)}
        save_atomic(artifact, path)
        return artifact, "trained"


def _cached_base(path: Path, data: DataSplits, log) -> Optional[Dict[str, Any]]:
    """The cached base at ``path``; None when absent, or bad (truncated, failing its checksum, or
    trained on data with another fingerprint): then it is moved aside with a one-line warning."""
    artifact = load_or_discard(path, "training the base again", log)
    if artifact is None:
        return None
    recorded = artifact.get("provenance", {}).get("data", "")
    if recorded and data.fingerprint and recorded != data.fingerprint:
        aside = move_aside(path)
        warn(f"{path} was trained on other data (fingerprint {recorded}, the data now reads "
             f"{data.fingerprint}); moved to {aside.name}, training the base again", log)
        return None
    return artifact


def _early_states_to_resume(early_path: Path, ckpt: Path, log) -> Dict[int, Dict[str, torch.Tensor]]:
    """The rewind states (``early``) saved by an interrupted base training. ``fit`` writes its
    checkpoint before ``keep_early`` writes early.pt, so a kill between the two leaves the last
    epoch's state only in the checkpoint: it is taken from there. When states before the
    checkpoint's epoch are lost (early.pt bad or gone), the checkpoint is set aside too and the
    base trains from epoch 1, as IMP could not rewind to them."""
    early = load_or_discard(early_path, "base training starts again from epoch 1", log) or {}
    state = load_or_discard(ckpt, "base training starts again from epoch 1", log)
    if state is None:
        return early
    done = int(state["epoch"]) + 1
    if done <= REWIND_EPOCHS and done not in early:
        early[done] = {k: v.to("cpu").contiguous().clone() for k, v in state["model"].items()}
    if any(e not in early for e in range(1, min(done, REWIND_EPOCHS) + 1)):
        aside = move_aside(ckpt)
        warn(f"{early_path.name} lacks rewind states of epochs before {done}; {ckpt.name} moved to "
             f"{aside.name}, base training starts again from epoch 1", log)
        return {}
    return early


def _provenance(cfg: ExperimentConfig, data: DataSplits, device: torch.device) -> Dict[str, Any]:
    """Where and how a base was trained, stored with it: the data fingerprint is checked on load."""
    from importlib import metadata

    return {"data": data.fingerprint, "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "precision": precision_name(device.type, cfg.runtime.amp, cfg.runtime.cpu_bf16,
                                        cfg.runtime.amp_dtype),
            "deterministic": cfg.runtime.deterministic, "torch": str(torch.__version__),
            "torchvision": metadata.version("torchvision")}


def _cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    # contiguous: fit trains in channels_last, and code that views weights as flat vectors needs this
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def calibration_batches(data: DataSplits, n: int) -> Callable[[], Iterator]:
    """A callable yielding the first ``n`` training batches of epoch 0 (the same ones every call):
    what gradient criteria score on and BN re-estimation averages over."""
    def batches():
        data.train.set_epoch(0)
        for i, batch in enumerate(data.train):
            if i >= n:
                break
            yield batch

    return batches


def _example_input(data: DataSplits, device: torch.device) -> torch.Tensor:
    x, _ = next(iter(data.test))
    return x[:8].to(device)


def _measure(model: nn.Module, cfg: ExperimentConfig, data: DataSplits, device: torch.device, tag: str
             ) -> Dict[str, Any]:
    """Accuracy, FLOPs and parameters of ``model``, keys suffixed with ``tag`` (latency: ``_time_pair``)."""
    dtype = amp_dtype(device, cfg.runtime.amp, cfg.runtime.cpu_bf16, cfg.runtime.amp_dtype)
    acc = evaluate(model, data.test, data.num_classes, dtype)
    flops = count_flops(model, data.input_shape)
    params, params_nz = count_params(model)
    return {f"acc_{tag}": acc.top1, f"acc5_{tag}": acc.top5, f"flops_{tag}": flops.total,
            f"flops_nz_{tag}": flops.effective, f"macs_{tag}": flops.macs, f"params_{tag}": params,
            f"params_nz_{tag}": params_nz, f"_flop_table_{tag}": flops.table()}


def _time_pair(base: nn.Module, model: nn.Module, cfg: ExperimentConfig, data: DataSplits, device: torch.device
               ) -> Dict[str, Any]:
    """Base and pruned model timed together, forward by forward: machine noise hits both alike."""
    base_lat, final_lat = time_interleaved([base.to(device), model], data.input_shape, cfg.runtime.latency_batch,
                                           cfg.runtime.latency_repeats, threads=cfg.runtime.threads)
    return latency_metrics(base_lat, final_lat, "trial")


def _mask_zeros(model: nn.Module) -> None:
    """Keep the zeros of a mask-pruned model at zero while it fine-tunes."""
    for m in model.modules():
        if isinstance(m, WEIGHTED) and not torch_prune.is_pruned(m) and bool((m.weight == 0).any()):
            torch_prune.custom_from_mask(m, "weight", (m.weight != 0).to(m.weight.dtype))


def _make_permanent(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, WEIGHTED) and torch_prune.is_pruned(m):
            torch_prune.remove(m, "weight")


@dataclass
class _Workdir:
    """Files of one run: its pruned model, stage metrics and fine-tune checkpoint."""

    root: Path

    @property
    def pruned(self) -> Path:
        return self.root / "pruned_model.pt"

    @property
    def state(self) -> Path:
        return self.root / "pre_finetune.json"

    @property
    def finetune_ckpt(self) -> Path:
        return self.root / "finetune_ckpt.pt"

    @property
    def final(self) -> Path:
        return self.root / "final_model.pt"

    @property
    def history(self) -> Path:
        return self.root / "history.json"


def run(config: ExperimentConfig, reporter: Optional[Reporter] = None, log: Callable[[str], None] = print
        ) -> Dict[str, Any]:
    """Run one experiment and return the flat metrics dict (``prune_core.METRICS``).

    ``reporter(metrics, checkpoint_dir)`` is called after every fine-tune epoch with that epoch's
    metrics and a directory holding everything needed to resume, and once at the end with the
    full metrics dict (``stage == "done"``). With ``runtime.resume`` and a ``runtime.workdir``
    that holds such a checkpoint, the run continues from its last fine-tune epoch.
    """
    cfg = config
    t_start = time.perf_counter()
    if cfg.runtime.export:
        require_onnx()  # before any training: a missing package costs nothing computed
    seed_everything(cfg.runtime.seed)
    set_determinism(cfg.runtime.deterministic)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    device = resolve_device(cfg.runtime.device)
    data = load_data(cfg.data, device, cfg.runtime.seed)
    with contextlib.ExitStack() as stack:
        root = Path(cfg.runtime.workdir) if cfg.runtime.workdir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="prune_core_")))
        root.mkdir(parents=True, exist_ok=True)
        wd = _Workdir(root)
        resumed = _pruned_to_resume(cfg, data, wd, log) if cfg.runtime.resume else None
        if resumed is not None:
            metrics, model = resumed  # metrics["time_total_s_before"]: the stages run before
            model = model.to(device)
            base = _base_model(cfg, data, ensure_base(cfg, data, device, log).artifact)
            log(f"resuming fine-tuning from {root}")
        else:
            remove(wd.finetune_ckpt)  # it would belong to another pruned model
            metrics, model, base = _prepare(cfg, data, device, wd, log)
            metrics["time_total_s_before"] = 0.0  # this process's clock already covers those stages
        metrics = _finetune_and_measure(cfg, data, device, model, base, metrics, wd, reporter, log)
    metrics["time_total_s"] = metrics["time_total_s_before"] + time.perf_counter() - t_start
    del metrics["time_total_s_before"]
    result = {k: metrics.get(k) for k in METRIC_KEYS}
    result.update({k: metrics[k] for k in DETAIL_KEYS if k in metrics})
    if reporter:
        reporter({**result, "stage": "done"}, None)
    return result


def _pruned_to_resume(cfg: ExperimentConfig, data: DataSplits, wd: _Workdir, log
                      ) -> Optional[Tuple[Dict[str, Any], nn.Module]]:
    """The metrics and pruned model an interrupted run saved before fine-tuning; None when there
    are none, or when either is bad: then they are moved aside with a warning, and the run prunes
    again (deterministically, from the same base and seed)."""
    if not (wd.state.exists() and wd.pruned.exists()):
        return None
    try:
        metrics = json.loads(wd.state.read_text())
        return metrics, load_pruned(wd.pruned, fresh_model(cfg, data))
    except (CorruptFile, ValueError, KeyError, RuntimeError) as exc:
        for path in (wd.state, wd.pruned):
            move_aside(path)
        warn(f"the saved pruned model in {wd.root} is bad ({exc}); moved aside, pruning again", log)
        return None


def _base_model(cfg: ExperimentConfig, data: DataSplits, artifact: Dict[str, Any]) -> nn.Module:
    """The trained base on the CPU: kept aside to be timed against the pruned model at the end."""
    model = fresh_model(cfg, data)
    model.load_state_dict(artifact["model"])
    return model


def _prepare(cfg: ExperimentConfig, data: DataSplits, device: torch.device, wd: _Workdir, log
             ) -> Tuple[Dict[str, Any], nn.Module, nn.Module]:
    """Base, prune and rebuild; the result is saved in the workdir so a resumed run skips it.
    Returns the metrics so far, the rebuilt model and a copy of the base (on the CPU)."""
    t0 = time.perf_counter()
    method = METHODS[cfg.prune.method]
    base = ensure_base(cfg, data, device, log)
    artifact = base.artifact
    kept = _base_model(cfg, data, artifact)
    model = copy.deepcopy(kept).to(device)
    metrics: Dict[str, Any] = {"base_cached": int(base.source == "cache"), "num_classes": data.num_classes,
                               "time_base_s": time.perf_counter() - t0,
                               # a method that prunes at initialisation does not use the trained base
                               "epochs_base": 0 if method.base == "init" else len(artifact["history"])}
    t0 = time.perf_counter()
    metrics.update(_measure(model, cfg, data, device, "base"))
    metrics["layer_channels_base"] = layer_channels(model)
    metrics["input_shape"] = list(data.input_shape)
    metrics["layer_params_base"] = layer_params(model)
    (wd.root / "base_history.json").write_text(json.dumps(artifact["history"]))
    t_eval = time.perf_counter() - t0

    t0 = time.perf_counter()
    if method.base == "init":
        model.load_state_dict(artifact["early"][0])  # a method at initialisation prunes the untrained network
    trained_in_pruning = []

    def train(m: nn.Module, tcfg, stage: str, start: int = 0) -> History:
        history = fit(m, tcfg, data, device=device, amp=cfg.runtime.amp, cpu_bf16=cfg.runtime.cpu_bf16,
                      amp_choice=cfg.runtime.amp_dtype, stage=stage,
                      progress=cfg.runtime.progress, log=log, start_epoch=start)
        trained_in_pruning.append(len(history.epochs))
        return history

    ctx = PruneContext(cfg=cfg, example_input=_example_input(data, device),
                       calib_batches=calibration_batches(data, cfg.prune.calib_batches), train=train,
                       early_states=artifact["early"], fresh_state=_fresh_state(cfg, data), cache=cache_dir(cfg))
    plan = prune_model(model, ctx)
    metrics["epochs_prune"] = sum(trained_in_pruning)
    metrics.update(plan.stats.get("metrics", {}))  # method-specific extras, e.g. imp_levels
    metrics["time_prune_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rebuilt = rebuild(model, plan, ctx.example_input)
    model = rebuilt.model.to(device)
    metrics["rebuild_max_abs_diff"] = float(rebuilt.max_abs_diff)
    metrics["time_rebuild_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dtype = amp_dtype(device, cfg.runtime.amp, cfg.runtime.cpu_bf16, cfg.runtime.amp_dtype)
    metrics["acc_pruned_raw"] = evaluate(model, data.test, data.num_classes, dtype).top1
    judged = model
    if cfg.prune.bn_recalib_batches:  # judge the pruned network with BN statistics that fit it
        # a fine-tune starts from the re-estimated model; IMP's retraining and SNIP's training from
        # scratch start from the exact state their papers prescribe (rewound, or at initialisation)
        judged = model if method.retrain == "finetune" else copy.deepcopy(model)
        recalibrate_bn(judged, calibration_batches(data, cfg.prune.bn_recalib_batches)(), device)
    metrics["acc_pruned"] = evaluate(judged, data.test, data.num_classes, dtype).top1
    metrics["prune_ranking"] = plan.stats.get("ranking", "")
    if cfg.prune.control:  # a control trains this architecture, or a dense one as costly, from scratch instead
        model, extra = control_network(cfg, model, data.input_shape, data.num_classes,
                                       lambda m: count_flops(m, data.input_shape).total)
        model = model.to(device)
        metrics.update(extra)
    flops = count_flops(model, data.input_shape)  # known now: epoch reports carry it for schedulers' early stops
    metrics.update(flops_final=flops.total, flops_nz_final=flops.effective, macs_final=flops.macs,
                   params_nz_final=count_params(model)[1])
    metrics["time_eval_s"] = t_eval + time.perf_counter() - t0
    save_pruned(model, wd.pruned)
    metrics["time_total_s_before"] = sum(metrics[k] for k in ("time_base_s", "time_prune_s", "time_rebuild_s",
                                                                  "time_eval_s"))
    _write_atomic(wd.state, json.dumps({k: v for k, v in metrics.items()}, default=float))
    log(f"pruned {cfg.prune.method}/{cfg.prune.criterion} {cfg.prune.scope} ratio {cfg.prune.ratio}: "
        f"accuracy {metrics['acc_base']:.2f}% -> {metrics['acc_pruned']:.2f}% before fine-tuning "
        f"({metrics['acc_pruned_raw']:.2f}% before BN re-estimation)")
    return metrics, model, kept


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _finetune_and_measure(cfg: ExperimentConfig, data: DataSplits, device: torch.device, model: nn.Module,
                          base: nn.Module, metrics: Dict[str, Any], wd: _Workdir, reporter: Optional[Reporter],
                          log) -> Dict[str, Any]:
    t0 = time.perf_counter()
    _mask_zeros(model)
    # fine-tune; SNIP trains from scratch with the base budget; IMP retrains with it from its rewind epoch
    tcfg, start = post_prune_training(cfg)
    if cfg.prune.control:  # Scratch-B's epochs follow from the FLOPs the pruned network kept
        tcfg = control_training(cfg, metrics["flops_final"] / metrics["flops_base"])

    costs = {k: metrics[k] for k in EPOCH_COSTS}

    def on_epoch(record, _ckpt):
        if reporter:  # "epoch" counts epochs trained since pruning (EPOCH_KEYS)
            reporter({**record, "epoch": record["epoch"] - start, **costs}, wd.root)

    # distillation (finetune.kd_alpha > 0): the dense base teaches; a copy, as the base is timed later
    distils = getattr(tcfg, "kd_alpha", 0.0) > 0
    teacher = copy.deepcopy(base) if distils else None
    history: History = fit(model, tcfg, data, device=device, amp=cfg.runtime.amp, cpu_bf16=cfg.runtime.cpu_bf16,
                           amp_choice=cfg.runtime.amp_dtype, stage="finetune",
                           checkpoint=wd.finetune_ckpt, resume=cfg.runtime.resume, on_epoch=on_epoch,
                           progress=cfg.runtime.progress, log=log, start_epoch=start, teacher=teacher)
    del teacher
    _make_permanent(model)
    metrics["time_finetune_s"] = time.perf_counter() - t0
    metrics["finetune_epochs"] = len(history.epochs)
    metrics["epochs_teacher"] = len(history.epochs) if distils else 0
    metrics["epochs_trial"] = metrics["epochs_prune"] + metrics["finetune_epochs"]
    metrics["val_acc_final"] = history.last.get("val_acc", math.nan) if history.epochs else evaluate(
        model, data.val, data.num_classes).top1
    wd.history.write_text(json.dumps(history.epochs))

    t0 = time.perf_counter()
    metrics.update(_measure(model, cfg, data, device, "final"))
    metrics["layer_channels_final"] = layer_channels(model)
    metrics["layer_params_final"] = layer_params(model)
    metrics["sparsity"] = sparsity(model)
    metrics.update(flops_kept(metrics))
    metrics.update(_time_pair(base, model, cfg, data, device))
    if cfg.runtime.export:  # the deployment axis: the rebuilt model under ONNX Runtime, kept in the run dir
        metrics.update(export_metrics(base, model, data.input_shape, _example_input(data, torch.device("cpu")),
                                      wd.root / f"{cfg.model.name}_rebuilt.onnx", cfg.runtime.latency_batch,
                                      cfg.runtime.latency_repeats, cfg.runtime.threads))
    metrics["time_eval_s"] += time.perf_counter() - t0
    save_pruned(model, wd.final)
    return metrics


def evaluate_only(cfg: ExperimentConfig, log=print) -> Dict[str, Any]:
    """Accuracy, FLOPs, parameters and latency of the model at ``model.pretrained_path``."""
    device = resolve_device(cfg.runtime.device)
    data = load_data(cfg.data, device, cfg.runtime.seed)
    path = Path(cfg.model.pretrained_path)
    model = load_pruned(path, fresh_model(cfg, data)).to(device)
    m = _measure(model, cfg, data, device, "final")
    lat = measure_latency(model, data.input_shape, cfg.runtime.latency_batch, cfg.runtime.latency_repeats,
                          threads=cfg.runtime.threads)
    m.update({"latency_ms_final": lat.ms_b1, "latency_ms_final_batch": lat.ms_batch, "latency_ms_final_iqr": lat.iqr_b1,
              "latency_ms_final_batch_iqr": lat.iqr_batch, "latency_device": lat.device, "latency_pass": "trial"})
    if cfg.runtime.export:  # beside the model file: --eval-only makes no run directory
        m.update(export_metrics(None, model, data.input_shape, _example_input(data, torch.device("cpu")),
                                path.with_suffix(".onnx"), cfg.runtime.latency_batch, cfg.runtime.latency_repeats,
                                cfg.runtime.threads))
    return {k: v for k, v in m.items() if not k.startswith("_")}
