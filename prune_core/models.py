"""The ``MODELS`` registry: torchvision networks adapted to any input, the CIFAR ResNets, and the
small networks of the pruning papers (LeNet-300-100, LeNet-5, Conv-6).

Every builder has one signature, ``build(num_classes, in_channels, image_size, width) -> nn.Module``.
torchvision models switch to a small-input stem (3x3 stride-1 first convolution, no max-pool) for
inputs of 64 px or less, as CIFAR papers do; otherwise a 28-px digit would shrink to nothing.

>>> from prune_core.models import build_model
>>> net = build_model("resnet20", num_classes=10, in_channels=1, image_size=28)
"""

from __future__ import annotations

import os
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List
from urllib.parse import urlparse

import torch
from torch import nn

from . import zoo
from ._registry import register
from .errors import ConfigError
from .sections import ModelConfig, require, require_choice

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# torchvision is imported by the builders and functions that use it, not here: importing it takes
# about 1.6 s (its ops import torch._dynamo), which every worker that builds a CIFAR ResNet or a
# LeNet would pay at start-up for nothing

Builder = Callable[[int, int, int, float], nn.Module]  # (num_classes, in_channels, image_size, width)
MODELS: Dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder(num_classes, in_channels, image_size, width) -> nn.Module`` as model
    ``name``: the door built-in models and plug-ins share. ``image_size`` is the side of the square
    input (a small one, 28 or 32, keeps full resolution in a torchvision stem: ``SMALL_INPUT``);
    ``width`` multiplies every layer's channels (``model.width``). A plug-in builder's source file
    is part of its bases' key (``plugins.code_digest``).

    >>> @register_model("my_net")  # doctest: +SKIP
    ... def my_net(num_classes, in_channels, image_size, width):
    ...     return nn.Sequential(nn.Conv2d(in_channels, int(16 * width), 3), ...)
    """
    return register(MODELS, name, "model")

SMALL_INPUT = 64  # at or below this size the stem keeps full resolution


# the registry models torchvision has ImageNet weights for (model.weights), by torchvision's name
TORCHVISION_WEIGHTS = {"resnet18": "resnet18", "resnet50": "resnet50", "vgg16": "vgg16_bn",
                       "mobilenet_v3_large": "mobilenet_v3_large"}


def builder_of(name: str) -> Builder:
    """The builder of ``name``: a registry model, or a reference (``prune_core.zoo``)."""
    if zoo.is_reference(name):
        return zoo.reference_builder(name)
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r}: expected one of {', '.join(sorted(MODELS))}, or "
                          "torchvision:<builder>, timm:<name> or <module or file.py>:<callable>")
    return MODELS[name]


def check_model(cfg: ModelConfig) -> None:
    """Raise ConfigError unless ``cfg.name`` is a registered model or a reference that resolves,
    and ``cfg.weights`` (if set) names weights of it at full width."""
    builder_of(cfg.name)
    kind = zoo.split(cfg.name)[0] if zoo.is_reference(cfg.name) else ""
    if kind in (zoo.TORCHVISION, zoo.TIMM):
        require(cfg.width == 1.0, "model.width", cfg.width, f"1 for {kind}: models (they are built as {kind} "
                "defines them)")
    if cfg.weights:
        require(cfg.name in TORCHVISION_WEIGHTS or kind in (zoo.TORCHVISION, zoo.TIMM), "model.weights", cfg.weights,
                f"empty: model.name={cfg.name} has no torchvision or timm weights (registry models with them: "
                f"{', '.join(sorted(TORCHVISION_WEIGHTS))}; start from a file with model.pretrained_path)")
        require(cfg.width == 1.0, "model.weights", cfg.weights, f"empty with model.width={cfg.width} (weights "
                "exist for width 1 only)")
        require(not cfg.pretrained_path, "model.weights", cfg.weights, "empty with model.pretrained_path set")
        if kind != zoo.TIMM:
            resolve_weights(cfg.name, cfg.weights)


def resolve_weights(name: str, weights: str) -> WeightsEnum:
    """torchvision's weights ``weights`` of the registry model or ``torchvision:`` reference
    ``name``: ``DEFAULT``, a member name (``IMAGENET1K_V1``) or its full spelling
    (``ResNet50_Weights.IMAGENET1K_V2``)."""
    builder = zoo.split(name)[1] if zoo.is_reference(name) else TORCHVISION_WEIGHTS[name]
    return zoo.torchvision_weights(builder, weights)


def weights_key(name: str, weights: str) -> str:
    """What of ``model.weights`` enters the base key: torchvision's enum member (``DEFAULT`` named),
    or for timm the tag, and a file's name with its SHA-256 prefix."""
    if zoo.split(name)[0] != zoo.TIMM:
        return str(resolve_weights(name, weights))
    from .plugins import file_digest

    digest = file_digest(weights) if weights != "DEFAULT" else ""
    return f"timm:{weights}" + (f"@{digest}" if digest else "")


