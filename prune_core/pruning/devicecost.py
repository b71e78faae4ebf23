"""Channel costs measured on the device: the channel multiple that runs fastest
(``prune.round_to: auto``) and per-layer latency tables (``prune.target: latency``).

FLOPs do not predict latency: thin layers and odd channel counts run below the kernels' peak
(``bench/rebuild_speedup.py``). Two measurements close part of that gap.

* ``channel_multiple``: a micro-benchmark times a 3x3 and a 1x1 convolution at every channel count
  in ``COUNTS`` and picks the smallest multiple whose counts reach, on average, within
  ``TOLERANCE`` (1 %) of the best multiple's throughput (GFLOP/s). On this project's 2-core Xeon
  (AVX-512) throughput is a sawtooth of period 16 (64 channels: 156 GFLOP/s, 65: 125, 80: 150,
  81: 136), so ``auto`` resolves to 16 there (ARCHITECTURE.md, measured facts).
* ``LatencyTable``: the latency lookup table of HALP (Shen et al. 2022, "Structural Pruning via
  Latency-Saliency Knapsack", NeurIPS): each conv and linear layer's latency at its input size and
  the latency batch, as a function of its input and output channels, measured on the device when
  first needed. A network's latency is estimated as the sum over its layers plus the rest (batch
  norm, activations, pooling, additions), taken from one measurement of the dense network and
  scaled by the fraction of conv and linear output activations kept. ``prune.target: latency``
  searches the unit ratio whose estimate keeps ``1 - prune.ratio`` of the dense estimate, times
  that network against the dense one and, while it misses by more than 2.5 %, corrects the aim by
  the table's error (twice at most; ``channel._solve_latency``).
  Deviation from HALP, by design: the channels removed are still the criterion's ranking (local or
  global); HALP chooses them by a knapsack over importance and latency, which is not implemented.

Timings are the minimum over ``REPEATS`` calls, the timed callables taking turns, so load from
other processes hits all alike and the minimum resists it. Both results are cached as JSON under
``<cache_dir>/device/``, one file per device, thread count, batch and torch version, so a sweep
measures once per machine; the first trial to write a file wins and every later one reads it, so
all trials on one machine decide alike.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import statistics
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..provenance import cpu_name
from ..timing import turns

CANDIDATES = (1, 2, 4, 8, 16, 32)  # channel multiples round_to: auto chooses from
COUNTS = range(64, 128)  # channel counts the micro-benchmark times (two periods of the largest candidate)
# the smallest multiple within 1 % of the best throughput wins: as fast, and finer pruning steps
TOLERANCE = 0.01
REPEATS, WARMUP = 5, 2
_MEMO: Dict[Tuple[Any, ...], Any] = {}  # per process: trials of one worker measure once


def device_label(device: torch.device, threads: int = 0) -> str:
    """What timings on ``device`` depend on: the CUDA device's name, or the CPU's model and the thread
    count; and torch's version (its kernels)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_name()} x{threads or torch.get_num_threads()} threads"
    return f"{name}, torch {torch.__version__}"


def time_min_ms(fns: Sequence[Callable[[], Any]], device: torch.device, repeats: int = REPEATS,
                warmup: int = WARMUP, threads: int = 0) -> List[float]:
    """Minimum milliseconds of each no-argument callable over ``repeats`` calls, taking turns
    (``prune_core.timing``), with ``threads`` CPU threads (0: torch's current count)."""
    old = torch.get_num_threads()
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        return [min(s) for s in turns(fns, device, repeats, warmup)]
    finally:
        torch.set_num_threads(old)


# --- round_to: auto ---------------------------------------------------------------------------


def choose_multiple(gflops: Dict[int, float], candidates: Sequence[int] = CANDIDATES,
                    tolerance: float = TOLERANCE) -> Tuple[int, Dict[int, float]]:
    """(the multiple, each candidate's mean GFLOP/s over the counts it keeps) from the throughput
    at each channel count: the smallest candidate within ``tolerance`` of the best."""
    per = {m: statistics.fmean(g for c, g in gflops.items() if c % m == 0) for m in candidates
           if any(c % m == 0 for c in gflops)}
    best = max(per.values())
    return min(m for m, g in per.items() if g >= (1.0 - tolerance) * best), per


def conv_pair_ms(counts: Sequence[int], device: torch.device, batch: int, size: int, threads: int = 0
                 ) -> List[float]:
    """Milliseconds of a 3x3 then a 1x1 convolution, ``c`` channels in and out, at each count."""
    fns = []
    for c in counts:
        net = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 1, bias=False))
        net = net.to(device).eval().to(memory_format=torch.channels_last)
        x = torch.randn(batch, c, size, size, device=device).contiguous(memory_format=torch.channels_last)
        fns.append(partial(net, x))
    return time_min_ms(fns, device, threads=threads)


