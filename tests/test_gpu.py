"""CUDA paths: the rebuild check under PyTorch's TF32 defaults, AMP training in channels_last, and
a whole experiment measured with CUDA events. Skipped without a CUDA device (``pytest -m gpu``)."""

import math

import pytest
import torch

from prune_core import SMOKE, ExperimentConfig, run
from prune_core.models import build_model
from prune_core.pruning import PruneContext, prune_model, rebuild
from prune_core.train import amp_dtype

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
