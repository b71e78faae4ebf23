"""CUDA paths: the rebuild check under PyTorch's TF32 defaults, AMP training in channels_last (bf16,
and fp16 with its gradient scaler), a whole experiment and two conv stacks measured with CUDA
events, and two sweep trials sharing one GPU. Skipped without a CUDA device (``pytest -m gpu``);
``tests/test_gpu_offline.py`` runs the device-independent helpers on the CPU."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import yaml
from torch import nn

from prune_core import SMOKE, ExperimentConfig, run
from prune_core.config import TrainConfig
from prune_core.data import load_data
from prune_core.metrics import time_interleaved
from prune_core.models import build_model
from prune_core.pruning import PruneContext, prune_model, rebuild
from prune_core.train import History, amp_dtype, fit, seed_everything

pytestmark = pytest.mark.gpu


def test_channel_rebuild_passes_its_check_with_tf32_on():
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_model("resnet20", 10, 3, 32).to(device)
    x = torch.randn(8, 3, 32, 32, device=device)
    cfg = ExperimentConfig.from_dict({"model.name": "resnet20", "prune.method": "channel", "prune.ratio": 0.5})
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default, which the check must not depend on
    result = rebuild(model, prune_model(model, PruneContext(cfg, example_input=x)), x)
    assert result.max_abs_diff <= 1e-4
    assert torch.backends.cudnn.allow_tf32  # restored for training


@pytest.mark.parametrize("method", ["channel", "imp", "snip"])
def test_experiment_runs_on_cuda_with_amp(method, tmp_path):
    cfg = ExperimentConfig.from_dict({**SMOKE, "runtime.device": "cuda", "runtime.amp": True,
                                      "runtime.cache_dir": str(tmp_path), "prune.method": method,
                                      "prune.ratio": 0.5, "data.limit_train": 512})
    assert amp_dtype(torch.device("cuda"), True) in (torch.bfloat16, torch.float16)
    m = run(cfg, log=lambda _msg: None)
    assert m["latency_device"] == torch.cuda.get_device_name(0)
    assert m["latency_ms_final"] > 0 and math.isfinite(m["acc_final"])
    assert m["rebuild_max_abs_diff"] <= 1e-4
    assert m["flops_nz_final"] < m["flops_base"]


# --- helpers that take a device: the CPU tests (test_gpu_offline.py) run them too ---------------


def train_watched(device: torch.device, tmp_path: Path, *, choice: str = "auto", cpu_bf16: bool = False,
                  epochs: int = 3, steps: int = 16) -> Tuple[nn.Module, History, List[dict], dict]:
    """``fit`` resnet20 (width 0.5) on 1024 mnist5k digits with ``runtime.amp_dtype`` ``choice``,
    watching a block's second convolution during training steps. Returns the model, its history,
    one record per watched training forward (output dtype; whether input and weight were
    channels_last) and the last epoch's checkpoint, which holds the gradient scaler's state."""
    cfg = ExperimentConfig.from_dict({"data.limit_train": 1024, "data.batch_size": 128})
    data = load_data(cfg.data, device, 0)
    seed_everything(0)
    model = build_model("resnet20", data.num_classes, *data.input_shape[:2], width=0.5)
    seen: List[dict] = []
    conv = model.layer1[0].conv2  # 8 input channels: channels_last is a real layout here, not a no-op

    def watch(module, inputs, out):
        if module.training:
            seen.append({"dtype": out.dtype, "input_cl": inputs[0].is_contiguous(memory_format=torch.channels_last),
                         "weight_cl": module.weight.is_contiguous(memory_format=torch.channels_last),
                         "device": out.device.type})

    handle = conv.register_forward_hook(watch)
    try:
        history = fit(model, TrainConfig(epochs=epochs, max_steps=steps, lr=0.05), data, device=device,
                      cpu_bf16=cpu_bf16, amp_choice=choice, checkpoint=tmp_path / "fit.pt")
    finally:
        handle.remove()
    return model, history, seen, torch.load(tmp_path / "fit.pt", weights_only=True)


def assert_learned(history: History, seen: List[dict], dtype: torch.dtype, device_type: str, *, fall: float = 0.0,
                   min_val_acc: float = 0.0) -> None:
    """Finite losses, the last epoch's at least ``fall`` (a fraction) below the first's, validation
    accuracy above ``min_val_acc``, and every watched forward in ``dtype`` on ``device_type`` and
    in channels_last (input and weight)."""
    losses = [e["train_loss"] for e in history.epochs]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < (1 - fall) * losses[0], losses
    assert history.epochs[-1]["val_acc"] > min_val_acc, history.epochs[-1]
    assert seen and {s["dtype"] for s in seen} == {dtype}
    assert all(s["input_cl"] and s["weight_cl"] and s["device"] == device_type for s in seen)


def format_gap(device: torch.device) -> Dict[str, float]:
    """resnet20 in the contiguous format and in channels_last, from the same weights and input in
    fp32 (TF32 off): the largest difference of the training-mode logits, and of every convolution's
    gradient of an eval-mode cross-entropy (in training mode batch norm's backward cancels so much
    that fp32 itself is 1e-2 from fp64 there, in either format), each relative to its largest
    value. Also asserts that the channels_last copy's weights and activations are in that format."""
    torch.manual_seed(0)
    plain = build_model("resnet20", 10, 3, 32).to(device)
    last = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    x = torch.randn(16, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (16,), device=device)
    layouts: List[bool] = []
    handle = last.layer2[0].conv1.register_forward_pre_hook(
        lambda m, inp: layouts.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        logits, grads = [], []
        for model, inp in ((plain, x), (last, x.contiguous(memory_format=torch.channels_last))):
            with torch.no_grad():
                logits.append(model.train()(inp))
            nn.functional.cross_entropy(model.eval()(inp), y).backward()
            grads.append({n: m.weight.grad for n, m in model.named_modules() if isinstance(m, nn.Conv2d)})
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        handle.remove()
    assert layouts == [True, True]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in last.modules() if isinstance(m, nn.Conv2d))
    assert not plain.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / a.abs().max())

    return {"logits": rel(*logits), "grad": max(rel(grads[0][n], grads[1][n]) for n in grads[0])}