def profile_multiples(device: torch.device, batch: int = 16, threads: int = 0,
                      ms_of: Optional[Callable[[List[int]], List[float]]] = None) -> Dict[str, Any]:
    """Time ``COUNTS`` (``ms_of(counts)``, by default ``conv_pair_ms``) and choose the multiple.

    On the CPU the convolutions run at 14x14 and the latency batch; on CUDA at 28x28 and batch 64
    at least, so that the kernels, not their launch, are timed."""
    size, batch = (14, batch) if device.type == "cpu" else (28, max(batch, 64))
    counts = list(COUNTS)
    ms = (ms_of or partial(conv_pair_ms, device=device, batch=batch, size=size, threads=threads))(counts)
    gflops = {c: 2 * batch * size * size * c * c * (9 + 1) / (t * 1e6) for c, t in zip(counts, ms)}
    multiple, per = choose_multiple(gflops)
    return {"multiple": multiple, "gflops_by_multiple": {str(m): round(g, 2) for m, g in per.items()},
            "gflops_by_count": {str(c): round(g, 2) for c, g in gflops.items()},
            "device": device_label(device, threads), "batch": batch, "size": size}


def channel_multiple(device: torch.device, batch: int = 16, threads: int = 0, cache: Optional[Path] = None,
                     ms_of: Optional[Callable[[List[int]], List[float]]] = None) -> Dict[str, Any]:
    """The profile ``profile_multiples`` measures (``["multiple"]`` is what ``auto`` means), read
    from ``cache`` when this device was measured before."""
    label = device_label(device, threads)
    key = ("multiple", label, batch, str(cache))
    if key not in _MEMO:
        path = cache / "device" / f"round-to-{_slug(label)}-b{batch}.json" if cache else None
        found = _read(path)
        _MEMO[key] = found if found else _write_once(path, profile_multiples(device, batch, threads, ms_of))
    return _MEMO[key]


# --- target: latency --------------------------------------------------------------------------


WEIGHTED = (nn.Conv2d, nn.Linear)


class LatencyTable:
    """Estimated latency of ``model`` with its layers' channel counts changed, from per-layer timings.

    Networks are described by ``{layer name: (input, output channels)}`` of their conv and linear
    layers (``channels(model)``, or ``graph.Graph.pruned_channels(plan)`` without pruning).

    >>> table = LatencyTable(model, x[:1], batch=16)  # doctest: +SKIP
    >>> table.kept(graph.pruned_channels(plan.channels))  # doctest: +SKIP
    0.51
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, batch: int = 16, threads: int = 0,
                 cache: Optional[Path] = None,
                 layer_ms: Optional[Callable[[List[Tuple[Any, ...]]], List[float]]] = None,
                 model_ms: Optional[Callable[[nn.Module], float]] = None):
        self.device = example_input.device
        self.batch, self.threads = batch, threads
        self.label = device_label(self.device, threads)
        self.path = cache / "device" / f"layers-{_slug(self.label)}-b{batch}.json" if cache else None
        # one table per device and batch in this process (a reused worker's trials share it), topped up
        # from the cache file
        self.table: Dict[str, float] = _MEMO.setdefault(("layers", self.label, batch), {})
        self.table.update({k: v for k, v in (_read(self.path) or {}).items() if k not in self.table})
        self._new = 0
        self._layer_ms = layer_ms or self._time_layers
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, WEIGHTED)}
        self.shapes, self.out_area = _spatial_sizes(model, example_input[:1])
        dense = channels(model)
        dense_layers = self.layers_ms(dense)
        self.dense_activations = self.activations(dense)
        total = (model_ms or self._time_model)(model)
        # the rest (batch norm, activations, pooling, additions) scales with the activations kept
        self.rest_ms = max(0.0, total - dense_layers)
        self.dense_ms = dense_layers + self.rest_ms

    def estimate(self, shapes: Dict[str, Tuple[int, int]]) -> float:
        """Milliseconds a forward of the network with these channel counts is estimated to take."""
        return self.layers_ms(shapes) + self.rest_ms * self.activations(shapes) / max(self.dense_activations, 1)

    def kept(self, shapes: Dict[str, Tuple[int, int]]) -> float:
        """The fraction of the dense network's estimated latency these channel counts keep."""
        return self.estimate(shapes) / self.dense_ms

    def layers_ms(self, shapes: Dict[str, Tuple[int, int]]) -> float:
        keys = [self._key(name, *shapes[name]) for name in self.layers]
        missing = sorted({k for k in keys if k not in self.table})
        if missing:
            for k, ms in zip(missing, self._layer_ms([_parse(k) for k in missing])):
                self.table[k] = ms
            self._new += len(missing)
        return sum(self.table[k] for k in keys)

    def activations(self, shapes: Dict[str, Tuple[int, int]]) -> float:
        """Output elements of the conv and linear layers per image (what the other ops touch)."""
        return float(sum(shapes[name][1] * self.out_area[name] for name in self.layers))

    def save(self) -> None:
        """Merge the timings measured here into the cache file (figures already there stay)."""
        if self.path is None or not self._new:
            return
        _atomic_write(self.path, {**self.table, **(_read(self.path) or {})})
        self._new = 0

    def _key(self, name: str, cin: int, cout: int) -> str:
        m = self.layers[name]
        if isinstance(m, nn.Linear):
            return f"linear:{cin}:{cout}:{int(m.bias is not None)}"
        h, w = self.shapes[name]
        k, s, p, d = (m.kernel_size, m.stride, m.padding, m.dilation)
        groups = cin if m.groups > 1 and m.groups == m.in_channels else m.groups  # depthwise stays depthwise
        return (f"conv:{cin}:{cout}:{k[0]}x{k[1]}:s{s[0]}x{s[1]}:p{p[0]}x{p[1]}:"
                f"d{d[0]}x{d[1]}:g{groups}:{int(m.bias is not None)}:{h}x{w}")

    def _time_layers(self, specs: List[Tuple[Any, ...]]) -> List[float]:
        fns = []
        for spec in specs:
            layer, x = _build(spec, self.batch, self.device)
            fns.append(partial(layer, x))
        return time_min_ms(fns, self.device, threads=self.threads)

    def _time_model(self, model: nn.Module) -> float:
        m = copy.deepcopy(model).eval()
        x = torch.randn(self.batch, *self.shapes[""], device=self.device)
        if x.dim() == 4:
            m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        return time_min_ms([partial(m, x)], self.device, repeats=3, warmup=1, threads=self.threads)[0]


