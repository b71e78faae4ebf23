"""Does N:M sparsity run faster? The dense model against its ``nm`` (2:4) masked twin, timed side by side.

For each model the dense network and the same network after ``nm`` pruning (masks made permanent:
the zeros sit in dense tensors, as every framework's eager kernels see them) are timed in one
process, alternating forward by forward (``prune_core.metrics.time_interleaved``: medians, fixed
thread count on the CPU, CUDA events on a GPU), at batch 1 and at ``--batch``. On CUDA a third
model runs: ``prune_core.pruning.nm.semi_structured``, the 2:4 linear layers stored as
``torch.sparse.to_sparse_semi_structured`` in fp16 (sparse tensor cores), against the dense model
in fp16. Printed: effective FLOPs kept and each speedup, measured, whichever way it goes.

    python bench/nm_speedup.py                      # resnet20 (CIFAR shape) and vit_b_16's MLP-heavy stack
    python bench/nm_speedup.py --device cuda        # adds the semi-structured fp16 timing
    python bench/nm_speedup.py --smoke-test         # seconds

Measured on the 2-core Xeon (2026-12-05, batch 32): resnet20 keeps 0.505 of its effective FLOPs
and runs at 0.99x (batch 1) and 0.99x (batch 32) the dense speed; the 768-wide MLP keeps 0.500 and
runs at 1.00x and 1.00x. Dense kernels do the same work on zeros: the speedup needs sparse kernels.
"""

from __future__ import annotations

import argparse
import copy
from typing import List, Tuple

import torch
from torch import nn

from prune_core.config import ExperimentConfig
from prune_core.metrics import count_flops, time_interleaved
from prune_core.models import build_model
from prune_core.pruning import PruneContext, prune_model, rebuild


def mlp(width: int) -> nn.Module:
    """A transformer block's MLP, twice: the linear layers 2:4 kernels are made for."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                         nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))


def cases(smoke: bool) -> List[Tuple[str, nn.Module, Tuple[int, ...]]]:
    width = 256 if smoke else 768
    out = [("mlp%d" % width, mlp(width), (width,))]
    if not smoke:
        out.insert(0, ("resnet20", build_model("resnet20", 10, 3, 32), (3, 32, 32)))
    return out


def fp16_ms(model: nn.Module, x: torch.Tensor) -> float:
    from torch.utils.benchmark import Timer  # imported on CUDA only: it probes for a CUDA toolkit

    return Timer("m(x)", globals={"m": model, "x": x}).blocked_autorange(min_run_time=1.0).median * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    ap.add_argument("--smoke-test", action="store_true")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to time on cuda")
        return 0
    device = torch.device(args.device)
    cfg = ExperimentConfig.from_dict({"prune.method": "nm"})
    print(f"{'model':<10} {'eff. FLOPs kept':>15} {'speedup b1':>11} {'speedup b' + str(args.batch):>11}"
          f"{'  semi-structured fp16 b' + str(args.batch) if device.type == 'cuda' else ''}")
    for name, model, shape in cases(args.smoke_test):
        model.eval()
        dense = copy.deepcopy(model)
        x = torch.randn(2, *shape)
        plan = prune_model(model, PruneContext(cfg, example_input=x))  # masks model in place
        masked = rebuild(model, plan, x).model
        flops = count_flops(masked, shape)
        base, sparse = time_interleaved([dense.to(device).eval(), masked.to(device).eval()], shape, args.batch,
                                        1 if args.smoke_test else args.repeats, threads=args.threads)
        line = (f"{name:<10} {flops.effective / flops.total:>15.3f} {base.ms_b1 / sparse.ms_b1:>11.2f} "
                f"{base.ms_batch / sparse.ms_batch:>11.2f}")
        if device.type == "cuda" and torch.cuda.get_device_capability() >= (8, 0):
            from prune_core.pruning.nm import semi_structured

            half = dense.to(device, torch.float16).eval()
            xs = torch.randn(args.batch, *shape, device=device, dtype=torch.float16)
            with torch.no_grad():
                line += f"  {fp16_ms(half, xs) / fp16_ms(semi_structured(model, torch.float16), xs):.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