# --- CUDA only ----------------------------------------------------------------------------------


@pytest.mark.parametrize("choice,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_trains_in_the_dtype_asked_for(choice, dtype, tmp_path):
    model, history, seen, state = train_watched(torch.device("cuda"), tmp_path, choice=choice, steps=30)
    assert_learned(history, seen, dtype, "cuda", fall=0.1, min_val_acc=20)  # chance: 10 %
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    if choice == "fp16":  # the gradient scaler ran: its state is saved, with a finite positive scale
        assert 0 < state["scaler"]["scale"] < math.inf, state["scaler"]
    else:  # bf16 needs no scaler: a disabled GradScaler saves an empty state
        assert state["scaler"] == {}


def test_training_runs_in_channels_last_and_matches_the_contiguous_format(tmp_path):
    model, history, seen, _ = train_watched(torch.device("cuda"), tmp_path, epochs=1, steps=4)
    assert len(seen) == 4 and all(s["input_cl"] and s["weight_cl"] for s in seen)
    assert model.layer1[0].conv2.weight.is_contiguous()  # fit hands the model back in the usual format
    gap = format_gap(torch.device("cuda"))
    assert gap["logits"] <= 1e-4 and gap["grad"] <= 1e-4, gap


def _conv_stack(layers: int) -> nn.Module:
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())])


def test_latency_on_cuda_is_timed_with_cuda_events(monkeypatch):
    events, syncs = [], []
    real_event, real_sync = torch.cuda.Event, torch.cuda.synchronize

    def event(*args, **kwargs):
        events.append(kwargs.get("enable_timing"))
        return real_event(*args, **kwargs)

    def synchronize(*args, **kwargs):
        syncs.append(1)
        return real_sync(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "Event", event)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    torch.manual_seed(0)
    shallow, deep = _conv_stack(4).cuda(), _conv_stack(8).cuda()  # the deep one does twice the work
    repeats, batch = 20, 16
    lat = time_interleaved([shallow, deep], (64, 56, 56), batch=batch, repeats=repeats, warmup=3)
    # a start and an end event per timed forward, each waited for: 2 models x 2 batch sizes x repeats
    assert events == [True] * (2 * 2 * 2 * repeats)
    assert len(syncs) >= 2 * 2 * repeats
    for one in lat:
        assert one.device == torch.cuda.get_device_name(0)
        assert all(0 < v < 1e3 and math.isfinite(v) for v in (one.ms_b1, one.ms_batch))
        assert one.iqr_b1 >= 0 and one.iqr_batch >= 0
    assert lat[1].ms_batch > 1.4 * lat[0].ms_batch, lat
    assert lat[1].ms_b1 > lat[0].ms_b1, lat


