"""Group sparsity (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning", sec. 3.3): train
the base so that whole dependency groups fade, then prune them by their group norm.

``train.group_l1`` (> 0) trains with Torch-Pruning's ``GroupNormPruner`` regularisation, the
reference (VainF/Torch-Pruning ``torch_pruning/pruner/algorithms/group_norm_pruner.py``,
``regularize``): after each backward pass, every weight of a group's channel (the conv or linear
rows that write it, the batch-norm scale, the next layer's input columns) gets
``reg * gamma_k * w`` added to its gradient, where ``gamma_k = 2 ** (4 * (I_max - I_k) / (I_max - I_min))``
grows for the groups whose L2 norm ``I_k`` is small: the weak groups are pushed to zero hardest
(DepGraph's eq. 5). The output layer's classes are never a group (``ignored_layers``). The
regulariser is Torch-Pruning's own, called as its examples call it, so this module only builds it.
``train.group_l1`` is part of the base's key when set.

The criterion ``group_norm`` then scores a channel by the L2 norm of every parameter of its group
(Torch-Pruning's ``GroupMagnitudeImportance(p=2)``, the group averaged over its layers, no
normaliser), what the penalty has been shrinking; ``l2`` scores only the group's output filters.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from .criteria import Criterion, register_criterion
from .graph import output_layer


def group_regularizer(model: nn.Module, example_input: torch.Tensor, strength: float
                      ) -> Callable[[nn.Module], None]:
    """``regularize(model)``: adds the group penalty's gradient (``strength`` = Torch-Pruning's
    ``reg``) to ``model``'s gradients in place; call it after backward, on unscaled gradients.
    The dependency graph is traced once on ``example_input``, in eval mode (the batch norms'
    statistics stay as they were)."""
    training = model.training
    model.eval()
    try:
        pruner = tp.pruner.GroupNormPruner(model, example_input,
                                           importance=tp.importance.GroupMagnitudeImportance(p=2),
                                           reg=strength, ignored_layers=[output_layer(model, example_input)])
    finally:
        model.train(training)
    return pruner.regularize


@register_criterion("group_norm")
class GroupNorm(Criterion):
    """L2 norm of every parameter of a channel's dependency group (DepGraph; Torch-Pruning's
    ``GroupMagnitudeImportance(p=2)``): what ``train.group_l1`` shrinks. See ``pruning.group_norm``."""

    units = ("channel",)

    def channel_importance(self) -> tp.importance.Importance:
        return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
