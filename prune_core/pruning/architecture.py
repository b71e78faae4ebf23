"""The architecture of a recorded model without its weights: a registry model whose conv and linear
layers have given output widths (a trial's ``layer_channels_final``, or ``layer_channels_base``).

Every dependency group of the unpruned model (``Graph.channel_groups``) loses its first ``k``
channels, ``k`` being what its layers must lose; coupled layers (a residual stage, a depthwise conv
and its producer) shrink together, as they did when the model was pruned. The weights stay random:
the latency of a dense network does not depend on their values, so timing this model times the
pruned one (mask methods included: their rebuilt architecture is dense too).

>>> net = build_architecture("resnet20", 10, (3, 32, 32), 1.0, {"conv1": 16})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Tuple

import torch
from torch import nn

from ..controls import RESEED, narrow_width
from ..metrics import layer_channels
from ..models import build_model
from .channel import remove_channels
from .graph import WEIGHTED, build_graph
from .heads import attention_modules, head_count, head_width


if TYPE_CHECKING:
    from ..config import ExperimentConfig


class ArchitectureMismatch(ValueError):
    """Output widths that no set of whole dependency groups of the model gives; one line."""


def _out_width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features


@torch.no_grad()
def build_architecture(name: str, num_classes: int, input_shape: Tuple[int, ...], width: float,
                       channels: Mapping[str, int]) -> nn.Module:
    """Registry model ``name`` (``width``, ``num_classes``, images of ``input_shape`` (C, H, W)) with
    every conv/linear layer at the output width ``channels`` gives it, in eval mode, weights random.

    An attention layer's entry is the width its heads span (``heads.head_widths``): it keeps its
    first heads, as many as that width holds. Raises ``ArchitectureMismatch`` when ``channels``
    names a layer the model lacks, leaves one out, asks a layer to grow, gives coupled layers
    different cuts, or gives an attention layer a width that is not whole heads.
    """
    c, h = input_shape[0], input_shape[1]
    model = build_model(name, num_classes, c, h, width).eval()
    widths = layer_channels(model)
    unknown = sorted(set(channels) - set(widths))
    missing = sorted(set(widths) - set(channels))
    if unknown or missing:
        what = f"no layer {unknown[0]!r}" if unknown else f"no width for layer {missing[0]!r}"
        raise ArchitectureMismatch(f"{name}: {what} in the recorded channels; expected the model's "
                                   f"{len(widths)} conv/linear layers")
    for layer, w in channels.items():
        if not (isinstance(w, int) and 1 <= w <= widths[layer]):
            raise ArchitectureMismatch(f"{name}: layer {layer} width {w!r}; expected an integer in 1..{widths[layer]}")
    x = torch.zeros((2, *input_shape))
    graph = build_graph(model, x)
    plan: Dict[str, List[int]] = {}
    for group in graph.channel_groups():
        cuts = {}
        for item in group.group.items:
            module = item.dep.target.module
            if isinstance(module, WEIGHTED) and graph.DG.is_out_channel_pruning_fn(item.dep.handler):
                layer = graph.names[module]
                cuts[layer] = widths[layer] - channels[layer]
        if len(set(cuts.values())) > 1:
            shown = ", ".join(f"{k} {channels[k]}" for k in sorted(cuts))
            raise ArchitectureMismatch(f"{name}: coupled layers lose different numbers of channels ({shown}); "
                                       "expected one cut per dependency group")
        k = next(iter(cuts.values()), 0)
        if k:
            plan[group.root] = list(range(k))
    for layer, module in attention_modules(model).items():
        d = head_width(module)
        if channels[layer] % d:
            raise ArchitectureMismatch(f"{name}: attention layer {layer} width {channels[layer]}; expected a "
                                       f"multiple of its head dimension {d} (whole heads)")
        k = head_count(module) - channels[layer] // d
        if k:
            plan[layer] = list(range(k))
    remove_channels(model, plan, x, graph)  # the graph of the unpruned model: one trace, not two
    got = layer_channels(model)
    wrong = [k for k in channels if got[k] != channels[k]]
    if wrong:
        layer = wrong[0]
        raise ArchitectureMismatch(f"{name}: layer {layer} width {channels[layer]} is reached by no dependency "
                                   f"group (rebuilt to {got[layer]})")
    return model.eval()


def architecture_key(name: str, num_classes: int, input_shape: Tuple[int, ...], width: float,
                     channels: Mapping[str, int]) -> Tuple:
    """Equal for two recorded models exactly when ``build_architecture`` builds the same network."""
    return (name, int(num_classes), tuple(input_shape), float(width), tuple(sorted(channels.items())))


def control_network(cfg: "ExperimentConfig", pruned: nn.Module, input_shape: Tuple[int, ...], num_classes: int,
                    flops: Callable[[nn.Module], float]) -> Tuple[nn.Module, Dict[str, Any]]:
    """The network a control (``prune.control``, ``prune_core.controls``) trains in place of
    ``pruned``, on the CPU, in training mode, with what it records: scratch_e and scratch_b get
    ``pruned``'s widths on a fresh draw (seed ``runtime.seed + RESEED``); narrow gets the dense
    model at the ``model.width`` multiple whose FLOPs (``flops(model)``) come closest to
    ``pruned``'s, and records it as ``control_width``."""
    name, width, (c, h) = cfg.model.name, cfg.model.width, input_shape[:2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.runtime.seed + RESEED)
        if cfg.prune.control != "narrow":
            return build_architecture(name, num_classes, input_shape, width, layer_channels(pruned.cpu())).train(), {}
        w = narrow_width(lambda m: flops(build_model(name, num_classes, c, h, m * width)), flops(pruned.cpu()), name)
        torch.manual_seed(cfg.runtime.seed + RESEED)
        return build_model(name, num_classes, c, h, w * width).train(), {"control_width": w}
