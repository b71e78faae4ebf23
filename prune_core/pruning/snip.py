"""Pruning at initialisation: ``snip`` (Lee et al. 2019) and its controls (Frankle et al. 2021).

``snip``: Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity"
(ICLR 2019), Algorithm 1, as its reference implementation namhoonlee/snip-public (TensorFlow 1.x)
computes it:

1. ``w <- VarianceScalingInitialization`` (``snip/network.py``, ``get_initializer('vs')`` =
   ``tf.variance_scaling_initializer()`` with its defaults: scale 1, ``fan_in``, "normal", which in
   the TensorFlow the reference requires (< 1.13) is a normal of standard deviation
   ``sqrt(1 / fan_in)`` truncated at two standard deviations, not rescaled for the truncation).
   Here (``prune.snip_init: vs``, the default) every conv and linear weight of ``model`` is redrawn
   so, in place, their biases are set to zero and the batch norms are reset to their initial state
   (a no-op on the pipeline's epoch-0 state); the pipeline then trains the network from these very
   weights (the paper's Algorithm 1, whose step 6 optimises the scored ``w``).
2. One mini-batch (``snip/prune.py``: one ``get_next_batch('train', batch_size)``, the training
   batch size, ``main.py --batch_size`` 100 by default). Here: ``prune.calib_batches`` batches of
   ``data.batch_size``, 1 by default (more average the gradient, as a larger batch would).
3. Connection sensitivity ``|dL/dc|`` at ``c = 1`` for a mask ``c`` multiplying the weights, which is
   ``|g ⊙ w|`` (``snip/model.py``, ``get_sparse_mask``), with batch norm in inference mode
   (``is_train: False`` in ``prune.py``: the layers normalise with their running statistics, at
   initialisation mean 0 and variance 1). Here: ``model.eval()`` on a copy.
4. Normalised by its sum over every scored tensor (``normalize_dict``), then the top ``kappa =
   round(n * (1 - sparsity))`` kept by one global ranking (``create_sparse_mask``) over all the
   network's weights, the classifier's included (its key ``w8``/``w4``... is one of ``prn_keys``).
   Here: all conv and linear weights, the classifier included; ``ratio`` = fraction of them removed
   (with ``target: flops``, the count of lowest-saliency weights whose removal takes away that
   fraction of the effective FLOPs).

Deviations, each a named option or negligible:

* ``prune.snip_init: vs_redraw`` is what the reference *code* trains: its network keeps two weight
  sets, ``weights_bp`` scored and ``weights_ap`` trained, the latter a second, independent draw of
  the same initializer with zero biases (``initializer_w_ap='vs'``, ``initializer_b_ap='zeros'``).
  The default follows the paper's Algorithm 1 instead (one draw, scored and trained); Frankle et
  al. 2021 find SNIP's accuracy unchanged when the kept weights are reinitialised, so the two
  should agree, and ``vs_redraw`` lets a sweep check it.
* ``prune.snip_init: model`` scores and trains the registry model's own initialisation (e.g.
  kaiming-normal ``fan_out`` for the CIFAR ResNets, PyTorch's default for linear layers), what this
  module did before. Not the default: the ranking is global, so each layer's share of the kept
  weights depends on each layer's weight scale, and the paper (sec. 4.2) chooses variance scaling
  so that signals, hence gradients, keep a similar scale through the layers it compares.
* The reference puts the biases in its ranking too (``prn_keys`` takes the ``b`` keys), but it
  initialises them to zero before scoring (``main.py --initializer_b_bp zeros``), so their
  sensitivity ``|g * b|`` is 0 and they rank below every weight with a gradient: at any sparsity
  above their share of the parameters the reference masks all of them. Here biases are neither
  scored nor pruned: ``ratio`` counts conv and linear weights, as for ``imp``.
* Batch size: ``data.batch_size`` (the reference draws its batch with its training batch size too).

``prune.shuffle: true`` is the layerwise-shuffling control of Frankle, Dziugaite, Roy & Carbin,
"Pruning Neural Networks at Initialization: Why Are We Missing the Mark?" (ICLR 2021): SNIP's mask
of every layer is permuted at random within the layer (seeded by ``runtime.seed``), so each layer
keeps exactly SNIP's number of weights (and, with ``target: flops``, SNIP's effective FLOPs) but
not its choice of which.

``random_init``: the same paper's random pruning at initialisation: every conv and linear layer
loses the same fraction of its weights (``ratio``, within one weight of rounding per layer; total
exactly ``round(ratio * n)``), chosen uniformly at random (``runtime.seed``), from the same
initialisation as ``snip`` (``prune.snip_init``), then trained from scratch with the base budget
like ``snip``. With ``target: flops`` the common fraction is the one that removes that fraction of
the effective FLOPs.
"""

