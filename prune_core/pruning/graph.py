"""Torch-Pruning's dependency graph, and the facts about a model every method needs.

>>> graph = build_graph(model, x[:2])  # doctest: +SKIP
>>> [(g.root, g.size) for g in graph.channel_groups()]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

import torch
import torch.nn.utils.prune as torch_prune
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping as tp_index_mapping

from ..metrics import WEIGHTED
from .heads import attention_modules, projection_channels

CONV = nn.modules.conv._ConvNd


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, CONV) and module.groups > 1 and module.groups == module.in_channels


def is_grouped(module: nn.Module) -> bool:
    """A grouped convolution that is not depthwise (ResNeXt, RegNet): its input channels are split
    into ``groups`` slices, each read by its own slice of the output channels."""
    return isinstance(module, CONV) and module.groups > 1 and not is_depthwise(module)


@torch.no_grad()
def output_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The conv/linear layer that runs last: the classifier, whose outputs are the classes."""
    return _forward_facts(model, example_input)[0]


@torch.no_grad()
def _forward_facts(model: nn.Module, example_input: torch.Tensor) -> Tuple[nn.Module, Set[nn.Module]]:
    """(the conv/linear layer that runs last, the linear layers applied at more than one position
    of an image: a transformer's tokens, a ConvNeXt block's pixels)."""
    order: List[nn.Module] = []
    per_token: Set[nn.Module] = set()

    def record(mod: nn.Module, inputs, _out) -> None:
        order.append(mod)
        x = inputs[0] if inputs else None
        if isinstance(mod, nn.Linear) and torch.is_tensor(x) and x.dim() > 2:
            if x.numel() // max(1, x.shape[0] * mod.in_features) > 1:
                per_token.add(mod)

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, WEIGHTED)]
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
    return order[-1], per_token


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
    """One set of coupled channels: removing channel ``i`` of ``root`` removes it everywhere in ``group``.

    ``period`` > 1 where a grouped convolution reads or writes the channels: they are chosen by
    position inside a conv group, the same positions in every group (``channels``), so that each
    group keeps ``size / period`` channels and the conv's weight columns stay shared by its groups.
    """

    root: str  # name of the conv (in a model without conv groups, the linear layer) the group is rooted at
    group: tp.dependency.Group  # with full indices, as Torch-Pruning's importances expect
    conv_outputs: int  # how many conv (linear) layers lose an output channel per channel removed
    period: int = 1  # conv groups of the grouped convs among the group's layers (their lcm)

    @property
    def size(self) -> int:
        return len(self.group[0].idxs)

    @property
    def units(self) -> int:
        """Choosable units: channels, or positions inside a conv group where ``period`` > 1."""
        return self.size // self.period

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Channel scores summed over the conv groups into one score per position."""
        return scores.reshape(self.period, self.units).sum(0) if self.period > 1 else scores

    def channels(self, units: List[int]) -> List[int]:
        """The channels that removing ``units`` (positions where ``period`` > 1) removes."""
        if self.period == 1:
            return sorted(int(u) for u in units)
        return sorted(g * self.units + int(u) for g in range(self.period) for u in units)


@contextlib.contextmanager
def _tolerant_reshapes() -> Iterator[None]:
    """Torch-Pruning 1.6 divides by zero inferring the index mapping of some reshapes (ShuffleNet's
    channel shuffle); such a reshape keeps the identity mapping, and ``Graph.channel_groups`` never
    offers a group that passes a reshape other than a flatten into a linear layer."""
    original = tp_index_mapping.update_reshape_index_mapping

    def tolerant(graph, node):
        try:
            original(graph, node)
        except ZeroDivisionError:
            pass

    tp_index_mapping.update_reshape_index_mapping = tolerant
    try:
        yield
    finally:
        tp_index_mapping.update_reshape_index_mapping = original


def _keeps_channels(node, channels: int) -> bool:
    """A reshape that leaves the channel axis alone: a flatten into a linear layer, or a view of a
    channels-last tensor that keeps its last axis (a linear layer's tokens in ConvNeXt's MLP)."""
    if all(isinstance(o.module, nn.Linear) for o in node.outputs):
        return True
    sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    return sizes is not None and int(sizes[-1]) == channels and (len(sizes) < 3 or int(sizes[1]) != channels)


class Graph:
    """A ``tp.DependencyGraph`` of ``model`` and the classifier it must not prune."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        self.model = model
        self.classifier, self.per_token = _forward_facts(model, example_input)
        self.attention = attention_modules(model)
        was_training = model.training
        try:
            with torch.enable_grad(), _tolerant_reshapes():  # the graph is traced through autograd
                self.DG = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
        except TypeError as err:
            if "NoneType" not in str(err):
                raise
            from torch_pruning.dependency.constants import MAX_RECURSION_DEPTH

            # swin_s and swin_b: raising the limit lets the graph build, but their groups then took
            # minutes each (bench/model_coverage.md)
            raise ValueError(f"Torch-Pruning {tp.__version__} cannot build the dependency graph of "
                             f"{type(model).__name__}: it found no width for an input of a concatenation (its "
                             f"shape inference stops after {MAX_RECURSION_DEPTH} steps), so it cannot be pruned"
                             ) from None
        finally:
            model.train(was_training)  # tracing leaves the model in eval mode
        self.names = {m: n for n, m in model.named_modules()}
        self.in_attention = {m for a in self.attention.values() for m in a.modules()}

    def out_fn(self, module: nn.Module):
        return self.DG.get_pruner_of_module(module).prune_out_channels

    def group_of(self, root: str, idxs: List[int]) -> tp.dependency.Group:
        module = self.model.get_submodule(root)
        with _tolerant_reshapes():  # Torch-Pruning updates every index mapping for each group it makes
            return self.DG.get_pruning_group(module, self.out_fn(module), idxs)

    def _groups(self, kinds: Tuple[type, ...], linear_ok) -> List[tp.dependency.Group]:
        """Torch-Pruning's ``get_all_groups`` over the roots it would take (layers of ``kinds``,
        output rows not yet in a group), linear roots only where ``linear_ok``: a group rooted at
        an attention projection is never made (in Swin, tracing it ran out of memory). A root whose
        group Torch-Pruning cannot make is left out (``untraced``)."""
        visited: Set[nn.Module] = set()
        self.untraced: List[str] = []  # roots whose group could not be made (ShuffleNet's shuffled outputs)
        out = []
        for module in list(self.DG.module2node):
            if (not isinstance(module, kinds) or module is self.classifier or module in visited
                    or module in self.in_attention or (isinstance(module, nn.Linear) and not linear_ok(module))):
                continue
            if self._feeds_norm(module):  # ``mixing`` would refuse its group; Swin v2's ran out of memory
                continue
            try:
                group = self.group_of(self.names[module], list(range(self.DG.get_out_channels(module))))
            except (IndexError, ZeroDivisionError):  # an index mapping Torch-Pruning 1.6 cannot infer
                self.untraced.append(self.names[module])
                continue
            visited.update(item.dep.target.module for item in group.items
                           if self.DG.is_out_channel_pruning_fn(item.dep.handler))
            out.append(group)
        return out

    def _feeds_norm(self, module: nn.Module) -> bool:
        """True when ``module``'s outputs reach a LayerNorm (a GroupNorm over several channels)
        through element-wise operations only (an add, an activation): that norm is then in the
        module's group, which ``mixing`` refuses, so the group is not made. Making it can cost
        more than the machine has: in swin_v2_t (post-norm blocks) Torch-Pruning's index mapping
        for the residual stream grew past 24 GB."""
        seen: Set[int] = set()
        todo = list(self.DG.module2node[module].outputs)
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            m = node.module
            if isinstance(m, nn.LayerNorm) or (isinstance(m, nn.GroupNorm) and m.num_groups != m.num_channels):
                return True
            if isinstance(m, tp.ops._ElementWiseOp):
                todo.extend(node.outputs)
        return False

    def mixing(self, group: tp.dependency.Group) -> Optional[str]:
        """Why the group's channels cannot be removed with the masked model as reference, or None.

        A LayerNorm (GroupNorm) normalises over the channels, so a removed channel changes every
        other channel's output: zeroing it is not removing it. Attention's projections belong to
        heads (``heads.py``). A reshape other than a flatten into a linear layer regroups channels
        (ShuffleNet's channel shuffle, a transformer's patch tokens).
        """
        for item in group.items:
            node, module = item.dep.target, item.dep.target.module
            if isinstance(module, nn.LayerNorm) or (isinstance(module, nn.GroupNorm)
                                                    and module.num_groups != module.num_channels):
                return f"{type(module).__name__} normalises over the channels"
            if isinstance(module, nn.MultiheadAttention) or module in self.in_attention:
                return "attention projection (pruned by heads)"
            if isinstance(module, (tp.ops._UnbindOp, tp.ops._ExpandOp)):
                return "unbind/expand"
            if isinstance(module, tp.ops._ReshapeOp) and not _keeps_channels(node, len(group[0].idxs)):
                return "reshape that regroups channels"
        return None

    def _period(self, group: tp.dependency.Group) -> int:
        period = 1
        for item in group.items:
            if is_grouped(item.dep.target.module):
                period = period * item.dep.target.module.groups // math.gcd(period, item.dep.target.module.groups)
        return period

    def channel_groups(self) -> List[ChannelGroup]:
        """Every group of coupled channels rooted at a conv layer or at a linear layer applied at
        every token (a transformer's or ConvNeXt's MLP), the classifier's excluded, and none whose
        channels something mixes (``mixing``).

        A linear layer that runs once per image is no candidate: a channel ratio means a fraction of
        conv channels, and ranking a classifier's hidden neurons alongside them lets a global ranking
        spend the budget on neurons that cost parameters but almost no FLOPs (vgg16_bn's 4096-wide
        head). A model with no such group (an MLP such as lenet300) has its hidden neurons as
        channels: the groups rooted at its linear layers, the classifier's outputs still excluded.
        """
        kinds: Tuple[type, ...] = (CONV, nn.Linear)
        groups = self._groups(kinds, lambda m: m in self.per_token)
        if not groups and not self.attention:
            kinds = (nn.Linear,)
            groups = self._groups(kinds, lambda m: True)
        out = []
        for group in groups:
            if self.mixing(group) is not None:
                continue
            period = self._period(group)
            if len(group[0].idxs) % period or len(group[0].idxs) == period:
                continue  # a conv group's slice would go below one channel
            outs = {id(item.dep.target.module) for item in group.items
                    if isinstance(item.dep.target.module, kinds) and self.DG.is_out_channel_pruning_fn(item.dep.handler)}
            root = self.names[group[0].dep.target.module]
            out.append(ChannelGroup(root=root, group=group, conv_outputs=max(1, len(outs)), period=period))
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
            if root in self.attention:  # heads: the widths of their projections
                for module, axis, gone in projection_channels(self.attention[root], list(idxs)):
                    if module in self.names:
                        (gone_in if axis else gone_out)[self.names[module]].update(gone)
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
