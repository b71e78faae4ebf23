"""What a run was made with: Python and library versions, the device, and the project's git commit
when it runs from a checkout. ``prune-core`` writes it as ``provenance.json`` into each run
directory, ``launch.py`` into each experiment directory (the driver's and every node's), and the
report shows it among its settings.

Versions come from the installed distributions' metadata (``importlib.metadata``): nothing is
imported, so recording them costs milliseconds and works on a node that never imported Ray.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

FILE = "provenance.json"
# the distributions whose versions change results: the stack a trial runs on, and this project
PACKAGES = ("torch", "torchvision", "ray", "optuna", "torch-pruning", "prune-sweep")


def versions() -> Dict[str, Optional[str]]:
    """Python's version and each of ``PACKAGES``' (None when not installed)."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for dist in PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_name(device: str = "cpu") -> str:
    """The accelerator a run uses (the CUDA device's name) or the CPU's model."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def git_commit(package_dir: Optional[Path] = None) -> Optional[str]:
    """The commit of the checkout this code runs from (``-dirty`` when files differ from it); None
    for an installed wheel, or where git is absent. A git repository that merely contains the
    environment (a venv inside another project) does not count: its top level must hold this very
    package."""
    here = Path(package_dir or Path(__file__).resolve().parent)
    try:
        top = _git(here, "rev-parse", "--show-toplevel")
        if top is None or not (Path(top) / here.name / "__init__.py").resolve() == (here / "__init__.py").resolve():
            return None
        commit = _git(here, "rev-parse", "HEAD")
        dirty = _git(here, "status", "--porcelain", "--untracked-files=no")
    except OSError:  # no git
        return None
    return None if commit is None else commit + ("-dirty" if dirty else "")


def _git(cwd: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def record(device: str = "cpu") -> Dict[str, Any]:
    """This process's provenance: when, where (host, OS, device), with what (versions, commit,
    the plug-ins it imported with their files' digests)."""
    from .plugins import loaded

    return {"recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
            "platform": platform.platform(), "device": device, "device_name": device_name(device),
            "versions": versions(), "commit": git_commit(), "plugins": loaded()}


def write(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, through a temporary name (never half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
