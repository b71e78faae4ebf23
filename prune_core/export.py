"""ONNX export of the rebuilt model, checked against PyTorch and timed under ONNX Runtime on the CPU.

With ``runtime.export: onnx`` the pipeline writes the fine-tuned, rebuilt model (eval mode, fp32,
CPU) to ``<run dir>/<model>_rebuilt.onnx`` with a dynamic batch axis, runs ONNX Runtime on a batch
of real test images and on one image (the dynamic axis), and refuses a graph whose logits differ
from PyTorch's by more than ``TOLERANCE`` times the largest |logit|, at least 1 (``ExportMismatch``).
Latency is timed the way eager latency is (``prune_core.metrics``: batch 1 and
``runtime.latency_batch``, median and IQR of ``runtime.latency_repeats`` runs, the base's and the
pruned model's sessions interleaved, the same thread count): the deployment axis
``latency_ms_final_ort`` beside ``latency_ms_final``.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs only ``onnx`` and
exported every registry model 2-5x faster than the torch.export-based one, which needs
``onnxscript`` besides. Both gave the same logits.
"""

from __future__ import annotations

import copy
import io
import warnings
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import ConfigError, ExportMismatch
from .metrics import Latency, interleaved_ms

TOLERANCE = 1e-4  # fp32 logits, as the rebuild check (prune_core.pruning.surgery)
OPSET = 17
INPUT, OUTPUT = "input", "logits"
EXTRA = 'pip install -e ".[onnx]"'


def require_onnx() -> None:
    """Raise ConfigError, naming the extra to install, unless onnx and onnxruntime import: called
    before any training, so a missing package costs nothing computed."""
    try:
        for name in ("onnx", "onnxruntime"):
            import_module(name)
    except ImportError as exc:
        raise ConfigError(f"runtime.export=onnx: needs onnx and onnxruntime ({exc}); install them with "
                          f"{EXTRA}") from None


def _cpu_fp32(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval().float().cpu().to(memory_format=torch.contiguous_format)


def export_onnx(model: nn.Module, input_shape: Sequence[int], target: Union[str, Path, io.BytesIO]) -> None:
    """Write ``model`` (a copy in eval mode, fp32, on the CPU) as ONNX to ``target`` (a path or a
    buffer), input ``input`` and output ``logits`` with a dynamic batch axis."""
    net = _cpu_fp32(model)
    x = torch.zeros((2, *input_shape))
    with warnings.catch_warnings():  # the TorchScript exporter announces its own deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), target, input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, dynamo=False)


def session(model: Union[str, Path, bytes], threads: int = 0) -> Any:
    """An ONNX Runtime CPU session of an exported model (a file or its bytes), with ``threads``
    intra-op threads (else torch's current count, what eager latency uses) and one inter-op."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def runner(sess: Any) -> Callable[[torch.Tensor], Any]:
    """A session as a model: a CPU tensor in, its logits out (a numpy array), for ``interleaved_ms``."""
    return lambda x: sess.run(None, {INPUT: x.numpy()})[0]


@torch.no_grad()
def _diff_and_scale(model: nn.Module, sess: Any, x: torch.Tensor) -> Tuple[float, float]:
    """(largest |logit| difference between ONNX Runtime and PyTorch, fp32 on the CPU, on ``x``;
    PyTorch's largest |logit|)."""
    x = x.detach().float().cpu().contiguous()
    reference = _cpu_fp32(model)(x)
    return float((torch.from_numpy(runner(sess)(x)) - reference).abs().max()), float(reference.abs().max())


def max_abs_diff(model: nn.Module, sess: Any, x: torch.Tensor) -> float:
    """Largest |logit| difference between ONNX Runtime and PyTorch (fp32, CPU) on ``x``."""
    return _diff_and_scale(model, sess, x)[0]


def check(model: nn.Module, sess: Any, batches: Sequence[torch.Tensor]) -> float:
    """The largest difference over ``batches``; ``ExportMismatch`` above ``TOLERANCE`` times the
    largest |logit| where logits exceed 1 (fp32 rounding grows with the logits: resnet56 as
    initialised, logits up to ~2e3, differs by ~1e-3, a relative 4e-7), else above ``TOLERANCE``."""
    pairs = [_diff_and_scale(model, sess, x) for x in batches]
    diff = max(d for d, _ in pairs)
    limit = TOLERANCE * max(1.0, max(s for _, s in pairs))
    if not diff <= limit:
        sizes = "/".join(str(len(x)) for x in batches)
        raise ExportMismatch(f"ONNX Runtime and PyTorch logits differ by {diff:.3g} (> {limit:.3g}: {TOLERANCE} x "
                             f"max(1, largest |logit|)) on batches of {sizes} images")
    return diff


def time_sessions(sessions: Sequence[Any], input_shape: Sequence[int], batch: int = 16, repeats: int = 20,
                  warmup: int = 5, threads: int = 0) -> List[Latency]:
    """Median and IQR of each session's run at batch 1 and ``batch``, the sessions taking turns
    forward by forward: ``prune_core.metrics.time_interleaved`` for ONNX Runtime."""
    runners = [runner(s) for s in sessions]
    stats = {b: interleaved_ms(runners, torch.randn((b, *input_shape)), repeats, warmup)
             for b in dict.fromkeys((1, batch))}
    where = f"cpu x{threads or torch.get_num_threads()} threads (onnxruntime)"
    return [Latency(ms_b1=stats[1][i][0], ms_batch=stats[batch][i][0], batch=batch, device=where,
                    iqr_b1=stats[1][i][1], iqr_batch=stats[batch][i][1]) for i in range(len(runners))]


def export_metrics(base: Optional[nn.Module], model: nn.Module, input_shape: Tuple[int, ...], images: torch.Tensor,
                   path: Path, batch: int, repeats: int, threads: int = 0) -> Dict[str, Any]:
    """Export ``model`` to ``path``, check it on ``images`` and on its first image, and time it
    against the base (exported to memory only; ``None``: ``--eval-only`` has no base, and the
    model is timed alone) under ONNX Runtime: the ``*_ort`` keys of ``prune_core.schema.METRICS``
    and ``onnx_max_abs_diff``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    export_onnx(model, input_shape, tmp)
    tmp.replace(path)
    final = session(path, threads)
    diff = check(model, final, [images, images[:1]])
    sessions = [final]
    if base is not None:
        buffer = io.BytesIO()
        export_onnx(base, input_shape, buffer)
        sessions.insert(0, session(buffer.getvalue(), threads))
    *base_lat, final_lat = time_sessions(sessions, input_shape, batch, repeats, threads=threads)
    out = {"latency_ms_final_ort": final_lat.ms_b1, "latency_ms_final_batch_ort": final_lat.ms_batch,
           "latency_ms_final_iqr_ort": final_lat.iqr_b1, "latency_ms_final_batch_iqr_ort": final_lat.iqr_batch,
           "onnx_max_abs_diff": diff}
    if base_lat:
        out.update(latency_ms_base_ort=base_lat[0].ms_b1, latency_ms_base_batch_ort=base_lat[0].ms_batch)
    return out
