"""model.weights: torchvision's ImageNet weights as the start of base training, from torch hub's
cache (a state dict placed in a temporary TORCH_HOME: no network)."""

from __future__ import annotations

import pytest
import torch
from torchvision import models as tvm

from prune_core import ExperimentConfig, ensure_base
from prune_core.cli import main
from prune_core.errors import ConfigError
from prune_core.models import build_model, load_weights, resolve_weights, weights_file


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub cache holding resnet18's IMAGENET1K_V1 file (random weights under its name)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights_file(resolve_weights("resnet18", "IMAGENET1K_V1"))
    assert path.is_relative_to(tmp_path)
    path.parent.mkdir(parents=True)
    torch.manual_seed(1)
    state = tvm.resnet18().state_dict()
    torch.save(state, path)
    return state


def test_weights_load_where_shapes_match_and_the_rest_stays_initialised(hub):
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=224)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_weights(model, "resnet18", "IMAGENET1K_V1") == ["fc.bias", "fc.weight"]  # 10 classes, not 1000
    for k, v in model.state_dict().items():
        expected = init[k] if k.startswith("fc.") else hub[k]
        assert torch.equal(v, expected), k
    small = build_model("resnet18", num_classes=10, in_channels=1, image_size=28)  # 3x3 one-channel stem
    assert load_weights(small, "resnet18", "DEFAULT") == ["conv1.weight", "fc.bias", "fc.weight"]
    assert torch.equal(small.state_dict()["layer4.1.conv2.weight"], hub["layer4.1.conv2.weight"])


def test_a_base_starts_from_the_weights(hub, tmp_path):
    cfg = ExperimentConfig.from_dict({"model.name": "resnet18", "model.weights": "IMAGENET1K_V1", "train.epochs": 0,
                                      "data.limit_train": 64, "runtime.cache_dir": str(tmp_path / "cache"),
                                      "runtime.device": "cpu"})
    lines = []
    base = ensure_base(cfg, log=lines.append)
    assert torch.equal(base.artifact["model"]["layer2.0.conv1.weight"], hub["layer2.0.conv1.weight"])
    assert any("starting from torchvision's IMAGENET1K_V1 weights; initialised instead (other shapes here): "
               "conv1.weight, fc.bias, fc.weight" in ln for ln in lines), lines
    # DEFAULT is resnet18's IMAGENET1K_V1: one base; no weights is another, keyed as before the option existed
    default = cfg.replace(**{"model.weights": "DEFAULT"})
    assert default.base_hash() == cfg.base_hash()
    plain = cfg.replace(**{"model.weights": ""})
    assert plain.base_hash() != cfg.base_hash() and "weights" not in plain.base_key()["model"]


@pytest.mark.parametrize("values, needle", [
    ({"model.name": "resnet18", "model.weights": "IMAGENET9"}, "expected DEFAULT or one of IMAGENET1K_V1"),
    ({"model.name": "resnet18", "model.weights": "ResNet50_Weights.IMAGENET1K_V2"}, "ResNet18_Weights"),
    ({"model.name": "resnet20", "model.weights": "DEFAULT"}, "models with them: mobilenet_v3_large, resnet18"),
    ({"model.name": "resnet50", "model.width": 0.5, "model.weights": "DEFAULT"}, "width 1 only"),
])
def test_weights_that_do_not_exist_are_one_line(values, needle):
    with pytest.raises(ConfigError, match="model.weights") as err:
        ExperimentConfig.from_dict(values)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert ExperimentConfig.from_dict({"model.name": "resnet50", "model.weights": "ResNet50_Weights.IMAGENET1K_V2"})


def test_a_missing_weights_file_names_where_it_is_expected(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    code = main(["--model", "resnet18", "--weights", "IMAGENET1K_V1", "--smoke-test", "--output-dir",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    expected = tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert code == 3 and err.count("\n") == 0, err
    assert f"{expected} is missing; place resnet18-f37072fd.pth there" in err and "add --download" in err, err
