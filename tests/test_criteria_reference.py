"""Channel criteria against their papers' definitions, on hand-sized networks: Taylor-FO-BN
(Molchanov et al. 2019), LAMP (Lee et al. 2021, as Torch-Pruning computes it), Network Slimming's
raw |gamma| threshold (Liu et al. 2017), and EagleEye's BN re-estimation (Li et al. 2020)."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from prune_core.config import ConfigError, ExperimentConfig
from prune_core.pruning import CRITERIA, PruneContext, prune_model
from prune_core.pruning.channel import group_scores
from prune_core.pruning.criteria import FilterNormImportance
from prune_core.pruning.graph import build_graph
from prune_core.pruning.select import lamp_normalize
from prune_core.train import recalibrate_bn

from _nets import ResidualPair

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def conv_net(bn: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), norm(6), nn.ReLU(),
                        nn.Conv2d(6, 5, 3, padding=1), norm(5), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))
    with torch.no_grad():  # BN affine parameters away from their (1, 0) initialisation
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net


def batches():
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        yield torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)


def gate_gradients(net: nn.Module, where) -> dict:
    """The definition itself: a unit gate on each channel after layer ``where[i]``, the loss's
    gradient w.r.t. the gate per batch, squared, averaged over the batches."""
    ref = copy.deepcopy(net).train()
    gates = {i: torch.ones(ref[i].weight.shape[0], requires_grad=True) for i in where}
    for i, g in gates.items():
        ref[i].register_forward_hook(lambda _m, _inp, out, g=g: out * g.view(1, -1, 1, 1))
    total = {i: torch.zeros_like(g) for i, g in gates.items()}
    n = 0
    for x, y in batches():
        grads = torch.autograd.grad(F.cross_entropy(ref(x), y), list(gates.values()))
        for i, gr in zip(gates, grads):
            total[i] += gr.pow(2)
        n += 1
    return {i: t / n for i, t in total.items()}


def ctx_of(cfg_values: dict) -> PruneContext:
    return PruneContext(ExperimentConfig.from_dict(cfg_values), example_input=torch.randn(2, 3, 8, 8),
                        calib_batches=batches)


@pytest.mark.parametrize("bn", [True, False], ids=["gate_after_bn", "gate_on_conv_output"])
def test_taylor_is_the_squared_gradient_of_a_gate_on_each_channel(bn):
    net = conv_net(bn)
    # behind a BN the gate follows the BN (Taylor-FO-BN); with none it sits on the conv's output
    want = gate_gradients(net, (1, 4) if bn else (0, 3))
    work = copy.deepcopy(net)
    graph = build_graph(work, torch.randn(2, 3, 8, 8))
    groups = graph.channel_groups()
    got = dict(zip([g.root for g in groups], group_scores(work, groups, CRITERIA["taylor"](), ctx_of({}))))
    assert set(got) == {"0", "3"}
    torch.testing.assert_close(got["0"].float(), want[1 if bn else 0], rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(got["3"].float(), want[4 if bn else 3], rtol=1e-4, atol=1e-10)
    if bn:  # the closed form of the gate after a BN: gamma * dL/dgamma + beta * dL/dbeta
        ref = copy.deepcopy(net).train()
        x, y = next(iter(batches()))
        F.cross_entropy(ref(x), y).backward()
        bn1 = ref[1]
        single = (bn1.weight * bn1.weight.grad + bn1.bias * bn1.bias.grad).pow(2).detach()
        one = copy.deepcopy(net)
        first = group_scores(one, [g for g in build_graph(one, x).channel_groups() if g.root == "0"], CRITERIA["taylor"](),
                             PruneContext(ExperimentConfig(), x, lambda: iter([(x, y)])))
        torch.testing.assert_close(first[0].float(), single, rtol=1e-4, atol=1e-10)


def test_taylor_prunes_the_channels_with_the_smallest_gate_scores():
    net = conv_net(True)
    want = gate_gradients(net, (1,))[1]
    plan = prune_model(net, ctx_of({"prune.criterion": "taylor", "prune.ratio": 0.5}))
    assert plan.channels["0"] == sorted(torch.argsort(want)[:3].tolist())


def test_residual_groups_sum_the_gates_of_every_coupled_bn():
    """Two convs whose BN outputs are added share channels: each channel's score is the sum of the
    two squared gate gradients (DepGraph's coupled group, Fang et al. 2023)."""

    net = ResidualPair()
    ref = copy.deepcopy(net).train()
    gates = [torch.ones(4, requires_grad=True) for _ in range(2)]
    ref.bn_a.register_forward_hook(lambda _m, _i, out: out * gates[0].view(1, -1, 1, 1))
    ref.bn_b.register_forward_hook(lambda _m, _i, out: out * gates[1].view(1, -1, 1, 1))
    want, n = torch.zeros(4), 0
    for x, y in batches():
        ga, gb = torch.autograd.grad(F.cross_entropy(ref(x), y), gates)
        want += ga.pow(2) + gb.pow(2)
        n += 1
    work = copy.deepcopy(net)
    groups = build_graph(work, torch.randn(2, 3, 8, 8)).channel_groups()
    assert len(groups) == 1
    got = group_scores(work, groups, CRITERIA["taylor"](), ctx_of({}))[0]
    torch.testing.assert_close(got.float(), want / n, rtol=1e-4, atol=1e-10)


def test_lamp_scores_equal_torch_pruning_lamp_on_squared_magnitudes():
    net = conv_net(True).eval()
    groups = build_graph(net, torch.randn(2, 3, 8, 8)).channel_groups()
    for g in groups:
        ours = lamp_normalize(FilterNormImportance(p=2)(g.group))
        filters = tp.dependency.Group()  # Torch-Pruning's LAMP on the same filters (no coupled columns)
        filters.items.extend(i for i in g.group.items if i.dep.handler == tp.prune_conv_out_channels)
        filters._DG = g.group._DG
        theirs = tp.importance.LAMPImportance(p=2, group_reduction="mean")(filters)
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=1e-5, atol=1e-7)


