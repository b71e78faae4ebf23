"""Per-stage ratios (``prune.stage_ratios``): the sweep keys that address them, the channel
method's per-group ratios, and ``prune-core --list-groups``, which names a model's stages."""

import optuna
import pytest
import torch
import yaml

from prune_core import ExperimentConfig
from prune_core.cli import main as cli_main
from prune_core.config import ConfigError
from prune_core.metrics import count_flops, layer_channels
from prune_core.models import build_model
from prune_core.pruning import PruneContext, prune_model, rebuild
from prune_core.pruning.channel import group_table, stage_of
from prune_core.pruning.select import Ranking
from prune_sweep.expand import OptunaSpace, load_sweep, trial_configs
from prune_sweep.spec import SWEEPS_DIR


def test_a_layer_with_its_own_ratio_loses_that_fraction_and_the_rest_the_common_one():
    scores = [torch.tensor([5.0, 1.0, 3.0, 2.0]), torch.tensor([0.1, 0.4, 0.3, 0.2, 9.0, 8.0])]
    chosen = Ranking(scores, "local", layer_ratios=[0.25, None]).select(0.5)
    assert [c.tolist() for c in chosen] == [[1], [0, 2, 3]]
    assert stage_of("layer2.0.conv1", ["layer2", "layer2.0", "layer1"]) == "layer2.0"  # the longest name
    assert stage_of("layer20.conv1", ["layer2"]) is None  # a dotted prefix, not any prefix


def test_stage_ratios_are_dotted_keys_a_file_and_a_sweep_can_set_one_by_one(tmp_path):
    cfg = ExperimentConfig.from_dict({"prune.stage_ratios.layer1": 0.25, "prune": {"ratio": 0.5}})
    assert cfg.prune.stage_ratios == (("layer1", 0.25),)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg  # a stored config loads back
    assert cfg.replace(**{"prune.stage_ratios.layer3": 0.75}).prune.stage_ratios == (("layer1", 0.25), ("layer3", 0.75))
    sweep = {"name": "s", "base": {"model.name": "resnet20", "prune.method": "channel"},
             "space": {"prune.stage_ratios.layer2": {"grid": [0.2, 0.6]}, "prune.stage_ratios.layer3": {"grid": [0.5]}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert trial_configs(load_sweep(path)) == [{"prune.stage_ratios.layer2": 0.2, "prune.stage_ratios.layer3": 0.5},
                                               {"prune.stage_ratios.layer2": 0.6, "prune.stage_ratios.layer3": 0.5}]


def test_the_shipped_search_draws_every_stage_and_each_draw_is_a_config():
    sweep = load_sweep(SWEEPS_DIR / "layerwise_resnet20_mnist5k.yaml")
    space = OptunaSpace(sweep)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        config = space(trial)
        cfg = ExperimentConfig.from_dict({**sweep.base, **config})
        assert dict(cfg.prune.stage_ratios) == {k.rsplit(".", 1)[1]: v for k, v in config.items()}
        assert sorted(dict(cfg.prune.stage_ratios)) == ["conv1", "layer1", "layer2", "layer3"]
        study.tell(trial, [0.0, 0.0])


@pytest.mark.parametrize("dotted, match", [
    ({"prune.stage_ratios.layer1": 1.0}, r"prune.stage_ratios.layer1=1.0: expected a number in \[0, 1\)"),
    ({"prune.stage_ratios": [1, 2]}, "expected a mapping of names to numbers"),
    ({"prune.stage_ratios.layer1": 0.3, "prune.scope": "global"}, "expected prune.scope local and prune.target unit"),
    ({"prune.stage_ratios.layer1": 0.3, "prune.target": "flops"}, "expected prune.scope local and prune.target unit"),
    ({"prune.stage_ratios.layer1": 0.3, "prune.method": "kernel"}, "none unless prune.method is channel"),
])
def test_bad_stage_ratios_are_one_line_errors(dotted, match):
    with pytest.raises(ConfigError, match=match) as err:
        ExperimentConfig.from_dict(dotted)
    assert "\n" not in str(err.value)


def prune(stage_ratios, ratio=0.5):
    cfg = ExperimentConfig.from_dict({"model.name": "resnet20", "prune.method": "channel", "prune.ratio": ratio,
                                      "prune.stage_ratios": stage_ratios})
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    plan = prune_model(model, PruneContext(cfg, x))
    return model, rebuild(model, plan, x)


def test_each_stage_loses_its_own_ratio_and_the_rebuilt_model_computes_the_masked_one():
    dense, rebuilt = prune({"layer1": 0.25, "layer3.1": 0.75}, ratio=0.5)
    before, after = layer_channels(dense), layer_channels(rebuilt.model)
    assert rebuilt.max_abs_diff <= 1e-4
    kept = {name: after[name] / before[name] for name in before}
    assert all(kept[f"layer1.{b}.conv1"] == 12 / 16 for b in range(3))  # layer1's inner groups: 0.25
    assert kept["layer3.1.conv1"] == 16 / 64  # a group named by its root's prefix
    assert kept["layer3.0.conv1"] == kept["layer2.1.conv1"] == 0.5  # the rest: prune.ratio
    assert kept["conv1"] == 0.5 and kept["fc"] == 1.0  # the stem's residual group is stage conv1
    with pytest.raises(ConfigError, match=r"prune.stage_ratios.layer9: no dependency group of resnet20 lies in "
                                          r"layer9; expected a stage \(conv1, layer1, layer2, layer3\)"):
        prune({"layer9": 0.5})


def test_list_groups_names_every_group_its_stage_and_flops_share(capsys):
    model = build_model("resnet20", 10, 3, 32)
    rows = group_table(model, torch.randn(2, 3, 32, 32), (3, 32, 32))
    assert [r["stage"] for r in rows][:2] == ["conv1", "layer1"] and len(rows) == 12
    per_layer = count_flops(model, (3, 32, 32)).per_layer
    total = sum(per_layer.values())
    inner = next(r for r in rows if r["root"] == "layer1.0.conv1")  # its conv1 writes, its conv2 reads
    assert inner["flops_share"] == pytest.approx((per_layer["layer1.0.conv1"] + per_layer["layer1.0.conv2"]) / total)
    assert inner["layers"] == 2 and inner["channels"] == 16
    assert all(r["flops_share"] <= r["stage_flops_share"] <= 1 for r in rows)
    assert cli_main(["--list-groups", "--model", "resnet20", "--dataset", "mnist5k"]) == 0
    out = capsys.readouterr().out
    assert "layer2.0.conv1" in out and out.strip().endswith("prune.stage_ratios.<stage> (channel, local scope)")
