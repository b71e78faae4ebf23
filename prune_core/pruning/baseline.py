"""``none``: no pruning, the dense baseline (``--skip-pruning``)."""

from __future__ import annotations

from torch import nn

from ._base import PruneContext, PruningPlan, method


@method("none", criteria=("l1",))
def none(model: nn.Module, ctx: PruneContext) -> PruningPlan:
    return PruningPlan("none", ratio=0.0, stats={"unit_ratio": 0.0})