def weights_file(w: WeightsEnum) -> Path:
    """Where torch.hub keeps ``w``'s file: ``<torch hub dir>/checkpoints/<file name of its URL>``
    (``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(w.url).path)


def load_weights(model: nn.Module, name: str, weights: str, download: bool = False) -> List[str]:
    """Copy the pretrained ``weights`` into ``model`` (built by ``name``), every tensor whose shape
    matches; returns the names of those left as initialised: the classifier when the classes
    differ, the stem when a small input or other channel count changed it. torchvision's file
    comes from torch.hub's cache; without it, ``download`` fetches it, else ``DatasetMissing``
    says where it is expected. timm's come from a file or timm's cache (``zoo.timm_state``)."""
    from .data import DatasetMissing

    if zoo.split(name)[0] == zoo.TIMM:
        state = zoo.timm_state(zoo.split(name)[1], weights)
    else:
        w = resolve_weights(name, weights)
        path = weights_file(w)
        if not path.is_file() and not download:
            raise DatasetMissing(f"model.weights={weights}: {path} is missing; place {path.name} there "
                                 f"(from {w.url}) or set data.download: true")
        state = w.get_state_dict(progress=False, weights_only=True)
        if getattr(model, "transform_input", None) is False and model_in_channels(model) == 3:
            model.transform_input = True  # googlenet, inception_v3: as torchvision's builder sets it with weights
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    return sorted(k for k in own if k not in kept and not k.endswith("num_batches_tracked"))


def model_in_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else -1


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                width: float = 1.0) -> nn.Module:
    """Build a registry model, or a reference (``prune_core.zoo``), by name."""
    return builder_of(name)(num_classes, in_channels, image_size, width)


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


# ---------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels, 6n+2 layers.
# Shortcuts that change shape use a 1x1 convolution (option B): its channels are prunable with the
# dependency graph, unlike option A's zero padding. It adds under 1% to the FLOPs of option A.


class _CifarBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth={depth}: a CIFAR ResNet has 6n+2 layers")
        n = (depth - 2) // 6
        widths = [_ch(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], widths[0]
        for i, cout in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(_CifarBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


for _depth in (20, 32, 56):
    register_model(f"resnet{_depth}")(
        lambda nc, cin, size, width, d=_depth: CifarResNet(d, nc, cin, width))


# ---------------------------------------------------------------------------------------------
# torchvision ResNets with a width multiplier on the residual stages


def _resnet(block, layers, nc: int, cin: int, size: int, width: float) -> nn.Module:
    from ._scaled_resnet import ScaledResNet

    net = ScaledResNet(block, layers, nc, partial(_ch, width=width))
    stem_out = net.conv1.out_channels
    if size <= SMALL_INPUT:
        net.conv1 = nn.Conv2d(cin, stem_out, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif cin != 3:
        net.conv1 = nn.Conv2d(cin, stem_out, 7, 2, 3, bias=False)
    return net


@register_model("resnet18")
def resnet18(nc: int, cin: int, size: int, width: float) -> nn.Module:
    from torchvision.models.resnet import BasicBlock

    return _resnet(BasicBlock, [2, 2, 2, 2], nc, cin, size, width)


@register_model("resnet50")
def resnet50(nc: int, cin: int, size: int, width: float) -> nn.Module:
    from torchvision.models.resnet import Bottleneck

    return _resnet(Bottleneck, [3, 4, 6, 3], nc, cin, size, width)


# ---------------------------------------------------------------------------------------------


@register_model("vgg16")
def vgg16(nc: int, cin: int, size: int, width: float) -> nn.Module:
    """VGG-16 with batch norm. Small inputs get the CIFAR head of Li et al. 2017 (512 -> 512 -> nc)
    instead of ImageNet's 25088 -> 4096 -> 4096 -> nc, which would hold 90% of the parameters."""
    from torchvision.models import VGG

    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, c = [], cin
    for v in cfg:
        if v == "M":
            # ceil_mode keeps 28-px inputs at 1x1 after five pools instead of reaching zero
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=size <= SMALL_INPUT))
        else:
            out = _ch(v, width)
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
    net = VGG(nn.Sequential(*layers), num_classes=nc)
    if size <= SMALL_INPUT:
        hidden = _ch(512, width)
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Sequential(nn.Linear(c, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, nc))
    elif width != 1.0:
        hidden = _ch(4096, width)
        net.classifier = nn.Sequential(nn.Linear(c * 49, hidden), nn.ReLU(True), nn.Dropout(),
                                       nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                       nn.Linear(hidden, nc))
    return net


@register_model("mobilenet_v3_large")
def mobilenet_v3_large(nc: int, cin: int, size: int, width: float) -> nn.Module:
    from torchvision.models import mobilenet_v3_large as tv_mobilenet_v3_large

    net = tv_mobilenet_v3_large(num_classes=nc, width_mult=width)
    stem = net.features[0][0]
    stride = 1 if size <= SMALL_INPUT else 2
    if cin != 3 or stride != 2:
        net.features[0][0] = nn.Conv2d(cin, stem.out_channels, 3, stride, 1, bias=False)
    return net


