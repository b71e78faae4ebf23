"""The method and criterion registries (one ``MethodSpec`` record per method) and the data that
passes between a pruning method, ``rebuild`` and the pipeline."""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from .._registry import register
from ..errors import ConfigError
from ..sections import PruneConfig

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

UNITS = ("channel", "kernel", "weight")  # what a method removes, and so which criteria can score it
BASES = ("trained", "init")
RETRAINS = ("finetune", "train", "rewind")
RETRAIN_WORDS = {"train": "trains from scratch after pruning (train settings)",
                 "rewind": "rewinds and retrains with the base's train settings"}
TARGETS = ("unit", "flops", "latency")


def _no_check(cfg: "PruneConfig") -> None:
    return None


def _one_round(cfg: "PruneConfig") -> int:
    return 1


@dataclass(frozen=True)
class MethodSpec:
    """Everything about one pruning method, in one record: ``METHODS[name]``. Its own file fills
    it through ``register_method``; no other module names a method.

    ``criteria`` empty = every registered criterion that scores the method's ``unit``
    (``accepted_criteria``), so a new criterion of that unit needs no edit here."""

    name: str
    prune: Method  # (model, ctx) -> PruningPlan
    unit: str  # channel: dependency groups removed physically; kernel: k x k kernels masked; weight: single weights
    criteria: Tuple[str, ...] = ()  # the only criteria it accepts, where fixed by its paper (IMP: magnitude)
    default_criterion: str = ""  # "" = the first it accepts
    base: str = "trained"  # trained: prunes the trained base; init: prunes the network at initialisation
    # what trains after pruning: finetune (cfg.finetune from epoch 0), train (cfg.train from epoch 0:
    # training from scratch), rewind (cfg.train from prune.rewind_epoch to its end: IMP)
    retrain: str = "finetune"
    calib_batches: int = 4  # what prune.calib_batches = 0 resolves to (4: the taylor criterion's)
    lamp: bool = False  # LAMP (Lee et al. 2021) may replace its layer-wise ranking (prune.lamp)
    # its global ranking compares layers' scores raw or mean-normalised, as prune.global_scores chooses
    global_scores: bool = False
    targets: Tuple[str, ...] = ("unit", "flops")  # the prune.target values it can meet
    flags: Tuple[str, ...] = ()  # boolean (or mapping) prune.* keys only this method reads: set with another is refused
    check: Callable[["PruneConfig"], None] = _no_check  # its own config rules; raises ConfigError
    # retrain "rewind": how many retrainings share an equal budget (prune.budget_epochs; IMP's levels)
    rounds: Callable[["PruneConfig"], int] = _one_round

    def __post_init__(self) -> None:
        for key, value, allowed in (("unit", self.unit, UNITS), ("base", self.base, BASES),
                                    ("retrain", self.retrain, RETRAINS)):
            if value not in allowed:
                raise ConfigError(f"method {self.name!r}: {key}={value!r}: expected one of {', '.join(allowed)}")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or "unit" not in self.targets:
            raise ConfigError(f"method {self.name!r}: targets={self.targets!r}: expected unit and any of "
                              f"{', '.join(TARGETS[1:])}")
        if not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ConfigError(f"method {self.name!r}: calib_batches={self.calib_batches!r}: expected a positive integer")
        if self.criteria and self.default_criterion and self.default_criterion not in self.criteria:
            raise ConfigError(f"method {self.name!r}: default_criterion={self.default_criterion!r}: expected one of "
                              f"its criteria, {', '.join(self.criteria)}")
        switches = [f.name for f in dataclasses.fields(PruneConfig) if isinstance(f.default, bool) or f.default == ()]
        bad = [f for f in self.flags if f not in switches]
        if bad:
            raise ConfigError(f"method {self.name!r}: flags={self.flags!r}: expected boolean (or mapping) prune keys, "
                              f"{', '.join(switches)}")


METHODS: Dict[str, MethodSpec] = {}
CRITERIA: Dict[str, Any] = {}  # name -> a Criterion class (pruning.criteria); its ``units`` say what it scores


