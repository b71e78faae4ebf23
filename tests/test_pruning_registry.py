"""Contract tests over the whole registries: every model x channel criterion x scope, every method.

Models are given trained-looking numbers (batch-norm statistics from data, varied BN scales,
O(1) logits) so that "the rebuilt model computes what the masked model computes" is a real check
and BN-scale ranking has something to rank.
"""

import copy
import functools

import pytest
import torch
from torch import nn

from prune_core.config import ConfigError, ExperimentConfig
from prune_core.metrics import count_flops, count_params
from prune_core.models import MODELS, build_model
from prune_core.pruning import (CRITERIA, METHODS, PruneContext, RebuildMismatch, accepted_criteria, prune_model,
                                rebuild)
from prune_core.pruning.graph import output_layer

SHAPE = (3, 32, 32)
CLASSES = 10


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@functools.lru_cache(maxsize=None)
def _trained_like(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, CLASSES, *SHAPE[:2])
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.2, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
            m.momentum = None  # running statistics = the plain average over the batches below
        elif isinstance(m, nn.Linear):
            m.reset_parameters()  # mobilenet's 0.01-std head gives ~1e-15 logits: nothing to compare
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *SHAPE))
        if not has_batch_norm(model):  # conv6's Glorot init gives ~0.05 logits: scale the head to O(1)
            head = output_layer(model, torch.zeros(1, *SHAPE))
            scale = 1.0 / float(model(torch.randn(8, *SHAPE)).std())
            head.weight.mul_(scale)
            head.bias.mul_(scale)
    return model.eval()


def trained_like(name: str) -> nn.Module:
    """A registry model with trained-looking numbers (a fresh copy; built once per name)."""
    return copy.deepcopy(_trained_like(name))


def calib_batches():
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        yield torch.randn(4, *SHAPE, generator=g), torch.randint(0, CLASSES, (4,), generator=g)


def context(cfg, x, **kw) -> PruneContext:
    return PruneContext(cfg, example_input=x, calib_batches=calib_batches, **kw)


def conv_channels(channels: dict, model: nn.Module) -> int:
    return sum(v for k, v in channels.items() if isinstance(model.get_submodule(k), nn.Conv2d))