# ---------------------------------------------------------------------------------------------
# The small networks of the pruning papers (Han et al. 2015, Frankle & Carbin 2019, Lee et al. 2019).
# No batch norm, as in the papers. Weights are Gaussian Glorot and biases zero, as Frankle & Carbin
# 2019 (appendix) initialise (the Caffe LeNets' "xavier" filler is a uniform variant on the fan-in). He-normal
# (open_lth's default) diverged here: conv6 on mnist5k, SGD at lr 0.1 and 0.05, loss NaN in the first
# epoch, where Glorot reached 64% after two 1,500-image epochs.


def _glorot(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return net


@register_model("lenet300")
def lenet300(nc: int, cin: int, size: int, width: float) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998): flatten -> 300 -> 100 -> classes, ReLU between.

    As open_lth ``models/mnist_lenet.py`` (``mnist_lenet_300_100``) and snip-public
    ``snip/network.py`` (``LeNet300``) define it, for any input: the first layer reads all
    ``cin * size * size`` pixels. No conv layer: channel pruning removes hidden neurons.
    """
    h1, h2 = _ch(300, width), _ch(100, width)
    return _glorot(nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(cin * size * size, h1), relu1=nn.ReLU(inplace=True),
        fc2=nn.Linear(h1, h2), relu2=nn.ReLU(inplace=True), fc3=nn.Linear(h2, nc))))


@register_model("lenet5")
def lenet5(nc: int, cin: int, size: int, width: float) -> nn.Module:
    """LeNet-5-Caffe (Han et al. 2015; SNIP, Lee et al. 2019): conv 20 5x5 -> max-pool 2 -> conv 50
    5x5 -> max-pool 2 -> fc 500 -> ReLU -> fc classes; unpadded convs (28 px: 800 features).

    No ReLU after the convolutions, as in BVLC/caffe ``examples/mnist/lenet_train_test.prototxt``
    (conv1, pool1, conv2, pool2, ip1, relu1, ip2) and snip-public ``snip/network.py`` (``LeNet5``):
    max-pooling is the only non-linearity before ip1. Without batch norm or those ReLUs it needs a
    smaller learning rate than the pipeline's default: on mnist5k its loss went NaN in the first
    epoch at ``train.lr`` 0.1 (0.05 reached 96.5% in 5 epochs; Caffe's ``lenet_solver.prototxt`` uses 0.01).
    """
    c1, c2, hidden = _ch(20, width), _ch(50, width), _ch(500, width)
    side = ((size - 4) // 2 - 4) // 2  # two unpadded 5x5 convs, each followed by a 2x2 pool
    if side < 1:
        raise ValueError(f"lenet5: image_size={size} is too small (at least 16 px; the paper uses 28)")
    return _glorot(nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(cin, c1, 5), pool1=nn.MaxPool2d(2, 2), conv2=nn.Conv2d(c1, c2, 5),
        pool2=nn.MaxPool2d(2, 2), flatten=nn.Flatten(), fc1=nn.Linear(c2 * side * side, hidden),
        relu1=nn.ReLU(inplace=True), fc2=nn.Linear(hidden, nc))))


@register_model("conv6")
def conv6(nc: int, cin: int, size: int, width: float) -> nn.Module:
    """Conv-6 of Frankle & Carbin 2019 (fig. 2): 64, 64, pool, 128, 128, pool, 256, 256, pool
    (3x3 convs, padding 1, ReLU), then fc 256, 256, classes (ReLU between); no batch norm.

    As allenai/hidden-networks ``models/frankle.py`` (``Conv6``, written as 1x1 convs there) defines
    it; 32 px gives 256 x 4 x 4 features, 28 px 256 x 3 x 3.
    """
    side = size // 8
    if side < 1:
        raise ValueError(f"conv6: image_size={size} is too small (at least 8 px; the paper uses 32)")
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    c = cin
    for i, out in enumerate(_ch(v, width) for v in (64, 64, 128, 128, 256, 256)):
        layers[f"conv{i + 1}"] = nn.Conv2d(c, out, 3, padding=1)
        layers[f"relu{i + 1}"] = nn.ReLU(inplace=True)
        if i % 2:
            layers[f"pool{i // 2 + 1}"] = nn.MaxPool2d(2, 2)
        c = out
    hidden = _ch(256, width)
    layers.update(flatten=nn.Flatten(), fc1=nn.Linear(c * side * side, hidden), relu7=nn.ReLU(inplace=True),
                  fc2=nn.Linear(hidden, hidden), relu8=nn.ReLU(inplace=True), fc3=nn.Linear(hidden, nc))
    return _glorot(nn.Sequential(layers))
