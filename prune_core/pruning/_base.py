"""Registries and the data that passes between a pruning method, ``rebuild`` and the pipeline."""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from .._registry import register
from ..errors import ConfigError
from .select import imp_levels

if TYPE_CHECKING:  # config imports this package to validate method names; no cycle at run time
    from ..config import ExperimentConfig, TrainConfig

Batches = Callable[[], Iterable[Tuple[torch.Tensor, torch.Tensor]]]
Trainer = Callable[[nn.Module, "TrainConfig", str, int], Any]  # (model, config, stage, start_epoch)
StateDraw = Callable[[int], Dict[str, torch.Tensor]]  # seed -> state dict of a freshly built model


def _missing_batches() -> Iterable[Tuple[torch.Tensor, torch.Tensor]]:
    raise RuntimeError("this pruning method needs calibration batches: pass PruneContext(calib_batches=...)")


def _missing_train(model: nn.Module, cfg: "TrainConfig", stage: str, start_epoch: int = 0) -> None:
    raise RuntimeError("this pruning method retrains the model: pass PruneContext(train=...)")


def _missing_fresh_state(seed: int) -> Dict[str, torch.Tensor]:
    raise RuntimeError("this pruning method draws a fresh initialisation: pass PruneContext(fresh_state=...)")


@dataclass
class PruneContext:
    """What a pruning method may use besides the model.

    >>> ctx = PruneContext(cfg, example_input=x[:4], calib_batches=lambda: iter(loader))  # doctest: +SKIP
    """

    cfg: "ExperimentConfig"
    example_input: torch.Tensor  # a small batch on the model's device; traces the dependency graph
    calib_batches: Batches = _missing_batches  # yields cfg.prune.calib_batches (x, y) training batches
    # train(model, train_config, stage_name, start_epoch) trains in place from start_epoch, the LR
    # schedule fast-forwarded to it (IMP levels)
    train: Trainer = _missing_train
    early_states: Dict[int, Dict[str, torch.Tensor]] = field(default_factory=dict)  # base epoch -> state dict
    # fresh_state(seed): the state dict of the registry model built anew under ``seed`` (its own
    # initialiser, BN at init); only the caller knows the model's constructor (classes, input size)
    fresh_state: StateDraw = _missing_fresh_state
    # where device measurements (round_to: auto, target: latency) are cached; None: measured, not kept
    cache: Optional[Path] = None

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """(C, H, W) of one image: what FLOPs are counted at."""
        return tuple(self.example_input.shape[1:])


@dataclass
class PruningPlan:
    """What a method decided to remove.

    ``channels``: for structured methods, the root layer of each dependency group (a conv name) ->
    the output channels of that root to remove; the coupled layers follow through Torch-Pruning's
    ``DependencyGraph``. The model itself is left untouched until ``rebuild``.

    ``masks``: for mask methods, layer name -> weight mask (1 keeps, 0 removes), already applied to
    the model in place with ``torch.nn.utils.prune`` (IMP trains through them).

    ``ratio`` is the unit ratio applied (after a FLOPs-target search, the one found);
    ``stats`` holds method-specific numbers (achieved unit ratio, FLOPs removed, IMP's per-level
    sparsity) for logs and tests; ``stats["metrics"]``, where present, holds extra keys the pipeline
    copies into the run's metrics dict (e.g. ``imp_levels``).
    """

    method: str
    ratio: float = 0.0
    channels: Dict[str, List[int]] = field(default_factory=dict)
    masks: Dict[str, torch.Tensor] = field(default_factory=dict)
    stats: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RebuildResult:
    model: nn.Module  # physically smaller (channels gone); mask methods: masks made permanent
    max_abs_diff: float  # rebuilt vs masked model logits on the example input (eval mode, fp32)
    layer_channels_before: Dict[str, int]  # conv/linear output channels per layer name
    layer_channels_after: Dict[str, int]
    removed_channels: Dict[str, List[int]] = field(default_factory=dict)  # group root -> channels removed


