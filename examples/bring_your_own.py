"""A plug-in: your own model and your own pruning criterion, compared with the built-ins.

Name this file in a sweep's ``plugins:`` (or ``--plugin examples/bring_your_own.py``): the launcher
imports it before Ray starts and every Ray worker imports it before its trial, so ``tiny_cnn`` and
``linf`` are registry names everywhere, exactly like ``resnet20`` and ``l1``.
"""

from torch import nn

from prune_core import register_criterion, register_model
from prune_core.pruning import Criterion, FilterImportance


@register_model("tiny_cnn")
def tiny_cnn(num_classes: int, in_channels: int, image_size: int, width: float) -> nn.Module:
    """Three conv-BN-ReLU blocks and a linear head: any input size (global average pooling),
    ``width`` scales the channels. The signature every model builder has."""
    c = [max(1, round(n * width)) for n in (16, 32, 64)]

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(block(in_channels, c[0], 1), block(c[0], c[1], 2), block(c[1], c[2], 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[2], num_classes))


@register_criterion("linf")
class LInf(Criterion):
    """A filter's largest absolute weight (its L-infinity norm): a filter with no strong weight goes
    first. Scoring channels makes it a criterion of every channel-unit method."""

    units = ("channel",)

    def channel_importance(self):
        # one score per output filter (a row of the layer's weights), averaged over coupled layers
        return FilterImportance(lambda rows: rows.abs().amax(1))
