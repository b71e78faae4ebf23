"""The ``CRITERIA`` registry: how units are scored.

A criterion scores channels through a Torch-Pruning importance (which aggregates the members of a
coupled dependency group) and single weights through ``weight_saliency`` (what kernel, pattern,
IMP and SNIP pruning rank). Scores are "higher = more important"; the lowest go. Its ``units``
declare the granularities it scores, and every method of such a unit accepts it
(``accepted_criteria``):

- ``channel``: ``channel_importance()``, a Torch-Pruning ``Importance`` (``group -> scores``);
  ``FilterImportance`` turns a per-filter score into one;
- ``kernel``: ``weight_saliency(weight, None)``, averaged over each k x k kernel;
- ``weight``: ``weight_saliency(weight, grad)``, with the gradient of a calibration pass where
  the criterion ``needs_grad``.

A plug-in adds one the same way the built-ins below are added:

>>> @register_criterion("linf")  # doctest: +SKIP
... class LInf(Criterion):
...     units = ("channel",)
...     def channel_importance(self):
...         return FilterImportance(lambda rows: rows.abs().amax(1))

>>> CRITERIA["l1"]().weight_saliency(torch.tensor([-2.0, 1.0]), None).tolist()
[2.0, 1.0]
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch_pruning as tp
from torch import nn

from .._registry import register
from ..errors import ConfigError
from ._base import CRITERIA, UNITS

# the handlers of a group's items that write its channels: conv and linear output rows
OUTPUTS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


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
                             if item.dep.handler in OUTPUTS)
        filters._DG = group._DG
        return super().__call__(filters)


class FilterImportance(tp.importance.Importance):
    """A channel's importance from its output filters: ``score(rows)`` maps each coupled conv's or
    linear layer's filters, one row per output channel (``(out, fan_in)``), to one score per row;
    a group averages the scores of its coupled layers, as ``FilterNormImportance`` does.
    ``FilterImportance(lambda rows: rows.abs().sum(1))`` ranks as ``l1`` does."""

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor]):
        self.score = score

    @torch.no_grad()
    def __call__(self, group) -> Optional[torch.Tensor]:
        total, layers = torch.zeros(len(group[0].idxs), dtype=torch.float64), 0
        for item in group.items:
            if item.dep.handler not in OUTPUTS:
                continue
            layer = item.dep.target.module
            weight = layer.weight.transpose(0, 1) if getattr(layer, "transposed", False) else layer.weight
            rows = weight[torch.tensor(item.idxs, dtype=torch.long, device=weight.device)].flatten(1)
            total.scatter_add_(0, torch.tensor(item.root_idxs, dtype=torch.long),
                               self.score(rows.detach().float()).double().cpu())
            layers += 1
        return total / layers if layers else None


class Criterion:
    """One criterion. ``units``: the granularities it scores (channel, kernel, weight; see the
    module's docstring). ``needs_grad``: channel scores read ``.grad`` of a calibration backward pass.
    ``needs_features``: channel scores read feature maps: ``channel_importance()`` returns an
    importance with ``observe(model, groups, batches)``, which the channel method calls first with
    the calibration batches (the model in eval mode, no gradients; ``pruning.hrank``).
    ``raw_global``: a global channel ranking compares raw scores across layers, as the criterion's
    paper does, instead of scores divided by their layer's mean (when the base was trained as the
    paper trains it: see ``BNScale``). Channel scores are per calibration batch for ``needs_grad``
    criteria and are averaged over the batches."""

    units: Tuple[str, ...] = ()
    needs_grad = False
    needs_features = False
    raw_global = False

    def channel_importance(self) -> tp.importance.Importance:
        raise NotImplementedError(f"{type(self).__name__} does not score channels")

    def weight_saliency(self, weight: torch.Tensor, grad: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not score single weights")


def register_criterion(name: str) -> Callable[[type], type]:
    """Register a ``Criterion`` subclass as criterion ``name``: the door built-in criteria and
    plug-ins share. Its ``units`` must name at least one of ``UNITS``."""

    def deco(cls: type) -> type:
        units = getattr(cls, "units", ())
        if not (isinstance(cls, type) and issubclass(cls, Criterion)):
            raise ConfigError(f"criterion {name!r}: expected a subclass of prune_core.pruning.Criterion, "
                              f"got {cls!r}")
        if not units or any(u not in UNITS for u in units):
            raise ConfigError(f"criterion {name!r}: units={units!r}: expected one or more of {', '.join(UNITS)}")
        return register(CRITERIA, name, "criterion")(cls)

    return deco


@register_criterion("l1")
class L1(Criterion):
    """Sum of absolute weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""

    units = ("channel", "kernel", "weight")

    def channel_importance(self) -> tp.importance.Importance:
        return FilterNormImportance(p=1)

    def weight_saliency(self, weight, grad):
        return weight.detach().abs()


@register_criterion("l2")
class L2(Criterion):
    """Squared L2 norm (rank-equal to the norm; LAMP is defined on squared magnitudes)."""

    units = ("channel", "kernel", "weight")

    def channel_importance(self) -> tp.importance.Importance:
        return FilterNormImportance(p=2)

    def weight_saliency(self, weight, grad):
        return weight.detach().pow(2)


