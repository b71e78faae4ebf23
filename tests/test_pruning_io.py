"""FLOPs targets are reached, and pruned models survive a save/load round trip with weights_only."""

import ast
import copy
from pathlib import Path

import pytest
import torch
from _payload import LOADED, payload
from torch import nn

from prune_core.checkpoints import CorruptFile, sidecar
from prune_core.config import ExperimentConfig
from prune_core.metrics import count_flops
from prune_core.models import build_model
from prune_core.pruning import PruneContext, load_pruned, prune_model, rebuild, save_pruned

SHAPE = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def fresh(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, 10, *SHAPE[:2])
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *SHAPE))  # batch-norm statistics from data
    return model.eval()


def calib_batches():
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        yield torch.randn(4, *SHAPE, generator=g), torch.randint(0, 10, (4,), generator=g)


TARGETS = [
    ("resnet20", {"prune.method": "channel"}),
    ("resnet20", {"prune.method": "channel", "prune.scope": "global", "prune.lamp": True}),
    ("mobilenet_v3_large", {"prune.method": "channel", "prune.scope": "global"}),
    ("resnet20", {"prune.method": "kernel", "prune.scope": "global"}),
    # intra_kernel's patterns alone remove 5/9 (7/9 keeping 2) of the 3x3 FLOPs: targets beyond that
    ("resnet20", {"prune.method": "intra_kernel", "prune.ratio": 0.7}),
    ("resnet20", {"prune.method": "intra_kernel", "prune.pattern": "magnitude", "prune.pattern_keep": 2,
                  "prune.ratio": 0.85, "prune.scope": "global"}),
    ("resnet20", {"prune.method": "snip"}),
    ("resnet20", {"prune.method": "imp", "prune.rounds": 2, "prune.rewind_epoch": 0}),
    ("lenet300", {"prune.method": "channel"}),  # hidden neurons
    ("lenet5", {"prune.method": "channel", "prune.scope": "global"}),
]


@pytest.mark.parametrize("name,extra", TARGETS, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_flops_target_is_reached(name, extra):
    model = fresh(name)
    x = torch.randn(2, *SHAPE)
    cfg = ExperimentConfig.from_dict({"model.name": name, "prune.ratio": 0.4, "prune.target": "flops", **extra})
    early = {0: copy.deepcopy(model.state_dict())}
    dense = count_flops(model, SHAPE).total
    plan = prune_model(model, PruneContext(cfg, x, calib_batches=calib_batches, train=lambda *a: None,
                                           early_states=early))
    result = rebuild(model, plan, x)
    removed = 1 - count_flops(result.model, SHAPE).effective / dense
    assert removed == pytest.approx(cfg.prune.ratio, abs=0.01)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v3_large", "vgg16", "lenet300", "conv6"])
def test_channel_pruned_model_round_trips(name, tmp_path):
    model = fresh(name)
    x = torch.randn(2, *SHAPE)
    cfg = ExperimentConfig.from_dict({"model.name": name, "prune.ratio": 0.5, "prune.scope": "global"})
    small = rebuild(model, prune_model(model, PruneContext(cfg, x)), x).model.eval()
    path = tmp_path / "pruned.pt"
    save_pruned(small, path)
    assert torch.load(path, weights_only=True)["format"] == 1  # tensors, numbers and strings only
    again = load_pruned(path, build_model(name, 10, *SHAPE[:2])).eval()
    with torch.no_grad():
        assert torch.equal(again(x), small(x))
    assert [p.shape for p in again.parameters()] == [p.shape for p in small.parameters()]


def test_masked_model_saves_with_its_zeros(tmp_path):
    model = fresh("resnet20")
    x = torch.randn(2, *SHAPE)
    cfg = ExperimentConfig.from_dict({"prune.method": "kernel", "prune.ratio": 0.5})
    plan = prune_model(model, PruneContext(cfg, x))
    save_pruned(model, tmp_path / "masked.pt")  # masks folded into the weights
    again = load_pruned(tmp_path / "masked.pt", build_model("resnet20", 10, *SHAPE[:2])).eval()
    with torch.no_grad():
        assert torch.allclose(again(x), model(x), atol=1e-6)
    name = next(iter(plan.masks))
    assert torch.equal(again.get_submodule(name).weight == 0, plan.masks[name] == 0)


def test_load_refuses_a_model_of_another_shape(tmp_path):
    model = fresh("resnet20")
    save_pruned(model, tmp_path / "m.pt")
    with pytest.raises((ValueError, RuntimeError)):
        load_pruned(tmp_path / "m.pt", build_model("vgg16", 10, *SHAPE[:2]))


def test_load_accepts_a_plain_state_dict(tmp_path):
    model = fresh("resnet20")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    again = load_pruned(tmp_path / "plain.pt", build_model("resnet20", 10, *SHAPE[:2])).eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


@pytest.mark.parametrize("where", ["top", "state_dict"])
def test_load_refuses_a_file_that_would_run_code(tmp_path, where):
    LOADED.clear()
    save_pruned(fresh("lenet300"), tmp_path / "m.pt")
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    evil = payload(tmp_path / "PWNED")
    if where == "top":
        blob["extra"] = evil
    else:
        first, second = list(blob["state_dict"])[:2]  # in place of two weights
        blob["state_dict"][first], blob["state_dict"][second] = evil["shell"], evil["marker"]
    torch.save(blob, tmp_path / "m.pt")
    sidecar(tmp_path / "m.pt").unlink()  # a file crafted by hand has no checksum: torch.load itself must refuse
    with pytest.raises(CorruptFile, match="refused by weights_only=True"):
        load_pruned(tmp_path / "m.pt", build_model("lenet300", 10, *SHAPE[:2]))
    assert not (tmp_path / "PWNED").exists() and LOADED == []


def test_every_torch_load_passes_weights_only_true():
    root = Path(__file__).resolve().parents[1]
    files = [p for d in ("prune_core", "prune_sweep", "bench") for p in sorted((root / d).rglob("*.py"))]
    calls = []
    for path in [*files, root / "launch.py", root / "analyze.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls.append(f"{path.name}:{node.lineno}")
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                assert safe, f"{path.name}:{node.lineno}: torch.load without weights_only=True"
    # the checked load every checkpoint and model file goes through (the CLI's included) and the
    # pipeline's load of a given base were found
    assert {"checkpoints.py", "pipeline.py"} <= {c.split(":")[0] for c in calls}, calls
