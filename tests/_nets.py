"""Hand-sized networks shared by the pruning reference tests."""

import torch
import torch.nn.functional as F
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


class ResidualPair(nn.Module):
    """Two convs (3x3 and 1x1) whose batch-normed outputs are added: one coupled group of 4 channels
    (DepGraph's residual group), then pooling and a 4-class linear layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(F.relu(self.bn_a(self.a(x)) + self.bn_b(self.b(x))).mean((2, 3)))
