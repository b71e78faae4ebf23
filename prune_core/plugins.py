"""Plug-ins: modules or ``.py`` files that register methods, criteria, models or datasets through
the same decorators the built-ins use (``prune_core.register_method``, ``register_criterion``,
``register_model``, ``register_dataset``).

``runtime.plugins`` lists them; building an ``ExperimentConfig`` imports them first, so every
process that builds one (the CLI, a launcher's driver, each Ray worker) has them registered before
a name is checked. An installed package can also offer plug-ins through the entry-point group
``prune_sweep.plugins`` (as pytest finds its plug-ins in ``pytest11``): they load with the first
config. Loading is idempotent. A plug-in that fails to import, or registers a name already taken,
raises ``PluginError`` (a ``ConfigError``) in one line naming it.

>>> load_plugins(["examples/bring_your_own.py"])  # doctest: +SKIP
['bring_your_own']
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError
from .sections import is_reference, split_reference

ENTRY_POINT_GROUP = "prune_sweep.plugins"
CONFIG_KEY = "runtime.plugins"
_LOADED: Dict[str, str] = {}  # entry as given -> module name
_DIGESTS: Dict[str, str] = {}  # module name -> its file's digest when this process imported it
_entry_points_loaded = False


class PluginError(ConfigError):
    """A plug-in that could not be loaded. One line naming the plug-in and why."""


def is_file(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def file_reference(value: Any) -> Optional[str]:
    """The ``.py`` file of a ``<file.py>:<callable>`` reference, else None."""
    if not is_reference(value):
        return None
    head = split_reference(value)[0]
    return head if is_file(head) else None


def absolute_reference(value: Any, relative_to: Path) -> Any:
    """``value`` with the relative ``.py`` file of its reference made absolute from ``relative_to``."""
    head = file_reference(value)
    if head is None:
        return value
    return f"{(relative_to / Path(head).expanduser()).resolve()}:{split_reference(value)[1]}"


def reference_target(key: str, name: str) -> Tuple[Any, Any]:
    """(module, attribute) of the reference ``<module or file.py>:<attribute>`` given as config key
    ``key``: the module imported as a plug-in (a file as the module named by its stem), the
    attribute found by its dotted name, or None. A module that does not import is ``ConfigError``
    in one line naming ``key``; what the attribute must be is the caller's to say."""
    head, tail = split_reference(name)
    try:
        module = sys.modules[load_plugins([head])[0]]
    except PluginError as exc:
        raise ConfigError(f"{key}={name!r}: {str(exc).removeprefix(f'plugin {head}: ')}") from None
    obj: Any = module
    for part in tail.split("."):
        obj = getattr(obj, part, None)
    return module, obj


def module_name(entry: str) -> str:
    """The name a plug-in is imported under: a file's stem, or the module name itself."""
    return Path(entry).stem if is_file(entry) else entry


def load_plugins(entries: Sequence[str] = ()) -> List[str]:
    """Import every plug-in of ``entries`` (module names or ``.py`` paths) not imported yet, and
    the installed packages' entry points the first time; returns the module names of ``entries``.

    A ``.py`` file is imported as the module named by its stem, so what it defines pickles by
    reference on every node (a Ray worker where the path does not exist imports that module
    from where the job shipped it: ``shipped_paths``)."""
    _entry_points()
    return [_load(str(e)) for e in entries]


def _entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.value} (entry point {ep.name} of {ENTRY_POINT_GROUP}): "
                              f"{_reason(exc)}") from None


def _load(entry: str) -> str:
    if entry in _LOADED:
        if not _stale(_LOADED[entry]):
            return _LOADED[entry]
        _unload(_LOADED.pop(entry))
    name = module_name(entry)
    try:
        if is_file(entry):
            path = Path(entry).expanduser().resolve()
            if path.is_file():
                _import_file(name, path, entry)
            else:
                try:  # on a Ray node the job's py_modules put the file on sys.path under its stem
                    importlib.import_module(name)
                except ModuleNotFoundError:
                    raise PluginError(f"plugin {entry}: no such file; expected a .py file or an importable "
                                      "module name") from None
        else:
            importlib.import_module(name)
    except PluginError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise PluginError(f"plugin {entry}: no module named {exc.name!r}; expected an importable module "
                              "name or a .py file") from None
        raise PluginError(f"plugin {entry}: {_reason(exc)}") from None
    except BaseException as exc:  # a SystemExit at import time is the plug-in's too; Ctrl-C stays Ctrl-C
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(f"plugin {entry}: {_reason(exc)}") from None
    _LOADED[entry] = name
    _DIGESTS[name] = file_digest(getattr(sys.modules.get(name), "__file__", None))
    return name


