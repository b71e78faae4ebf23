"""Models by reference (prune_core/zoo.py): ``torchvision:<builder>``, ``timm:<name>`` and a user's
``<module or file.py>:<callable>``; their checks, weights and base keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_core import zoo
from prune_core.config import ExperimentConfig
from prune_core.data import DatasetMissing
from prune_core.errors import ConfigError
from prune_core.models import build_model, load_weights
from prune_core.sections import name_label

pytestmark = pytest.mark.usefixtures("isolated_registries")  # tests/conftest.py: user files leave with the module

NET = ("from torch import nn\n\ndef build(num_classes, in_channels, image_size, width):\n"
       "    c = max(1, round(8 * width))\n"
       "    return nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),\n"
       "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))\n")


def test_every_torchvision_classifier_is_a_model_name_with_its_minimum_input():
    names = zoo.torchvision_names()
    assert {"resnet18", "vit_b_16", "swin_t", "maxvit_t", "convnext_tiny", "regnet_x_400mf"} <= set(names)
    for name in names:  # every family of MIN_SIZE exists, and every builder passes the name check
        zoo.reference_builder(f"torchvision:{name}")
    assert set(MIN_SIZE_FAMILIES) <= {zoo.family(n) for n in names}


MIN_SIZE_FAMILIES = tuple(zoo.MIN_SIZE)


@pytest.mark.parametrize("name, small, big", [("squeezenet1_1", 16, 28), ("vgg11", 28, 32)])
def test_the_minimum_input_table_matches_what_the_model_runs_at(name, small, big):
    """MIN_SIZE holds the smallest size a forward pass works at: one below fails in torchvision itself."""
    from torchvision import models as tvm

    assert zoo.min_size(name) == big
    net = tvm.get_model(name, num_classes=10).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, big, big)).shape == (1, 10)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, small, small))
    with pytest.raises(ConfigError, match=rf"^model.name=torchvision:{name}: needs inputs of at least {big} px, the "
                       rf"data gives {small} px; set data.resize: {big}$"):
        build_model(f"torchvision:{name}", 10, 3, small)


def test_a_torchvision_model_takes_any_channels_classes_and_its_size_arguments():
    net = build_model("torchvision:resnet18", 7, 1, 32).eval()
    assert net.conv1.in_channels == 1 and net.fc.out_features == 7
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    vit = build_model("torchvision:vit_b_32", 5, 1, 64).eval()  # image_size follows the data
    assert vit.image_size == 64 and vit.conv_proj.in_channels == 1
    assert vit(torch.zeros(1, 1, 64, 64)).shape == (1, 5)
    with pytest.raises(ConfigError, match=r"vit_b_16: needs inputs whose side is a multiple of 16 px, the data "
                       r"gives 28 px; set data.resize: 32$"):
        build_model("torchvision:vit_b_16", 10, 1, 28)
    net = build_model("torchvision:googlenet", 10, 3, 32).train()
    assert isinstance(net(torch.zeros(2, 3, 32, 32)), torch.Tensor)  # no auxiliary outputs in training


@pytest.mark.parametrize("name, closest", [("torchvision:resnet19", "resnet18"), ("torchvision:vit_b16", "vit_b_16"),
                                           ("timm:resnet_18", "resnet18")])
def test_an_unknown_reference_is_one_line_with_the_closest_names(name, closest):
    with pytest.raises(ConfigError, match=rf"^model.name='{name}': .* closest: .*\b{closest}\b") as info:
        ExperimentConfig.from_dict({"model.name": name})
    assert "\n" not in str(info.value)


def test_reference_models_have_width_one_and_torchvision_weights_by_their_enum():
    with pytest.raises(ConfigError, match=r"model.width=0.5: expected 1 for torchvision: models"):
        ExperimentConfig.from_dict({"model.name": "torchvision:resnet18", "model.width": 0.5})
    cfg = ExperimentConfig.from_dict({"model.name": "torchvision:mobilenet_v3_small", "model.weights": "DEFAULT"})
    assert cfg.base_key()["model"]["weights"] == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    with pytest.raises(ConfigError, match=r"model.weights='IMAGENET1K_V9': expected DEFAULT or one of IMAGENET1K_V1"):
        ExperimentConfig.from_dict({"model.name": "torchvision:mobilenet_v3_small", "model.weights": "IMAGENET1K_V9"})


def test_timm_models_build_offline_and_take_weights_only_from_a_file_or_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    net = build_model("timm:resnet10t", 4, 1, 32).eval()
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 4)
    vit = build_model("timm:vit_tiny_patch16_224", 4, 3, 32)  # a fixed input size follows the data
    assert vit.patch_embed.img_size == (32, 32)
    assert ExperimentConfig.from_dict({"model.name": "timm:resnet10t"}).base_key()["versions"]["timm"]
    # a file: every tensor whose shape fits is loaded, the classifier of other classes is not
    donor = build_model("timm:resnet10t", 1000, 3, 224)
    torch.save(donor.state_dict(), tmp_path / "r10.pth")
    net = build_model("timm:resnet10t", 4, 3, 32)
    fresh = load_weights(net, "timm:resnet10t", str(tmp_path / "r10.pth"))
    assert fresh == ["fc.bias", "fc.weight"]
    assert torch.equal(net.conv1[0].weight, donor.conv1[0].weight)
    key = ExperimentConfig.from_dict({"model.name": "timm:resnet10t", "model.weights": str(tmp_path / "r10.pth")})
    assert key.base_key()["model"]["weights"].startswith(f"timm:{tmp_path / 'r10.pth'}@")
    # the cache only: an empty one is one line, never a download
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DatasetMissing, match=r"^model.weights=DEFAULT: timm:resnet10t's pretrained weights are not "
                       r"in the local cache .*; download them on a connected machine or give a file$"):
        load_weights(build_model("timm:resnet10t", 4, 3, 32), "timm:resnet10t", "DEFAULT")
    with pytest.raises(DatasetMissing, match=r"no such file"):
        load_weights(net, "timm:resnet10t", str(tmp_path / "missing.pth"))


def test_a_users_builder_file_is_a_model_and_its_content_is_in_the_base_key(tmp_path, monkeypatch):
    path = tmp_path / "my_nets.py"
    path.write_text(NET)
    name = f"{path}:build"
    cfg = ExperimentConfig.from_dict({"model.name": name})
    net = build_model(name, 3, 1, 28, 2.0)
    assert net[0].out_channels == 16 and net(torch.zeros(1, 1, 28, 28)).shape == (1, 3)
    before = cfg.base_hash()
    assert ExperimentConfig.from_dict({"model.name": name}).base_hash() == before  # unchanged: the same base
    path.write_text(NET.replace("8 * width", "12 * width"))  # an edited builder: a new base
    assert cfg.base_hash() != before
    assert cfg.base_key()["model"]["code"]
    with pytest.raises(ConfigError, match=rf"^model.name='{path}:buld': {path} has no callable 'buld'; closest: build$"):
        ExperimentConfig.from_dict({"model.name": f"{path}:buld"})
    with pytest.raises(ConfigError, match=r"^model.name='no_such_module:build': no module named 'no_such_module'"):
        ExperimentConfig.from_dict({"model.name": "no_such_module:build"})
    with pytest.raises(ConfigError, match=r"^model.name=':build': expected torchvision:<builder>"):
        ExperimentConfig.from_dict({"model.name": ":build"})
    assert name_label(name) == "my_nets.build" and name_label("torchvision:resnet18") == "torchvision.resnet18"


def test_a_sweep_takes_a_builder_file_relative_to_itself_and_ships_it(tmp_path, monkeypatch):
    from prune_sweep.spec import parse_sweep

    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "zoo_net.py").write_text(NET)
    raw = {"name": "own", "base": {"model": {"name": "nets/zoo_net.py:build"}},
           "space": {"model.name": {"grid": ["nets/zoo_net.py:build", "torchvision:resnet18"]},
                     "prune.ratio": {"grid": [0.3]}}}
    monkeypatch.chdir(tmp_path.parent)  # not the sweep file's directory
    sweep = parse_sweep(raw, str(_write(tmp_path / "own.yaml", raw)))
    absolute = f"{tmp_path / 'nets' / 'zoo_net.py'}:build"
    assert sweep.base["model.name"] == absolute
    assert sweep.space["model.name"][0].dist.args == (absolute, "torchvision:resnet18")
    assert sweep.base["runtime.plugins"] == [str(tmp_path / "nets" / "zoo_net.py")]


def _write(path, raw):
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_cli_names_reference_models_in_its_help_and_files():
    from prune_core.cli import build_parser

    text = build_parser().format_help()
    assert "torchvision:<builder>, timm:<name>" in " ".join(text.split())


def test_first_conv_replacement_keeps_the_layer_shape():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 5, 2, 2, bias=False)), nn.Conv2d(8, 8, 3))
    zoo.first_conv(net, 1)
    conv = net[0][0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.bias) == \
        (1, 8, (5, 5), (2, 2), (2, 2), None)
    assert net[1].in_channels == 8
