"""Every registry model: forward/backward shapes, and FLOPs against an independent count."""

import pytest
import torch
from torch import nn

from prune_core.errors import ConfigError
from prune_core.metrics import count_flops
from prune_core.models import MODELS, build_model

CASES = [(1, 28), (3, 32)]  # (channels, size): the embedded digits and CIFAR


def independent_flops(model: nn.Module, input_shape) -> float:
    """2 x output elements x in-channels/groups x kernel area per conv; 2 x in x out per linear."""
    total = 0.0

    def conv_hook(m, _inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += 2 * out[0].numel() * (m.in_channels // m.groups) * k

    def linear_hook(m, _inp, _out):
        nonlocal total
        total += 2 * m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels,size", CASES)
def test_forward_backward(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_flops_match_independent_count(name):
    model = build_model(name, num_classes=10, in_channels=3, image_size=32)
    report = count_flops(model, (3, 32, 32))
    assert report.total == independent_flops(model, (3, 32, 32))
    assert report.macs * 2 == report.total
    assert sum(report.per_layer.values()) == pytest.approx(report.total)


def test_small_input_stem_and_width():
    small = build_model("resnet18", 10, 3, 32)
    large = build_model("resnet18", 10, 3, 224)
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)
    half = build_model("resnet20", 10, 3, 32, width=0.5)
    assert half.layer3[0].conv1.out_channels == 32
    assert build_model("resnet56", 10, 3, 32).layer3[-1].conv2.out_channels == 64


def test_resnet56_macs_match_the_paper():
    # Li et al. 2017 report 1.25e8 for ResNet-56 on CIFAR-10 (MACs called FLOPs); our 1x1 projection
    # shortcuts add under 1%.
    macs = count_flops(build_model("resnet56", 10, 3, 32), (3, 32, 32)).macs
    assert 1.25e8 <= macs <= 1.27e8


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match="resnet20.*torchvision:<builder>"):
        build_model("resnet19", 10)


def test_torchvision_is_imported_only_by_the_models_that_use_it():
    """A worker building a CIFAR ResNet never imports torchvision (1.6 s at each worker's start);
    a torchvision network still builds, and the versions in a base's hash are torchvision's."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import prune_sweep.trial, prune_sweep.bases, prune_core.pipeline\n"
            "from prune_core.config import major_versions\n"
            "from prune_core.models import build_model\n"
            "build_model('resnet20', 10, 1, 28)\n"
            "versions = major_versions()\n"
            "assert 'torchvision' not in sys.modules, 'torchvision imported by a resnet20 worker'\n"
            "net = build_model('resnet18', 10, 3, 32)\n"
            "import torchvision\n"
            "assert versions['torchvision'] == '.'.join(torchvision.__version__.split('.')[:2]), versions\n"
            "assert type(net).__module__ == 'prune_core._scaled_resnet', type(net)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