def _stale(name: str) -> bool:
    """True when the file of the plug-in module ``name`` changed since this process imported it: a
    long-lived process (a Ray worker that ran an earlier sweep, a notebook) imports it again, so
    the code that runs is the code the base key was hashed from."""
    path = getattr(sys.modules.get(name), "__file__", None)
    return bool(path) and name in _DIGESTS and file_digest(path) != _DIGESTS[name]


def _unload(name: str) -> None:
    from ._registry import forget

    forget(name)  # its models, datasets, methods and criteria register again on import
    sys.modules.pop(name, None)
    _DIGESTS.pop(name, None)


def _import_file(name: str, path: Path, entry: str) -> None:
    """Import ``path`` as module ``name``, unless that name is another module's (imported or not:
    the file would shadow it for the whole process)."""
    existing = sys.modules.get(name)
    where = getattr(existing, "__file__", None) if existing is not None else _origin(name)
    if where and Path(where).resolve() == path:
        if existing is not None:
            return
    elif existing is not None or where:
        raise PluginError(f"plugin {entry}: its module name {name!r} is taken by {where or 'a built-in module'}; "
                          "rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {entry}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before it runs: dataclasses and pickling look it up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _origin(name: str) -> Optional[str]:
    """Where the module ``name`` would be imported from without the plug-in, if anywhere."""
    if not name.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return None if spec is None else (spec.origin or "a namespace package")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def listed_entries(listed: Any, relative_to: Path) -> List[str]:
    """A list of plug-ins as a file gives it (one name, or a list), ``.py`` paths made absolute
    from ``relative_to``; anything else is a ``ConfigError``."""
    listed = [listed] if isinstance(listed, str) else [] if listed is None else listed
    if not isinstance(listed, (list, tuple)) or not all(isinstance(e, str) and e for e in listed):
        raise ConfigError(f"{listed!r}: expected a list of module names or .py files")
    return [str((relative_to / Path(e).expanduser()).resolve()) if is_file(e) else e for e in listed]


def with_plugins(base: Dict[str, Any], listed: Any, flags: Sequence[str], source: str) -> Dict[str, Any]:
    """``base`` (a flat config of a sweep file ``source``) with its plug-ins imported and listed
    under ``runtime.plugins``: the ones it names already (a stored sweep.yaml), the file's
    ``plugins:`` (relative to the file) and ``flags`` (``--plugin``: to the working directory)."""
    here = Path(source).resolve().parent if Path(source).is_file() else Path.cwd()
    entries = [*listed_entries(base.get(CONFIG_KEY), here), *listed_entries(listed, here),
               *listed_entries(list(flags), Path.cwd())]
    if not entries:
        return base
    entries = list(dict.fromkeys(entries))
    load_plugins(entries)
    return {**base, CONFIG_KEY: entries}


def shipped_paths(entries: Sequence[str]) -> List[str]:
    """What a Ray job must carry to other nodes (its ``runtime_env`` ``py_modules``): each ``.py``
    file, and the package directory of each module plug-in that is not installed (not under a
    ``site-packages``); installed packages must be installed on every node."""
    out: List[str] = []
    for entry in entries:
        if is_file(entry):
            out.append(str(Path(entry).expanduser().resolve()))
            continue
        spec = importlib.util.find_spec(entry.split(".")[0])
        origin = _package_dir(spec)
        if origin is not None and "site-packages" not in origin.parts and "dist-packages" not in origin.parts:
            out.append(str(origin))
    return list(dict.fromkeys(out))


def _package_dir(spec: Any) -> Optional[Path]:
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return Path(spec.origin).resolve() if spec.origin and spec.origin.endswith(".py") else None


def file_digest(path: Optional[str]) -> str:
    """The SHA-256 prefix of the file at ``path``; "" where there is none to read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""
    except OSError:
        return ""


def loaded() -> Dict[str, str]:
    """The plug-ins this process imported (entry as given -> ``file_digest`` of the module's file):
    what ``provenance.record`` keeps of them."""
    return {entry: file_digest(getattr(sys.modules.get(name), "__file__", None)) for entry, name in _LOADED.items()}


def code_digest(obj: Any) -> str:
    """A digest of the source file that defines ``obj`` where that is a plug-in (outside
    prune_core), else "": part of a base's key, so an edited model or dataset plug-in never reuses
    a base trained with its earlier code. A built-in's is "": its code is the installed version's."""
    module = getattr(obj, "__module__", "") or ""
    if module == "prune_core" or module.startswith("prune_core."):
        return ""
    try:
        return file_digest(inspect.getsourcefile(obj))
    except TypeError:  # defined outside any file
        return ""
