"""``imp``: Iterative Magnitude Pruning with rewinding (lottery tickets).

Papers: Frankle & Carbin 2019, "The Lottery Ticket Hypothesis" (iterative pruning, sec. 2, and its
random-reinitialisation control) and Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis" (rewinding to an early epoch ``k`` instead of initialisation).
open_lth prunes a fixed fraction per level for as many levels as asked; landing the last level
exactly on ``ratio`` is this project's addition, so that IMP meets the other methods at equal ratios.
Reference implementation: facebookresearch/open_lth, ``pruning/sparse_global.py`` (one level) and
``training/train.py`` (retraining from ``start_step``, the LR schedule stepped up to it).

Protocol, on the base trained for ``T = train.epochs`` epochs:

1. Each level removes ``prune.imp_fraction`` ``f`` (default 0.2) of the *remaining* prunable weights
   by global magnitude, as open_lth's ``sparse_global`` does: ``n = ceil(f * remaining)``, threshold
   the ``n``-th (0-based) smallest remaining magnitude, keep what is strictly above it (so ``n + 1``
   weights go when magnitudes are distinct; ``select.sparse_global_keep``). Levels go on while such
   a step stays below ``round(ratio * N)`` pruned of the ``N`` prunable weights; the level whose
   step would reach it is the last, ``L``, and removes exactly the rest (the lowest magnitudes), so
   the final sparsity is ``ratio``. ``L`` is ``select.imp_levels(ratio, f)``, the smallest count with
   ``1 - (1 - f) ** L >= ratio``, or one fewer where open_lth's rounding up has already reached the
   target (small networks, ratios just above a level). ``prune.rounds = R > 0`` instead runs ``R``
   levels of ``f = 1 - (1 - ratio) ** (1 / R)`` (the last again exact).
   Prunable: every conv and linear weight; the output layer as open_lth's model of the same
   family has it (``prune.imp_output: auto``): its LeNet and VGG ignore it
   (``pruning_layers_to_ignore='fc.weight'`` in ``models/mnist_lenet.py`` and ``cifar_vgg.py``), so
   ``lenet300`` and ``vgg16`` keep theirs whole; its CIFAR and ImageNet ResNets prune it, as every
   other model here does (open_lth's default). ``prune.imp_output: prune`` or ``keep`` chooses.
   ``ratio`` and the sparsities count the prunable weights, as open_lth counts them.
2. After each level (``prune.rewind: weights``) the surviving weights and all other state (biases,
   BN affine parameters and running statistics) are reset to the base's state at epoch
   ``k = prune.rewind_epoch`` (0 = initialisation), and the network retrains with the *base*
   settings ``cfg.train`` from epoch ``k`` to ``T``: a fresh optimizer, the per-step LR schedule
   starting at global step ``k * steps_per_epoch``, the data order of epochs ``k..T-1``.
   ``prune.rewind: lr`` is learning-rate rewinding (Renda et al. 2020, "Comparing Rewinding and
   Fine-tuning in Neural Network Pruning"): nothing is reset, the trained survivors retrain with
   the same schedule from epoch ``k``.
3. Levels ``1..L-1`` retrain here through ``ctx.train``; the last level's retraining is the
   pipeline's post-prune stage (``post_prune_training(cfg) == (cfg.train, k)``).
4. ``prune.reinit: true``: Frankle & Carbin's control. The levels run as above; then the final
   masks are kept and every weight and buffer is replaced by a fresh draw of the registry model's
   initialisation (``ctx.fresh_state(runtime.seed + REINIT_SEED_OFFSET)``, BN at its init), which
   trains with the ticket's schedule. The draw comes from the caller because only it knows how the
   model is built (classes, input size, width); a seed of its own keeps the draw reproducible and
   different from the base's epoch-0 weights (which ``runtime.seed`` would reproduce).

5. ``prune.shuffle: true``: open_lth's layerwise random-pruning control
   (``lottery/branch/randomly_prune.py``, ``strategy='layerwise'``, ``start_at='rewind'``). The
   levels run as above; then each layer's final mask is permuted at random (``runtime.seed``), so
   every layer keeps the ticket's number of weights but not its choice, on the rewound weights.
6. ``prune.lamp: true`` (``prune.scope: global``, criterion ``l2``): every level ranks LAMP scores
   (Lee et al. 2021, eq. 2) of the live weights' squared magnitudes, layer by layer, in place of raw
   magnitudes: the LAMP paper's unstructured global pruning (reference jaeho-lee/layer-adaptive-sparsity
   ``tools/pruners.py``, ``_compute_lamp_amounts``: pruned weights score 0, the top LAMP scores of
   what remains survive). Its ``iterate.py`` retrains from the pruned weights with a fresh schedule:
   ``prune.rewind: lr`` with ``prune.rewind_epoch: 0``. Deviation: a level's count is open_lth's.

Cost: ``T + L * (T - k)`` training epochs in all, the base included (``stats["epochs_trained"]``,
``metrics["imp_epochs"]``); at ``f = 0.2`` a ratio of 0.5 takes 4 levels, 0.8 takes 8, 0.9 takes 11,
0.95 takes 14 and 0.98 takes 18.
With ``target: flops`` level ``l < L`` removes weights until ``1 - (1 - f) ** l`` of the (effective)
FLOPs are gone and the last until ``ratio`` is, ``L`` derived from ``ratio`` in the same way.

>>> plan = prune_model(model, PruneContext(cfg, x[:4], train=trainer, early_states=early))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from ..errors import ConfigError
from ..sections import PruneConfig
from ._base import PruneContext, PruningPlan, post_prune_training, register_method
from .graph import output_layer
from .masks import EffectiveFlops, current_masks, global_count_for_flops, shuffle_within_layers, weight_layers
from .select import (imp_levels, imp_round_fraction, lamp_normalize, lowest_count_keep, sparse_global_keep,
                     sparsity_after)

# ``prune.reinit`` draws its initialisation with runtime.seed + this: no base of a seed sweep uses it
REINIT_SEED_OFFSET = 1_000_003
# registry models whose open_lth counterpart ignores the output layer (pruning_layers_to_ignore='fc.weight')
OPEN_LTH_KEEPS_OUTPUT = {"lenet300": "mnist_lenet_300_100", "vgg16": "cifar_vgg_16"}


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
    _refresh(model)


@torch.no_grad()
def _refresh(model: nn.Module) -> None:
    """``weight = weight_orig * weight_mask`` now rather than at the next forward."""
    for m in model.modules():
        if hasattr(m, "weight_mask") and hasattr(m, "weight_orig"):
            m.weight = m.weight_orig * m.weight_mask


def weight_sparsity(layers) -> float:
    zeros = sum(int((_mask(m) == 0).sum()) for _, m in layers)
    return zeros / sum(m.weight.numel() for _, m in layers)


def _mask(m: nn.Module) -> torch.Tensor:
    return m.weight_mask if hasattr(m, "weight_mask") else torch.ones_like(m.weight)


def _magnitude_source(m: nn.Module) -> torch.Tensor:
    """The weights a level ranks: the trained values (``weight_orig`` once the layer is masked;
    only live weights are ranked, so the mask need not be applied)."""
    return (m.weight_orig if hasattr(m, "weight_orig") else m.weight).detach()


@torch.no_grad()
def _set_masks(layers, masks: List[torch.Tensor]) -> None:
    for (_, m), mask in zip(layers, masks):
        if torch_prune.is_pruned(m):
            m.weight_mask.copy_(mask)
        else:
            torch_prune.custom_from_mask(m, "weight", mask.to(m.weight.device, m.weight.dtype))
    for _, m in layers:
        m.weight = m.weight_orig * m.weight_mask


def prunable_layers(model: nn.Module, ctx: PruneContext) -> List:
    """(name, layer) of the conv and linear layers IMP prunes: all, less the output layer where
    ``prune.imp_output`` keeps it (``auto``: where open_lth's model of the family does)."""
    layers = weight_layers(model)
    how = ctx.cfg.prune.imp_output
    if how == "prune" or (how == "auto" and ctx.cfg.model.name not in OPEN_LTH_KEEPS_OUTPUT):
        return layers
    head = output_layer(model, ctx.example_input)
    return [(n, m) for n, m in layers if m is not head]


def level_scores(layers, masks: List[torch.Tensor], lamp: bool) -> List[torch.Tensor]:
    """What a level ranks: the live weights' magnitudes, or their LAMP scores (pruned weights 0)."""
    scores = [_magnitude_source(m).cpu() for _, m in layers]
    if not lamp:
        return scores
    return [lamp_normalize((s.double() * mk.double()).pow(2)) for s, mk in zip(scores, masks)]


def level_count(p: PruneConfig) -> int:
    """IMP's levels at ``p``: ``prune.rounds``, else the fewest levels of ``imp_fraction`` that reach the ratio."""
    return p.rounds or imp_levels(p.ratio, p.imp_fraction)


# magnitude pruning by definition (Frankle & Carbin 2019): l1, or l2 (squared, the same ranking) for LAMP;
# prune.reinit (Frankle & Carbin's control) is read by IMP alone, prune.shuffle by IMP and SNIP
@register_method("imp", unit="weight", criteria=("l1", "l2"), retrain="rewind", rounds=level_count, lamp=True,
                 flags=("reinit", "shuffle"))
def imp(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Prune, rewind and retrain level by level; masks applied to ``model`` in place."""
    p = ctx.cfg.prune
    if p.rewind_epoch not in ctx.early_states:
        raise ConfigError(f"prune.rewind_epoch={p.rewind_epoch}: expected one of the epochs the base keeps, "
                          f"{', '.join(map(str, sorted(ctx.early_states)))}")
    if p.rewind_epoch >= ctx.cfg.train.epochs:
        raise ConfigError(f"prune.rewind_epoch={p.rewind_epoch}: IMP retrains train.epochs="
                          f"{ctx.cfg.train.epochs} from it; expected a smaller epoch")
    retrain, start = post_prune_training(ctx.cfg)  # every level retrains as the last one does
    early = ctx.early_states[p.rewind_epoch]
    layers = prunable_layers(model, ctx)
    names = [n for n, _ in layers]
    n_total = sum(m.weight.numel() for _, m in layers)
    fraction = imp_round_fraction(p.ratio, p.rounds) if p.rounds else p.imp_fraction
    nominal = p.rounds or imp_levels(p.ratio, fraction)
    target = int(round(p.ratio * n_total))  # weights pruned after the last level
    flops = EffectiveFlops(model, ctx) if p.target == "flops" else None
    level_sparsity: List[float] = []
    level_removed: List[int] = []
    last = False
    while not last:
        level = len(level_sparsity) + 1
        masks = [_mask(m).detach().cpu().clone() for _, m in layers]
        scores = level_scores(layers, masks, p.lamp)
        already = sum(int((mk == 0).sum()) for mk in masks)
        if flops is not None:
            last = level >= nominal
            goal = p.ratio if last else sparsity_after(fraction, level)
            # weights already pruned rank below every live one
            live = [torch.where(mk > 0, s.abs(), torch.full_like(s, -1.0)) for s, mk in zip(scores, masks)]
            new = lowest_count_keep(scores, masks, global_count_for_flops(goal, names, live, flops) - already)
        else:
            new = sparse_global_keep(scores, masks, fraction)
            last = level == p.rounds or sum(int((mk == 0).sum()) for mk in new) >= target
            if last:  # the last level lands exactly on the ratio
                new = lowest_count_keep(scores, masks, target - already)
        _set_masks(layers, new)
        level_removed.append(sum(int((mk == 0).sum()) for mk in new) - already)
        level_sparsity.append(weight_sparsity(layers))
        if p.rewind == "weights":
            rewind(model, early)
        if not last:
            ctx.train(model, retrain, f"imp_level{level}", start)
    levels = len(level_sparsity)
    if p.shuffle:  # open_lth's randomly_prune, layerwise: each layer's count kept, not its choice
        shuffled = shuffle_within_layers({n: _mask(m).detach() for n, m in layers}, ctx.cfg.runtime.seed)
        _set_masks(layers, [shuffled[n] for n in names])
    if p.reinit:
        rewind(model, ctx.fresh_state(ctx.cfg.runtime.seed + REINIT_SEED_OFFSET))
    epochs = ctx.cfg.train.epochs + levels * max(0, retrain.epochs - start)
    stats = {"ranking": "global_lamp" if p.lamp else "global_raw", "levels": levels,
             "output_layer": "pruned" if len(layers) == len(weight_layers(model)) else "kept",
             "level_fraction": fraction, "level_removed": level_removed,
             "level_sparsity": level_sparsity, "unit_ratio": level_sparsity[-1], "epochs_trained": epochs,
             "metrics": {"imp_levels": levels, "imp_epochs": epochs}}
    if flops is not None:
        stats["flops_removed"] = flops.removed(current_masks(model))
    return PruningPlan("imp", ratio=level_sparsity[-1], masks=current_masks(model), stats=stats)
