"""The GPU check's parts that run without a GPU: ``runtime.amp_dtype`` and its resolution (the
CUDA queries stubbed), the helpers of ``tests/test_gpu.py`` on the CPU, and ``bench/gpu.sh``'s one
line on a machine without CUDA."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from test_gpu import assert_learned, format_gap, train_watched

from prune_core.config import ExperimentConfig
from prune_core.errors import ConfigError
from prune_core.train import amp_dtype

ROOT = Path(__file__).resolve().parents[1]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("bf16_gpu", [True, False])
def test_amp_dtype_follows_the_choice_and_the_gpu(bf16_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    assert amp_dtype(CUDA, True) == (torch.bfloat16 if bf16_gpu else torch.float16)  # auto
    assert amp_dtype(CUDA, True, choice="fp16") == torch.float16  # fp16 even where bf16 would do
    assert amp_dtype(CUDA, False, choice="fp16") is None  # runtime.amp off: fp32 whatever the choice
    if bf16_gpu:
        assert amp_dtype(CUDA, True, choice="bf16") == torch.bfloat16
    else:
        with pytest.raises(ConfigError, match=r"^runtime.amp_dtype=bf16: Tesla T4 has no bf16; expected auto or fp16$"):
            amp_dtype(CUDA, True, choice="bf16")
    # the CPU follows runtime.cpu_bf16 alone
    assert amp_dtype(CPU, True, choice="fp16") is None
    assert amp_dtype(CPU, True, cpu_bf16=True, choice="fp16") == torch.bfloat16


def test_amp_dtype_is_a_checked_key_of_the_base():
    cuda = ExperimentConfig.from_dict({"runtime.device": "cuda"})
    assert cuda.runtime.amp_dtype == "auto"
    hashes = {c: cuda.replace(**{"runtime.amp_dtype": c}).base_hash() for c in ("auto", "bf16", "fp16")}
    assert len(set(hashes.values())) == 3  # each trains a base of its own on CUDA
    assert cuda.replace(**{"runtime.amp_dtype": "fp16"}).base_key()["precision"] == "fp16"
    assert cuda.base_key()["precision"] == "amp"  # the default's hash is the one cached bases have
    cpu = ExperimentConfig.from_dict({"runtime.device": "cpu"})
    assert cpu.replace(**{"runtime.amp_dtype": "fp16"}).base_hash() == cpu.base_hash()  # fp32 either way
    with pytest.raises(ConfigError, match=r"^runtime.amp_dtype='fp8': expected one of auto, bf16, fp16$"):
        ExperimentConfig.from_dict({"runtime.amp_dtype": "fp8"})


def test_training_helper_on_the_cpu_in_bf16_without_a_scaler(tmp_path, one_thread):
    model, history, seen, state = train_watched(CPU, tmp_path, cpu_bf16=True, choice="fp16", epochs=2, steps=8)
    assert_learned(history, seen, torch.bfloat16, "cpu")
    assert len(seen) == 16 and state["scaler"] == {}
    assert model.layer1[0].conv2.weight.is_contiguous()  # fit hands the model back in the usual format


def test_formats_agree_on_the_cpu(one_thread):
    gap = format_gap(CPU)
    assert gap["logits"] <= 1e-4 and gap["grad"] <= 1e-4, gap


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is visible: bench/gpu.sh would run the whole check")
def test_gpu_script_says_one_line_and_exits_0_without_cuda(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout == "bench/gpu.sh: skipped: no CUDA device (torch.cuda.is_available() is False)\n"
    assert done.stderr == ""
    assert not (tmp_path / "out").exists()  # nothing written
