"""``hrank``: filter pruning by the rank of feature maps (Lin et al. 2020, CVPR, "HRank").

A channel whose feature maps have low rank carries little information, and its filter goes first.
The reference (lmbxmu/HRank, ``rank_generation.py``, ``get_feature_hook``) hooks the ReLU after
each batch norm, takes ``torch.matrix_rank`` of every image's H x W map of every channel in eval
mode without gradients, and averages over the images of ``--limit`` (5) training batches; ``mask.py``
then keeps the channels of highest average rank. This does the same with
``torch.linalg.matrix_rank`` (the same default tolerance) over ``prune.calib_batches`` training
batches (4 unless set).

Where the map is taken, in any model: the output of the group's batch norms (of its conv or linear
layers where it has none), through a ReLU. That is the reference's map wherever a ReLU follows the
batch norm. Deviations, named:

- a coupled group (a residual add) averages the ranks of each coupled batch norm's map; the
  reference ranks the block's output after the add (and its ResNet-56 recipe prunes only the inner
  conv of each block);
- where the model's activation is not a ReLU (SiLU, GELU, Hardswish), the map is still the
  ReLU of the batch norm's output;
- a linear layer's "map" is one number per image, whose rank is 1 if it is positive and 0 if not:
  hidden neurons are ranked by how often they fire. The same holds for a conv whose map is 1 x 1;
- the filters are removed once, after training, and fine-tuned, as every ``channel`` criterion
  is; the reference fine-tunes layer by layer.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Tuple

import torch
import torch_pruning as tp
from torch import nn

from .criteria import OUTPUTS, Criterion, register_criterion


def map_ranks(output: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the rank of the ReLU of the channel's map: ``(N, C, ...) -> (N, C)``.
    A map of more than two dimensions keeps its last one as columns; one number per channel
    (a linear layer's output) is a 1 x 1 map."""
    maps = torch.relu(output.detach().float())
    if maps.dim() == 2:
        maps = maps[..., None, None]
    elif maps.dim() == 3:
        maps = maps[..., None, :]
    elif maps.dim() > 4:
        maps = maps.flatten(2, -2)
    return torch.linalg.matrix_rank(maps)


def feature_layers(group) -> List:
    """The items of ``group`` whose outputs are its feature maps: its batch norms with weights, or
    its conv and linear output layers where it has none."""
    bns = [item for item in group.items if item.dep.handler == tp.prune_batchnorm_out_channels]
    return bns or [item for item in group.items if item.dep.handler in OUTPUTS]


class FeatureRankImportance(tp.importance.Importance):
    """A channel's average feature-map rank over the images of the calibration batches, from
    ``observe``; a group averages over the layers ``feature_layers`` names."""

    def __init__(self) -> None:
        self.ranks: Dict[nn.Module, torch.Tensor] = {}  # layer -> mean rank per output channel

    @torch.no_grad()
    def observe(self, model: nn.Module, groups: Iterable, batches: Callable[[], Iterable[Tuple[torch.Tensor, ...]]]
                ) -> None:
        layers = {item.dep.target.module for g in groups for item in feature_layers(g)}
        totals: Dict[nn.Module, torch.Tensor] = {}
        images = 0

        def hook(layer, _inputs, output):
            ranks = map_ranks(output).double().sum(0).cpu()
            totals[layer] = ranks if layer not in totals else totals[layer] + ranks

        handles = [layer.register_forward_hook(hook) for layer in layers]
        training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            for x, *_ in batches():
                model(x.to(device))
                images += len(x)
        finally:
            for h in handles:
                h.remove()
            model.train(training)
        if images == 0:
            raise RuntimeError("hrank: calib_batches yielded no batch")
        self.ranks = {layer: total / images for layer, total in totals.items()}

    def __call__(self, group) -> torch.Tensor:
        items = feature_layers(group)
        score = torch.zeros(len(group[0].idxs), dtype=torch.float64)
        for item in items:
            ranks = self.ranks[item.dep.target.module]
            score.scatter_add_(0, torch.tensor(item.root_idxs, dtype=torch.long),
                               ranks[torch.tensor(item.idxs, dtype=torch.long)])
        return score / max(len(items), 1)


@register_criterion("hrank")
class HRank(Criterion):
    """Average rank of a channel's feature maps on calibration batches (Lin et al. 2020): see
    ``pruning.hrank``."""

    units = ("channel",)
    needs_features = True

    def channel_importance(self) -> tp.importance.Importance:
        return FeatureRankImportance()
