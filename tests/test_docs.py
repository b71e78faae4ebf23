"""The README says what the code does: every metric, method, criterion, dataset and model."""

from pathlib import Path

import pytest

from prune_core import CRITERIA, DATASETS, METHODS, METRICS, MODELS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


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


def test_readme_model_table_is_the_coverage_benchmark_s_and_names_every_builder():
    """README's "Which models prune" table is bench/model_coverage.md's, row for row, and has a row for
    every torchvision classification builder (a row that does not prune gives its reason)."""
    torchvision = pytest.importorskip("torchvision")
    bench = (ROOT / "bench" / "model_coverage.md").read_text()
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in bench.splitlines() if line.startswith("| ")]
    section = readme[readme.index("## Which models prune"):]
    section = section[:section.index("\n## ", 1)]
    assert [line for line in section.splitlines() if line.startswith("| ")] == rows
    names = {line.split("|")[1].strip() for line in rows[1:]}
    assert set(torchvision.models.list_models(module=torchvision.models)) <= names
    for line in rows[1:]:
        cell = line.split("|")[3].strip()
        assert cell == "yes" or (cell.startswith("no: ") and len(cell) > 20), line
