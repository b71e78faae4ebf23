"""Torch-Pruning's dependency graph, and the facts about a model every method needs.

>>> graph = build_graph(model, x[:2])  # doctest: +SKIP
>>> [(g.root, g.size) for g in graph.channel_groups()]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Set, Tuple

import torch
import torch.nn.utils.prune as torch_prune
import torch_pruning as tp
from torch import nn

from ..metrics import WEIGHTED

CONV = nn.modules.conv._ConvNd


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, CONV) and module.groups > 1 and module.groups == module.in_channels


@torch.no_grad()
def output_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The conv/linear layer that runs last: the classifier, whose outputs are the classes."""
    order: List[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if isinstance(m, WEIGHTED)]
    was_training = model.training
    try:
        model.eval()
        model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not order:
        raise ValueError("the model has no conv or linear layer to prune")
    return order[-1]


def make_permanent(model: nn.Module) -> None:
    """Fold every ``torch.nn.utils.prune`` mask into its tensor (``prune.remove``)."""
    for module in model.modules():
        for name, _ in list(module.named_parameters(recurse=False)):
            if name.endswith("_orig") and torch_prune.is_pruned(module):
                torch_prune.remove(module, name[: -len("_orig")])


@torch.no_grad()
def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on a masked model whose masked weight still carries the
    autograd graph of ``weight_orig * weight_mask`` (deepcopy refuses non-leaf tensors)."""
    for module in model.modules():
        for name, _ in list(module.named_parameters(recurse=False)):
            base = name[: -len("_orig")]
            if name.endswith("_orig") and hasattr(module, base + "_mask"):
                setattr(module, base, getattr(module, name) * getattr(module, base + "_mask"))
    return copy.deepcopy(model)


@dataclass
class ChannelGroup:
    """One set of coupled channels: removing channel ``i`` of ``root`` removes it everywhere in ``group``."""

    root: str  # name of the conv (in a model without conv groups, the linear layer) the group is rooted at
    group: tp.dependency.Group  # with full indices, as Torch-Pruning's importances expect
    conv_outputs: int  # how many conv (linear) layers lose an output channel per channel removed

    @property
    def size(self) -> int:
        return len(self.group[0].idxs)


class Graph:
    """A ``tp.DependencyGraph`` of ``model`` and the classifier it must not prune."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        self.model = model
        self.classifier = output_layer(model, example_input)
        was_training = model.training
        try:
            with torch.enable_grad():  # the graph is traced through autograd
                self.DG = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        finally:
            model.train(was_training)  # tracing leaves the model in eval mode
        self.names = {m: n for n, m in model.named_modules()}

    def out_fn(self, module: nn.Module):
        return self.DG.get_pruner_of_module(module).prune_out_channels

    def group_of(self, root: str, idxs: List[int]) -> tp.dependency.Group:
        module = self.model.get_submodule(root)
        return self.DG.get_pruning_group(module, self.out_fn(module), idxs)

    def channel_groups(self) -> List[ChannelGroup]:
        """Every group of coupled channels rooted at a conv layer, the classifier's excluded.

        Only conv-rooted groups are candidates: a channel ratio means a fraction of conv channels,
        and ranking hidden linear neurons alongside them lets a global ranking spend the budget
        on classifier neurons that cost parameters but almost no FLOPs (vgg16_bn's 4096-wide head).
        A model with no conv group (an MLP such as lenet300) has its hidden neurons as channels:
        the groups rooted at its linear layers, the classifier's outputs still excluded.
        """
        kind: type = CONV
        groups = list(self.DG.get_all_groups(ignored_layers=[self.classifier], root_module_types=[CONV]))
        if not groups:
            kind = nn.Linear
            groups = list(self.DG.get_all_groups(ignored_layers=[self.classifier], root_module_types=[kind]))
        out = []
        for group in groups:
            convs = {id(item.dep.target.module) for item in group.items
                     if isinstance(item.dep.target.module, kind) and self.DG.is_out_channel_pruning_fn(item.dep.handler)}
            root = self.names[group[0].dep.target.module]
            out.append(ChannelGroup(root=root, group=group, conv_outputs=max(1, len(convs))))
        return out


    def pruned_channels(self, channels: Dict[str, List[int]]) -> Dict[str, Tuple[int, int]]:
        """{name: (input, output channels)} of every conv and linear layer (features for linear) once
        ``channels`` (group root -> its output channels) are removed, read from the groups' index
        mapping without touching the model: what ``channel.remove_channels`` leaves, at a fraction
        of its cost (no new trace), for searches that try many plans."""
        gone_in: Dict[str, Set[int]] = defaultdict(set)
        gone_out: Dict[str, Set[int]] = defaultdict(set)
        for root, idxs in channels.items():
            if not idxs:
                continue
            for item in self.group_of(root, list(idxs)).items:
                module = item.dep.target.module
                if isinstance(module, WEIGHTED) and module in self.names:
                    out = self.DG.is_out_channel_pruning_fn(item.dep.handler)
                    (gone_out if out else gone_in)[self.names[module]].update(int(i) for i in item.idxs)
        shapes = {}
        for name, m in self.model.named_modules():
            if isinstance(m, CONV):
                cin, cout = m.in_channels, m.out_channels
            elif isinstance(m, nn.Linear):
                cin, cout = m.in_features, m.out_features
            else:
                continue
            if is_depthwise(m):  # one channel in, one out: removing either removes both
                n = cin - len(gone_in[name] | gone_out[name])
                shapes[name] = (n, n)
            else:
                shapes[name] = (cin - len(gone_in[name]), cout - len(gone_out[name]))
        return shapes


def build_graph(model: nn.Module, example_input: torch.Tensor) -> Graph:
    return Graph(model, example_input)
