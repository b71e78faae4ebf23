"""``bench/gpu_sweep.sh`` without a GPU or a network: packing splits a wheel into parts and writes
their digests; on the node the parts are joined, checked, installed into a fresh target and
imported; a corrupt part, an unmet requirement and a bad argument each end in one line. Two wheels
built here stand in for Ray's and the project's (the real set, packed from the registry, was
installed and imported the same way: README, "Running on GPUs"). And the summary's reading of a
GPU sweep's trials."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_sweep.sh"
sys.path.insert(0, str(ROOT / "bench"))
from gpu_sweep_summary import main as summary  # noqa: E402


def wheel(folder: Path, name: str, files: dict, requires: tuple = ()) -> Path:
    """A minimal pure-Python wheel of ``name`` 1.0 holding ``files`` ({path: bytes})."""
    info = f"{name}-1.0.dist-info"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n".format(name) + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    content = {**files, f"{info}/METADATA": meta.encode(),
               f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},"
                     f"{len(b)}\n" for p, b in content.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, b in {**content, f"{info}/RECORD": record.encode()}.items():
            zf.writestr(p, b)
    return path


def run(*args: str, env: dict = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--python", sys.executable, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def packed(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel(wheels, "toy_big", {"toy_big/__init__.py": b"VALUE = 1\n", "toy_big/blob.bin": os.urandom(250_000)})
    wheel(wheels, "toy_small", {"toy_small/__init__.py": b"from toy_big import VALUE\n"}, requires=("toy_big>=1.0",))
    done = run("--pack", str(wheels), "--no-download", env={"PART_SIZE": "100000"})
    assert done.returncode == 0, done.stderr
    assert "split toy_big-1.0-py3-none-any.whl (0 MB) into 3 parts" in done.stdout
    assert "packed: 2 wheels" in done.stdout and "(1 split into parts of at most 100000 bytes)" in done.stdout
    parts = sorted(p.name for p in wheels.glob("toy_big*"))
    assert parts == [f"toy_big-1.0-py3-none-any.whl.part-0{i}" for i in range(3)]
    assert all((wheels / p).stat().st_size <= 100_000 for p in parts)
    sums = (wheels / "SHA256SUMS").read_text().splitlines()
    assert sorted(ln.split()[1] for ln in sums) == ["toy_big-1.0-py3-none-any.whl", "toy_small-1.0-py3-none-any.whl"]
    return wheels


def test_split_wheels_are_joined_checked_installed_into_a_fresh_target_and_imported(packed, tmp_path):
    out = tmp_path / "out"
    env = {"OUT": str(out), "GPU_SWEEP_IMPORTS": "toy_big toy_small"}
    done = run("--wheels", str(packed), "--dry-run", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert "joined toy_big-1.0-py3-none-any.whl from 3 parts" in lines
    assert "wheels: 2 from {} (1 joined from parts), every one matching SHA256SUMS".format(packed) in lines
    assert any(ln.startswith(f"installed: 2 wheels into {out}/site in ") for ln in lines), lines
    check = next(ln for ln in lines if ln.startswith("requirements: "))
    # the project's modules from the target, PyTorch from the node's own Python
    assert check.startswith("requirements: all 2 met; imports: toy_big 1.0 (target), toy_small 1.0 (target), torch ")
    assert check.endswith(" (node)")
    assert lines[-1] == "dry run: the install check passed; nothing else ran"
    assert (out / "site" / "toy_big" / "blob.bin").stat().st_size == 250_000  # the joined wheel, whole
    # again: a fresh target each time, the same answer
    again = run("--wheels", str(packed), "--dry-run", env=env, cwd=tmp_path).stdout
    assert re.sub(r" in \d+ s ", " ", again) == re.sub(r" in \d+ s ", " ", done.stdout)
    # without --dry-run on a machine without CUDA the install check is all, and it says so
    done = run("--wheels", str(packed), env=env, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.splitlines()[-1].startswith("no CUDA device"), done.stdout


def test_a_corrupt_part_an_unmet_requirement_and_bad_arguments_end_in_one_line(packed, tmp_path):
    env = {"OUT": str(tmp_path / "out"), "GPU_SWEEP_IMPORTS": "toy_big"}
    part = packed / "toy_big-1.0-py3-none-any.whl.part-01"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    done = run("--wheels", str(packed), "--dry-run", env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"bench/gpu_sweep.sh: error: --wheels {packed}: toy_big-1.0-py3-none-any.whl does not "
                           "match SHA256SUMS (a part missing, cut short or corrupt); copy it again\n")
    part.unlink()  # a lost part: the same line
    assert "toy_big-1.0-py3-none-any.whl does not match SHA256SUMS" in run("--wheels", str(packed), "--dry-run",
                                                                            env=env).stderr
    # a wheel whose requirement is not in the set
    lone = tmp_path / "lone"
    lone.mkdir()
    wheel(lone, "toy_needy", {"toy_needy/__init__.py": b""}, requires=("toy_absent>=2",))
    done = run("--wheels", str(lone), "--dry-run", env={**env, "GPU_SWEEP_IMPORTS": "toy_needy"})
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("bench/gpu_sweep.sh: error: the installed set does not work: unmet: toy_needy "
                                  "needs toy_absent>=2 (not installed)"), done.stderr
    for args, words in ((["--frobnicate"], "unknown argument '--frobnicate'; expected --pack DIR"),
                        (["--wheels", str(tmp_path / "nowhere"), "--dry-run"], "no such folder; pack one"),
                        (["--wheels", str(tmp_path / "out"), "--dry-run"], "no wheels (*.whl or *.whl.part-00)")):
        (tmp_path / "out").mkdir(exist_ok=True)
        done = run(*args, env=env)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr


def test_the_summary_counts_trials_per_gpu_and_sets_gpu_accuracy_beside_the_cpus(tmp_path, capsys):
    def trial(exp: Path, name: str, ratio: float, acc: float, gpu: str = "", start: float = 0.0, secs: float = 0.0):
        (exp / name).mkdir(parents=True)
        (exp / name / "params.json").write_text(json.dumps({"prune.ratio": ratio}))
        final = {"stage": "done", "acc_final": acc, "flops_kept_dense": 1 - ratio, "node_id": "abcdef0123",
                 "gpu_ids": gpu, "started_at": 1000.0 + start, "time_since_restore": secs}
        (exp / name / "result.json").write_text(json.dumps({"stage": "finetune"}) + "\n" + json.dumps(final) + "\n")

    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    for i, (g, start) in enumerate((("0", 0), ("0", 1), ("1", 0), ("0", 11))):  # GPU 0: two at once, then one
        trial(gpu, f"t{i}", 0.1 * (i + 1), 97.0 + i, g, start, secs=10)
        trial(cpu, f"t{i}", 0.1 * (i + 1), 97.5 + i)
    util = tmp_path / "util.csv"
    util.write_text("2026/12/05 10:00:00.000, 0, 40, 1024\n2026/12/05 10:00:00.500, 0, 80, 3072\n")
    assert summary(["--gpu", str(gpu), "--cpu", str(cpu), "--util", str(util)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "GPU sweep: 4 trials finished in 21 s, at most 3 at once"
    assert lines[1:3] == ["  node abcdef01 GPU 0: 3 trials, at most 2 at once", "  node abcdef01 GPU 1: 1 trials, at most 1 at once"]
    assert lines[3] == ("GPU utilisation over the sweep: GPU 0: mean 60 %, max 80 %, memory up to 3.0 GiB "
                        "(2 samples, 0.5 s apart)")
    assert lines[-1] == "  4 trials on both: mean |GPU - CPU| 0.50 points, largest -0.50"
    row = next(ln for ln in lines if ln.strip().startswith("0.2 "))
    assert row.split()[1:4] == ["98.00", "98.50", "-0.50"]


def test_the_pack_keeps_what_the_node_has_and_never_pytorchs_stack():
    """What ``--pack`` downloads from pip's resolution report, given the node's ``pip freeze``
    (the resolution itself needs the registry: run by hand, README "Running on GPUs")."""
    from wheelset import constraints, select

    freeze = ["numpy==2.4.6", "torch==2.14.1+cu130", "nvidia-cublas==13.1.1.3", "cuda-toolkit==13.0.3.0",
              "Pillow==13.0.0", "-e git+https://example.org/x.git#egg=x", "local @ file:///tmp/local.whl", "# comment"]
    assert constraints(freeze) == ["numpy==2.4.6", "Pillow==13.0.0"]
    resolved = [("prune-sweep", "0.1.0"), ("torch", "2.14.1"), ("nvidia-cudnn-cu13", "9.24.0.43"), ("triton", "3.8.0"),
                ("numpy", "2.4.6"), ("pillow", "13.0.0"), ("pandas", "3.1.1"), ("ray", "2.60.0"), ("MarkupSafe", "3.0.4")]
    report = {"install": [{"metadata": {"name": n, "version": v}} for n, v in resolved]}
    todo, kept = select(report, ["numpy==2.4.6", "pillow==12.0.0", "markupsafe==3.0.4"])
    assert todo == ["pillow==13.0.0", "pandas==3.1.1", "ray==2.60.0"] and kept == 2  # numpy and MarkupSafe
