"""Controls: does pruning beat a smaller network trained from scratch? (``prune.control``)

A control trial prunes as its twin does (same base, method, criterion, ratio and seed, so the same
pruned architecture), then throws the weights away and trains from scratch with the base's
``train`` settings:

- ``scratch_e``: the pruned architecture, re-initialised (Liu et al. 2019, "Rethinking the Value of
  Network Pruning", Scratch-E; reference Eric-mingjie/rethinking-network-pruning), for as many
  epochs as the pruned arm trained in all: base T plus fine-tune F.
- ``scratch_b``: the same network for the pruned arm's training FLOPs (Scratch-B): T epochs of
  the dense base plus F of the pruned network, ``round(T / kept + F)`` epochs of the pruned one,
  ``kept`` = its FLOPs over the base's. Liu et al. count the large model's training only
  (``T / kept``); the fine-tune is counted here too, so no control trains less than its arm did.
- ``narrow``: the dense model at the ``model.width`` multiple whose FLOPs come closest to the
  pruned network's (Tessier et al. 2023's uniformly thinned network), trained T epochs from its
  own initialisation.

Re-initialisation of a scratch control draws a fresh dense model (seed ``runtime.seed +
RESEED``, not the base's own draw) and keeps its first channels of each dependency group
(``pruning.architecture.control_network``): each weight keeps the dense layer's initial scale. With
``prune.budget_epochs`` B, T + F is B and narrow trains B epochs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from .errors import ConfigError
from .sections import is_reference

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .sections import TrainConfig

RESEED = 1_000_003  # a control's initial weights are a draw of their own, apart from the base's
WIDTH_STEPS = 14  # bisection steps of the narrow width: 2^-14 of the base width, below one channel of any layer up to 16,384 wide


def controllable(spec) -> bool:
    """Whether a method (its ``MethodSpec``) yields an architecture a control can train: it removes
    channels from the trained base and fine-tunes what is left."""
    return (spec.unit, spec.retrain, spec.base) == ("channel", "finetune", "trained")


def check_control(cfg: "ExperimentConfig", spec) -> None:
    """``prune.control`` needs a method that removes channels from a trained base and fine-tunes
    (the architecture a control trains), no distillation, and for ``narrow`` a model that takes
    ``model.width``. Raises ``ConfigError`` in one line."""
    control, method = cfg.prune.control, cfg.prune.method
    if not control:
        return
    if not controllable(spec):
        raise ConfigError(f"prune.control={control}: expected a method that removes channels from the trained "
                          f"base and fine-tunes (channel), not {method}, whose network keeps its layer widths")
    if cfg.finetune.kd_alpha:
        raise ConfigError(f"finetune.kd_alpha={cfg.finetune.kd_alpha}: expected 0 with prune.control={control}; "
                          "a control trains from scratch, with no teacher")
    if control == "narrow" and is_reference(cfg.model.name):
        raise ConfigError(f"prune.control=narrow: expected a registry model, which takes model.width; "
                          f"{cfg.model.name} is built at one width")


def control_training(cfg: "ExperimentConfig", flops_kept: float = 1.0) -> "TrainConfig":
    """The ``train`` settings a control trains with from epoch 0; ``flops_kept`` (the pruned
    network's FLOPs over the base's) sets Scratch-B's epochs; unknown (1.0), they are Scratch-E's."""
    total = cfg.prune.budget_epochs or cfg.train.epochs + cfg.finetune.epochs  # the pruned arm's T + F
    if cfg.prune.control == "narrow":
        epochs = cfg.prune.budget_epochs or cfg.train.epochs
    elif cfg.prune.control == "scratch_b":
        finetune = total - cfg.train.epochs
        epochs = max(total, round(cfg.train.epochs / max(flops_kept, 1e-9) + finetune))
    else:
        epochs = total
    return dataclasses.replace(cfg.train, epochs=int(epochs))


def narrow_width(flops_at, target: float, name: str) -> float:
    """The multiple ``w`` in (0, 1] of the model's width whose FLOPs (``flops_at(w)``, which grows
    with ``w`` in steps of whole channels) come closest to ``target``; of two as close, the wider."""
    flops_at = functools.lru_cache(maxsize=None)(flops_at)  # the bisection's ends are asked for again
    full, thinnest = flops_at(1.0), flops_at(2.0 ** -WIDTH_STEPS)
    if full == thinnest:
        raise ConfigError(f"prune.control=narrow: model.name={name} builds the same network at every model.width; "
                          "expected a model whose builder honours its width argument")
    lo, hi = 2.0 ** -WIDTH_STEPS, 1.0  # flops_at(lo) <= target < flops_at(hi), or target beyond either end
    if target >= full:
        return 1.0
    for _ in range(WIDTH_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flops_at(mid) <= target else (lo, mid)
    below, above = flops_at(lo), flops_at(hi)
    return hi if above - target <= target - below else lo
