"""``snip``: Single-shot Network Pruning (Lee et al. 2019) at initialisation.

Connection sensitivity ``|g * w|`` (the loss gradient times the weight, i.e. the per-weight
first-order Taylor saliency) on ``calib_batches`` batches of the untrained network; the top
``(1 - ratio)`` of all conv and linear weights, ranked globally, are kept and the rest masked
(``prune.global_unstructured`` with the saliency as importance). The pipeline then trains the
sparse network from scratch. ``ratio`` = fraction of conv and linear weights removed (or, with
``target: flops``, the count that removes that fraction of effective FLOPs).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
from torch import nn

from ._base import CRITERIA, PruneContext, PruningPlan, method
from .graph import copy_model
from .masks import EffectiveFlops, current_masks, global_count_for_flops, weight_layers


def connection_sensitivity(model: nn.Module, ctx: PruneContext, criterion) -> dict:
    """Layer name -> per-weight saliency, from the gradient averaged over the calibration batches.
    Computed on a copy so the caller's batch-norm statistics stay untouched."""
    work = copy_model(model).train()
    device = next(work.parameters()).device
    work.zero_grad(set_to_none=True)
    batches = 0
    for x, y in ctx.calib_batches():
        F.cross_entropy(work(x.to(device)), y.to(device)).backward()  # gradients add up over batches
        batches += 1
    if batches == 0:
        raise RuntimeError("snip: calib_batches yielded no batch")
    return {n: criterion.weight_saliency(m.weight, m.weight.grad / batches) for n, m in weight_layers(work)}


@method("snip", criteria=("taylor",), base="init")
def snip(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Keep the top-k connections by |g * w|; masks applied to ``model`` in place."""
    p = ctx.cfg.prune
    saliency = connection_sensitivity(model, ctx, CRITERIA[p.criterion]())
    layers = weight_layers(model)
    names = [n for n, _ in layers]
    n_total = sum(m.weight.numel() for _, m in layers)
    stats = {}
    if p.target == "flops":
        flops = EffectiveFlops(model, ctx)
        n_remove = global_count_for_flops(p.ratio, names, [saliency[n] for n in names], flops)
    else:
        n_remove = int(round(p.ratio * n_total))
    with torch.no_grad():
        torch_prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=torch_prune.L1Unstructured,
                                        importance_scores={(m, "weight"): saliency[n] for n, m in layers},
                                        amount=n_remove)
    stats["unit_ratio"] = n_remove / n_total
    if p.target == "flops":
        stats["flops_removed"] = flops.removed(current_masks(model))
    return PruningPlan("snip", ratio=n_remove / n_total, masks=current_masks(model), stats=stats)
