"""One training loop for base training, fine-tuning and IMP's retraining levels.

SGD (momentum, Nesterov) or AdamW; cosine (with linear warm-up), step or constant schedules
stepped per batch; no weight decay on norm and bias parameters; label smoothing; AMP on CUDA
(bf16 where supported, else fp16 with a gradient scaler; ``runtime.amp_dtype`` picks one) and
fp32 on the CPU; channels_last;
early stopping on validation accuracy; Network Slimming's L1 penalty on BN scales; distillation
from a teacher's logits (Hinton et al. 2015; ``finetune.kd_alpha``); a checkpoint
each epoch from which a killed run resumes at the next epoch and ends where an uninterrupted run
would.

>>> history = fit(model, cfg.train, data, device=torch.device("cpu"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch
import torch.nn.utils.prune
from torch import nn

from .checkpoints import load_or_discard, save_atomic  # noqa: F401  (save_atomic: importable from here)
from .sections import TrainConfig, precision_name
from .errors import ConfigError
from .errors import Diverged  # noqa: F401  (raised by fit; importable from here)
from .metrics import evaluate

EpochCallback = Callable[[Dict[str, Any], Optional[Path]], None]
# at most one in-epoch progress line per this many seconds: an epoch of Fashion-MNIST (resnet20, 2 CPU
# cores) took 3.5 min before its first line; a shorter epoch logs nothing more than its epoch line
PROGRESS_EVERY_S = 10.0


@dataclass
class History:
    epochs: List[Dict[str, Any]] = field(default_factory=list)  # one dict per finished epoch
    best_val_acc: float = -1.0
    stopped_early: bool = False

    @property
    def last(self) -> Dict[str, Any]:
        return self.epochs[-1] if self.epochs else {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(enabled: bool) -> None:
    """``runtime.deterministic``: deterministic kernels where torch has them (a warning, not an
    error, where it has none) and no nondeterministic cuDNN algorithms. cuBLAS needs its workspace
    setting before CUDA starts, so it is set here, for a process that has not touched CUDA yet."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled


def amp_dtype(device: torch.device, enabled: bool, cpu_bf16: bool = False, choice: str = "auto"
              ) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision_name``: on CUDA the ``choice`` of ``runtime.amp_dtype``,
    auto being bf16 where the GPU supports it, else fp16; on the CPU bf16 with ``cpu_bf16``; None
    (fp32) otherwise. A GPU without bf16 asked for bf16 is a ``ConfigError``."""
    precision = precision_name(device.type, enabled, cpu_bf16, choice)
    if precision == "amp":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"runtime.amp_dtype=bf16: {torch.cuda.get_device_name(device)} has no bf16; "
                          "expected auto or fp16")
    return torch.bfloat16 if precision == "bf16" else None


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Weight decay on weights of conv and linear layers only: decaying norm scales and biases
    hurts accuracy and, for pruning, blurs the BN-scale ranking the sparsity penalty sets up."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at a global step (pure; stepped per batch)."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        total = max(cfg.epochs * steps_per_epoch - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total) / total))
    if cfg.schedule == "step":
        return cfg.gamma ** (step // (cfg.step_size * steps_per_epoch))
    return 1.0


def _bn_l1_grad(model: nn.Module, strength: float) -> None:
    """Subgradient of strength * sum|gamma| (Liu et al. 2017, Network Slimming)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and m.weight.grad is not None:
            m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=strength)