from __future__ import annotations

import itertools
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._base import CRITERIA, PruneContext, PruningPlan, register_method
from .graph import copy_model
from .masks import (EffectiveFlops, apply_masks, current_masks, global_count_for_flops, shuffle_within_layers,
                    weight_layers)
from .select import solve_ratio


@torch.no_grad()
def variance_scaling_(weight: torch.Tensor) -> torch.Tensor:
    """``tf.variance_scaling_initializer()`` of TensorFlow < 1.13 (scale 1, ``fan_in``, "normal"):
    a normal of standard deviation ``sqrt(1 / fan_in)`` truncated at +-2 standard deviations.
    ``fan_in`` = the weights one output unit reads (in_channels / groups x kernel area)."""
    fan_in = max(weight[0].numel(), 1)
    std = math.sqrt(1.0 / fan_in)
    return nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


@torch.no_grad()
def initialise(model: nn.Module) -> None:
    """Every conv and linear layer: weights (``weight_orig`` under a mask) redrawn with
    ``variance_scaling_``, biases zeroed; every batch norm back to its initial state (gamma 1,
    beta 0, running mean 0 and variance 1, as TensorFlow's at initialisation), so the scoring pass
    never normalises new weights with statistics of other ones. Draws from the global generator
    (``prune_model`` seeds it)."""
    for _, m in weight_layers(model):
        variance_scaling_(m.weight_orig if hasattr(m, "weight_orig") else m.weight)
        if m.bias is not None:
            m.bias.zero_()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.reset_parameters()


def connection_sensitivity(model: nn.Module, ctx: PruneContext, criterion) -> Dict[str, torch.Tensor]:
    """Layer name -> ``|g * w|`` divided by its sum over all layers, ``g`` the loss gradient
    averaged over the first ``prune.calib_batches`` calibration batches, batch norm in inference
    mode. Computed on a copy, so ``model`` keeps no gradient."""
    work = copy_model(model).eval()
    device = next(work.parameters()).device
    work.zero_grad(set_to_none=True)
    batches = 0
    for x, y in itertools.islice(ctx.calib_batches(), ctx.cfg.prune.calib_batches):
        F.cross_entropy(work(x.to(device)), y.to(device)).backward()  # gradients add up over batches
        batches += 1
    if batches == 0:
        raise RuntimeError("snip: calib_batches yielded no batch")
    raw = {n: criterion.weight_saliency(m.weight, m.weight.grad / batches).float() for n, m in weight_layers(work)}
    total = sum(s.sum() for s in raw.values())
    if not total > 0:
        raise RuntimeError("snip: every connection sensitivity is zero (no gradient reached the weights)")
    return {n: s / total for n, s in raw.items()}


def top_k_masks(scores: Sequence[torch.Tensor], keep: int) -> List[torch.Tensor]:
    """One ranking over every tensor of ``scores``: 1 for the ``keep`` highest entries, else 0."""
    flat = torch.cat([s.reshape(-1) for s in scores])
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return [part.view_as(s).clone() for part, s in zip(mask.split([s.numel() for s in scores]), scores)]


