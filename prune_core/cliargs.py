"""What the three command lines (``prune-core``, ``prune-sweep``, ``prune-analyze``) share: every
flag's help ends with its default, the config's own for a flag that sets a config key, and
``--version``."""

from __future__ import annotations

import argparse
from importlib import import_module, metadata
from typing import Any

from .sections import DEFAULTS

DISTRIBUTION = "prune-sweep"  # setup.cfg's [metadata] name


def version(package: str) -> str:
    """The installed distribution's version; else ``package.__version__`` where it has one."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return str(getattr(import_module(package), "__version__", "0+unknown"))


def add_version(parser: argparse.ArgumentParser, package: str) -> None:
    """``--version``: print ``<prog> <version>`` and exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {version(package)}",
                        help="print the program's name and version and exit")


def shown(value: Any) -> str:
    """A default as ``--set`` spells it: true/false, none for an empty text or list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value in ("", (), []) else str(value)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's ``(default: ...)`` after every flag's help, except where the help already says
    its default. A flag that sets a config key (its dotted dest) has no argparse default: the
    config supplies it, so its help shows ``prune_core.sections.DEFAULTS``; a switch names the key
    it sets (``--global-pruning``: ``prune.scope=local`` unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text:
            return text
        if action.dest in DEFAULTS and action.default is None:
            value = shown(DEFAULTS[action.dest]).replace("%", "%%")
            return f"{text} (default: {action.dest}={value})" if action.nargs == 0 else f"{text} (default: {value})"
        if action.nargs == 0 and action.default is False:  # a store_true switch
            return f"{text} (default: off)"
        return super()._get_help_string(action) or ""