def prunable_channels(channels: dict, model: nn.Module, classifier: str) -> int:
    """Conv output channels; in a model without conv layers (an MLP), hidden linear neurons."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return conv_channels(channels, model)
    return sum(v for k, v in channels.items() if k != classifier)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_registries_agree():
    assert set(METHODS) == {"channel", "kernel", "intra_kernel", "imp", "snip", "random_init", "nm", "none"}
    assert set(CRITERIA) == {"l1", "l2", "bn_scale", "taylor", "random", "fpgm", "group_norm", "hrank"}
    assert accepted_criteria("channel") == ("l1", "l2", "bn_scale", "taylor", "random", "fpgm", "group_norm", "hrank")
    # a criterion joins every method of a unit it scores; the paper-fixed ones keep theirs
    assert accepted_criteria("kernel") == accepted_criteria("intra_kernel") == ("l1", "l2", "random")
    assert (accepted_criteria("imp"), accepted_criteria("snip"), accepted_criteria("random_init"),
            accepted_criteria("nm")) == (("l1", "l2"), ("taylor",), ("random",), ("l1",))
    for name, spec in METHODS.items():
        allowed = accepted_criteria(name)
        assert spec.name == name and allowed and set(allowed) <= set(CRITERIA), name
    assert METHODS["snip"].base == METHODS["random_init"].base == "init"
    assert {m for m, s in METHODS.items() if s.base == "trained"} == {"channel", "kernel", "intra_kernel", "imp", "nm",
                                                                      "none"}
    assert {m: s.retrain for m, s in METHODS.items() if s.retrain != "finetune"} == {
        "imp": "rewind", "snip": "train", "random_init": "train"}
    assert {m for m, s in METHODS.items() if s.lamp} == {"channel", "kernel", "intra_kernel", "imp"}
    assert {m for m, s in METHODS.items() if "latency" in s.targets} == {"channel"}


def test_every_method_default_criterion_validates():
    for name in METHODS:
        cfg = ExperimentConfig.from_dict({"prune.method": name})
        assert cfg.prune.criterion == accepted_criteria(name)[0]
        assert cfg.prune.calib_batches == METHODS[name].calib_batches


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("criterion", accepted_criteria("channel"))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_channel_pruning_rebuilds_exactly_and_shrinks(name, criterion, scope):
    model = trained_like(name)
    x = torch.randn(2, *SHAPE)
    cfg = ExperimentConfig.from_dict({"model.name": name, "prune.method": "channel", "prune.criterion": criterion,
                                      "prune.ratio": 0.5, "prune.scope": scope})
    if criterion == "bn_scale" and not has_batch_norm(model):  # lenet300, lenet5, conv6: refused in one line
        with pytest.raises(ConfigError, match=rf"^prune.criterion='bn_scale': model {name} .*l1, l2, taylor, random"):
            prune_model(model, context(cfg, x))
        return
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = prune_model(model, context(cfg, x))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # plan only; model untouched

    result = rebuild(model, plan, x)
    assert model(x).std() > 0.05  # logits of a size that makes the comparison mean something
    assert result.max_abs_diff <= 1e-4

    flops0, flops1 = count_flops(model, SHAPE).total, count_flops(result.model, SHAPE).total
    params0, params1 = count_params(model)[0], count_params(result.model)[0]
    assert flops1 <= 0.75 * flops0, f"FLOPs only {flops0:.3g} -> {flops1:.3g}"  # global included: the budget buys FLOPs
    assert params1 < params0
    head = output_layer(model, x)
    cls = next(n for n, m in model.named_modules() if m is head)
    assert result.layer_channels_after[cls] == CLASSES  # the classifier's outputs stay
    assert min(result.layer_channels_after.values()) >= 1
    # ratio = fraction of the prunable conv output channels (an MLP's hidden neurons), counted per layer
    assert plan.stats["unit_ratio"] == pytest.approx(0.5, abs=0.01)
    conv_before = prunable_channels(result.layer_channels_before, model, cls)
    conv_after = prunable_channels(result.layer_channels_after, model, cls)
    assert 0.4 <= 1 - conv_after / conv_before <= 0.51


@pytest.mark.parametrize("name", sorted(MODELS))
def test_global_lamp_half_cuts_flops_on_every_model(name):
    """Global 0.5 on LAMP scores (raw scores: every criterion, in the test above) cuts at least a
    quarter of the FLOPs: the budget goes to conv channels, where the FLOPs are."""
    model = trained_like(name)
    x = torch.randn(2, *SHAPE)
    cfg = ExperimentConfig.from_dict({"model.name": name, "prune.ratio": 0.5, "prune.scope": "global",
                                      "prune.lamp": True})
    small = rebuild(model, prune_model(model, context(cfg, x)), x).model
    assert count_flops(small, SHAPE).total <= 0.75 * count_flops(model, SHAPE).total


def test_global_lamp_on_imagenet_vgg_leaves_the_classifier_alone():
    """Torch-Pruning's own global LAMP on vgg16_bn at 0.5 spends the budget on the 4096-wide head
    (params 138M -> 42M, FLOPs almost unchanged). Here only conv channels compete."""
    torch.manual_seed(0)
    model = build_model("vgg16", 1000, 3, 224, width=0.25).eval()  # the ImageNet head, a quarter as wide
    x = torch.randn(1, 3, 224, 224)
    cfg = ExperimentConfig.from_dict({"model.name": "vgg16", "prune.ratio": 0.5, "prune.scope": "global",
                                      "prune.lamp": True, "prune.criterion": "l2"})
    result = rebuild(model, prune_model(model, context(cfg, x)), x)
    heads = {k: v for k, v in result.layer_channels_after.items() if k.startswith("classifier")}
    assert heads == {k: v for k, v in result.layer_channels_before.items() if k.startswith("classifier")}
    shape = (3, 224, 224)
    assert count_flops(result.model, shape).total <= 0.75 * count_flops(model, shape).total


MASK_CASES = [
    {"prune.method": "kernel", "prune.ratio": 0.7},
    {"prune.method": "kernel", "prune.ratio": 0.7, "prune.scope": "global", "prune.lamp": True, "prune.criterion": "l2"},
    {"prune.method": "intra_kernel", "prune.ratio": 0.6},
    {"prune.method": "intra_kernel", "prune.ratio": 0.6, "prune.pattern": "magnitude", "prune.scope": "global"},
    {"prune.method": "intra_kernel", "prune.ratio": 0.0, "prune.pattern": "fixed"},
    {"prune.method": "imp", "prune.ratio": 0.9, "prune.rounds": 2, "prune.rewind_epoch": 0},
    {"prune.method": "snip", "prune.ratio": 0.95},
    {"prune.method": "snip", "prune.ratio": 0.9, "prune.shuffle": True, "prune.target": "flops"},
    {"prune.method": "random_init", "prune.ratio": 0.9},
    {"prune.method": "nm"},
    {"prune.method": "nm", "prune.nm": "1:8", "prune.ratio": 0.875},
    {"prune.method": "none"},
]


# what a model cannot take, refused in one line naming what it can: (model, method, pattern) -> message
REFUSED = {
    ("lenet300", "kernel", None): r"^prune.method='kernel': model lenet300 has no conv layer .*channel, imp, nm, snip",
    ("lenet300", "nm", None): r"^prune.method='nm': model lenet300 has no layer N:M can sparsify; expected conv or "
                              r"linear layers with output channels a multiple of 8 and input channels a multiple of "
                              r"16 and of M=[48] \(NVIDIA ASP's rule\)$",
    ("lenet5", "nm", None): r"^prune.method='nm': model lenet5 has no layer N:M can sparsify",
    ("lenet300", "intra_kernel", None): r"^prune.method='intra_kernel': model lenet300 has no conv layer",
    ("lenet5", "intra_kernel", "library"): r"^prune.pattern='library': model lenet5 has no 3x3 conv kernel; "
                                           r"expected magnitude",
    ("lenet5", "intra_kernel", "fixed"): r"^prune.pattern='fixed': model lenet5 has no 3x3 conv kernel; "
                                         r"expected magnitude",
}


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v3_large", "lenet300", "lenet5", "conv6"])
@pytest.mark.parametrize("case", MASK_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_mask_methods_rebuild_exactly(name, case):
    model = trained_like(name)
    x = torch.randn(2, *SHAPE)
    early = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    cfg = ExperimentConfig.from_dict({"model.name": name, **case})
    ctx = context(cfg, x, train=lambda *a, **k: None, early_states=early)
    refused = REFUSED.get((name, cfg.prune.method, None)) or REFUSED.get((name, cfg.prune.method, cfg.prune.pattern))
    if refused:
        with pytest.raises(ConfigError, match=refused):
            prune_model(model, ctx)
        return
    plan = prune_model(model, ctx)
    before = count_flops(model, SHAPE)
    result = rebuild(model, plan, x)
    assert result.max_abs_diff <= 1e-4
    after = count_flops(result.model, SHAPE)
    assert after.total <= before.total  # unread channels only ever leave
    assert after.effective == pytest.approx(before.effective, rel=1e-6) or after.effective < before.effective
    if case["prune.method"] != "none":
        assert before.effective < before.total
    assert not any(n.endswith("_orig") for n, _ in result.model.named_parameters())  # masks made permanent


def test_rebuild_refuses_a_plan_that_changes_the_function(monkeypatch):
    import prune_core.pruning.surgery as surgery

    model = trained_like("resnet20")
    x = torch.randn(2, *SHAPE)
    plan = prune_model(model, context(ExperimentConfig.from_dict({"prune.ratio": 0.5}), x))
    monkeypatch.setattr(surgery, "zero_channels", lambda m, channels, example: m)  # never masked
    with pytest.raises(RebuildMismatch, match="differ"):
        rebuild(model, plan, x)
