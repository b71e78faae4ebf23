"""Exact cost and quality measurements: FLOPs, MACs, parameters, latency and accuracy.

FLOPs convention (ARCHITECTURE.md, contract 6): 2 x multiply-accumulates of convolutions and linear layers for one
image at the dataset's input size, as ``torch.utils.flop_counter.FlopCounterMode`` counts them
(batch norm, activations, pooling and bias additions are not counted). MACs are FLOPs / 2; papers
often quote MACs under the name "FLOPs" (ResNet-56: 1.25e8 in Li et al. 2017). Effective FLOPs of
a layer are its dense FLOPs times the fraction of its weights that are non-zero.

>>> from prune_core.models import build_model
>>> report = count_flops(build_model("resnet20", 10, 3, 32), (3, 32, 32))
>>> report.total > 0
True
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, Optional, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # the layers FLOPs, sparsity and pruning concern


@dataclass(frozen=True)
class FlopReport:
    total: float  # FLOPs per image (2 x MACs)
    per_layer: Dict[str, float]  # conv/linear module name -> FLOPs per image
    effective: float  # dense FLOPs x weight density, summed over layers
    density: Dict[str, float]  # conv/linear module name -> fraction of non-zero weights

    @property
    def macs(self) -> float:
        return self.total / 2

    def table(self) -> str:
        """The per-layer table, one line per conv/linear layer."""
        width = max([len(n) for n in self.per_layer] + [5])
        lines = [f"{'layer':<{width}}  {'MFLOPs':>10}  {'density':>7}  {'eff. MFLOPs':>11}"]
        for name, flops in self.per_layer.items():
            d = self.density.get(name, 1.0)
            lines.append(f"{name:<{width}}  {flops / 1e6:>10.3f}  {d:>7.3f}  {flops * d / 1e6:>11.3f}")
        lines.append(f"{'total':<{width}}  {self.total / 1e6:>10.3f}  {'':>7}  {self.effective / 1e6:>11.3f}")
        return "\n".join(lines)


def weight_density(module: nn.Module) -> float:
    w = module.weight  # masked by torch.nn.utils.prune where the layer is pruned
    return float((w != 0).sum()) / w.numel()


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: Tuple[int, ...]) -> FlopReport:
    """FLOPs of one forward pass of one image of ``input_shape`` (C, H, W), per conv/linear layer."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_layer: Dict[str, float] = {}
    density: Dict[str, float] = {}
    for name, module in model.named_modules():
        if isinstance(module, WEIGHTED):
            ops = counts.get(f"{root}.{name}", {})
            per_layer[name] = float(sum(ops.values()))
            density[name] = weight_density(module)
    total = float(counter.get_total_flops())
    effective = total - sum(per_layer.values()) + sum(f * density[n] for n, f in per_layer.items())
    return FlopReport(total=total, per_layer=per_layer, effective=effective, density=density)


def _effective_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Each parameter once, with pruning masks applied (``weight`` instead of ``weight_orig``)."""
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("_orig") and hasattr(module, name[: -len("_orig")]):
                yield getattr(module, name[: -len("_orig")])
            else:
                yield p


def count_params(model: nn.Module) -> Tuple[int, int]:
    """(total, non-zero) parameters; a masked weight counts its mask's zeros as zeros."""
    total = nonzero = 0
    for t in _effective_tensors(model):
        total += t.numel()
        nonzero += int((t != 0).sum())
    return total, nonzero


def sparsity(model: nn.Module) -> float:
    """Fraction of conv and linear weights that are zero."""
    zeros = n = 0
    for m in model.modules():
        if isinstance(m, WEIGHTED):
            w = m.weight
            zeros += int((w == 0).sum())
            n += w.numel()
    return zeros / max(n, 1)


def layer_channels(model: nn.Module) -> Dict[str, int]:
    """Output channels (features) of every conv and linear layer."""
    return {n: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, WEIGHTED)}


def layer_params(model: nn.Module) -> Dict[str, int]:
    """Non-zero weights of every conv and linear layer."""
    return {n: int((m.weight != 0).sum()) for n, m in model.named_modules() if isinstance(m, WEIGHTED)}


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    ms_b1: float  # median milliseconds per forward at batch 1
    ms_batch: float  # median milliseconds per forward at the larger batch
    batch: int
    device: str


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: Tuple[int, ...], batch: int = 16, repeats: int = 20,
                    warmup: int = 5, threads: int = 0) -> Latency:
    """Median forward time after warm-up, at batch 1 and ``batch``.

    On the CPU the thread count is fixed for the measurement (``threads``, else torch's current
    count) so runs compare; on CUDA the time comes from CUDA events around each forward.
    """
    model = copy.deepcopy(model).eval()
    device = next(model.parameters()).device
    old_threads = torch.get_num_threads()
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        times = {}
        for b in (1, batch):
            x = torch.randn((b, *input_shape), device=device)
            times[b] = _median_ms(model, x, repeats, warmup)
    finally:
        torch.set_num_threads(old_threads)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu x{threads or old_threads} threads")
    return Latency(ms_b1=times[1], ms_batch=times[batch], batch=batch, device=where)


def _median_ms(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        model(x)
    samples = []
    if x.device.type == "cuda":
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accuracy:
    top1: float  # percent
    top5: Optional[float]  # percent; None below 100 classes
    loss: float


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], num_classes: int,
             amp_dtype: Optional[torch.dtype] = None) -> Accuracy:
    """Top-1 (and top-5 when there are 100 classes or more) accuracy in percent, and mean loss."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = n = 0
    loss = 0.0
    want5 = num_classes >= 100
    for x, y in batches:
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct1 += int((logits.argmax(1) == y).sum())
        if want5:
            top5 = logits.topk(5, dim=1).indices
            correct5 += int((top5 == y[:, None]).any(1).sum())
        n += y.numel()
    model.train(was_training)
    n = max(n, 1)
    return Accuracy(top1=100.0 * correct1 / n, top5=100.0 * correct5 / n if want5 else None, loss=loss / n)
