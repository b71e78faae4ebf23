"""IMP as open_lth and its papers define it: levels, rewinding, LR rewinding, the reinit control."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from prune_core.config import ConfigError, ExperimentConfig
from prune_core.data import load_data
from prune_core.pipeline import _fresh_state, fresh_model
from prune_core.pruning import PruneContext, post_prune_training, prune_model
from prune_core.pruning.imp import REINIT_SEED_OFFSET
from prune_core.pruning.select import imp_levels, sparsity_after
from prune_core.train import fit, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CPU = torch.device("cpu")


def open_lth_prune(fraction, weights, current_mask):
    """open_lth pruning/sparse_global.py ``Strategy.prune``, line for line on numpy arrays."""
    number_of_remaining_weights = np.sum([np.sum(v) for v in current_mask.values()])
    number_of_weights_to_prune = np.ceil(fraction * number_of_remaining_weights).astype(int)
    weight_vector = np.concatenate([v[current_mask[k] == 1] for k, v in weights.items()])
    threshold = np.sort(np.abs(weight_vector))[number_of_weights_to_prune]
    return {k: np.where(np.abs(v) > threshold, current_mask[k], np.zeros_like(v)) for k, v in weights.items()}


def exact_prune(n_remove, weights, current_mask):
    """The last level: the ``n_remove`` smallest live magnitudes go."""
    live = np.concatenate([np.where(current_mask[k] == 1, np.abs(v), -1.0).ravel() for k, v in weights.items()])
    gone = np.zeros(live.size, bool)
    gone[np.argsort(live, kind="stable")[: int((live < 0).sum()) + n_remove]] = True
    out, start = {}, 0
    for k, v in weights.items():
        out[k] = np.where(gone[start:start + v.size].reshape(v.shape), 0.0, current_mask[k])
        start += v.size
    return out


class Hand(nn.Module):
    """100 prunable weights (54 conv + 46 linear, the output layer included) and a BN."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(46, 1, bias=False)


def hand_net(seed=0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = Hand()
    with torch.no_grad():  # distinct magnitudes 0.01..1.00, random signs, shuffled over both layers
        values = (torch.randperm(100, generator=g) + 1.0) / 100 * (torch.randint(0, 2, (100,), generator=g) * 2 - 1)
        net.conv.weight.copy_(values[:54].reshape(2, 3, 3, 3))
        net.fc.weight.copy_(values[54:].reshape(1, 46))
        net.bn.running_mean.fill_(0.7)
    return net


def weights_of(net):
    return {n: m for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def perturbing_trainer(calls, seed=1):
    """A stand-in for training: moves every surviving weight by a seeded amount, moves the BN
    statistics, and records what it saw and left."""
    g = torch.Generator().manual_seed(seed)

    def train(model, tcfg, stage, start_epoch):
        layers = weights_of(model)
        seen = {n: m.weight_orig.detach().clone() for n, m in layers.items()}
        masks = {n: m.weight_mask.detach().clone() for n, m in layers.items()}
        with torch.no_grad():
            for m in layers.values():
                m.weight_orig.add_(torch.randn(m.weight_orig.shape, generator=g) * 0.3)
            model.bn.running_mean.add_(1.0)
        left = {n: m.weight_orig.detach().clone() for n, m in layers.items()}
        calls.append({"stage": stage, "tcfg": tcfg, "start": start_epoch, "seen": seen, "masks": masks,
                      "left": left, "bn_seen": model.bn.running_mean.clone() - 1.0})

    return train


def cfg_of(**prune) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"model.name": "resnet20", "train.epochs": 7,
                                       **{f"prune.{k}": v for k, v in prune.items()}})


def early_states(net):
    e0 = copy.deepcopy(net.state_dict())
    e1 = {k: v + 0.5 if v.is_floating_point() else v for k, v in e0.items()}  # "after epoch 1"
    return {0: e0, 1: e1}


def run_imp(cfg, net=None, fresh_state=None):
    net = net or hand_net()
    early = early_states(net)
    calls = []
    ctx = PruneContext(cfg, torch.randn(1, 3, 3, 3), train=perturbing_trainer(calls), early_states=early,
                       **({"fresh_state": fresh_state} if fresh_state else {}))
    plan = prune_model(net, ctx)
    return net, plan, calls, early


