"""``kernel`` and ``intra_kernel``: masks at the granularity of a conv kernel and inside it.

``kernel`` (Mao et al. 2017, "Exploring the Regularity of Sparse Structure in CNNs": 2-D,
kernel-level sparsity) removes whole k x k kernels ``W[o, i]``, single input -> output
connections, ranked by the norm of their weights. ``ratio`` = fraction of kernels removed (per
layer in ``local`` scope; over all conv layers in ``global`` scope, each layer capped at
``max_layer_ratio``).

``intra_kernel`` prunes weights inside kernels. ``ratio`` = fraction of the eligible kernels
that are pruned, each keeping ``pattern_keep`` of its 9 weights (so a layer's weight sparsity is
``ratio * (9 - pattern_keep) / 9``); the kernels whose pruning loses the least saliency go first.
In ``pattern`` mode (PatDNN, Niu et al. 2020; PCONV, Ma et al. 2020) every pruned 3x3 kernel keeps
the best of a fixed pattern library, chosen by the saliency the pattern keeps; one library shared
by a whole network is what lets a compiler generate one code path per pattern. In ``magnitude``
mode a pruned kernel keeps its ``pattern_keep`` largest weights (any k x k kernel with k > 1,
keeping the same fraction ``pattern_keep / 9`` of larger kernels).

>>> PATTERNS[4].shape
torch.Size([8, 9])
"""

from __future__ import annotations

import itertools
import math
from typing import Dict, List

import torch
from torch import nn

from ..config import ConfigError
from ._base import CRITERIA, PruneContext, PruningPlan, method
from .masks import EffectiveFlops, apply_masks, conv_layers, ranked_masks

CENTRE = 4  # flat index of the centre of a 3x3 kernel (row-major)


def _pattern(cells) -> List[int]:
    row = [0] * 9
    for c in cells:
        row[c] = 1
    return row


def _library(keep: int) -> torch.Tensor:
    """The fixed 3x3 pattern library for ``keep`` kept weights, one row of 9 zeros/ones each.

    keep = 4: PatDNN's kind of library, the 8 four-entry patterns that keep the centre and three
    weights forming a connected shape with it: the four 2x2 squares around the centre and the
    four T shapes (centre plus three of its four edge neighbours). Flat positions:
        0 1 2
        3 4 5
        6 7 8
    Other sizes: every pattern of ``keep`` weights that contains the centre (C(8, keep - 1)
    patterns), the centre being the weight Gaussian and Laplacian-of-Gaussian filters, which
    PatDNN's patterns imitate, never drop.
    """
    if keep == 4:
        squares = [(0, 1, 3, 4), (1, 2, 4, 5), (3, 4, 6, 7), (4, 5, 7, 8)]
        tees = [(1, 3, 4, 5), (1, 4, 5, 7), (3, 4, 5, 7), (1, 3, 4, 7)]
        return torch.tensor([_pattern(p) for p in squares + tees], dtype=torch.float32)
    others = [c for c in range(9) if c != CENTRE]
    rows = [_pattern((CENTRE,) + combo) for combo in itertools.combinations(others, keep - 1)]
    return torch.tensor(rows, dtype=torch.float32)


PATTERNS: Dict[int, torch.Tensor] = {k: _library(k) for k in range(1, 9)}


def kernel_saliency(weight: torch.Tensor, criterion) -> torch.Tensor:
    """(out, in/groups, k*k) per-weight saliency of a conv weight, on the CPU."""
    w = weight.detach().float().cpu()
    return criterion.weight_saliency(w, None).reshape(w.shape[0], w.shape[1], -1)


@method("kernel", criteria=("l1", "l2"))
def kernel(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Remove whole kernels by norm; masks applied to ``model`` in place."""
    p = ctx.cfg.prune
    criterion = CRITERIA[p.criterion]()
    layers = conv_layers(model, ctx)
    names = [n for n, _ in layers]
    # the mean saliency per weight: the norm's ranking inside a layer, and comparable across
    # layers whose kernels differ in size (1x1 against 3x3) for the global ranking
    scores = [kernel_saliency(m.weight, criterion).mean(2).flatten() for _, m in layers]
    shapes = [m.weight.shape for _, m in layers]

    def to_mask(i: int, removed: torch.Tensor) -> torch.Tensor:
        out, cin = shapes[i][:2]
        keep = torch.ones(out * cin)
        keep[removed] = 0
        return keep.reshape(out, cin, *[1] * (len(shapes[i]) - 2)).expand(shapes[i]).contiguous()

    share = [1.0 / max(s.numel(), 1) for s in scores]
    masks, ratio, stats = ranked_masks(ctx, names, scores, to_mask, EffectiveFlops(model, ctx), share)
    return PruningPlan("kernel", ratio=ratio, masks=apply_masks(model, masks), stats=stats)


@method("intra_kernel", criteria=("l1", "l2"))
def intra_kernel(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Pattern (or magnitude) pruning inside kernels; masks applied to ``model`` in place."""
    p = ctx.cfg.prune
    criterion = CRITERIA[p.criterion]()
    pattern_mode = p.pattern == "pattern"
    layers = []
    for name, m in conv_layers(model, ctx):
        area = math.prod(m.kernel_size)
        if (pattern_mode and tuple(m.kernel_size) == (3, 3)) or (not pattern_mode and area > 1):
            layers.append((name, m))
    if not layers:
        raise ConfigError(f"prune.pattern={p.pattern!r}: model {ctx.cfg.model.name} has no "
                          f"{'3x3' if pattern_mode else 'k x k (k > 1)'} conv kernel; expected "
                          f"{'magnitude (any k x k kernel, k > 1) or ' if pattern_mode else ''}another method for it")
    names = [n for n, _ in layers]
    scores, kept_masks, shares = [], [], []
    for _, m in layers:
        sal = kernel_saliency(m.weight, criterion)  # (out, in, area)
        area = sal.shape[2]
        if pattern_mode:
            lib = PATTERNS[p.pattern_keep]
            best = (sal @ lib.T).argmax(2)  # the pattern that keeps the most saliency
            keep = lib[best]
        else:
            k = min(area, max(1, int(math.floor(p.pattern_keep / 9 * area + 0.5))))
            top = sal.topk(k, dim=2).indices
            keep = torch.zeros_like(sal).scatter_(2, top, 1.0)
        lost = (sal * (1 - keep)).sum(2)
        scores.append((lost / area).flatten())  # per-weight mean: comparable across kernel sizes
        kept_masks.append(keep.reshape(-1, area))
        # every pruned kernel keeps the same count, so one pruned kernel zeroes this share of the layer
        shares.append(float(area - keep[0, 0].sum()) / area / (sal.shape[0] * sal.shape[1]))

    def to_mask(i: int, chosen: torch.Tensor) -> torch.Tensor:
        shape = layers[i][1].weight.shape
        mask = torch.ones(shape[0] * shape[1], kept_masks[i].shape[1])
        mask[chosen] = kept_masks[i][chosen]
        return mask.reshape(shape)

    masks, ratio, stats = ranked_masks(ctx, names, scores, to_mask, EffectiveFlops(model, ctx), shares)
    return PruningPlan("intra_kernel", ratio=ratio, masks=apply_masks(model, masks), stats=stats)
