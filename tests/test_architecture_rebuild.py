"""A recorded model's architecture rebuilt from its per-layer widths: the network that was pruned."""

import pytest
import torch

from prune_core.config import ExperimentConfig
from prune_core.metrics import count_flops, layer_channels
from prune_core.models import build_model
from prune_core.pruning import (ArchitectureMismatch, PruneContext, architecture_key, build_architecture,
                                prune_model, rebuild)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SHAPE = (3, 32, 32)


def calib_batches():
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        yield torch.randn(4, *SHAPE, generator=g), torch.randint(0, 10, (4,), generator=g)


def pruned(name: str, **dotted):
    torch.manual_seed(0)
    model = build_model(name, 10, *SHAPE[:2]).eval()
    x = torch.randn(2, *SHAPE)
    cfg = ExperimentConfig.from_dict({"model.name": name, "prune.ratio": 0.4, **dotted})
    plan = prune_model(model, PruneContext(cfg, x, calib_batches=calib_batches, train=lambda *a: None,
                                           early_states={0: model.state_dict()}))
    return model, rebuild(model, plan, x).model


CASES = [
    ("resnet20", {"prune.method": "channel"}),
    ("resnet20", {"prune.method": "channel", "prune.scope": "global"}),
    ("mobilenet_v3_large", {"prune.method": "channel", "prune.scope": "global"}),
    ("vgg16", {"prune.method": "channel", "prune.scope": "global", "prune.ratio": 0.6}),
    ("lenet300", {"prune.method": "channel"}),
    ("resnet20", {"prune.method": "snip"}),  # masks: a dense architecture (unread channels removed)
]


@pytest.mark.parametrize("name,extra", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_rebuilt_architecture_has_the_pruned_models_widths_and_flops(name, extra):
    base, small = pruned(name, **extra)
    widths = layer_channels(small)
    assert widths != layer_channels(base) or extra["prune.method"] == "snip"
    net = build_architecture(name, 10, SHAPE, 1.0, widths)
    assert layer_channels(net) == widths
    assert count_flops(net, SHAPE).total == count_flops(small, SHAPE).total
    same = build_architecture(name, 10, SHAPE, 1.0, layer_channels(base))
    assert count_flops(same, SHAPE).total == count_flops(base, SHAPE).total
    assert architecture_key(name, 10, SHAPE, 1.0, widths) == architecture_key(name, 10, list(SHAPE), 1, dict(widths))


def test_a_width_no_group_reaches_is_refused_in_one_line():
    widths = layer_channels(build_model("resnet20", 10, *SHAPE[:2]))
    coupled = dict(widths, **{"conv1": 10})  # conv1 shares its channels with the first stage's residual adds
    with pytest.raises(ArchitectureMismatch, match="coupled layers") as err:
        build_architecture("resnet20", 10, SHAPE, 1.0, coupled)
    assert "\n" not in str(err.value)
    with pytest.raises(ArchitectureMismatch, match=r"layer fc width 7 is reached by no dependency group"):
        build_architecture("resnet20", 10, SHAPE, 1.0, dict(widths, fc=7))  # the classifier is never pruned
    with pytest.raises(ArchitectureMismatch, match="'nope'"):
        build_architecture("resnet20", 10, SHAPE, 1.0, dict(widths, nope=3))
    with pytest.raises(ArchitectureMismatch, match="width 99"):
        build_architecture("resnet20", 10, SHAPE, 1.0, dict(widths, conv1=99))


def test_the_architecture_is_traced_once_and_is_the_same_as_tracing_twice(monkeypatch):
    """``build_architecture`` prunes through the graph it read the groups from (a trace costs
    forwards; the quiet latency pass builds one model per trial): the network is the one a second
    trace of the unpruned model gives, weights included (the same seed)."""
    from prune_core.pruning import architecture, channel

    _, small = pruned("resnet20", **{"prune.method": "channel"})
    widths = layer_channels(small)
    traces = []
    build_graph = architecture.build_graph
    monkeypatch.setattr(architecture, "build_graph", lambda *a: traces.append(1) or build_graph(*a))
    monkeypatch.setattr(channel, "build_graph", lambda *a: traces.append(1) or build_graph(*a))
    torch.manual_seed(3)
    once = build_architecture("resnet20", 10, SHAPE, 1.0, widths)
    assert len(traces) == 1
    real_remove = architecture.remove_channels
    monkeypatch.setattr(architecture, "remove_channels", lambda model, plan, x, graph=None: real_remove(model, plan, x))
    torch.manual_seed(3)
    twice = build_architecture("resnet20", 10, SHAPE, 1.0, widths)
    assert len(traces) == 3
    assert layer_channels(once) == layer_channels(twice) == widths
    a, b = once.state_dict(), twice.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, *SHAPE)
    assert torch.equal(once(x), twice(x))