@pytest.mark.parametrize("ratio", [0.36, 0.6, 0.75])
def test_levels_equal_open_lth_sparse_global(ratio):
    net = hand_net()
    trained = {n: m.weight.detach().numpy().copy() for n, m in weights_of(net).items()}
    cfg = cfg_of(method="imp", ratio=ratio, rewind_epoch=1)
    net, plan, calls, _ = run_imp(cfg, net)

    # the transcription: open_lth levels while they stay below the target, then the exact rest
    target = round(ratio * 100)
    mask = {k: np.ones_like(v) for k, v in trained.items()}
    weights, expected_masks, expected_removed = trained, [], []
    while True:
        level = len(expected_masks)
        step = open_lth_prune(0.2, weights, mask)
        pruned_before = sum(int((v == 0).sum()) for v in mask.values())
        if sum(int((v == 0).sum()) for v in step.values()) >= target:
            step = exact_prune(target - pruned_before, weights, mask)
        expected_removed.append(sum(int((v == 0).sum()) for v in step.values()) - pruned_before)
        expected_masks.append(step)
        mask = step
        if sum(int((v == 0).sum()) for v in step.values()) >= target:
            break
        weights = {k: v.numpy() for k, v in calls[level]["left"].items()}  # what level+1 ranks

    levels = len(expected_masks)
    assert plan.stats["levels"] == levels == len(calls) + 1
    assert levels in (imp_levels(ratio, 0.2), imp_levels(ratio, 0.2) - 1)
    assert plan.stats["level_removed"] == expected_removed
    for call, expected in zip(calls, expected_masks):  # the masks each retraining saw
        assert all(np.array_equal(call["masks"][k].numpy(), expected[k]) for k in expected)
    assert all(np.array_equal(plan.masks[k].numpy(), expected_masks[-1][k]) for k in trained)
    assert plan.stats["level_sparsity"] == pytest.approx(
        [1 - sum(int(v.sum()) for v in m.values()) / 100 for m in expected_masks])
    assert plan.stats["level_sparsity"][-1] == ratio  # the last level lands exactly
    # every level but the last removed open_lth's count: ceil(0.2 * remaining) + 1 (distinct magnitudes)
    remaining = 100
    for removed in plan.stats["level_removed"][:-1]:
        assert removed == math.ceil(0.2 * remaining) + 1
        remaining -= removed
    # retraining: the base settings from the rewind epoch, never the fine-tune
    assert all(c["tcfg"] == cfg.train and c["start"] == 1 and c["stage"] == f"imp_level{i + 1}"
               for i, c in enumerate(calls))
    T, k = 7, 1
    assert plan.stats["epochs_trained"] == T + levels * (T - k) == plan.stats["metrics"]["imp_epochs"]


def test_imp_levels_follow_the_fraction():
    assert [imp_levels(r, 0.2) for r in (0.0, 0.2, 0.36, 0.5, 0.8, 0.9, 0.95, 0.98)] == [1, 1, 2, 4, 8, 11, 14, 18]
    assert sparsity_after(0.2, imp_levels(0.9, 0.2) - 1) < 0.9 <= sparsity_after(0.2, imp_levels(0.9, 0.2))


def test_rounds_keep_the_equal_fraction_schedule():
    net, plan, calls, _ = run_imp(cfg_of(method="imp", ratio=0.75, rounds=2, rewind_epoch=1))
    assert plan.stats["levels"] == 2 and len(calls) == 1
    assert plan.stats["level_fraction"] == pytest.approx(0.5)
    assert plan.stats["level_removed"] == [51, 24]  # open_lth's ceil(0.5 * 100) + 1, then exactly to 75


def test_weight_rewinding_restores_survivors_and_all_other_state():
    net, plan, calls, early = run_imp(cfg_of(method="imp", ratio=0.6, rewind_epoch=1))
    for call in calls:  # every retraining starts from the rewound state
        for n, w in call["seen"].items():
            assert torch.equal(w, early[1][f"{n}.weight"])
        assert torch.equal(call["bn_seen"], early[1]["bn.running_mean"])
    for n, m in weights_of(net).items():  # and so does the last level's (the pipeline's) retraining
        keep = m.weight_mask.bool()
        assert torch.equal(m.weight_orig, early[1][f"{n}.weight"])
        assert bool((m.weight[~keep] == 0).all()) and torch.equal(m.weight[keep], early[1][f"{n}.weight"][keep])
    assert torch.equal(net.bn.running_mean, early[1]["bn.running_mean"])
    assert torch.equal(net.bn.weight, early[1]["bn.weight"])


