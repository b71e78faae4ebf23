"""``none``: no pruning, the dense baseline (``--skip-pruning``)."""

from __future__ import annotations

from torch import nn

from ._base import PruneContext, PruningPlan, register_method


@register_method("none", unit="channel", criteria=("l1",))  # removes no channel
def none(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    return PruningPlan("none", ratio=0.0, stats={"unit_ratio": 0.0})
