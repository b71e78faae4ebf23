"""The README says what the code does: every metric, method, criterion, dataset and model."""

from pathlib import Path

import pytest

from prune_core import CRITERIA, DATASETS, METHODS, METRICS, MODELS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("key", sorted(METRICS))
def test_every_metric_is_documented(key):
    assert f"| `{key}` | {METRICS[key]} |" in README


@pytest.mark.parametrize("name", sorted({*METHODS, *CRITERIA, *DATASETS, *MODELS}))
def test_every_registry_entry_is_documented(name):
    assert f"`{name}`" in README


def test_readme_opens_with_the_two_commands_and_ci_runs_them():
    setup = 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"'
    blocks = README.split("```bash\n")
    assert blocks[1].startswith(setup + " && .venv/bin/python launch.py")
    assert blocks[2].startswith(".venv/bin/python -m pytest\n")
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert setup in ci and "\n.venv/bin/python -m pytest\n" in ci
