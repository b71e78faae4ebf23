"""torchvision's ResNet with a width multiplier on the residual stages (``resnet18``,
``resnet50`` in ``prune_core.models``). A module of its own so that the class is importable by
name (pickling) while ``prune_core.models`` imports torchvision only when a torchvision network
is built."""

from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.models.resnet import ResNet


class ScaledResNet(ResNet):
    """``scale`` maps a stage's channel count to its scaled one (``prune_core.models``' width rule)."""

    def __init__(self, block, layers, num_classes: int, scale: Callable[[int], int]):
        self._scale = scale
        super().__init__(block, layers, num_classes=num_classes)
        self.fc = nn.Linear(self.inplanes, num_classes)  # the last stage's width after scaling

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        return super()._make_layer(block, self._scale(planes), blocks, stride, dilate)
