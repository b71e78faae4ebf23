"""Controls (``prune.control``): the pruned architecture re-initialised and trained from scratch
(Scratch-E, Scratch-B; Liu et al. 2019) and the dense model narrowed to the same FLOPs."""

import math

import pytest
import torch

from prune_core import SMOKE, ExperimentConfig, run
from prune_core.config import ConfigError
from prune_core.controls import control_training, narrow_width
from prune_core.metrics import count_flops, layer_channels
from prune_core.models import build_model
from prune_core.pruning import build_architecture, control_network


def cfg(**dotted):
    return ExperimentConfig.from_dict({"prune.method": "channel", "train.epochs": 4, "finetune.epochs": 2, **dotted})


def test_each_control_trains_its_budget_with_the_base_recipe():
    assert control_training(cfg(**{"prune.control": "scratch_e"})).epochs == 4 + 2  # the pruned arm's T + F
    # Scratch-B: T epochs of the base plus F of the pruned network, in epochs of the pruned network
    assert control_training(cfg(**{"prune.control": "scratch_b"}), flops_kept=0.25).epochs == round(4 / 0.25 + 2)
    assert control_training(cfg(**{"prune.control": "scratch_b"}), flops_kept=1.0).epochs == 6  # never below E
    assert control_training(cfg(**{"prune.control": "narrow"})).epochs == 4  # the base's budget
    budget = {"prune.budget_epochs": 10}
    assert control_training(cfg(**{"prune.control": "scratch_e", **budget})).epochs == 10
    assert control_training(cfg(**{"prune.control": "scratch_b", **budget}), flops_kept=0.5).epochs == 4 * 2 + 6
    assert control_training(cfg(**{"prune.control": "narrow", **budget})).epochs == 10
    tcfg = control_training(cfg(**{"prune.control": "scratch_e", "train.lr": 0.2, "finetune.lr": 0.01}))
    assert tcfg.lr == 0.2 and tcfg.schedule == "cosine"  # train's settings, not the fine-tune's


def test_narrow_width_picks_the_width_whose_flops_come_closest():
    def flops_at(w):  # a network of one 16-channel layer squared: FLOPs step with whole channels
        return max(1, round(16 * w)) ** 2

    assert narrow_width(flops_at, 64, "m") * 16 == pytest.approx(8, abs=0.5)  # 8 channels: exactly 64
    assert round(16 * narrow_width(flops_at, 70, "m")) == 8  # 64 is nearer 70 than 81
    assert round(16 * narrow_width(flops_at, 75, "m")) == 9  # 81 is nearer 75 than 64
    assert narrow_width(flops_at, 1e9, "m") == 1.0
    with pytest.raises(ConfigError, match="builds the same network at every model.width"):
        narrow_width(lambda w: 100, 50, "m")


@pytest.mark.parametrize("dotted, match", [
    ({"prune.method": "kernel"}, "not kernel, whose network keeps its layer widths"),
    ({"prune.method": "snip"}, "not snip"),
    ({"prune.method": "imp"}, "not imp"),
    ({"finetune.kd_alpha": 0.5}, "finetune.kd_alpha=0.5: expected 0 with prune.control=scratch_e"),
    ({"prune.control": "narrow", "model.name": "torchvision:resnet18"}, "expected a registry model"),
    ({"prune.control": "scratch"}, "one of scratch_e, scratch_b, narrow"),
])
def test_a_control_without_an_architecture_to_train_is_refused_in_one_line(dotted, match):
    with pytest.raises(ConfigError, match=match) as err:
        ExperimentConfig.from_dict({"prune.control": "scratch_e", **dotted})
    assert "\n" not in str(err.value)


def test_a_scratch_control_keeps_the_pruned_widths_with_fresh_weights_drawn_from_its_seed():
    c = cfg(**{"prune.control": "scratch_e", "model.width": 0.5})
    base = build_model("resnet20", 10, 1, 28, 0.5)
    widths = {k: max(1, v // 2) if k != "fc" else v for k, v in layer_channels(base).items()}
    pruned = build_architecture("resnet20", 10, (1, 28, 28), 0.5, widths)

    def count(m):
        return count_flops(m, (1, 28, 28)).total

    a, extra = control_network(c, pruned, (1, 28, 28), 10, count)
    b, _ = control_network(c, pruned, (1, 28, 28), 10, count)
    assert layer_channels(a) == widths and extra == {} and a.training
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv1.weight, pruned.conv1.weight)  # not the network it replaces
    other, _ = control_network(c.replace(**{"runtime.seed": 1}), pruned, (1, 28, 28), 10, count)
    assert not torch.equal(a.conv1.weight, other.conv1.weight)


def test_controls_run_beside_their_twin(tmp_path):
    base = {**SMOKE, "runtime.cache_dir": str(tmp_path / "cache"), "runtime.device": "cpu", "data.limit_train": 128,
            "model.width": 0.5, "prune.method": "channel", "prune.ratio": 0.4, "prune.scope": "global",
            "train.epochs": 2, "finetune.epochs": 1}
    out = {c: run(ExperimentConfig.from_dict({**base, "prune.control": c}), log=lambda _: None)
           for c in ("", "scratch_e", "scratch_b", "narrow")}
    twin = out[""]
    for c in ("scratch_e", "scratch_b"):  # the same architecture, trained from scratch
        assert out[c]["layer_channels_final"] == twin["layer_channels_final"]
        assert out[c]["flops_final"] == twin["flops_final"] and out[c]["epochs_base"] == 2
    assert out["scratch_e"]["finetune_epochs"] == 3
    assert out["scratch_b"]["finetune_epochs"] == round(2 / twin["flops_kept_dense"] + 1)
    narrow = out["narrow"]
    assert narrow["finetune_epochs"] == 2 and 0 < narrow["control_width"] < 1
    # the narrowed dense model: one width for all layers, FLOPs as close to the twin's as widths allow
    flops = [count_flops(build_model("resnet20", 10, 1, 28, 0.5 * w), (1, 28, 28)).total
             for w in (narrow["control_width"] - 1 / 8, narrow["control_width"] + 1 / 8)]
    gap = abs(narrow["flops_final"] - twin["flops_final"])
    assert all(gap <= abs(f - twin["flops_final"]) for f in flops)
    assert math.isclose(narrow["flops_kept_dense"], narrow["flops_final"] / narrow["flops_base"])
