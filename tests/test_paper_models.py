"""The small networks of the pruning papers: their layouts, and channel pruning of an MLP's neurons."""

import pytest
import torch
from torch import nn

from prune_core.config import ConfigError, ExperimentConfig
from prune_core.models import build_model
from prune_core.pruning import PruneContext, prune_model, rebuild

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_layouts_match_the_papers():
    # LeNet-300-100 on MNIST: 266K weights (Frankle & Carbin 2019, fig. 2): 784*300+300 + 300*100+100 + 100*10+10
    assert n_params(build_model("lenet300", 10, 1, 28)) == 266_610
    # LeNet-5-Caffe: 431K weights (Han et al. 2015, table 2): 20x1x5x5, 50x20x5x5, 800x500, 500x10 (+ biases)
    lenet5 = build_model("lenet5", 10, 1, 28)
    assert n_params(lenet5) == 431_080
    # the Caffe prototxt: conv1, pool1, conv2, pool2, ip1, relu1, ip2; no ReLU after the convolutions
    kinds = [type(m).__name__ for m in lenet5.children()]
    assert kinds == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    # Conv-6 (fig. 2): 64, 64, pool, 128, 128, pool, 256, 256, pool, FC 256, 256, 10; 3x3 convs, padded
    conv6 = build_model("conv6", 10, 3, 32)
    convs = [m for m in conv6.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [(m.in_features, m.out_features) for m in conv6.modules() if isinstance(m, nn.Linear)] == [
        (256 * 4 * 4, 256), (256, 256), (256, 10)]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in conv6.modules())


@pytest.mark.parametrize("size,lenet5_in,conv6_in", [(28, 50 * 4 * 4, 256 * 3 * 3), (32, 50 * 5 * 5, 256 * 4 * 4),
                                                     (40, 50 * 7 * 7, 256 * 5 * 5)])
def test_flatten_size_follows_the_input(size, lenet5_in, conv6_in):
    for name, features in (("lenet300", 3 * size * size), ("lenet5", lenet5_in), ("conv6", conv6_in)):
        model = build_model(name, 7, 3, size)
        assert next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features == features, name
        assert model(torch.randn(1, 3, size, size)).shape == (1, 7)


def test_width_scales_every_hidden_layer():
    half = build_model("lenet300", 10, 1, 28, width=0.5)
    assert [m.out_features for m in half.modules() if isinstance(m, nn.Linear)] == [150, 50, 10]
    half = build_model("lenet5", 10, 1, 28, width=0.5)
    assert [m.out_channels for m in half.modules() if isinstance(m, nn.Conv2d)] == [10, 25]
    assert half.fc1.out_features == 250
    with pytest.raises(ValueError, match="lenet5: image_size=12"):
        build_model("lenet5", 10, 1, 12)


def test_lenet300_channel_pruning_removes_half_of_each_hidden_layer():
    """Local L1 at 0.5 on an MLP: half of each hidden layer's neurons go, those with the smallest
    L1 norm of their weight row; the 10 outputs stay; the rebuilt network computes what the
    network with those neurons' rows, biases and outgoing columns zeroed computes."""
    torch.manual_seed(0)
    net = build_model("lenet300", 10, 1, 28).eval()
    x = torch.randn(4, 1, 28, 28)
    cfg = ExperimentConfig.from_dict({"model.name": "lenet300", "prune.method": "channel", "prune.criterion": "l1",
                                      "prune.ratio": 0.5, "prune.scope": "local"})
    plan = prune_model(net, PruneContext(cfg, example_input=x))
    assert set(plan.channels) == {"fc1", "fc2"}  # never fc3, the classifier
    for layer, n in (("fc1", 300), ("fc2", 100)):
        lowest = net.get_submodule(layer).weight.abs().sum(1).argsort()[: n // 2]
        assert plan.channels[layer] == sorted(lowest.tolist())

    result = rebuild(net, plan, x)
    small = result.model
    assert (small.fc1.out_features, small.fc2.in_features, small.fc2.out_features, small.fc3.in_features,
            small.fc3.out_features) == (150, 150, 50, 50, 10)
    # the masked network, written out by hand
    masked = build_model("lenet300", 10, 1, 28).eval()
    masked.load_state_dict(net.state_dict())
    with torch.no_grad():
        for layer, nxt in (("fc1", "fc2"), ("fc2", "fc3")):
            gone = torch.tensor(plan.channels[layer])
            masked.get_submodule(layer).weight[gone] = 0
            masked.get_submodule(layer).bias[gone] = 0
            masked.get_submodule(nxt).weight[:, gone] = 0
        assert (small(x) - masked(x)).abs().max() <= 1e-4
        assert (net(x) - masked(x)).abs().max() > 1e-3  # the pruning changed something
    assert result.max_abs_diff <= 1e-4


@pytest.mark.parametrize("method", ["kernel", "intra_kernel"])
def test_kernel_methods_on_an_mlp_fail_in_one_line(method):
    net = build_model("lenet300", 10, 1, 28)
    cfg = ExperimentConfig.from_dict({"model.name": "lenet300", "prune.method": method})
    with pytest.raises(ConfigError) as err:
        prune_model(net, PruneContext(cfg, example_input=torch.randn(2, 1, 28, 28)))
    message = str(err.value)
    assert "\n" not in message and "lenet300" in message and method in message
    assert all(m in message for m in ("channel", "imp", "snip", "none"))


def test_lenet5_channel_pruning_prunes_filters_and_keeps_the_hidden_fc_layer():
    """With conv layers present only their filters are channels (Li et al. 2017 prune filters):
    fc1's 500 neurons stay, its input columns of the removed conv2 channels go."""
    torch.manual_seed(0)
    net = build_model("lenet5", 10, 1, 28).eval()
    x = torch.randn(4, 1, 28, 28)
    cfg = ExperimentConfig.from_dict({"model.name": "lenet5", "prune.ratio": 0.5, "prune.scope": "global"})
    result = rebuild(net, prune_model(net, PruneContext(cfg, example_input=x)), x)
    after = result.layer_channels_after
    assert after["fc1"] == 500 and after["fc2"] == 10
    assert after["conv1"] + after["conv2"] == 35  # half of 20 + 50
    assert result.model.fc1.in_features == after["conv2"] * 4 * 4
    assert result.max_abs_diff <= 1e-4