def test_lr_rewinding_keeps_the_trained_survivors():
    net, plan, calls, early = run_imp(cfg_of(method="imp", ratio=0.6, rewind="lr", rewind_epoch=1))
    assert len(calls) >= 2 and all(c["start"] == 1 for c in calls)
    for before, after in zip(calls, calls[1:]):  # each retraining goes on from the last one's weights
        assert all(torch.equal(after["seen"][n], before["left"][n]) for n in before["left"])
    for n, m in weights_of(net).items():
        assert torch.equal(m.weight_orig, calls[-1]["left"][n])
        assert not torch.equal(m.weight_orig, early[1][f"{n}.weight"])
    assert torch.equal(net.bn.running_mean, calls[-1]["bn_seen"] + 1.0)  # trained BN statistics kept


def test_reinit_keeps_the_masks_on_a_fresh_initialisation():
    seeds = []

    def fresh_state(seed):
        seeds.append(seed)
        torch.manual_seed(seed)
        return Hand().state_dict()

    ticket = run_imp(cfg_of(method="imp", ratio=0.6))[1]
    net, plan, calls, early = run_imp(cfg_of(method="imp", ratio=0.6, reinit=True), fresh_state=fresh_state)
    assert seeds == [0 + REINIT_SEED_OFFSET]
    draw = fresh_state(REINIT_SEED_OFFSET)
    assert all(torch.equal(plan.masks[n], ticket.masks[n]) for n in ticket.masks)
    for n, m in weights_of(net).items():
        assert torch.equal(m.weight_orig, draw[f"{n}.weight"])
        assert not torch.equal(m.weight_orig, early[0][f"{n}.weight"])  # not the base's epoch-0 weights
        assert not torch.equal(m.weight_orig, calls[-1]["left"][n])  # nor the trained ones
        assert bool((m.weight[~m.weight_mask.bool()] == 0).all())
    assert torch.equal(net.bn.running_mean, torch.zeros(2)) and torch.equal(net.bn.weight, torch.ones(2))


def test_pipeline_fresh_state_is_the_registry_init_under_a_seed():
    cfg = ExperimentConfig.from_dict({"data.name": "synthetic", "data.num_samples": 64, "data.image_size": 8,
                                      "data.num_classes": 4, "model.name": "resnet20", "model.width": 0.25})
    data = load_data(cfg.data, CPU, 0)
    draw = _fresh_state(cfg, data)
    seed_everything(5)  # what ensure_base does before building the base
    base0 = fresh_model(cfg, data).state_dict()
    assert all(torch.equal(v, base0[k]) for k, v in draw(5).items())
    assert not torch.equal(draw(6)["conv1.weight"], base0["conv1.weight"])


def test_post_prune_training_per_method():
    cfg = ExperimentConfig.from_dict({"train.epochs": 9, "finetune.epochs": 2, "prune.rewind_epoch": 3})
    assert post_prune_training(cfg.replace(**{"prune.method": "imp"})) == (cfg.train, 3)
    assert post_prune_training(cfg.replace(**{"prune.method": "imp", "prune.rewind": "lr"})) == (cfg.train, 3)
    assert post_prune_training(cfg.replace(**{"prune.method": "snip"})) == (cfg.train, 0)
    assert post_prune_training(cfg.replace(**{"prune.method": "channel"})) == (cfg.finetune, 0)


