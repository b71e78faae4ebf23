"""The package as a user installs it: a wheel built from this checkout, installed (not editable) in
a fresh virtual environment, runs its three entry points from a folder outside the checkout."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("prune_sweep-*.whl"))
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    # the dependencies (torch, ray, ...) come from this environment by a path line, which does not run
    # its .pth files: the editable install of this checkout stays invisible to the new environment
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, cwd=tmp)
    return env_dir


def run(venv, *cmd, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_installed_packages_come_from_the_wheel(venv, tmp_path):
    out = run(venv, "python", "-c", "import prune_core, prune_sweep.spec as s; print(prune_core.__file__); "
              "print(s.DEFAULT_SWEEP)", cwd=tmp_path)
    core, sweep = out.stdout.split()
    assert Path(core).is_relative_to(venv) and Path(sweep).is_relative_to(venv), out.stdout
    assert Path(sweep).is_file()


def test_prune_sweep_plans_its_default_sweep(venv, tmp_path):
    out = run(venv, "prune-sweep", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "quickstart" in out.stdout and "trials" in out.stdout


def test_prune_sweep_smoke_test(venv, tmp_path):
    out = run(venv, "prune-sweep", "--smoke-test", "--storage", str(tmp_path / "runs"), "--no-dashboard", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert list((tmp_path / "runs").glob("*/*/result.json")), "trials wrote their results"


def test_prune_analyze_smoke_test(venv, tmp_path):
    out = run(venv, "prune-analyze", "--smoke-test", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "smoke test passed" in out.stdout