def group_penalty(model: nn.Module, x: torch.Tensor, strength: float) -> Callable[[nn.Module], None]:
    """DepGraph's group sparsity (``train.group_l1``): Torch-Pruning's regulariser on ``model``'s
    dependency groups, traced on two images of ``x`` (``pruning.group_norm``)."""
    from .pruning.group_norm import group_regularizer

    return group_regularizer(model, x[:2], strength)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015's soft-target term, ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``
    averaged over the batch: the T^2 keeps its gradients on the scale of the hard-label loss as T
    changes. RepDistiller's ``DistillKL`` (HobbitLong/RepDistiller ``distiller_zoo/KD.py``) computes
    the same, as ``kl_div(..., reduction="sum") * T**2 / batch``; computed in fp32 under autocast."""
    t, wide = float(temperature), torch.promote_types(student.dtype, torch.float32)  # fp16/bf16 -> fp32
    log_p_student = torch.log_softmax(student.to(wide) / t, dim=1)
    log_p_teacher = torch.log_softmax(teacher.to(wide) / t, dim=1)
    return nn.functional.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


def training_loss(logits: torch.Tensor, y: torch.Tensor, hard: nn.Module, teacher_logits: Optional[torch.Tensor],
                  alpha: float, temperature: float) -> torch.Tensor:
    """The loss a step minimises: ``hard(logits, y)`` (cross-entropy, with the stage's label
    smoothing), or with a teacher ``(1 - alpha) * hard + alpha * distillation_loss`` (RepDistiller's
    ``gamma * loss_cls + alpha * loss_div`` with gamma = 1 - alpha)."""
    loss = hard(logits, y)
    if teacher_logits is None:
        return loss
    return (1.0 - alpha) * loss + alpha * distillation_loss(logits, teacher_logits, temperature)


def _progress(enabled: str):
    if enabled == "on" or (enabled == "auto" and sys.stderr.isatty()):
        from tqdm.auto import tqdm

        return tqdm
    return None


class ProgressLine(str):
    """An in-epoch progress line as ``fit`` hands it to ``log``: the text, with its numbers in
    ``record`` (stage, epoch, epochs, step, steps, img_s, left_s) for a reader that shows them its
    own way (a sweep's lines about its bases)."""

    record: Dict[str, Any]


def clock_text(seconds: float) -> str:
    """``H:MM:SS`` of a duration, rounded to the second."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(stage: str, epoch: int, epochs: int, step: int, steps: int, seen: int, elapsed: float
                  ) -> ProgressLine:
    """``<stage> epoch k/n: step i/m, R img/s, H:MM:SS left``: ``seen`` images in ``step`` steps of
    ``elapsed`` seconds; the time left in the epoch at that pace."""
    rate = seen / elapsed if elapsed > 0 else 0.0
    left = elapsed / max(step, 1) * (steps - step)
    line = ProgressLine(f"{stage} epoch {epoch}/{epochs}: step {step}/{steps}, {rate:.0f} img/s, "
                        f"{clock_text(left)} left")
    line.record = {"stage": stage, "epoch": epoch, "epochs": epochs, "step": step, "steps": steps,
                   "img_s": rate, "left_s": left}
    return line


class EpochProgress:
    """The progress lines of one epoch: ``step(done, seen)`` after each step reads ``clock`` once and
    logs a ``progress_line`` when ``every`` seconds have passed since the epoch began or since its
    last line; never at the epoch's last step (its epoch line follows)."""

    def __init__(self, log: Callable[[str], None], stage: str, epoch: int, epochs: int, steps: int,
                 every: float, clock: Callable[[], float]):
        self.log, self.stage, self.epoch, self.epochs, self.steps = log, stage, epoch, epochs, steps
        self.every, self.clock = every, clock
        self.start = clock()
        self.due = self.start + every

    def step(self, done: int, seen: int) -> None:
        if done >= self.steps:
            return
        now = self.clock()
        if now >= self.due:
            self.due = now + self.every  # from this line on: at most one line per period, no catching up
            self.log(progress_line(self.stage, self.epoch, self.epochs, done, self.steps, seen, now - self.start))


def _rng_state() -> Dict[str, Any]:
    """Every RNG's state as tensors, numbers and tuples only, so checkpoints load with
    ``weights_only=True`` (numpy's key array is stored as a tensor)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(model: nn.Module, cfg: TrainConfig, data, *, device: torch.device, amp: bool = True,
        cpu_bf16: bool = False, amp_choice: str = "auto", stage: str = "train", checkpoint: Optional[Path] = None,
        resume: bool = False, on_epoch: Optional[EpochCallback] = None, progress: str = "off", log=None, start_epoch: int = 0,
        teacher: Optional[nn.Module] = None, progress_every: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic) -> History:
    """Train ``model`` in place for ``cfg.epochs`` on ``data.train``, validating on ``data.val``.

    ``start_epoch``: train epochs ``start_epoch..cfg.epochs-1`` only, with a fresh optimizer, the
    per-step LR schedule starting at global step ``start_epoch * steps_per_epoch`` and each epoch's
    data order (open_lth ``train(start_step=...)``; IMP retrains this way from its rewind epoch).
    Records carry the epoch of the schedule (``start_epoch + 1`` first).

    ``checkpoint``: file written after every epoch (model, optimizer, schedule position, epoch,
    RNG state, config, history); with ``resume`` an existing one is loaded and training goes on at
    the next epoch. ``on_epoch(metrics, checkpoint)`` is called after each epoch.
    ``amp``, ``cpu_bf16``, ``amp_choice``: ``runtime.amp``, ``runtime.cpu_bf16`` and
    ``runtime.amp_dtype`` (resolved by ``amp_dtype``); fp16 trains with a ``torch.amp.GradScaler``,
    whose state the checkpoint keeps.
    ``teacher``: with ``cfg.kd_alpha`` > 0 (``FinetuneConfig``), the model distilled from
    (``training_loss``); it runs forward in eval mode on each batch the model trains on, without
    gradient, and is neither trained nor saved.
    ``log``: each epoch's line, and within an epoch a ``progress_line`` (a ``ProgressLine``) at most
    once per ``progress_every`` seconds of ``clock`` (``PROGRESS_EVERY_S``), none in an epoch that
    ends sooner; not while ``progress`` shows tqdm's bar.
    Raises ``Diverged`` when the loss is not finite.
    """
    model.to(device)
    # channels_last: faster convolutions on CUDA, and on this 2-core CPU too (resnet20 on mnist5k:
    # 620 -> 787 images/s measured; ARCHITECTURE.md records 722 -> 1044)
    model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(device, amp, cpu_bf16, amp_choice)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = len(data.train) if not cfg.max_steps else min(len(data.train), cfg.max_steps)
    offset = start_epoch * steps_per_epoch  # the schedule fast-forwarded to start_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s + offset, steps_per_epoch, cfg))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    alpha, temperature = float(getattr(cfg, "kd_alpha", 0.0)), float(getattr(cfg, "kd_temperature", 1.0))
    if alpha > 0 and teacher is None:
        raise ValueError(f"{stage}: kd_alpha={alpha} needs a teacher model")
    if alpha == 0:
        teacher = None
    if teacher is not None:
        teacher.to(device).to(memory_format=torch.channels_last).eval().requires_grad_(False)
    history = History()
    best_state: Optional[Dict[str, torch.Tensor]] = None
    first_epoch, stale = start_epoch, 0

    # tensors and plain data only (weights_only); a bad checkpoint is moved aside and training restarts
    state = load_or_discard(checkpoint, f"{stage} starts again from epoch {start_epoch + 1}", log,
                            map_location=device) if resume and checkpoint is not None else None
    if state is not None:
        if state.get("start_epoch", 0) != start_epoch:
            raise ValueError(f"{stage}: {checkpoint} trained from epoch {state.get('start_epoch', 0)}, "
                             f"not start_epoch={start_epoch}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history = History(**state["history"])
        best_state, stale = state["best_state"], state["stale"]
        first_epoch = state["epoch"] + 1
        _set_rng_state(state["rng"])
        if log:
            log(f"{stage}: resumed from {checkpoint} at epoch {first_epoch + 1}")

    bar_cls = _progress(progress)
    regularize: Optional[Callable[[nn.Module], None]] = None  # train.group_l1's, traced on the first batch
    for epoch in range(first_epoch, cfg.epochs):
        if history.stopped_early:
            break
        t0 = time.perf_counter()
        model.train()
        data.train.set_epoch(epoch)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        batches = data.train
        bar = bar_cls(total=steps_per_epoch, desc=f"{stage} {epoch + 1}/{cfg.epochs}", leave=False) if bar_cls else None
        every = PROGRESS_EVERY_S if progress_every is None else progress_every
        ticker = EpochProgress(log, stage, epoch + 1, cfg.epochs, steps_per_epoch, every, clock) \
            if log and not bar else None
        for step, (x, y) in enumerate(batches):
            if step >= steps_per_epoch:
                break
            x = x.contiguous(memory_format=torch.channels_last)
            if cfg.group_l1 and regularize is None:
                regularize = group_penalty(model, x, cfg.group_l1)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                with torch.no_grad():
                    soft = teacher(x) if teacher is not None else None
                logits = model(x)
                loss = training_loss(logits, y, criterion, soft, alpha, temperature)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.bn_l1 or cfg.group_l1:
                scaler.unscale_(optimizer)
                if cfg.bn_l1:
                    _bn_l1_grad(model, cfg.bn_l1)
                if regularize is not None:
                    regularize(model)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total_loss += loss.detach() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            if bar:
                bar.update()
            if ticker:  # the clock, not the device: no sync (on CUDA the pace of queued steps)
                ticker.step(step + 1, seen)
        if bar:
            bar.close()
        train_loss = float(total_loss) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise Diverged(f"{stage}: loss is {train_loss} in epoch {epoch + 1} (lr {cfg.lr}); lower the learning rate")
        val = evaluate(model, data.val, data.num_classes, dtype)
        record = {"stage": stage, "epoch": epoch + 1, "train_loss": train_loss,
                  "train_acc": 100.0 * float(correct) / max(seen, 1), "val_acc": val.top1, "val_loss": val.loss,
                  "lr": optimizer.param_groups[0]["lr"], "epoch_s": time.perf_counter() - t0}
        history.epochs.append(record)
        if val.top1 > history.best_val_acc:
            history.best_val_acc, stale = val.top1, 0
            if cfg.patience:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                history.stopped_early = True
        if log:
            log(f"{stage} epoch {epoch + 1}/{cfg.epochs}: loss {train_loss:.4f}  val {val.top1:.2f}%  "
                f"({record['epoch_s']:.1f}s)")
        if checkpoint is not None:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                         "history": asdict(history), "best_state": best_state, "stale": stale,
                         "epoch": epoch, "start_epoch": start_epoch, "rng": _rng_state(), "config": asdict(cfg)},
                        checkpoint)
        if on_epoch:
            on_epoch(record, checkpoint)

    if cfg.patience and best_state is not None:
        model.load_state_dict(best_state)  # early stopping keeps the best validated weights
    model.to(memory_format=torch.contiguous_format)
    _refresh_masked_weights(model)
    return history


def recalibrate_bn(model: nn.Module, batches: Iterable, device: torch.device) -> None:
    """Re-estimate every batch norm's running statistics from ``batches`` of (x, y) training data,
    with no gradient and no weight change (EagleEye's adaptive BN, Li et al. 2020): after pruning,
    the old statistics describe channels that changed. ``torch.optim.swa_utils.update_bn`` does the
    work (running averages reset, then a cumulative average over the batches' inputs)."""
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, model, device=device)


def _refresh_masked_weights(model: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` of ``torch.nn.utils.prune``'d layers, which
    the pruning hook otherwise refreshes only at the next forward (still channels_last, with grad)."""
    with torch.no_grad():
        for m in model.modules():
            for hook in m._forward_pre_hooks.values():
                if isinstance(hook, torch.nn.utils.prune.BasePruningMethod):
                    setattr(m, hook._tensor_name, hook.apply_mask(m))