def channels(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """{name: (input, output channels)} of ``model``'s conv and linear layers (features for linear)."""
    return {n: (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)
            for n, m in model.named_modules() if isinstance(m, WEIGHTED)}


def _spatial_sizes(model: nn.Module, x: torch.Tensor) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, int]]:
    """Each conv's input size ((1, 1) for linear layers; ``""`` holds the image's shape) and each
    layer's output positions per channel (H x W; 1 for linear layers), read from one forward."""
    shapes: Dict[str, Tuple[int, ...]] = {"": tuple(x.shape[1:])}
    out_area: Dict[str, int] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, WEIGHTED):
            def hook(mod, inp, out, name=name):
                conv = isinstance(mod, nn.Conv2d)
                shapes[name] = tuple(inp[0].shape[-2:]) if conv else (1, 1)
                out_area[name] = out.shape[-2] * out.shape[-1] if conv else 1
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for hk in hooks:
            hk.remove()
    return shapes, out_area


def _parse(key: str) -> Tuple[Any, ...]:
    kind, *rest = key.split(":")
    if kind == "linear":
        return ("linear", int(rest[0]), int(rest[1]), bool(int(rest[2])))
    cin, cout, k, s, p, d, g, bias, hw = rest
    pair = lambda t: tuple(int(v) for v in t.lstrip("spd").split("x"))  # noqa: E731
    return ("conv", int(cin), int(cout), pair(k), pair(s), pair(p), pair(d), int(g[1:]), bool(int(bias)), pair(hw))


def _build(spec: Tuple[Any, ...], batch: int, device: torch.device) -> Tuple[nn.Module, torch.Tensor]:
    if spec[0] == "linear":
        _, fin, fout, bias = spec
        return nn.Linear(fin, fout, bias=bias).to(device).eval(), torch.randn(batch, fin, device=device)
    _, cin, cout, k, s, p, d, g, bias, (h, w) = spec
    layer = nn.Conv2d(cin, cout, k, s, p, d, g, bias=bias).to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, cin, h, w, device=device).contiguous(memory_format=torch.channels_last)
    return layer, x


# --- the cache ----------------------------------------------------------------------------------


def _slug(text: str) -> str:
    short = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60]
    return f"{short}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _read(path: Optional[Path]) -> Optional[Dict[str, Any]]:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # a torn or foreign file: measure again
        return None


def _atomic_write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _write_once(path: Optional[Path], data: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``data`` unless another process wrote the file first; return what the file holds."""
    if path is None:
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    try:
        os.link(tmp, path)  # atomic and exclusive: fails if a file is already there
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links
        if not path.exists():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path) or data
