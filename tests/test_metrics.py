"""FLOPs, parameters and latency measurements on hand-sized networks."""

import torch
import torch.nn.utils.prune as prune
from torch import nn

from prune_core.metrics import count_flops, count_params, evaluate, measure_latency, sparsity, time_interleaved
from prune_core.timing import median_iqr, turns


def two_layer():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 5))


def test_hand_count_two_layer_net():
    net = two_layer()
    report = count_flops(net, (3, 6, 6))
    conv = 2 * (8 * 6 * 6) * 3 * 9  # 2 x output elements x in-channels x kernel area
    linear = 2 * 288 * 5
    assert report.per_layer == {"0": conv, "3": linear}
    assert report.total == conv + linear
    assert report.effective == report.total


def test_effective_flops_of_half_masked_conv_is_half():
    net = two_layer()
    conv = net[0]
    mask = torch.zeros_like(conv.weight)
    mask[:4] = 1  # half of the filters
    prune.custom_from_mask(conv, "weight", mask)
    report = count_flops(net, (3, 6, 6))
    dense_conv = 2 * (8 * 6 * 6) * 3 * 9
    assert report.density["0"] == 0.5
    assert report.effective == dense_conv / 2 + 2 * 288 * 5
    assert report.total == dense_conv + 2 * 288 * 5  # dense FLOPs do not change with a mask


def test_params_total_and_nonzero_with_mask():
    net = two_layer()
    total, nz = count_params(net)
    assert total == 8 * 3 * 9 + 288 * 5 + 5 == nz
    prune.l1_unstructured(net[3], "weight", amount=100)
    total2, nz2 = count_params(net)
    assert total2 == total and nz2 == nz - 100
    assert abs(sparsity(net) - 100 / (8 * 27 + 1440)) < 1e-9


def test_latency_is_positive_and_reports_device():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lat = measure_latency(two_layer(), (3, 6, 6), batch=4, repeats=3, warmup=1, threads=1)
        assert torch.get_num_threads() == 2  # the measurement's own thread count does not leak out
    finally:
        torch.set_num_threads(before)
    assert lat.ms_b1 > 0 and lat.ms_batch > 0 and lat.batch == 4
    assert lat.device == "cpu x1 threads"


def conv_stack(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(),
                         *[m for _ in range(3) for m in (nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())])


def test_interleaved_timing_gives_each_model_a_median_and_a_spread():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small, big = conv_stack(4), conv_stack(64)  # big: about 200x the multiply-adds of small
        big.train()
        lats = time_interleaved([small, big], (3, 16, 16), batch=4, repeats=15, warmup=2, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert big.training  # the callers' models are left as they were
    assert len(lats) == 2 and all(lat.device == "cpu x1 threads" and lat.batch == 4 for lat in lats)
    for lat in lats:
        assert lat.ms_b1 > 0 and lat.ms_batch > 0 and lat.iqr_b1 >= 0 and lat.iqr_batch >= 0
    # an ordering only with a margin no load can close: 200x the work at the same medians' noise
    assert lats[1].ms_batch > lats[0].ms_batch
    one = time_interleaved([small], (3, 16, 16), batch=2, repeats=1, warmup=0)[0]
    assert one.iqr_b1 == 0.0 and one.ms_b1 > 0  # a single sample has no spread


def test_accuracy_top1_and_top5():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 5]])
    model = nn.Identity()
    model.register_parameter("p", nn.Parameter(torch.zeros(1)))
    acc = evaluate(model, [(logits, torch.tensor([0, 3]))], num_classes=6)
    assert acc.top1 == 50.0 and acc.top5 is None
    big = torch.zeros(2, 100)
    big[0, 7] = 3
    big[1, :5] = torch.tensor([5.0, 4, 3, 2, 1])
    acc = evaluate(model, [(big, torch.tensor([7, 4]))], num_classes=100)
    assert acc.top1 == 50.0 and acc.top5 == 100.0


def test_the_timer_warms_up_then_rotates_the_order_each_round():
    calls = []
    fns = [lambda i=i: calls.append(i) for i in range(3)]
    samples = turns(fns, torch.device("cpu"), repeats=4, warmup=2)
    assert [len(s) for s in samples] == [4, 4, 4] and all(t >= 0 for s in samples for t in s)
    assert calls[:6] == [0, 0, 1, 1, 2, 2]  # warm-up, each in turn
    rounds = [tuple(calls[6 + 3 * r: 9 + 3 * r]) for r in range(4)]
    assert rounds == [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 1, 2)]


def test_median_and_interquartile_range():
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0)
    assert median_iqr([7.0]) == (7.0, 0.0)
