"""``imp``: Iterative Magnitude Pruning with weight rewinding (lottery tickets).

Frankle & Carbin 2019 (sec. 2, "iterative pruning") and Frankle et al. 2020 (rewinding to an early
iteration, "Linear Mode Connectivity and the Lottery Ticket Hypothesis"): ``rounds`` times, remove
the fraction ``p = 1 - (1 - ratio) ** (1 / rounds)`` of the *remaining* conv and linear weights
with the smallest magnitude, ranked globally (``prune.global_unstructured``), then reset every
surviving weight, and the rest of the network state, to the base's state at ``rewind_epoch``
(0 = initialisation) and retrain. After round ``k`` the sparsity is ``1 - (1 - p) ** k``.
``ratio`` = final fraction of conv and linear weights removed.

Rounds 1..R-1 retrain here through ``ctx.train`` with the ``finetune`` settings; the last round's
retraining is the pipeline's fine-tune stage, so every round trains with the same schedule.
With ``target: flops`` round ``k`` removes weights until ``1 - (1 - target) ** (k / R)`` of the
(effective) FLOPs are gone.

>>> plan = prune_model(model, PruneContext(cfg, x[:4], train=trainer, early_states=early))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from ._base import PruneContext, PruningPlan, method
from .masks import EffectiveFlops, current_masks, global_count_for_flops, weight_layers
from .select import imp_round_fraction, sparsity_after


@torch.no_grad()
def rewind(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load ``state`` (a dense model's state dict) into ``model``, keeping its pruning masks:
    ``layer.weight`` goes to ``layer.weight_orig``, so the surviving weights take their old values."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if name.endswith("_mask"):
            continue
        key = name[: -len("_orig")] if name.endswith("_orig") else name
        if key not in state:
            raise KeyError(f"rewind: the saved state has no {key!r}")
        tensor.copy_(state[key])


def weight_sparsity(layers) -> float:
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / sum(m.weight.numel() for _, m in layers)


@method("imp", criteria=("l1",))
def imp(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Prune, rewind and retrain ``rounds`` times; masks applied to ``model`` in place."""
    p = ctx.cfg.prune
    if p.rewind_epoch not in ctx.early_states:
        raise ValueError(f"prune.rewind_epoch={p.rewind_epoch}: the base kept the states of epochs "
                         f"{sorted(ctx.early_states)}")
    early = ctx.early_states[p.rewind_epoch]
    layers = weight_layers(model)
    names = [n for n, _ in layers]
    params = [(m, "weight") for _, m in layers]
    fraction = imp_round_fraction(p.ratio, p.rounds)
    flops = EffectiveFlops(model, ctx) if p.target == "flops" else None
    round_sparsity: List[float] = []
    for k in range(1, p.rounds + 1):
        # training may leave weights channels_last; global_unstructured flattens them with view(-1)
        model.to(memory_format=torch.contiguous_format)
        amount: float | int = fraction
        if flops is not None:
            goal = sparsity_after(imp_round_fraction(p.ratio, p.rounds), k)
            already = sum(int((getattr(m, "weight_mask", torch.ones(1)) == 0).sum()) for _, m in layers)
            # weights already pruned rank below every live one
            live = [torch.where(getattr(m, "weight_mask", torch.ones_like(m.weight)) > 0, m.weight.abs(),
                                torch.full_like(m.weight, -1.0)) for _, m in layers]
            amount = max(0, global_count_for_flops(goal, names, live, flops) - already)
        with torch.no_grad():
            torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
        rewind(model, early)
        round_sparsity.append(weight_sparsity(layers))
        if k < p.rounds:
            ctx.train(model, ctx.cfg.finetune, f"imp_round{k}")
    stats = {"round_fraction": fraction, "round_sparsity": round_sparsity, "unit_ratio": round_sparsity[-1]}
    if flops is not None:
        stats["flops_removed"] = flops.removed(current_masks(model))
    return PruningPlan("imp", ratio=round_sparsity[-1], masks=current_masks(model), stats=stats)