@register_criterion("bn_scale")
class BNScale(Criterion):
    """|gamma| of the batch norm after each conv (Liu et al. 2017, Network Slimming); a coupled
    group averages its BNs. Groups without a BN (e.g. SE squeeze convs) are not ranked. A global
    ranking compares raw |gamma| across layers, the paper's one threshold, only when the base was
    trained with the sparsity penalty (``train.bn_l1 > 0``); without it gammas of different layers
    live on different scales and are mean-normalised per layer like the other criteria.

    Deviations from the reference (Eric-mingjie/network-slimming ``main.py``, ``vggprune.py``): its
    one threshold has no per-layer cap, where a global ranking here leaves every layer at least
    ``1 - prune.max_layer_ratio`` (0.9) of its channels; and its optimizer decays every parameter,
    gamma included (``weight_decay`` 1e-4), where training here never decays norm parameters
    (``train.param_groups``), so gamma shrinks by the L1 penalty alone."""

    units = ("channel",)
    raw_global = True  # with the paper's sparsity penalty (train.bn_l1 > 0) every layer's gammas share one scale

    def channel_importance(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance(group_reduction="mean", normalizer=None)


class GateTaylorImportance(tp.importance.Importance):
    """Taylor-FO-BN of Molchanov et al. 2019 (sec. 3, "gate after BN", Table 2) for the gradients of
    one calibration batch; reference: NVlabs/Taylor_pruning, ``pruning_engine.py``, methods 22/31.

    A gate ``m = 1`` on a channel's output changes the loss by about ``dL/dm``. Behind a batch norm
    ``y = gamma * x_hat + beta`` that is ``gamma * dL/dgamma + beta * dL/dbeta``; a channel's score for
    the batch is its square, summed over the coupled batch norms of the group (a residual group has
    one per conv that writes into the sum). Where a group has no batch norm, the gate sits on the
    conv's output: ``sum_s g_s w_s (+ g_b b)`` over the filter, squared.

    The filter's own ``sum_s g_s w_s`` is *not* used under a batch norm: BN is scale-invariant in
    its input, so that sum is ~1e-6 of ``sum_s |g_s w_s|`` there and carries no signal.
    """

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        size = len(group[0].idxs)
        bns = [item for item in group.items if item.dep.handler == tp.prune_batchnorm_out_channels
               and getattr(item.dep.target.module, "weight", None) is not None]
        outs = [item for item in group.items
                if item.dep.handler in OUTPUTS]
        score = torch.zeros(size, dtype=torch.float64)
        for item in bns or outs:
            layer = item.dep.target.module
            idx = torch.tensor(item.idxs, dtype=torch.long, device=layer.weight.device)
            gate = _gate_gradient(layer, idx, behind_bn=bool(bns))
            score.scatter_add_(0, torch.tensor(item.root_idxs, dtype=torch.long), gate.double().pow(2).cpu())
        return score


def _gate_gradient(layer: nn.Module, idx: torch.Tensor, behind_bn: bool) -> torch.Tensor:
    """dL/dm of a unit gate on the output channels ``idx`` of ``layer`` (a BN, or a conv/linear)."""
    if layer.weight.grad is None:
        raise RuntimeError(f"taylor: {type(layer).__name__} got no gradient in the calibration pass")
    w, g = layer.weight[idx], layer.weight.grad[idx]
    gate = (w * g).flatten(1).sum(1) if not behind_bn else w * g
    if layer.bias is not None and layer.bias.grad is not None:
        gate = gate + layer.bias[idx] * layer.bias.grad[idx]
    return gate


@register_criterion("taylor")
class Taylor(Criterion):
    """First-order Taylor expansion of the loss (Molchanov et al. 2019, "Importance Estimation for
    Neural Network Pruning"): channels are scored by Taylor-FO-BN, the squared gradient of a gate
    after each batch norm, ``(gamma * dL/dgamma + beta * dL/dbeta) ** 2`` per batch, averaged over
    ``prune.calib_batches`` batches (``GateTaylorImportance``). Per weight, ``|g * w|`` is SNIP's
    connection sensitivity (Lee et al. 2019).

    Deviations from the reference's schedule (NVlabs/Taylor_pruning ``pruning_engine.py``): it
    prunes iteratively during fine-tuning (``prune_per_iteration`` 100 neurons every
    ``frequency`` 30 minibatches, scores averaged in between); here the channels are scored once on
    the trained base, removed, and fine-tuned (one-shot). A global ranking divides each layer's
    scores by their mean (``channel.ranking_of``); the reference ranks raw scores across layers
    (``prune.global_scores: raw`` does)."""

    units = ("channel", "weight")  # the weight saliency reads a gradient: no kernel ranking without one
    needs_grad = True

    def channel_importance(self) -> tp.importance.Importance:
        return GateTaylorImportance()

    def weight_saliency(self, weight, grad):
        if grad is None:
            raise RuntimeError("taylor saliency needs the gradient of a calibration pass")
        return (weight.detach() * grad).abs()


@register_criterion("random")
class Random(Criterion):
    """Uniform random scores: the baseline any criterion has to beat (seeded by runtime.seed)."""

    units = ("channel", "kernel", "weight")

    def channel_importance(self) -> tp.importance.Importance:
        return tp.importance.RandomImportance()

    def weight_saliency(self, weight, grad):
        return torch.rand(weight.shape, device=weight.device)
