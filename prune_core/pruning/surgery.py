"""``rebuild``: turn a pruning plan into a smaller model, and prove it computes the same thing.

Channel plans: the planned channels are removed with Torch-Pruning. The reference is the *masked*
model, the original with every coupled parameter of a removed channel zeroed (conv output rows,
conv/linear input columns, BN weight and bias); the rebuilt model must give the same logits.

Mask plans: masks are made permanent (``prune.remove``) and every channel that nothing reads any
more (all input columns of every consumer zero) is removed. Such a channel's removal changes
nothing downstream. A channel whose own filter is all zero but which is still read is kept: batch
norm turns its zero output into a constant (beta minus the scaled running mean) that its
consumers use.

>>> result = rebuild(model, plan, x[:4])  # doctest: +SKIP
>>> result.model, result.max_abs_diff  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List

import torch
from torch import nn

from ..metrics import layer_channels
from ..errors import RebuildMismatch
from ._base import PruningPlan, RebuildResult
from .channel import remove_channels
from .graph import CONV, WEIGHTED, build_graph, copy_model, is_depthwise, is_grouped, make_permanent
from .heads import attention_modules, zero_heads

# fp32 logits; a correct surgery differs only by summation order (~1e-6), relative to the largest
# |logit| where logits exceed 1 (as prune_core.export's check: randomly initialised networks reach
# logits of 1e2-1e4, and fp32 rounding grows with them)
TOLERANCE = 1e-4


@torch.no_grad()
def zero_channels(model: nn.Module, channels: Dict[str, List[int]], example_input: torch.Tensor) -> nn.Module:
    """Zero (in place) every parameter coupled to the planned channels: the masked model. A root
    naming an attention layer zeroes its planned heads (``heads.zero_heads``)."""
    channels = {k: v for k, v in channels.items() if v}
    attention = attention_modules(model)
    for root, idxs in channels.items():
        if root in attention:
            zero_heads(attention[root], list(idxs))
    channels = {k: v for k, v in channels.items() if k not in attention}
    if not channels:
        return model
    graph = build_graph(model, example_input)
    dg = graph.DG
    for root, idxs in channels.items():
        for item in graph.group_of(root, list(idxs)).items:
            layer = item.dep.target.module
            if not isinstance(layer, nn.Module) or not item.idxs:
                continue
            idx = torch.tensor(item.idxs, dtype=torch.long)
            if dg.is_out_channel_pruning_fn(item.dep.handler) or is_depthwise(layer):
                # conv/linear output rows and bias, BN weight and bias: the channel outputs zero
                for p in layer.parameters(recurse=False):
                    p.index_fill_(0, idx.to(p.device), 0.0)
            elif dg.is_in_channel_pruning_fn(item.dep.handler) and isinstance(layer, WEIGHTED):
                if is_grouped(layer):
                    _zero_grouped_inputs(layer, idx)
                else:
                    layer.weight.index_fill_(1, idx.to(layer.weight.device), 0.0)
    return model


def _zero_grouped_inputs(conv: nn.Module, idx: torch.Tensor) -> None:
    """Zero what reads input channels ``idx`` of a grouped conv: its weight is (out, in / groups,
    k, k), and input channel c is column c % (in / groups) of the output rows of group
    c // (in / groups)."""
    per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    for c in idx.tolist():
        g = c // per_in
        conv.weight[g * per_out:(g + 1) * per_out, c % per_in] = 0.0


@torch.no_grad()
def unread_channels(model: nn.Module, example_input: torch.Tensor) -> Dict[str, List[int]]:
    """Channels of every conv-rooted group that no consumer reads: every conv/linear input column
    fed by the channel is zero. Groups with a non-depthwise grouped consumer are left alone."""
    graph = build_graph(model, example_input)
    dg = graph.DG
    out: Dict[str, List[int]] = {}
    for g in graph.channel_groups():
        read = torch.zeros(g.size, dtype=torch.float64)
        readers = 0
        plain = True
        for item in g.group.items:
            layer = item.dep.target.module
            if not (isinstance(layer, WEIGHTED) and dg.is_in_channel_pruning_fn(item.dep.handler)):
                continue
            if is_depthwise(layer):
                continue  # passes the channel on to the group's next consumers
            if isinstance(layer, CONV) and layer.groups > 1:
                plain = False
                break
            w = layer.weight.detach()
            cols = w.index_select(1, torch.tensor(item.idxs, dtype=torch.long, device=w.device))
            mass = cols.abs().transpose(0, 1).reshape(len(item.idxs), -1).sum(1).double().cpu()
            read.scatter_add_(0, torch.tensor(item.root_idxs, dtype=torch.long), mass)
            readers += 1
        if not plain or readers == 0:
            continue
        dead = (read == 0).nonzero().flatten().tolist()
        if len(dead) == g.size:
            dead = dead[1:]  # a disconnected group still keeps one channel
        if dead:
            out[g.root] = dead
    return out


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(x.device.type, enabled=False), _no_tf32():
            return model(x).float()
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """Full fp32 on CUDA for the rebuild check: with TF32 convolutions (PyTorch's default for
    cuDNN) a rebuilt resnet20's logits differed from the masked model's by 3e-4 to 6e-4 on an H100
    (ARCHITECTURE.md, measured facts), above the 1e-4 the check allows."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rebuild(model: nn.Module, plan: PruningPlan, example_input: torch.Tensor) -> RebuildResult:
    """A physically smaller copy of ``model`` that computes what the masked model computes.

    Raises ``RebuildMismatch`` when the logits on ``example_input`` differ by more than 1e-4 times
    the largest |logit| of the masked model (at least 1).
    ``model`` is left as it is.
    """
    x = example_input
    before = layer_channels(model)
    reference = zero_channels(copy_model(model), plan.channels, x)
    rebuilt = copy_model(model)
    make_permanent(rebuilt)
    rebuilt = remove_channels(rebuilt, plan.channels, x)
    removed = {k: list(v) for k, v in plan.channels.items() if v}
    if plan.masks:
        dead = unread_channels(rebuilt, x)
        rebuilt = remove_channels(rebuilt, dead, x)
        removed.update(dead)
    masked = _logits(reference, x)
    diff = float((masked - _logits(rebuilt, x)).abs().max())
    limit = TOLERANCE * max(1.0, float(masked.abs().max()))
    if not diff <= limit:
        raise RebuildMismatch(f"{plan.method}: rebuilt and masked logits differ by {diff:.3g} (> {limit:.3g}: "
                              f"{TOLERANCE} x max(1, largest |logit|))")
    return RebuildResult(model=rebuilt, max_abs_diff=diff, layer_channels_before=before,
                         layer_channels_after=layer_channels(rebuilt), removed_channels=removed)
