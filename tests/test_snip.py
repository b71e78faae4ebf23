"""SNIP against its reference (namhoonlee/snip-public), and the controls of Frankle et al. 2021."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from _nets import tiny_net, weights_of
from prune_core.config import ConfigError, ExperimentConfig
from prune_core.pruning import PruneContext, prune_model
from prune_core.pruning.snip import uniform_counts, variance_scaling_

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated at +-2 (scipy truncnorm(-2, 2).std())


def batches():
    g = torch.Generator().manual_seed(3)
    for _ in range(3):  # more than SNIP reads: it must take only the first
        yield torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g)


def snip_of(net, **prune):
    cfg = ExperimentConfig.from_dict({"prune.method": "snip", "prune.ratio": 0.8,
                                      **{f"prune.{k}": v for k, v in prune.items()}})
    return prune_model(net, PruneContext(cfg, torch.randn(2, 3, 8, 8), calib_batches=batches))


def reference_masks(net, sparsity):
    """snip-public ``model.py``, transcribed: mask variables ``c = 1`` multiply the weights; the
    connection sensitivity is ``|dL/dc|`` on ONE batch, batch norm not training (``is_train:
    False``); normalised by its total, the top ``round(n * (1 - sparsity))`` of all weights kept."""
    ref = tiny_net().eval()  # the same network without the mask hooks
    ref.load_state_dict({k.replace("weight_orig", "weight"): v for k, v in net.state_dict().items()
                         if not k.endswith("_mask")})
    x, y = next(iter(batches()))
    weights = {f"{n}.weight": m.weight.detach() for n, m in weights_of(ref)}
    c = {k: torch.ones_like(w, requires_grad=True) for k, w in weights.items()}
    loss = F.cross_entropy(functional_call(ref, {k: w * c[k] for k, w in weights.items()}, (x,)), y)
    grads = torch.autograd.grad(loss, list(c.values()))
    cs = torch.cat([g.abs().flatten() for g in grads])
    cs = cs / cs.sum()
    kappa = int(round(cs.numel() * (1.0 - sparsity)))
    keep = torch.zeros_like(cs).scatter_(0, torch.topk(cs, kappa).indices, 1.0)
    return dict(zip([n for n, _ in weights_of(net)], keep.split([w.numel() for w in weights.values()])))


@pytest.mark.parametrize("init", ["vs", "model"])
def test_snip_masks_are_the_reference_formula(init):
    net = tiny_net()
    with torch.no_grad():  # statistics of some other weights: variance scaling must reset them
        net[1].running_mean.fill_(0.5)
        net[1].running_var.fill_(2.0)
    before = copy.deepcopy(net.state_dict())
    plan = snip_of(net, snip_init=init)
    want = reference_masks(net, 0.8)  # on the weights the network now trains from
    for name, _ in weights_of(net):
        assert torch.equal(plan.masks[name].flatten(), want[name]), name
    assert sum(int(m.sum()) for m in plan.masks.values()) == round(0.2 * 832)  # 216 + 576 + 40 weights
    for name, m in weights_of(net):
        if init == "model":  # the registry's initialisation, untouched
            assert torch.equal(m.weight_orig, before[f"{name}.weight"])
            assert torch.equal(m.bias, before[f"{name}.bias"])
        else:  # variance scaling: |w| <= 2 sqrt(1 / fan_in), biases zero
            bound = 2 * math.sqrt(1.0 / m.weight_orig[0].numel())
            assert not torch.equal(m.weight_orig, before[f"{name}.weight"])
            assert float(m.weight_orig.detach().abs().max()) <= bound
            assert not bool(m.bias.any())
    if init == "model":
        assert torch.equal(net[1].running_mean, before["1.running_mean"])  # scored on a copy
    else:  # batch norm as at initialisation: running mean 0, variance 1
        assert not bool(net[1].running_mean.any()) and bool((net[1].running_var == 1).all())


def test_snip_eval_mode_batch_norm_is_what_the_ranking_sees():
    """With other running statistics the inference-mode pass, hence the masks, change (a
    training-mode pass would ignore them). On the registry init, whose statistics SNIP keeps."""
    a, b = tiny_net(), tiny_net()
    with torch.no_grad():
        for m in b.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.2, 3)
    masks_a, masks_b = snip_of(a, snip_init="model").masks, snip_of(b, snip_init="model").masks
    assert any(not torch.equal(masks_a[n], masks_b[n]) for n in masks_a)
    want = reference_masks(b, 0.8)
    assert all(torch.equal(masks_b[n].flatten(), want[n]) for n in masks_b)


def test_variance_scaling_is_tensorflow_1x_default():
    """``tf.variance_scaling_initializer()`` before TF 1.13: normal(0, sqrt(1/fan_in)) truncated
    at +-2 of that std, the std not rescaled for the truncation."""
    torch.manual_seed(0)
    w = variance_scaling_(torch.empty(256, 32, 3, 3))  # fan_in 288
    sigma = math.sqrt(1 / 288)
    assert float(w.abs().max()) <= 2 * sigma
    assert float(w.std()) == pytest.approx(TRUNCATED_STD * sigma, rel=0.01)
    assert abs(float(w.mean())) < 0.01 * sigma
    depthwise = variance_scaling_(torch.empty(64, 1, 3, 3))  # groups: fan_in = 9 per output channel
    assert float(depthwise.abs().max()) <= 2 / 3 and float(depthwise.abs().max()) > 1 / 3


def test_vs_redraw_scores_one_draw_and_trains_another():
    vs, redraw = tiny_net(), tiny_net()
    masks = snip_of(vs, snip_init="vs").masks
    assert all(torch.equal(masks[n], m) for n, m in snip_of(redraw, snip_init="vs_redraw").masks.items())
    for (name, a), (_, b) in zip(weights_of(vs), weights_of(redraw)):
        assert not torch.equal(a.weight_orig, b.weight_orig), name
        assert float(b.weight_orig.detach().abs().max()) <= 2 * math.sqrt(1.0 / b.weight_orig[0].numel())


def test_shuffle_keeps_each_layers_count_not_its_choice():
    snip = snip_of(tiny_net()).masks
    shuffled = snip_of(tiny_net(), shuffle=True).masks
    again = snip_of(tiny_net(), shuffle=True).masks
    assert {n: int(m.sum()) for n, m in shuffled.items()} == {n: int(m.sum()) for n, m in snip.items()}
    assert all(not torch.equal(shuffled[n], snip[n]) for n in snip)
    assert all(torch.equal(shuffled[n], again[n]) for n in snip)  # same seed, same masks
    cfg = ExperimentConfig.from_dict({"prune.method": "snip", "prune.ratio": 0.8, "prune.shuffle": True,
                                      "runtime.seed": 1})
    other = prune_model(tiny_net(), PruneContext(cfg, torch.randn(2, 3, 8, 8), calib_batches=batches)).masks
    assert any(not torch.equal(other[n], shuffled[n]) for n in snip)


def random_init_of(net, ratio, **prune):
    cfg = ExperimentConfig.from_dict({"prune.method": "random_init", "prune.ratio": ratio,
                                      **{f"prune.{k}": v for k, v in prune.items()}})
    return prune_model(net, PruneContext(cfg, torch.randn(2, 3, 8, 8)))


@pytest.mark.parametrize("ratio", [0.3, 0.7, 0.95])
def test_random_init_prunes_every_layer_alike(ratio):
    net = tiny_net()
    plan = random_init_of(net, ratio)
    removed = {n: int((m == 0).sum()) for n, m in plan.masks.items()}
    sizes = {n: m.weight.numel() for n, m in weights_of(net)}
    assert set(removed) == set(sizes)  # the classifier too
    for n in sizes:
        assert abs(removed[n] - ratio * sizes[n]) < 1, n
    assert sum(removed.values()) == round(ratio * sum(sizes.values()))
    assert plan.ratio == pytest.approx(ratio, abs=0.5 / sum(sizes.values()))
    assert all(torch.equal(plan.masks[n], m.weight_mask) for n, m in weights_of(net))
    assert not bool(net[0].bias.any())  # the same variance-scaling start as snip
    again = random_init_of(tiny_net(), ratio).masks
    assert all(torch.equal(plan.masks[n], again[n]) for n in sizes)


def test_uniform_counts_round_each_layer_and_hit_the_total():
    for sizes, f in [([10, 7, 3], 0.5), ([216, 576, 40], 0.37), ([1, 1, 1], 0.5), ([5], 0.0)]:
        counts = uniform_counts(sizes, f)
        assert all(abs(c - f * n) < 1 and 0 <= c <= n for c, n in zip(counts, sizes))
        assert sum(counts) == round(f * sum(sizes))


@pytest.mark.parametrize("method", ["snip", "random_init"])
def test_flops_target_at_init(method):
    cfg = ExperimentConfig.from_dict({"prune.method": method, "prune.ratio": 0.5, "prune.target": "flops"})
    plan = prune_model(tiny_net(), PruneContext(cfg, torch.randn(2, 3, 8, 8), calib_batches=batches))
    assert plan.stats["flops_removed"] == pytest.approx(0.5, abs=0.02)


def test_calib_batches_default_is_the_methods_own():
    assert ExperimentConfig.from_dict({"prune.method": "snip"}).prune.calib_batches == 1
    assert ExperimentConfig.from_dict({"prune.method": "channel", "prune.criterion": "taylor"}).prune.calib_batches == 4
    cfg = ExperimentConfig.from_dict({"prune.method": "snip"})
    assert cfg.replace(**{"prune.method": "channel"}).prune.calib_batches == 4  # resolved again
    assert cfg.replace(**{"prune.ratio": 0.3}).prune.calib_batches == 1
    assert ExperimentConfig.from_dict({"prune.method": "snip", "prune.calib_batches": 3}).prune.calib_batches == 3
    with pytest.raises(ConfigError, match=r"^prune.shuffle=True: expected false unless prune.method is imp or snip$"):
        ExperimentConfig.from_dict({"prune.method": "channel", "prune.shuffle": True})
    with pytest.raises(ConfigError, match="prune.snip_init"):
        ExperimentConfig.from_dict({"prune.method": "snip", "prune.snip_init": "kaiming"})