def register_method(name: str, unit: str, *, criteria: Iterable[str] = (), default_criterion: str = "",
                    base: str = "trained", retrain: str = "", calib_batches: int = 4, lamp: bool = False,
                    global_scores: bool = False,
                    targets: Iterable[str] = ("unit", "flops"), flags: Iterable[str] = (),
                    check: Callable[["PruneConfig"], None] = _no_check,
                    rounds: Callable[["PruneConfig"], int] = _one_round) -> Callable[[Method], Method]:
    """Register ``fn(model, ctx) -> PruningPlan`` as pruning method ``name`` (a ``MethodSpec``):
    the door built-in methods and plug-ins share. ``retrain`` defaults to "train" for a method that
    prunes at initialisation and "finetune" otherwise.

    >>> @register_method("my_channels", unit="channel")  # doctest: +SKIP
    ... def my_channels(model, ctx):
    ...     return PruningPlan("my_channels", ratio=ctx.cfg.prune.ratio, channels={...})
    """

    def deco(fn: Method) -> Method:
        spec = MethodSpec(name=name, prune=fn, unit=unit, criteria=tuple(criteria),
                          default_criterion=default_criterion, base=base,
                          retrain=retrain or ("train" if base == "init" else "finetune"),
                          calib_batches=calib_batches, lamp=lamp, global_scores=global_scores,
                          targets=tuple(targets), flags=tuple(flags),
                          check=check, rounds=rounds)
        register(METHODS, name, "method")(spec)
        return fn

    return deco


def accepted_criteria(method: str) -> Tuple[str, ...]:
    """The criteria ``method`` accepts, its default first: the ones its record fixes, or every
    registered criterion that scores its unit, in registration order."""
    spec = METHODS[method]
    names = spec.criteria or tuple(c for c, cls in CRITERIA.items() if spec.unit in cls.units)
    first = spec.default_criterion or (names[0] if names else "")
    return tuple(dict.fromkeys((first, *names))) if first else names


def post_prune_training(cfg: "ExperimentConfig") -> Tuple["TrainConfig", int]:
    """(settings, start epoch) of the training that follows pruning: the fine-tune, SNIP's training
    from scratch (``cfg.train`` from 0) or IMP's retraining of each level (``cfg.train`` from
    ``prune.rewind_epoch``, the schedule fast-forwarded to it). It trains ``epochs - start`` epochs.

    With ``prune.budget_epochs`` B > 0 every method trains B epochs in all, the base it prunes
    included: the fine-tune lasts B - T (T = ``train.epochs``), SNIP trains B epochs from scratch,
    and each of IMP's L levels retrains (B - T) // L epochs from the rewind epoch k, on the schedule
    of a run of k + (B - T) // L epochs.

    A control (``prune.control``) trains ``cfg.train`` from 0 for its own epochs
    (``prune_core.controls.control_training``; Scratch-B's as if it kept every FLOP: the pipeline
    sets them once the pruned network's FLOPs are known).

    >>> post_prune_training(ExperimentConfig.from_dict({"prune.method": "imp"}))[1]  # doctest: +SKIP
    1
    """
    spec = METHODS[cfg.prune.method]
    how, p, base = spec.retrain, cfg.prune, cfg.train.epochs
    budget = p.budget_epochs
    if p.control:  # a control trains from scratch with train (prune_core.controls); Scratch-B's FLOPs are known later
        from ..controls import check_control, control_training

        check_control(cfg, spec)
    if how != "finetune" and cfg.finetune.kd_alpha:
        raise ConfigError(f"finetune.kd_alpha={cfg.finetune.kd_alpha}: expected 0 for {cfg.prune.method}, which "
                          f"{RETRAIN_WORDS[how]} instead of fine-tuning; distillation from the dense base applies "
                          "to the methods that fine-tune")
    if how == "finetune" and budget and budget <= base:  # a control's pruned arm fine-tunes too
        raise ConfigError(f"prune.budget_epochs={budget}: expected more than the base's {base} epochs "
                          f"(train.epochs), which {cfg.prune.method} spends before it fine-tunes")
    if p.control:
        return control_training(cfg), 0
    if how == "finetune":
        return (dataclasses.replace(cfg.finetune, epochs=budget - base) if budget else cfg.finetune), 0
    if how == "train":
        return (dataclasses.replace(cfg.train, epochs=budget) if budget else cfg.train), 0
    if not budget:
        return cfg.train, p.rewind_epoch
    levels = METHODS[cfg.prune.method].rounds(p)
    per_level = (budget - base) // levels
    if per_level < 1:
        raise ConfigError(f"prune.budget_epochs={budget}: expected at least train.epochs + levels = "
                          f"{base + levels} for {cfg.prune.method} at ratio {p.ratio} ({levels} levels)")
    return dataclasses.replace(cfg.train, epochs=p.rewind_epoch + per_level), p.rewind_epoch
