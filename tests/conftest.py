"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Torch on one thread: on a shared 2-core machine a second thread made one rebuild take 6 s
    instead of 0.2 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests run where CUDA is visible and are skipped, with one line saying so, elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def isolated_registries():
    """The registries and loaded plug-ins as they were before the module: a plug-in a test module
    registers (through prune_core.register_*, or a sweep's plugins:) does not leak into the next,
    whose contract tests iterate over the built-ins."""
    import sys

    from prune_core import plugins
    from prune_core.data import DATASETS
    from prune_core.models import MODELS
    from prune_core.pruning import CRITERIA, METHODS

    registries = (METHODS, CRITERIA, MODELS, DATASETS, plugins._LOADED)
    saved = [dict(r) for r in registries]
    yield
    loaded = set(plugins._LOADED.values()) - set(saved[-1].values())
    for registry, before in zip(registries, saved):
        registry.clear()
        registry.update(before)
    for name in loaded:  # a plug-in file imported again later registers its names again
        sys.modules.pop(name, None)
