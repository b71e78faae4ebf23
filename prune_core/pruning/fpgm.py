"""``fpgm``: Filter Pruning via Geometric Median (He et al. 2019, CVPR).

A filter close to the geometric median of its layer is the one the others can stand in for, so it
goes first. The reference (he-y/filter-pruning-geometric-median, ``pruning_cifar10.py``,
``Mask.get_filter_similar``) flattens each filter of a convolution, takes the Euclidean distance
between every pair of filters (``scipy.spatial.distance.cdist``) and scores a filter by the sum of
its distances to the others; the smallest sums are pruned. This follows that on the raw weights,
with the reference's pure-FPGM setting (``--rate_norm 1``: no norm-based pre-selection).
Torch-Pruning's ``FPGMImportance`` raises the weights to ``|w|^p`` first; this does not.

A coupled group (a residual add) averages the sums of its convolutions, as ``FilterImportance``
aggregates any per-filter score. Deviation, by design of the channel method: the filters are
removed once, after training, and fine-tuned; the reference zeroes them at the end of every
training epoch and lets them regrow (soft filter pruning, He et al. 2018).

>>> fpgm_scores(torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])).tolist()
[6.0, 5.0, 9.0]
"""

from __future__ import annotations

import torch
import torch_pruning as tp

from .criteria import Criterion, FilterImportance, register_criterion


def fpgm_scores(rows: torch.Tensor) -> torch.Tensor:
    """Each row's summed Euclidean distance to every row (``(filters, fan_in)`` -> ``(filters,)``)."""
    rows = rows.double()  # in float64 the matrix-product form of the distances is exact enough to rank
    return torch.cdist(rows, rows, p=2.0).sum(0)


@register_criterion("fpgm")
class FPGM(Criterion):
    """Distance to the other filters of the layer, summed (He et al. 2019): see ``pruning.fpgm``."""

    units = ("channel",)

    def channel_importance(self) -> tp.importance.Importance:
        return FilterImportance(fpgm_scores)
