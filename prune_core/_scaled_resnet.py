"""torchvision's ResNet with a width multiplier on the residual stages (``resnet18``,
``resnet50`` in ``prune_core.models``). A module of its own so that the class is importable by
name (pickling) while ``prune_core.models`` imports torchvision only when a torchvision network
is built."""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import ResNet

from .models import _ch


class ScaledResNet(ResNet):
    def __init__(self, block, layers, num_classes: int, width: float):
        self._width = width
        super().__init__(block, layers, num_classes=num_classes)
        self.fc = nn.Linear(self.inplanes, num_classes)  # the last stage's width after scaling

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        return super()._make_layer(block, _ch(planes, self._width), blocks, stride, dilate)