def test_lamp_takes_squared_magnitudes_and_refuses_other_criteria():
    cfg = ExperimentConfig.from_dict({"prune.scope": "global", "prune.lamp": True})
    assert cfg.prune.criterion == "l2"  # the default criterion under LAMP: squared magnitudes
    with pytest.raises(ConfigError, match=r"prune\.criterion.*l1.*squared"):
        ExperimentConfig.from_dict({"prune.scope": "global", "prune.lamp": True, "prune.criterion": "l1"})
    with pytest.raises(ConfigError, match=r"^prune\.lamp=True: expected false for method snip \(LAMP ranks the units "
                                          r"of channel, imp, kernel, intra_kernel\)$"):
        ExperimentConfig.from_dict({"prune.method": "snip", "prune.scope": "global", "prune.lamp": True})
    # IMP's unstructured global pruning, the LAMP paper's own setting (tests/test_imp.py pins it)
    assert ExperimentConfig.from_dict({"prune.method": "imp", "prune.scope": "global",
                                       "prune.lamp": True}).prune.criterion == "l2"


def bn_pair() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.01, 0.02, 0.03, 0.04]))
        net[4].weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    return net


@pytest.mark.parametrize("bn_l1,scores,ranking,removed", [
    (1e-4, "auto", "global_raw", {"0": [0, 1, 2]}),  # Network Slimming: one threshold on raw |gamma|
    (0.0, "auto", "global_mean", {"0": [0], "3": [0, 1]}),  # no sparsity training: per-layer mean-normalised
    (0.0, "raw", "global_raw", {"0": [0, 1, 2]}),  # prune.global_scores chooses either way
    (1e-4, "mean", "global_mean", {"0": [0], "3": [0, 1]}),
])
def test_bn_scale_ranks_raw_gammas_only_after_sparsity_training(bn_l1, scores, ranking, removed):
    """|gamma| / layer mean: [.1, .2, .3, .4] / .025 -> [.4, .8, 1.2, 1.6]; [1, 2, 3, 4] / 2.5 -> the same;
    ties go by position, so 3 of 8 removes channel 0 of both layers and channel 1 of the second."""
    cfg = {"prune.criterion": "bn_scale", "prune.ratio": 0.375, "prune.scope": "global", "train.bn_l1": bn_l1,
           "prune.global_scores": scores}
    plan = prune_model(bn_pair(), PruneContext(ExperimentConfig.from_dict(cfg), example_input=torch.randn(2, 1, 8, 8)))
    assert plan.stats["ranking"] == ranking
    assert plan.channels == removed