Method = Callable[[nn.Module, PruneContext], PruningPlan]

METHODS: Dict[str, Method] = {}
METHOD_CRITERIA: Dict[str, Tuple[str, ...]] = {}  # allowed criteria per method; the first is the default
BASE_NEEDS: Dict[str, str] = {}  # "trained": prunes the trained base; "init": prunes the network at init
# what trains after pruning: "finetune" (cfg.finetune from epoch 0), "train" (cfg.train from epoch 0:
# SNIP's training from scratch), "rewind" (cfg.train from prune.rewind_epoch to its end: IMP)
RETRAIN: Dict[str, str] = {}
CALIB_BATCHES: Dict[str, int] = {}  # what prune.calib_batches = 0 resolves to, per method
CRITERIA: Dict[str, Any] = {}


def method(name: str, criteria: Tuple[str, ...], base: str = "trained", retrain: str = "",
           calib_batches: int = 4) -> Callable[[Method], Method]:
    """Register a pruning method, the criteria it accepts (first = default), the base it needs,
    what trains after it (``RETRAIN``; default: "train" for an init base, else "finetune") and its
    default number of calibration batches (4: the taylor criterion's; unused by methods that read
    no gradient)."""
    if base not in ("trained", "init"):
        raise ValueError(f"base={base!r}: expected trained or init")
    retrain = retrain or ("train" if base == "init" else "finetune")
    if retrain not in ("finetune", "train", "rewind"):
        raise ValueError(f"retrain={retrain!r}: expected finetune, train or rewind")
    if calib_batches < 1:
        raise ValueError(f"calib_batches={calib_batches}: expected a positive integer")

    def deco(fn: Method) -> Method:
        register(METHODS, name)(fn)
        METHOD_CRITERIA[name] = tuple(criteria)
        BASE_NEEDS[name] = base
        RETRAIN[name] = retrain
        CALIB_BATCHES[name] = calib_batches
        return fn

    return deco


def post_prune_training(cfg: "ExperimentConfig") -> Tuple["TrainConfig", int]:
    """(settings, start epoch) of the training that follows pruning: the fine-tune, SNIP's training
    from scratch (``cfg.train`` from 0) or IMP's retraining of each level (``cfg.train`` from
    ``prune.rewind_epoch``, the schedule fast-forwarded to it). It trains ``epochs - start`` epochs.

    With ``prune.budget_epochs`` B > 0 every method trains B epochs in all, the base it prunes
    included: the fine-tune lasts B - T (T = ``train.epochs``), SNIP trains B epochs from scratch,
    and each of IMP's L levels retrains (B - T) // L epochs from the rewind epoch k, on the schedule
    of a run of k + (B - T) // L epochs.

    >>> post_prune_training(ExperimentConfig.from_dict({"prune.method": "imp"}))[1]  # doctest: +SKIP
    1
    """
    how, p, base = RETRAIN[cfg.prune.method], cfg.prune, cfg.train.epochs
    budget = p.budget_epochs
    if how == "finetune":
        if not budget:
            return cfg.finetune, 0
        if budget <= base:
            raise ConfigError(f"prune.budget_epochs={budget}: expected more than the base's {base} epochs "
                              f"(train.epochs), which {cfg.prune.method} spends before it fine-tunes")
        return dataclasses.replace(cfg.finetune, epochs=budget - base), 0
    if how == "train":
        return (dataclasses.replace(cfg.train, epochs=budget) if budget else cfg.train), 0
    if not budget:
        return cfg.train, p.rewind_epoch
    levels = p.rounds or imp_levels(p.ratio, p.imp_fraction)
    per_level = (budget - base) // levels
    if per_level < 1:
        raise ConfigError(f"prune.budget_epochs={budget}: expected at least train.epochs + levels = "
                          f"{base + levels} for IMP at ratio {p.ratio} ({levels} levels)")
    return dataclasses.replace(cfg.train, epochs=p.rewind_epoch + per_level), p.rewind_epoch
