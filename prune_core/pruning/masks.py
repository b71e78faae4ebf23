"""Shared plumbing of the mask methods (the kernel and weight units).

Masks live on the model through ``torch.nn.utils.prune``: the layer keeps ``weight_orig`` and a
``weight_mask`` buffer and computes with their product. Effective FLOPs of a layer are its dense
FLOPs times the fraction of its weights kept (ARCHITECTURE.md, contract 6).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from ..metrics import count_flops
from ..errors import ConfigError
from ._base import METHODS, PruneContext
from .graph import CONV, WEIGHTED, output_layer
from .select import Ranking, comparable, solve_ratio


def conv_layers(model: nn.Module, ctx: PruneContext) -> List[Tuple[str, nn.Module]]:
    """Conv layers that kernel-level methods prune (a conv classifier excepted); a model without
    any (an MLP such as lenet300) is refused in one line naming the methods that apply to it."""
    last = output_layer(model, ctx.example_input)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, CONV) and m is not last]
    if not layers:
        cfg = ctx.cfg
        usable = [m for m, spec in METHODS.items() if spec.unit != METHODS[cfg.prune.method].unit]
        raise ConfigError(f"prune.method={cfg.prune.method!r}: model {cfg.model.name} has no conv layer to "
                          f"prune kernels in; expected one of {', '.join(usable)} for it")
    return layers


def weight_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Every conv and linear layer: what IMP and SNIP rank globally."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHTED)]


def apply_masks(model: nn.Module, masks: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Attach ``masks`` (layer name -> weight mask) with ``prune.custom_from_mask``; returns the
    masks the layers now hold (combined with any earlier ones)."""
    with torch.no_grad():  # the masked weight is recomputed, with gradients, at every forward
        for name, mask in masks.items():
            module = model.get_submodule(name)
            torch_prune.custom_from_mask(module, "weight", mask.to(module.weight.device, module.weight.dtype))
    return {name: model.get_submodule(name).weight_mask for name in masks}


def current_masks(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: m.weight_mask for n, m in model.named_modules() if hasattr(m, "weight_mask")}


class EffectiveFlops:
    """FLOPs removed by candidate masks, from one dense count: sum of dense x (1 - density)."""

    def __init__(self, model: nn.Module, ctx: PruneContext):
        report = count_flops(model, ctx.input_shape)
        self.total = report.total
        self.per_layer = report.per_layer

    def removed(self, masks: Dict[str, torch.Tensor]) -> float:
        gone = sum(self.per_layer.get(n, 0.0) * (1.0 - float(m.float().mean())) for n, m in masks.items())
        return gone / self.total

    def removed_by_counts(self, names: Sequence[str], fractions: Sequence[float]) -> float:
        """FLOPs removed when layer ``names[i]`` loses ``fractions[i]`` of its weights."""
        gone = sum(self.per_layer.get(n, 0.0) * f for n, f in zip(names, fractions))
        return gone / self.total


# how a global kernel ranking compares layers under prune.global_scores: auto. Raw mean saliency per
# weight: against mean-normalised at matched FLOPs (bench/global_scores.py, README "Global ranking")
# neither led on validation beyond the seeds' spread
KERNEL_GLOBAL = "raw"


def ranked_masks(ctx: PruneContext, names: Sequence[str], scores: Sequence[torch.Tensor],
                 to_mask: Callable[[int, torch.Tensor], torch.Tensor], flops: EffectiveFlops,
                 unit_share: Sequence[float], base_removed: Optional[Sequence[float]] = None
                 ) -> Tuple[Dict[str, torch.Tensor], float, Dict[str, float]]:
    """Masks from per-layer unit scores, at ``prune.ratio`` of the units or, with ``target: flops``,
    at the unit ratio that removes that fraction of FLOPs.

    ``to_mask(i, removed_unit_indices)`` turns layer ``i``'s removed units into its weight mask;
    ``unit_share[i]`` is the fraction of layer ``i``'s weights one removed unit zeroes (what the
    FLOPs search counts with, without building masks); ``base_removed[i]`` is the fraction of layer
    ``i``'s weights its masks remove before any unit goes (intra_kernel's patterns; default 0).
    Returns (masks, unit ratio applied, stats).
    """
    p = ctx.cfg.prune
    how = "local" if p.scope == "local" else "global_lamp" if p.lamp else \
        f"global_{KERNEL_GLOBAL if p.global_scores == 'auto' else p.global_scores}"
    ranking = Ranking([comparable(s, how) for s in scores], p.scope, p.max_layer_ratio)
    ratio = p.ratio
    base = list(base_removed) if base_removed is not None else [0.0] * len(names)
    if p.target == "flops":
        ratio, _ = solve_ratio(p.ratio, lambda r: flops.removed_by_counts(
            names, [b + k * share for k, share, b in zip(ranking.counts(r), unit_share, base)]))
    chosen = ranking.select(ratio)
    masks = {n: to_mask(i, idx) for i, (n, idx) in enumerate(zip(names, chosen))}
    stats = {"unit_ratio": sum(len(idx) for idx in chosen) / max(sum(int(s.numel()) for s in scores), 1),
             "flops_removed": flops.removed(masks),
             "ranking": how}
    return masks, ratio, stats


def global_count_for_flops(target: float, names: Sequence[str], saliency: Sequence[torch.Tensor],
                           flops: EffectiveFlops) -> int:
    """How many of the lowest-saliency weights (one ranking over all ``saliency`` tensors) to
    remove so that ``target`` of the FLOPs go (weights already pruned should score below all)."""
    sizes = torch.tensor([s.numel() for s in saliency])
    flat = torch.cat([s.detach().reshape(-1).float().cpu() for s in saliency])
    layer_sorted = torch.repeat_interleave(torch.arange(len(sizes)), sizes)[torch.argsort(flat, stable=True)]
    n_total = int(sizes.sum())

    def removed(s: float) -> float:
        counts = torch.bincount(layer_sorted[: int(round(s * n_total))], minlength=len(sizes))
        return flops.removed_by_counts(names, (counts / sizes).tolist())

    s, _ = solve_ratio(target, removed, hi=1.0 - 1.0 / n_total)
    return int(round(s * n_total))


def shuffle_within_layers(masks: Dict[str, torch.Tensor], seed: int) -> Dict[str, torch.Tensor]:
    """Each mask's entries permuted at random (``seed``): the same number kept per layer, anywhere
    in it (SNIP's and IMP's layerwise random controls)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        perm = torch.randperm(mask.numel(), generator=gen).to(mask.device)
        out[name] = mask.reshape(-1)[perm].view_as(mask)
    return out