def test_bn_re_estimation_averages_the_statistics_of_the_calibration_batches():
    net = conv_net(True).eval()
    data = list(batches())
    recalibrate_bn(net, iter(data), torch.device("cpu"))
    # EagleEye: the running mean is the mean of the per-batch means of the BN's input
    acts = [net[0](x) for x, _ in data]
    want_mean = torch.stack([a.mean((0, 2, 3)) for a in acts]).mean(0)
    want_var = torch.stack([a.var((0, 2, 3), unbiased=True) for a in acts]).mean(0)
    torch.testing.assert_close(net[1].running_mean, want_mean.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, want_var.detach(), rtol=1e-5, atol=1e-6)
    assert not net.training and all(p.grad is None for p in net.parameters())
    assert net[1].momentum == 0.1  # restored


@pytest.mark.parametrize("scores, ranking", [("auto", "global_raw"), ("raw", "global_raw"), ("mean", "global_mean")])
def test_a_global_kernel_ranking_compares_raw_or_mean_normalised_kernel_norms(scores, ranking):
    """Two conv layers whose kernels differ 100x in scale: raw norms take every kernel of the small
    layer up to its cap first; divided by their layer's mean, both layers lose their weakest alike."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(0.01 * torch.arange(1, 5.0).view(4, 1, 1, 1).expand(4, 1, 3, 3))
        net[2].weight.copy_(torch.arange(1, 17.0).view(4, 4, 1, 1).expand(4, 4, 3, 3))
    cfg = ExperimentConfig.from_dict({"prune.method": "kernel", "prune.ratio": 0.3, "prune.scope": "global",
                                      "prune.global_scores": scores})
    plan = prune_model(net, PruneContext(cfg, example_input=torch.randn(2, 1, 8, 8)))
    assert plan.stats["ranking"] == ranking
    gone = {n: int((plan.masks[n].reshape(plan.masks[n].shape[0] * plan.masks[n].shape[1], -1).amax(1) == 0).sum())
            for n in ("0", "2")}
    # 6 of the 20 kernels go. Raw: the first layer's up to its 0.9 cap (3 of 4), then the 3 weakest of
    # the second. Mean-normalised (.4 .8 1.2 1.6 against 1/8.5 .. 16/8.5): 1 of the first, 5 of the second
    assert gone == ({"0": 3, "2": 3} if ranking == "global_raw" else {"0": 1, "2": 5})


@pytest.mark.parametrize("values", [{"prune.scope": "local"}, {"prune.lamp": True, "prune.criterion": "l2"},
                                    {"prune.method": "imp"}, {"prune.method": "snip"}])
def test_global_scores_other_than_auto_need_a_global_channel_or_kernel_ranking(values):
    cfg = {"prune.scope": "global", "prune.global_scores": "raw", **values}
    with pytest.raises(ConfigError, match=r"^prune.global_scores='raw': expected auto unless prune.scope is global "
                                          r"without prune.lamp, for channel, kernel, intra_kernel$"):
        ExperimentConfig.from_dict(cfg)
