"""Each method does what its paper says, checked on hand-sized networks with chosen weights."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
from torch import nn

from _nets import tiny_net, weights_of
from prune_core.config import ExperimentConfig
from prune_core.metrics import count_flops
from prune_core.models import build_model
from prune_core.pruning import PruneContext, PruningPlan, prune_model, rebuild
from prune_core.pruning.kernel import PATTERNS, top_patterns
from prune_core.pruning.select import imp_round_fraction, sparsity_after


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def cfg_of(**dotted) -> ExperimentConfig:
    return ExperimentConfig.from_dict({f"prune.{k}": v for k, v in dotted.items()})


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def one_conv() -> nn.Module:
    net = OneConv().eval()
    with torch.no_grad():
        w = torch.zeros(4, 1, 3, 3)
        w[0] = 0.1  # L1 0.9, squared L2 0.09
        w[1, 0, 1, 1] = 2.0  # L1 2.0, squared L2 4.0
        w[2] = 0.25  # L1 2.25, squared L2 0.5625
        w[3] = 0.05
        w[3, 0, 1, 1] = 1.0  # L1 1.4, squared L2 1.0 + 8 * 0.0025 = 1.02
        net.conv.weight.copy_(w)
        net.bn.weight.copy_(torch.tensor([0.5, 0.1, 2.0, 0.3]))
        net.fc.weight.fill_(0.1)
        net.fc.weight[:, 0] = 10.0  # filter 0 feeds a heavy column: only the filter itself may count
    return net


@pytest.mark.parametrize("criterion,removed", [("l1", [0, 3]), ("l2", [0, 2]), ("bn_scale", [1, 3])])
def test_one_conv_filters_match_the_hand_calculation(criterion, removed):
    net = one_conv()
    x = torch.randn(2, 1, 8, 8)
    plan = prune_model(net, PruneContext(cfg_of(criterion=criterion, ratio=0.5), example_input=x))
    assert plan.channels == {"conv": removed}
    small = rebuild(net, plan, x).model
    assert small.conv.out_channels == 2 and small.fc.in_features == 2 and small.fc.out_features == 2


class Chain(nn.Module):
    """conv1 -> conv2 -> conv3 -> fc, every filter holding one non-zero weight of sqrt(score)."""

    def __init__(self, squared_norms):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1, bias=False) for i in range(3)])
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            for conv, norms in zip(self.convs, squared_norms):
                conv.weight.zero_()
                for o, s in enumerate(norms):
                    conv.weight[o, 0, 1, 1] = math.sqrt(s)

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.fc(x.mean((2, 3)))


NORMS = [[1, 1.1, 1.2, 10], [4, 5, 6, 7], [0.5, 2, 2.5, 3]]


def test_global_lamp_on_three_layers_follows_the_paper():
    """Squared filter norms, and their LAMP scores by eq. 2 of Lee et al. 2021, by hand:
    conv1 [1, 1.1, 1.2, 10] -> [1/13.3, 1.1/12.3, 1.2/11.2, 1] = [.075, .089, .107, 1]
    conv2 [4, 5, 6, 7]      -> [4/22, 5/18, 6/13, 1]           = [.182, .278, .462, 1]
    conv3 [.5, 2, 2.5, 3]   -> [.5/8, 2/7.5, 2.5/5.5, 1]       = [.0625, .267, .455, 1]
    The six lowest of twelve: .0625, .075, .089, .107, .182, .267."""
    net = Chain(NORMS).eval()
    x = torch.randn(2, 1, 8, 8)
    plan = prune_model(net, PruneContext(cfg_of(criterion="l2", ratio=0.5, scope="global", lamp=True),
                                         example_input=x))
    assert plan.channels == {"convs.0": [0, 1, 2], "convs.1": [0], "convs.2": [0, 1]}
    assert rebuild(net, plan, x).max_abs_diff <= 1e-4
    # without LAMP, norms are divided by their layer's mean (3.325, 5.5, 2):
    # [.30, .33, .36, 3.0], [.73, .91, 1.09, 1.27], [.25, 1.0, 1.25, 1.5] -> a different network
    plain = prune_model(net, PruneContext(cfg_of(criterion="l2", ratio=0.5, scope="global"), example_input=x))
    assert plain.channels == {"convs.0": [0, 1, 2], "convs.1": [0, 1], "convs.2": [0]}


def tiny_batches():
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        yield torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)


def test_imp_rounds_follow_the_schedule_and_rewind():
    net = tiny_net().eval()
    early = {0: copy.deepcopy(net.state_dict())}
    with torch.no_grad():  # the state after "one epoch": other weights, other BN statistics
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.2)
    early[1] = copy.deepcopy(net.state_dict())
    with torch.no_grad():  # the trained base
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    base = {n: m.weight.detach().clone() for n, m in weights_of(net)}
    n_weights = sum(w.numel() for w in base.values())

    calls = []

    def train(model, tcfg, stage, start_epoch):
        masks = {n: m.weight_mask.clone() for n, m in weights_of(model)}
        calls.append((stage, tcfg, masks, start_epoch))
        with torch.no_grad():  # "training" moves every weight
            for n, m in weights_of(model):
                m.weight_orig.add_(torch.randn_like(m.weight_orig) * 0.5)

    cfg = cfg_of(method="imp", ratio=0.875, rounds=3, rewind_epoch=1)
    plan = prune_model(net, PruneContext(cfg, example_input=torch.randn(2, 3, 8, 8), train=train, early_states=early))

    p = imp_round_fraction(0.875, 3)
    assert p == pytest.approx(0.5)
    # open_lth's sparse_global rounds up and removes one more than its count; the last round is exact
    assert plan.stats["level_sparsity"] == pytest.approx([sparsity_after(p, k) for k in (1, 2, 3)],
                                                         abs=3.5 / n_weights)
    assert plan.stats["level_sparsity"][-1] == round(0.875 * n_weights) / n_weights
    # rounds 1 and 2 retrain with the base settings from the rewind epoch; round 3's retraining is
    # the pipeline's post-prune stage
    assert [c[0] for c in calls] == ["imp_level1", "imp_level2"]
    assert all(c[1] == cfg.train and c[3] == 1 for c in calls)

    # round 1 removed the ceil(0.5 n) + 1 trained weights with the smallest magnitudes, globally
    flat = torch.cat([w.abs().flatten() for w in base.values()])
    first = torch.cat([m.flatten() for m in calls[0][2].values()])
    assert torch.equal(first == 0, torch.zeros_like(first, dtype=torch.bool).scatter_(
        0, torch.topk(flat, math.ceil(0.5 * n_weights) + 1, largest=False).indices, True))
    # masks only ever grow
    second = torch.cat([m.flatten() for m in calls[1][2].values()])
    assert bool(((first == 0) <= (second == 0)).all())

    # survivors hold the rewound values; BN statistics were rewound too
    for n, m in weights_of(net):
        keep = m.weight_mask.bool()
        assert torch.equal(m.weight_orig[keep], early[1][f"{n}.weight"][keep])
        assert bool((m.weight[~keep] == 0).all())
    assert torch.equal(net[1].running_mean, early[1]["1.running_mean"])
    assert set(plan.masks) == {n for n, _ in weights_of(net)}


def test_imp_refuses_a_rewind_epoch_the_base_did_not_keep():
    with pytest.raises(ValueError, match="rewind_epoch=3"):
        prune_model(tiny_net(), PruneContext(cfg_of(method="imp", rewind_epoch=3), torch.randn(2, 3, 8, 8),
                                             early_states={0: {}, 1: {}}))


def test_snip_keeps_exactly_the_top_k_connection_sensitivities():
    """On the registry's own initialisation (``snip_init: model``; tests/test_snip.py covers the
    variance-scaling default): one batch, batch norm in inference mode, |g * w| over its total."""
    net = tiny_net()
    expected = copy.deepcopy(net).eval()
    x, y = next(iter(tiny_batches()))  # the first batch only
    F.cross_entropy(expected(x), y).backward()
    saliency = torch.cat([(m.weight.grad * m.weight).abs().flatten() for _, m in weights_of(expected)])
    saliency = saliency / saliency.sum()
    keep = saliency.numel() - round(0.8 * saliency.numel())

    before = copy.deepcopy(net.state_dict())
    plan = prune_model(net, PruneContext(cfg_of(method="snip", ratio=0.8, snip_init="model"),
                                         torch.randn(2, 3, 8, 8), calib_batches=tiny_batches))
    got = torch.cat([plan.masks[n].flatten() for n, _ in weights_of(net)])
    want = torch.zeros_like(got).scatter_(0, torch.topk(saliency, keep).indices, 1.0)
    assert torch.equal(got, want)
    for n, m in weights_of(net):  # the surviving weights are those at initialisation
        assert torch.equal(m.weight_orig, before[f"{n}.weight"])
    assert torch.equal(net[1].running_mean, before["1.running_mean"])  # scored on a copy: BN untouched


def test_kernel_masks_remove_whole_kernels_only():
    torch.manual_seed(0)
    net = build_model("resnet20", 10, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    for scope in ("local", "global"):
        model = copy.deepcopy(net)
        plan = prune_model(model, PruneContext(cfg_of(method="kernel", ratio=0.6, scope=scope), x))
        removed = total = 0
        for name, mask in plan.masks.items():
            per_kernel = mask.flatten(2)
            assert bool((per_kernel.amin(2) == per_kernel.amax(2)).all()), name  # all or nothing per kernel
            gone = int((per_kernel[:, :, 0] == 0).sum())
            n = per_kernel.shape[0] * per_kernel.shape[1]
            assert gone <= 0.9 * n  # max_layer_ratio
            if scope == "local":
                assert gone == math.floor(0.6 * n + 0.5)
            removed, total = removed + gone, total + n
        assert removed / total == pytest.approx(0.6, abs=1e-3)
        assert "fc" not in plan.masks


def test_kernel_l1_removes_the_lowest_norm_kernels():
    conv = nn.Conv2d(2, 2, 3, bias=False)
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([4.0, 1.0, 3.0, 2.0]).view(2, 2, 1, 1).expand(2, 2, 3, 3))
        conv.weight[0, 0, 0, 0] = -9.0  # a sign does not lower a norm
    plan = prune_model(net, PruneContext(cfg_of(method="kernel", ratio=0.5), torch.randn(2, 2, 6, 6)))
    assert plan.masks["0"][:, :, 0, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_effective_flops_of_a_kernel_pruned_layer_are_dense_times_kept_fraction():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(6 * 8 * 8, 3)).eval()
    prune_model(net, PruneContext(cfg_of(method="kernel", ratio=0.5), torch.randn(2, 4, 8, 8)))
    report = count_flops(net, (4, 8, 8))
    dense_conv = 2 * (6 * 8 * 8) * 4 * 9
    assert report.per_layer["0"] == dense_conv  # masks leave dense FLOPs alone
    assert report.density["0"] == 0.5  # 12 of 24 kernels kept
    assert report.effective == pytest.approx(dense_conv * 0.5 + 2 * 384 * 3)


def test_fixed_mode_patterns_every_kernel_and_removes_the_weakest_whole():
    lib = PATTERNS[4]
    assert lib.shape == (8, 9) and bool((lib[:, 4] == 1).all()) and bool((lib.sum(1) == 4).all())
    conv = nn.Conv2d(1, 3, 3, padding=1, bias=False)
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(3 * 16, 2)).eval()
    with torch.no_grad():
        w = torch.full((3, 1, 3, 3), 0.01)
        w[0].view(-1)[[0, 1, 3, 4]] = 1.0  # the upper-left square
        w[1].view(-1)[[1, 3, 4, 5]] = 0.9  # the T pointing up; the lowest norm of the three
        w[2].view(-1)[[0, 2, 6, 8]] = 5.0  # corners only: the first square keeps one of them
        conv.weight.copy_(w)
    cfg = cfg_of(method="intra_kernel", pattern="fixed", ratio=0.0)
    rows = prune_model(copy.deepcopy(net), PruneContext(cfg, torch.randn(2, 1, 4, 4))).masks["0"].view(3, 9)
    assert rows[0].tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert rows[1].tolist() == [0, 1, 0, 1, 1, 1, 0, 0, 0]
    assert rows[2].tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 0]  # four squares tie: the library's first
    cfg = cfg_of(method="intra_kernel", pattern="fixed", ratio=0.34)  # round(0.34 * 3) = 1 kernel goes
    rows = prune_model(net, PruneContext(cfg, torch.randn(2, 1, 4, 4))).masks["0"].view(3, 9)
    assert rows.sum(1).tolist() == [4, 0, 4]


def _top_pattern(kernel: torch.Tensor):
    """Transcription of PatDNN's top-4 pattern: the centre plus the 3 largest |w| of the other 8
    (equal weights: the lower position), as kept flat positions."""
    others = sorted((i for i in range(9) if i != 4), key=lambda i: (-abs(float(kernel[i])), i))
    return tuple(sorted([4, *others[:3]]))


def test_library_is_the_most_frequent_top_patterns_over_the_network():
    a, b, c, d = (0, 1, 3, 4), (1, 4, 5, 7), (2, 4, 6, 8), (3, 4, 5, 7)
    want_counts = {a: 3, b: 2, c: 2, d: 1}  # b and c tie: b's positions come first row-major
    kernels = []
    for pattern, n in want_counts.items():
        for j in range(n):
            k = torch.full((9,), 0.1 + 0.01 * j)
            k[4] = 0.001  # a weak centre is kept all the same
            k[[p for p in pattern if p != 4]] = torch.tensor([2.0, -3.0, 1.5])  # signs do not matter
            kernels.append(k)
    kernels.append(torch.zeros(9))  # a dead kernel counts for nothing
    assert [_top_pattern(k) for k in kernels[:-1]] == [p for p, n in want_counts.items() for _ in range(n)]
    ties = torch.tensor([[0.5] * 9, [0, 1, 0, 0.5, 0, 0.5, 0, 0.5, 0]])  # equal weights: the lower position
    assert [tuple(r.nonzero().flatten().tolist()) for r in top_patterns(ties, 4)] == [(0, 1, 2, 4), (1, 3, 4, 5)]
    # nine kernels over two layers (3 + 6): the counts are over the whole network
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.Conv2d(3, 2, 3, padding=1, bias=False),
                        nn.Flatten(), nn.Linear(2 * 16, 2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.stack(kernels[:3]).view(3, 1, 3, 3))
        net[1].weight.copy_(torch.stack(kernels[3:]).view(2, 3, 3, 3))
    x = torch.randn(2, 1, 4, 4)
    for count, want in [(2, [a, b]), (3, [a, b, c]), (8, [a, b, c, d])]:
        for criterion in ("l1", "l2"):
            cfg = cfg_of(method="intra_kernel", ratio=0.0, pattern_count=count, criterion=criterion)
            plan = prune_model(copy.deepcopy(net), PruneContext(cfg, x))
            assert [tuple(p) for p in plan.stats["patterns"]] == want
def three_convs() -> nn.Module:
    """3x3 (24 kernels) -> 3x3 (48 kernels) -> 1x1 (32 kernels) -> linear, random weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(8, 4, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_every_kernel_keeps_its_best_library_pattern_or_is_removed(criterion):
    net = three_convs()
    dense = {n: net.get_submodule(n).weight.detach().clone() for n in ("0", "2", "4")}
    cfg = cfg_of(method="intra_kernel", ratio=0.25, criterion=criterion, pattern_count=5)
    plan = prune_model(net, PruneContext(cfg, torch.randn(2, 4, 6, 6)))
    library = [tuple(p) for p in plan.stats["patterns"]]
    assert len(library) == 5 and all(len(p) == 4 and 4 in p for p in library)
    for name in ("0", "2"):
        for kernel, row in zip(dense[name].reshape(-1, 9), plan.masks[name].reshape(-1, 9)):
            if not bool(row.any()):
                continue  # removed whole (connectivity)
            kept = tuple(row.nonzero().flatten().tolist())
            assert kept in library
            sal = kernel.abs() if criterion == "l1" else kernel.pow(2)
            best = max(float(sal[list(p)].sum()) for p in library)  # brute force over the library
            assert float(sal[list(kept)].sum()) == pytest.approx(best, rel=1e-6)
    assert set(plan.masks["4"].flatten().tolist()) == {0.0, 1.0}  # 1x1 kernels: connectivity only


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_connectivity_removes_the_lowest_norm_kernels_of_each_layer(criterion):
    net = three_convs()
    dense = {n: net.get_submodule(n).weight.detach().clone() for n in ("0", "2", "4")}
    plan = prune_model(net, PruneContext(cfg_of(method="intra_kernel", ratio=0.25, criterion=criterion),
                                         torch.randn(2, 4, 6, 6)))
    for name, w in dense.items():
        per_kernel = w.flatten(2)
        norms = (per_kernel.abs().sum(2) if criterion == "l1" else per_kernel.pow(2).sum(2)).flatten()
        k = round(0.25 * norms.numel())
        removed = (plan.masks[name].flatten(2).amax(2) == 0).flatten()
        assert set(removed.nonzero().flatten().tolist()) == set(norms.argsort()[:k].tolist()), name
        if name != "4":  # every other kernel keeps 4 of 9, so the sparsity is r + (1 - r) * 5/9
            assert 1 - float(plan.masks[name].mean()) == pytest.approx(0.25 + 0.75 * 5 / 9)
    assert plan.stats["unit_ratio"] == pytest.approx(0.25)


def test_global_connectivity_respects_max_layer_ratio():
    net = three_convs()
    with torch.no_grad():
        net[2].weight.mul_(1e-3)  # the middle layer's kernels are the weakest of the network
    plan = prune_model(net, PruneContext(cfg_of(method="intra_kernel", ratio=0.5, scope="global",
                                                max_layer_ratio=0.6), torch.randn(2, 4, 6, 6)))
    removed = {n: int((m.flatten(2).amax(2) == 0).sum()) for n, m in plan.masks.items()}
    assert removed["2"] == math.floor(0.6 * 48)  # capped; the rest of the budget goes elsewhere
    assert sum(removed.values()) == round(0.5 * (24 + 48 + 32))


def test_pattern_and_magnitude_modes_on_a_real_network():
    torch.manual_seed(0)
    net = build_model("resnet20", 10, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    model = copy.deepcopy(net)
    plan = prune_model(model, PruneContext(cfg_of(method="intra_kernel", ratio=0.5), x))
    lib = {tuple(p) for p in plan.stats["patterns"]}
    assert len(lib) == 8
    for name, mask in plan.masks.items():
        rows = mask.flatten(2).reshape(-1, mask[0, 0].numel())
        gone = rows.sum(1) == 0
        assert int(gone.sum()) == math.floor(0.5 * len(rows) + 0.5), name
        if mask.shape[-1] == 3:
            assert all(tuple(r.nonzero().flatten().tolist()) in lib for r in rows[~gone]), name
        else:  # the 1x1 shortcuts: connectivity only
            assert bool((rows[~gone] == 1).all()), name
    model = copy.deepcopy(net)
    plan = prune_model(model, PruneContext(cfg_of(method="intra_kernel", ratio=0.0, pattern="magnitude",
                                                  pattern_keep=3), x))
    for name, mask in plan.masks.items():
        if mask.shape[-1] == 1:
            assert bool((mask == 1).all()), name
            continue
        w = net.get_submodule(name).weight.detach().reshape(-1, 9).abs()
        rows = mask.reshape(-1, 9)
        assert bool((rows.sum(1) == 3).all()), name  # ratio 0: every kernel keeps its pattern
        top = w.topk(3, dim=1).indices
        assert torch.equal(rows.gather(1, top), torch.ones_like(top, dtype=rows.dtype))


def test_mask_rebuild_removes_channels_nothing_reads_and_keeps_the_rest():
    net = tiny_net().eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].bias.uniform_(-0.5, 0.5)
    second = torch.ones_like(net[3].weight)
    second[:, 1] = 0  # channel 1 of the first conv: every input column of its only reader is zero
    first = torch.ones_like(net[0].weight)
    first[2] = 0  # channel 2: its filter is zero, but BN turns that into a constant the next conv reads
    plan = PruningPlan("kernel", masks={"0": first, "3": second})
    torch_prune.custom_from_mask(net[0], "weight", first)
    torch_prune.custom_from_mask(net[3], "weight", second)
    x = torch.randn(2, 3, 8, 8)
    result = rebuild(net, plan, x)
    assert result.removed_channels == {"0": [1]}
    assert result.layer_channels_after["0"] == 7 and result.layer_channels_after["3"] == 8
    assert result.max_abs_diff <= 1e-4
    assert not torch_prune.is_pruned(result.model)
    # the rebuilt model keeps the zeros of channel 2's filter as plain weights
    assert bool((result.model[0].weight[1] == 0).all())


def test_random_criterion_is_reproducible_from_the_seed():
    torch.manual_seed(0)
    net = build_model("resnet20", 10, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    ctx = lambda seed: PruneContext(ExperimentConfig.from_dict(  # noqa: E731
        {"prune.criterion": "random", "runtime.seed": seed}), example_input=x)
    assert prune_model(net, ctx(1)).channels == prune_model(net, ctx(1)).channels
    assert prune_model(net, ctx(1)).channels != prune_model(net, ctx(2)).channels


def test_gradient_criteria_say_what_they_miss():
    net = tiny_net()
    with pytest.raises(RuntimeError, match="calibration batches"):
        prune_model(net, PruneContext(cfg_of(criterion="taylor"), torch.randn(2, 3, 8, 8)))
