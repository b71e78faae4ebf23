"""The ``CRITERIA`` registry: how units are scored.

A criterion scores channels through a Torch-Pruning importance (which aggregates the members of a
coupled dependency group) and single weights through ``weight_saliency`` (what kernel, pattern,
IMP and SNIP pruning rank). Scores are "higher = more important"; the lowest go.

>>> CRITERIA["l1"]().weight_saliency(torch.tensor([-2.0, 1.0]), None).tolist()
[2.0, 1.0]
"""

from __future__ import annotations

from typing import Optional

import torch
import torch_pruning as tp
from torch import nn

from .._registry import register
from ._base import CRITERIA


class FilterNormImportance(tp.importance.GroupMagnitudeImportance):
    """Li et al. 2017 (sec. 3.1): a filter's importance is the norm of its own weights.

    Torch-Pruning's group magnitude also sums the next layer's input columns and BN scales; this
    keeps only the output filters of the group's convolutions (for a residual group, every conv
    whose output is added; their norms are averaged, as DepGraph (Fang et al. 2023) aggregates
    coupled layers). A hidden neuron of an MLP (a linear-rooted group) is scored by its weight row.
    """

    def __init__(self, p: int):
        super().__init__(p=p, group_reduction="mean", normalizer=None, bias=False,
                         target_types=[nn.modules.conv._ConvNd, nn.Linear])

    def __call__(self, group):
        filters = tp.dependency.Group()
        filters.items.extend(item for item in group.items
                             if item.dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels))
        filters._DG = group._DG
        return super().__call__(filters)


class Criterion:
    """One criterion. ``needs_grad``: channel scores read ``.grad`` of a calibration backward pass.
    ``raw_global``: a global channel ranking compares raw scores across layers, as the criterion's
    paper does, instead of scores divided by their layer's mean."""

    needs_grad = False
    raw_global = False

    def channel_importance(self) -> tp.importance.Importance:
        raise NotImplementedError(f"{type(self).__name__} does not score channels")

    def weight_saliency(self, weight: torch.Tensor, grad: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not score single weights")


@register(CRITERIA, "l1")
class L1(Criterion):
    """Sum of absolute weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""

    def channel_importance(self) -> tp.importance.Importance:
        return FilterNormImportance(p=1)

    def weight_saliency(self, weight, grad):
        return weight.detach().abs()


@register(CRITERIA, "l2")
class L2(Criterion):
    """Squared L2 norm (rank-equal to the norm; LAMP is defined on squared magnitudes)."""

    def channel_importance(self) -> tp.importance.Importance:
        return FilterNormImportance(p=2)

    def weight_saliency(self, weight, grad):
        return weight.detach().pow(2)


@register(CRITERIA, "bn_scale")
class BNScale(Criterion):
    """|gamma| of the batch norm after each conv (Liu et al. 2017, Network Slimming); a coupled
    group averages its BNs. Groups without a BN (e.g. SE squeeze convs) are not ranked, and the
    ranking is on raw |gamma| across layers, as the paper's global threshold is."""

    raw_global = True  # the sparsity penalty of the paper's training puts every layer's gammas on one scale

    def channel_importance(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance(group_reduction="mean", normalizer=None)


@register(CRITERIA, "taylor")
class Taylor(Criterion):
    """First-order Taylor expansion of the loss (Molchanov et al. 2019, eq. 4): a filter's
    importance is ``(sum_s g_s w_s)^2``, averaged over calibration batches. Per weight, ``|g * w|``
    is SNIP's connection sensitivity (Lee et al. 2019)."""

    needs_grad = True

    def channel_importance(self) -> tp.importance.Importance:
        # multivariable: |sum of g*w| over the filter (the paper's group expansion), not sum of |g*w|
        return tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None, multivariable=True)

    def weight_saliency(self, weight, grad):
        if grad is None:
            raise RuntimeError("taylor saliency needs the gradient of a calibration pass")
        return (weight.detach() * grad).abs()


@register(CRITERIA, "random")
class Random(Criterion):
    """Uniform random scores: the baseline any criterion has to beat (seeded by runtime.seed)."""

    def channel_importance(self) -> tp.importance.Importance:
        return tp.importance.RandomImportance()

    def weight_saliency(self, weight, grad):
        return torch.rand(weight.shape, device=weight.device)
