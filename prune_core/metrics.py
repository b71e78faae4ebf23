"""Exact cost and quality measurements: FLOPs, MACs, parameters, latency and accuracy.

FLOPs convention (ARCHITECTURE.md, contract 6): 2 x multiply-accumulates of convolutions and linear layers for one
image at the dataset's input size, as ``torch.utils.flop_counter.FlopCounterMode`` counts them
(batch norm, activations, pooling and bias additions are not counted). Attention: see contract 6. MACs are FLOPs / 2; papers
often quote MACs under the name "FLOPs" (ResNet-56: 1.25e8 in Li et al. 2017). Effective FLOPs of
a layer are its dense FLOPs times the fraction of its weights that are non-zero.

>>> from prune_core.models import build_model
>>> report = count_flops(build_model("resnet20", 10, 3, 32), (3, 32, 32))
>>> report.total > 0
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from .timing import median_iqr, turns

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


def _count_cpu_attention() -> None:
    """Count ``scaled_dot_product_attention``'s two products on the CPU as on CUDA: torch 2.14's
    ``FlopCounterMode`` has formulas for the flash, efficient and cuDNN kernels but none for the
    CPU's ``_scaled_dot_product_flash_attention_for_cpu``, so a ViT's q·kᵀ and attention·v counted
    nothing there while Swin's (plain matmuls) counted (ARCHITECTURE.md, contract 6)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and op not in flop_counter.flop_registry and op.default not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(op)(_sdpa_flops)


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_count_cpu_attention()


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: Tuple[int, ...]) -> FlopReport:
    """FLOPs of one forward pass of one image of ``input_shape`` (C, H, W), per conv/linear layer."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False)
    # nn.MultiheadAttention's fused eval fast path is invisible to FlopCounterMode (ARCHITECTURE.md,
    # contract 6): the unfused path computes the same and is counted
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
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
    """Output channels (features) of every conv and linear layer, and of every attention layer the
    width its heads span (heads x head dimension, ``pruning.heads.head_widths``), in module order."""
    from .pruning.heads import head_widths  # here: prune_core.pruning imports this module

    heads = head_widths(model)
    return {n: heads[n] if n in heads else (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for n, m in model.named_modules() if n in heads or isinstance(m, WEIGHTED)}


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
    iqr_b1: float = 0.0  # interquartile range (q75 - q25, ms) of the batch-1 forwards
    iqr_batch: float = 0.0  # the same at the larger batch


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: Tuple[int, ...], batch: int = 16, repeats: int = 20,
                    warmup: int = 5, threads: int = 0) -> Latency:
    """Median forward time after warm-up, at batch 1 and ``batch`` (``time_interleaved`` of one model)."""
    return time_interleaved([model], input_shape, batch, repeats, warmup, threads)[0]


@torch.inference_mode()
def time_interleaved(models: Sequence[nn.Module], input_shape: Tuple[int, ...], batch: int = 16, repeats: int = 20,
                     warmup: int = 5, threads: int = 0) -> List[Latency]:
    """Median and interquartile range of each model's forward time, the models taking turns.

    The models run alternately, forward by forward (the order rotating every round), so that load
    from other processes hits all of them alike: one resnet20 timed against itself on an idle
    2-core machine varied 0.92-1.08 when timed apart (ARCHITECTURE.md, measured facts). Each model
    is warmed up ``warmup`` forwards first, at batch 1 and again at ``batch``. On the CPU the thread
    count is fixed for the measurement (``threads``, else torch's current count) and restored
    after; on CUDA the time comes from CUDA events around each forward. Image models run in
    channels_last, as they train. All models must be on one device; they are copied, so the
    callers' models keep their mode and memory format.
    """
    if not models:
        return []
    # one memory format for all: fit leaves a trained model in channels_last, a fresh one is not, and
    # a pair timed in different formats would compare the formats as well as the networks
    fmt = torch.channels_last if len(input_shape) == 3 else torch.contiguous_format
    copies = [copy.deepcopy(m).eval().to(memory_format=fmt) for m in models]
    device = next(copies[0].parameters()).device
    old_threads = torch.get_num_threads()
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        stats = {b: interleaved_ms(copies, torch.randn((b, *input_shape), device=device).contiguous(memory_format=fmt),
                                   repeats, warmup)
                 for b in dict.fromkeys((1, batch))}
    finally:
        torch.set_num_threads(old_threads)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu x{threads or old_threads} threads")
    return [Latency(ms_b1=stats[1][i][0], ms_batch=stats[batch][i][0], batch=batch, device=where,
                    iqr_b1=stats[1][i][1], iqr_batch=stats[batch][i][1]) for i in range(len(copies))]


def latency_metrics(base: Latency, final: Latency, how: str) -> Dict[str, Any]:
    """The latency keys of ``prune_core.schema.METRICS`` from one interleaved measurement of the base
    and the pruned model; ``how`` is ``latency_pass`` (trial, or quiet)."""
    return {"latency_ms_base": base.ms_b1, "latency_ms_final": final.ms_b1,
            "latency_ms_base_batch": base.ms_batch, "latency_ms_final_batch": final.ms_batch,
            "latency_ms_base_iqr": base.iqr_b1, "latency_ms_final_iqr": final.iqr_b1,
            "latency_ms_base_batch_iqr": base.iqr_batch, "latency_ms_final_batch_iqr": final.iqr_batch,
            "speedup": base.ms_b1 / final.ms_b1, "speedup_batch": base.ms_batch / final.ms_batch,
            "latency_device": base.device, "latency_pass": how}


def interleaved_ms(models: Sequence[Callable[[torch.Tensor], Any]], x: torch.Tensor, repeats: int, warmup: int
                   ) -> List[Tuple[float, float]]:
    """(median, q75 - q25) milliseconds per forward of each model on ``x``, the models taking turns
    (``prune_core.timing``); a model is any callable (``prune_core.export`` times ONNX Runtime
    sessions with it)."""
    return [median_iqr(s) for s in turns([partial(m, x) for m in models], x.device, repeats, warmup)]


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