def uniform_counts(sizes: Sequence[int], fraction: float) -> List[int]:
    """Per layer, how many of its ``sizes[i]`` weights to remove: each within one of
    ``fraction * sizes[i]``, together ``round(fraction * sum(sizes))`` (largest remainders)."""
    exact = [fraction * n for n in sizes]
    counts = [math.floor(e) for e in exact]
    extra = int(round(fraction * sum(sizes))) - sum(counts)
    for i in sorted(range(len(sizes)), key=lambda i: counts[i] - exact[i])[:extra]:
        counts[i] += 1
    return counts


def random_masks(layers: Sequence[Tuple[str, nn.Module]], counts: Sequence[int], seed: int
                 ) -> Dict[str, torch.Tensor]:
    """Layer name -> weight mask with ``counts[i]`` zeros placed uniformly at random."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for (name, m), count in zip(layers, counts):
        flat = torch.ones(m.weight.numel())
        flat[torch.randperm(flat.numel(), generator=gen)[:count]] = 0.0
        masks[name] = flat.view_as(m.weight).to(m.weight.device)
    return masks


def _prepare(model: nn.Module, how: str) -> None:
    if how in ("vs", "vs_redraw"):
        initialise(model)


def _finish(name: str, model: nn.Module, ctx: PruneContext, masks: Dict[str, torch.Tensor], n_total: int,
            flops: EffectiveFlops | None) -> PruningPlan:
    """Attach ``masks``, redraw the weights for ``vs_redraw``, and report."""
    p = ctx.cfg.prune
    apply_masks(model, masks)
    if p.snip_init == "vs_redraw":
        initialise(model)  # the reference trains a second, independent draw of the initializer
    removed = sum(int((m == 0).sum()) for m in masks.values())
    # SNIP: one global top-k of raw saliencies; random_init: the same fraction in every layer
    stats = {"unit_ratio": removed / n_total, "init": p.snip_init,
             "ranking": "global_raw" if name == "snip" else "local"}
    if flops is not None:
        stats["flops_removed"] = flops.removed(current_masks(model))
    return PruningPlan(name, ratio=removed / n_total, masks=current_masks(model), stats=stats)


# connection sensitivity |g * w| is the taylor criterion's weight saliency; one batch, as Lee et al. 2019;
# prune.shuffle (Frankle et al. 2021's layerwise shuffle) is read by SNIP and IMP
@register_method("snip", unit="weight", criteria=("taylor",), base="init", calib_batches=1, flags=("shuffle",))
def snip(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Keep the top-k connections by normalised ``|g * w|``; ``model`` is re-initialised
    (``prune.snip_init``) and masked in place."""
    p = ctx.cfg.prune
    _prepare(model, p.snip_init)
    saliency = connection_sensitivity(model, ctx, CRITERIA[p.criterion]())
    layers = weight_layers(model)
    names = [n for n, _ in layers]
    n_total = sum(m.weight.numel() for _, m in layers)
    flops = EffectiveFlops(model, ctx) if p.target == "flops" else None
    if flops is not None:
        n_remove = global_count_for_flops(p.ratio, names, [saliency[n] for n in names], flops)
    else:
        n_remove = int(round(p.ratio * n_total))
    masks = dict(zip(names, top_k_masks([saliency[n] for n in names], n_total - n_remove)))
    if p.shuffle:
        masks = shuffle_within_layers(masks, ctx.cfg.runtime.seed)
    return _finish("snip", model, ctx, masks, n_total, flops)


@register_method("random_init", unit="weight", criteria=("random",), base="init")
def random_init(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    """Remove the same random fraction of every conv and linear layer's weights at
    initialisation; ``model`` is re-initialised (``prune.snip_init``) and masked in place."""
    p = ctx.cfg.prune
    _prepare(model, p.snip_init)
    layers = weight_layers(model)
    names = [n for n, _ in layers]
    sizes = [m.weight.numel() for _, m in layers]
    fraction = p.ratio
    flops = EffectiveFlops(model, ctx) if p.target == "flops" else None
    if flops is not None:
        fraction, _ = solve_ratio(p.ratio, lambda r: flops.removed_by_counts(names, [r] * len(names)))
    masks = random_masks(layers, uniform_counts(sizes, fraction), ctx.cfg.runtime.seed)
    return _finish("random_init", model, ctx, masks, sum(sizes), flops)