@pytest.fixture
def ray_with_one_gpu():
    ray = pytest.importorskip("ray", reason="Ray is not installed here (the sweep extra)")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_two_trials_share_one_gpu(ray_with_one_gpu, tmp_path):
    from _sweeps import trial_rows

    from prune_sweep.launch_cli import main

    sweep = {"name": "half_gpu",
             "base": {"data": {"name": "mnist5k", "limit_train": 512, "batch_size": 64},
                      "model": {"name": "resnet20", "width": 0.5},
                      "train": {"epochs": 1, "max_steps": 3},
                      "finetune": {"epochs": 4, "max_steps": 40},  # long enough to overlap by seconds
                      "runtime": {"device": "auto", "latency_repeats": 50, "latency_batch": 8}},
             "space": {"prune.ratio": {"grid": [0.3, 0.6]}},
             "search": {"algorithm": "grid", "max_concurrent": 2},
             "resources": {"cpu": 1, "gpu": 0.5}, "max_failures": 0}
    path = tmp_path / "half_gpu.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main([str(path), "--storage", str(tmp_path), "--no-quiet-latency"]) == 0
    runs = trial_rows(tmp_path / "half_gpu")
    assert len(runs) == 2
    done = {name: [r for r in rows if r.get("stage") == "done"] for name, rows in runs.items()}
    assert all(len(d) == 1 for d in done.values()), {n: [r.get("stage") for r in rows] for n, rows in runs.items()}
    gpu = torch.cuda.get_device_name(0)
    assert [d[0]["latency_device"] for d in done.values()] == [gpu, gpu]
    assert len({d[0]["pid"] for d in done.values()}) == 2  # two workers at once, not one reused
    # each trial ran from (last report - time_total_s) to its last report; Ray's timestamps are whole
    # seconds, so a bound may be up to 1 s early: the overlap must hold with that slack
    spans = []
    for rows in runs.values():
        last = rows[-1]
        spans.append((last["timestamp"] + 1 - last["time_total_s"], last["timestamp"]))
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, spans


def test_nm_linear_layers_run_as_semi_structured_tensors_and_compute_what_the_masked_model_does():
    """``nm``'s 2:4 linear layers as torch.sparse.to_sparse_semi_structured (fp16) against the dense
    masked model; the timings are printed beside each other, the speedup is not asserted."""
    from torch.sparse import SparseSemiStructuredTensor
    from torch.utils.benchmark import Timer

    from prune_core.pruning.nm import semi_structured

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 sparse tensor cores need compute capability 8.0 or more")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024), nn.ReLU(), nn.Linear(1024, 16))
    x = torch.randn(64, 1024)
    plan = prune_model(net, PruneContext(ExperimentConfig.from_dict({"prune.method": "nm"}), example_input=x))
    dense = rebuild(net, plan, x).model.to("cuda", torch.float16).eval()
    sparse = semi_structured(net, torch.float16)
    assert isinstance(sparse[0].weight, SparseSemiStructuredTensor)
    assert isinstance(sparse[2].weight, SparseSemiStructuredTensor)
    assert not isinstance(sparse[4].weight, SparseSemiStructuredTensor)  # 16 x 1024: below its shapes, dense
    xc = torch.randn(256, 1024, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        torch.testing.assert_close(sparse(xc), dense(xc), rtol=2e-2, atol=2e-2)
        ms = [Timer("m(x)", globals={"m": m, "x": xc}).blocked_autorange(min_run_time=0.5).median * 1e3
              for m in (dense, sparse)]
    print(f"2:4 linear stack, batch 256, fp16: dense {ms[0]:.3f} ms, semi-structured {ms[1]:.3f} ms, "
          f"speedup {ms[0] / ms[1]:.2f}x")