def test_equal_budget_gives_every_method_the_same_epochs():
    cfg = ExperimentConfig.from_dict({"train.epochs": 10, "finetune.epochs": 2, "prune.rewind_epoch": 1,
                                      "prune.budget_epochs": 40, "prune.ratio": 0.5})
    tcfg, start = post_prune_training(cfg.replace(**{"prune.method": "channel"}))
    assert (tcfg.epochs, start, tcfg.lr) == (30, 0, cfg.finetune.lr)  # 10 base + 30 fine-tune
    tcfg, start = post_prune_training(cfg.replace(**{"prune.method": "snip"}))
    assert (tcfg.epochs, start, tcfg.lr) == (40, 0, cfg.train.lr)  # 40 from scratch
    tcfg, start = post_prune_training(cfg.replace(**{"prune.method": "imp"}))  # 0.5 at 0.2: 4 levels
    assert (tcfg.epochs - start, start) == (30 // 4, 1)  # 10 + 4 x 7 = 38 <= 40
    with pytest.raises(ConfigError, match=r"prune.budget_epochs=10: expected more than the base's 10 epochs"):
        post_prune_training(cfg.replace(**{"prune.method": "channel", "prune.budget_epochs": 10}))
    with pytest.raises(ConfigError, match=r"prune.budget_epochs=12: expected at least train.epochs \+ levels = 14"):
        post_prune_training(cfg.replace(**{"prune.method": "imp", "prune.budget_epochs": 12}))


def test_imp_under_a_budget_retrains_every_level_alike():
    net, plan, calls, _ = run_imp(cfg_of(method="imp", ratio=0.5, rewind_epoch=1, budget_epochs=31))
    levels = plan.stats["levels"]  # the hand net's 54 weights reach 0.5 in fewer than the nominal 4
    assert [(c["tcfg"].epochs, c["start"]) for c in calls] == [(1 + 6, 1)] * (levels - 1)  # (31 - 7) // 4 per level
    assert plan.stats["metrics"]["imp_epochs"] == 7 + levels * 6 <= 31


def step_lrs():
    """The learning rate of every optimizer step taken until ``handle.remove()``."""
    lrs = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    return lrs, handle


def test_retraining_runs_the_base_schedule_from_the_rewind_epoch():
    """The real ``fit``: IMP's retraining sees the rewound state and the dense run's per-step LRs
    from epoch k on."""
    cfg = ExperimentConfig.from_dict({
        "data.name": "synthetic", "data.num_samples": 80, "data.image_size": 8, "data.num_classes": 4,
        "data.batch_size": 16, "data.val_fraction": 0.2, "model.name": "resnet20", "model.width": 0.25,
        "train.epochs": 3, "train.lr": 0.1, "train.warmup_epochs": 0.5, "prune.method": "imp",
        "prune.ratio": 0.5, "prune.rounds": 2, "prune.rewind_epoch": 1, "runtime.device": "cpu"})
    data = load_data(cfg.data, CPU, 0)
    seed_everything(0)
    model = fresh_model(cfg, data)
    early = {0: copy.deepcopy(model.state_dict())}
    lrs, handle = step_lrs()
    try:
        fit(model, cfg.train, data, device=CPU, amp=False,
            on_epoch=lambda rec, _c: early.setdefault(rec["epoch"], copy.deepcopy(model.state_dict())))
        base_lrs = list(lrs)
        spe = len(data.train)
        assert len(base_lrs) == 3 * spe and spe >= 2

        seen = []

        def train(m, tcfg, stage, start_epoch):
            seen.append({k: v.clone() for k, v in m.state_dict().items()})
            lrs.clear()
            fit(m, tcfg, data, device=CPU, amp=False, start_epoch=start_epoch)
            seen[-1]["lrs"] = list(lrs)

        prune_model(model, PruneContext(cfg, torch.randn(2, 3, 8, 8), train=train, early_states=early))
    finally:
        handle.remove()
    assert len(seen) == 1
    state = seen[0]
    assert state["lrs"] == pytest.approx(base_lrs[1 * spe:], rel=1e-12)  # the schedule from epoch 1 on
    assert state["lrs"][0] != pytest.approx(base_lrs[0])
    for name, tensor in early[1].items():  # surviving weights, BN affine and running buffers of epoch 1
        if name.endswith(".weight") and f"{name[:-len('weight')]}weight_orig" in state:
            keep = state[f"{name[:-len('weight')]}weight_mask"].bool()
            assert torch.equal(state[f"{name[:-len('weight')]}weight_orig"][keep], tensor.contiguous()[keep])
        elif name in state:
            assert torch.equal(state[name], tensor), name


def test_fit_from_a_start_epoch_resumes_where_it_stopped(tmp_path):
    cfg = ExperimentConfig.from_dict({"data.name": "synthetic", "data.num_samples": 64, "data.image_size": 8,
                                      "data.num_classes": 4, "data.batch_size": 16, "train.epochs": 4,
                                      "model.width": 0.25})
    data = load_data(cfg.data, CPU, 0)

    class Killed(Exception):
        pass

    def kill_at_3(record, _ckpt):
        if record["epoch"] == 3:
            raise Killed

    seed_everything(0)
    model = fresh_model(cfg, data)
    lrs, handle = step_lrs()
    try:
        straight = fit(copy.deepcopy(model), cfg.train, data, device=CPU, amp=False, start_epoch=1)
        straight_lrs = list(lrs)
        lrs.clear()
        with pytest.raises(Killed):
            fit(copy.deepcopy(model), cfg.train, data, device=CPU, amp=False, start_epoch=1,
                checkpoint=tmp_path / "c.pt", on_epoch=kill_at_3)
        resumed = fit(copy.deepcopy(model), cfg.train, data, device=CPU, amp=False, start_epoch=1,
                      checkpoint=tmp_path / "c.pt", resume=True)
    finally:
        handle.remove()
    assert [e["epoch"] for e in straight.epochs] == [2, 3, 4]
    assert [e["epoch"] for e in resumed.epochs] == [2, 3, 4]
    assert lrs == pytest.approx(straight_lrs, rel=1e-12)  # killed at 3 + resumed for epoch 4 = straight
    assert resumed.last["lr"] == pytest.approx(straight.last["lr"])
    with pytest.raises(ValueError, match="start_epoch=0"):
        fit(copy.deepcopy(model), cfg.train, data, device=CPU, amp=False, checkpoint=tmp_path / "c.pt", resume=True)


def test_imp_refuses_a_rewind_epoch_that_leaves_nothing_to_retrain():
    with pytest.raises(ConfigError, match="prune.rewind_epoch=7: IMP retrains train.epochs=7"):
        prune_model(hand_net(), PruneContext(cfg_of(method="imp", rewind_epoch=7), torch.randn(1, 3, 3, 3),
                                             early_states={7: {}}))


class Headed(nn.Module):
    """A conv (108 weights), a BN and an output layer (80 weights) with a forward, so the output
    layer can be found."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(16, 5)
        with torch.no_grad():
            self.fc.weight.mul_(0.8)  # magnitudes like the conv's, so a global ranking reaches both

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).flatten(1))


def run_headed(model: str, **prune):
    net = Headed()
    cfg = ExperimentConfig.from_dict({"model.name": model, "train.epochs": 7, "prune.method": "imp",
                                      "prune.ratio": 0.6, **{f"prune.{k}": v for k, v in prune.items()}})
    ctx = PruneContext(cfg, torch.randn(1, 3, 4, 4), train=lambda *args: None, early_states=early_states(net))
    return net, prune_model(net, ctx)


@pytest.mark.parametrize("model, how, kept", [("vgg16", "auto", True), ("lenet300", "auto", True),
                                              ("resnet20", "auto", False), ("resnet18", "auto", False),
                                              ("vgg16", "prune", False), ("resnet20", "keep", True)])
def test_the_output_layer_is_kept_where_open_lth_s_model_of_the_family_ignores_it(model, how, kept):
    """open_lth's mnist_lenet and cifar_vgg set pruning_layers_to_ignore='fc.weight'; its ResNets
    prune every layer. A kept output layer is left out of the count, as open_lth counts."""
    net, plan = run_headed(model, imp_output=how)
    assert plan.stats["output_layer"] == ("kept" if kept else "pruned")
    fc_zeros = int((net.fc.weight == 0).sum())
    conv_zeros = int((net.conv.weight_mask == 0).sum())
    if kept:
        assert "fc" not in plan.masks and fc_zeros == 0
        assert conv_zeros == round(0.6 * 108) and plan.stats["unit_ratio"] == pytest.approx(conv_zeros / 108)
    else:
        assert fc_zeros > 0 and conv_zeros + fc_zeros == round(0.6 * 188)


def test_shuffle_is_open_lth_s_layerwise_random_pruning_of_the_ticket():
    """randomly_prune.py, strategy 'layerwise', start_at 'rewind': the ticket's count per layer,
    placed at random (runtime.seed), on the rewound weights."""
    ticket = run_imp(cfg_of(method="imp", ratio=0.6))[1]
    net, plan, _, early = run_imp(cfg_of(method="imp", ratio=0.6, shuffle=True))
    again = run_imp(cfg_of(method="imp", ratio=0.6, shuffle=True))[1]
    other = run_imp(cfg_of(method="imp", ratio=0.6, shuffle=True).replace(**{"runtime.seed": 1}))[1]
    for n in ticket.masks:
        assert int(plan.masks[n].sum()) == int(ticket.masks[n].sum()) == int(other.masks[n].sum())
        assert torch.equal(plan.masks[n], again.masks[n])  # seeded by runtime.seed
    assert any(not torch.equal(plan.masks[n], other.masks[n]) for n in ticket.masks)
    assert any(not torch.equal(plan.masks[n], ticket.masks[n]) for n in ticket.masks)
    for n, m in weights_of(net).items():
        assert torch.equal(m.weight_orig, early[1][f"{n}.weight"])
        assert bool((m.weight[~m.weight_mask.bool()] == 0).all())
    assert ExperimentConfig.from_dict({"prune.method": "imp", "prune.shuffle": True}).prune.shuffle


def reference_lamp_scores(scores):
    """jaeho-lee/layer-adaptive-sparsity tools/pruners.py ``_normalize_scores``, line for line."""
    sorted_scores, sorted_idx = scores.view(-1).sort(descending=False)
    scores_cumsum_temp = sorted_scores.cumsum(dim=0)
    scores_cumsum = torch.zeros(scores_cumsum_temp.shape, device=scores.device, dtype=scores.dtype)
    scores_cumsum[1:] = scores_cumsum_temp[:len(scores_cumsum_temp) - 1]
    sorted_scores /= (scores.sum() - scores_cumsum)
    new_scores = torch.zeros(scores_cumsum.shape, device=scores.device, dtype=scores.dtype)
    new_scores[sorted_idx] = sorted_scores
    return new_scores.view(scores.shape)


def reference_lamp_prune(weights: dict, masks: dict, amount: float) -> dict:
    """``prune_weights_lamp``: ``_compute_lamp_amounts`` on the masked weights, then each layer's
    ``l1_unstructured`` of that amount of its unmasked weights (a pruning container prunes among
    the entries not yet pruned)."""
    unmaskeds = torch.tensor([float(m.sum()) for m in masks.values()])
    num_surv = int(np.round(float(unmaskeds.sum()) * (1.0 - amount)))
    flattened = [reference_lamp_scores((weights[k] * masks[k]).double() ** 2).view(-1) for k in weights]
    threshold = torch.topk(torch.cat(flattened), num_surv)[0][-1]
    final_survs = [int((s >= threshold).sum()) for s in flattened]
    out = {}
    for (k, w), keep in zip(weights.items(), final_survs):
        live = torch.where(masks[k] == 1, w.abs(), torch.full_like(w, -1.0)).view(-1)
        mask = torch.zeros(live.numel())
        mask[torch.topk(live, keep).indices] = 1.0
        out[k] = mask.view_as(w)
    return out


def test_lamp_levels_rank_the_survivors_lamp_scores_as_the_lamp_reference_does():
    """Two levels (prune.rounds 2, ratio 0.64): the first removes open_lth's count by LAMP score; the
    last keeps the 36 weights the LAMP reference keeps, given the first level's mask and the weights
    its retraining left."""
    net, plan, calls, _ = run_imp(cfg_of(method="imp", ratio=0.64, rounds=2, scope="global", lamp=True))
    assert plan.stats["ranking"] == "global_lamp" and plan.stats["levels"] == 2
    trained = {n: m.weight.detach() for n, m in weights_of(hand_net()).items()}
    first = calls[0]["masks"]
    lamp = torch.cat([reference_lamp_scores(trained[k].double() ** 2).view(-1) for k in trained])
    threshold = torch.sort(lamp).values[math.ceil(0.4 * 100)]
    assert torch.equal(torch.cat([first[k].view(-1) for k in trained]), (lamp > threshold).float())
    want = reference_lamp_prune(calls[0]["left"], first, 1 - 36 / 59)
    assert all(torch.equal(plan.masks[k], want[k]) for k in trained)
    assert sum(int(m.sum()) for m in plan.masks.values()) == 36
    # LAMP never empties a layer: each layer's largest live weight scores 1
    assert all(int(m.sum()) > 0 for m in plan.masks.values())
    magnitude = run_imp(cfg_of(method="imp", ratio=0.64, rounds=2))[1]
    assert any(not torch.equal(plan.masks[k], magnitude.masks[k]) for k in trained)  # a ranking of its own
