"""How much does a latency measurement move when nothing changes? One model timed against a copy of itself.

Each round times the model and an exact copy with ``prune_core.metrics.time_interleaved`` (forward
by forward, after warm-up, fixed thread count; CUDA events on a GPU) and prints the ratio of their
medians (1.0 = no noise) and their interquartile ranges; the last line gives the worst deviation
from 1.0 over all rounds. Cases: resnet20 at mnist5k's shape (1x28x28) and at cifar's (3x32x32),
batch 1 and ``--batch``; resnet18 at 224x224, batch 1.

    python bench/latency_noise.py                     # 5 rounds of 30 forwards each, CPU
    python bench/latency_noise.py --device cuda       # the same on the GPU
    python bench/latency_noise.py --smoke-test        # seconds: 2 rounds, few forwards, resnet18 at 64 px

Goal (issue 9): the ratio stays within +-3 % of 1.0 on an idle machine. Timed apart, one resnet20
against itself varied 0.92-1.08 (ARCHITECTURE.md, measured facts). This script prints; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import copy
import os
from typing import List, Tuple

import torch

from prune_core.metrics import time_interleaved
from prune_core.models import build_model

GOAL = 0.03  # |ratio - 1| on an idle machine


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30, help="timed forwards per model and batch size, per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=16, help="the larger batch (batch 1 is always timed)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, fixed for every timing")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--smoke-test", action="store_true", help="2 rounds of 5 forwards; resnet18 at 64 px")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.rounds, args.repeats, args.warmup, args.batch = 2, 5, 1, 4
    return args


def cases(args: argparse.Namespace) -> List[Tuple[str, str, Tuple[int, int, int], int]]:
    """(label, model, input shape, classes)."""
    big = 64 if args.smoke_test else 224
    return [("resnet20 mnist5k", "resnet20", (1, 28, 28), 10), ("resnet20 cifar", "resnet20", (3, 32, 32), 10),
            (f"resnet18 {big}px", "resnet18", (3, big, big), 1000)]


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{where}; {args.rounds} rounds of {args.repeats} interleaved forwards after {args.warmup} warm-up; "
          f"load average {os.getloadavg()[0]:.1f}; goal |A/B - 1| <= {GOAL:.0%} on an idle machine")
    head = f"{'case':<18} {'batch':>5} {'round':>5} {'ms A':>8} {'ms B':>8} {'A/B':>7} {'IQR A %':>8} {'IQR B %':>8}"
    print(head)
    print("-" * len(head))
    worst = {}
    for label, name, shape, classes in cases(args):
        model = build_model(name, classes, shape[0], shape[1]).to(device).eval()
        twin = copy.deepcopy(model)
        batches = [1] if name == "resnet18" else [1, args.batch]
        for r in range(args.rounds):
            a, b = time_interleaved([model, twin], shape, max(batches), args.repeats, args.warmup, args.threads)
            for batch in batches:
                ma, mb = (a.ms_b1, b.ms_b1) if batch == 1 else (a.ms_batch, b.ms_batch)
                qa, qb = (a.iqr_b1, b.iqr_b1) if batch == 1 else (a.iqr_batch, b.iqr_batch)
                ratio = ma / mb
                key = f"{label} b{batch}"
                worst[key] = max(worst.get(key, 0.0), abs(ratio - 1))
                print(f"{label:<18} {batch:>5} {r + 1:>5} {ma:>8.2f} {mb:>8.2f} {ratio:>7.3f} "
                      f"{100 * qa / ma:>8.1f} {100 * qb / mb:>8.1f}", flush=True)
    for key, dev in worst.items():
        print(f"worst |A/B - 1| {key}: {dev:.1%} ({'within' if dev <= GOAL else 'outside'} the {GOAL:.0%} goal)")
    print(f"worst over all: {max(worst.values()):.1%}")


if __name__ == "__main__":
    main()
