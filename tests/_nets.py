"""Hand-sized networks shared by the pruning reference tests."""

import torch
from torch import nn


def tiny_net() -> nn.Module:
    """conv-BN-ReLU twice, global pooling and a linear classifier: 8 channels per conv, 5 classes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def weights_of(net: nn.Module):
    """(name, layer) of every conv and linear layer: what IMP and SNIP prune."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
