"""The one timer behind every latency this project measures: callables taking turns.

``turns`` runs each callable ``warmup`` times, then ``repeats`` rounds in which every callable runs
once, the order rotating by one each round (no callable always runs right after the same other
one), and returns each callable's milliseconds per call. Taking turns makes load from other
processes hit all the callables alike, so their ratio holds on a shared machine when their times
alone do not (ARCHITECTURE.md, measured facts). On CUDA the time of a call comes from two CUDA
events around it, synchronised after it; on the CPU from ``time.perf_counter``. Callers choose the
statistic: the median and interquartile range (``prune_core.metrics.measure_latency``, ONNX
Runtime in ``prune_core.export``), or the minimum (the device micro-benchmarks of
``prune_core.pruning.devicecost``, ``bench/rebuild_speedup.py --stat min``).

>>> ms = turns([lambda: sum(range(1000)), lambda: sum(range(10))], torch.device("cpu"), repeats=3)
>>> [len(m) for m in ms]
[3, 3]
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, List, Sequence, Tuple

import torch


def turns(fns: Sequence[Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 0
          ) -> List[List[float]]:
    """Milliseconds of each of ``repeats`` calls of each no-argument callable, in ``fns``' order;
    the callables take turns, under ``torch.inference_mode``."""
    cuda = device.type == "cuda"
    samples: List[List[float]] = [[] for _ in fns]
    n = len(fns)
    with torch.inference_mode():
        for f in fns:
            for _ in range(warmup):
                f()
        if cuda:
            torch.cuda.synchronize(device)
        for r in range(repeats):
            for j in range(n):
                i = (j + r) % n
                if cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fns[i]()
                    end.record()
                    torch.cuda.synchronize(device)
                    samples[i].append(start.elapsed_time(end))
                else:
                    t0 = time.perf_counter()
                    fns[i]()
                    samples[i].append((time.perf_counter() - t0) * 1e3)
    return samples


def median_iqr(samples: Sequence[float]) -> Tuple[float, float]:
    """(median, q75 - q25) of one callable's milliseconds; the spread is 0 below two samples."""
    if len(samples) < 2:
        return statistics.median(samples), 0.0
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q[2] - q[0]
