"""provenance.json: what a run was made with (versions, device, commit), as the CLI writes it and
the report shows it."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from prune_core import provenance
from prune_sweep.report import provenance_frame
from prune_sweep.results import _read_launches

ROOT = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_a_record_names_the_versions_the_metadata_gives_and_the_device():
    rec = provenance.record("cpu")
    assert rec["versions"]["python"] == platform.python_version()
    for dist in provenance.PACKAGES:
        try:
            expected = metadata.version(dist)
        except metadata.PackageNotFoundError:
            expected = None
        assert rec["versions"][dist] == expected, dist
    assert rec["versions"]["torch"] and rec["versions"]["ray"]  # installed here: never silently missing
    assert rec["device"] == "cpu" and rec["device_name"] == provenance.cpu_name() != ""
    assert json.loads(json.dumps(rec)) == rec  # plain JSON


@needs_git
def test_the_commit_is_this_checkouts_and_only_for_its_own_package(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert provenance.git_commit().removesuffix("-dirty") == head.stdout.strip()
    # a repository that merely contains a copy of the package (a venv inside another project) does not count
    repo = tmp_path / "other"
    (repo / "env" / "prune_core").mkdir(parents=True)
    (repo / "env" / "prune_core" / "__init__.py").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    assert provenance.git_commit(repo / "env" / "prune_core") is None
    shutil.move(str(repo / "env" / "prune_core"), str(repo / "prune_core"))  # now the package is the repo's own
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "y"], cwd=repo, check=True)
    own = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert provenance.git_commit(repo / "prune_core") == own
    (repo / "prune_core" / "__init__.py").write_text("x = 1\n")
    assert provenance.git_commit(repo / "prune_core") == own + "-dirty"
    assert provenance.git_commit(tmp_path) is None  # no repository at all


def test_the_report_lists_each_launch_and_machine(tmp_path):
    node = provenance.record("cpu")
    launches = [{"resumed": False, "driver": node, "nodes": {"a" * 40: node, "b" * 40: node}},
                {"resumed": True, "driver": node, "nodes": {"a" * 40: node}}]
    (tmp_path / "provenance.json").write_text(json.dumps({"launches": launches}))
    frame = provenance_frame(_read_launches(tmp_path / "provenance.json"))
    assert list(frame["launch"]) == ["1"] * 3 + ["2 (resumed)"] * 2
    assert list(frame["machine"]) == ["driver", "node aaaaaaaa", "node bbbbbbbb", "driver", "node aaaaaaaa"]
    assert all(f"torch {metadata.version('torch')}" in v for v in frame["versions"])
    assert set(frame["device"]) == {provenance.cpu_name()}
    (tmp_path / "provenance.json").write_text("{half")
    assert _read_launches(tmp_path / "provenance.json") == []  # never blocks the analysis
    assert _read_launches(tmp_path / "absent.json") == []
