"""Pickled objects that run code when they are unpickled: what every ``torch.load`` of prune_core
(``weights_only=True``) must refuse to build."""

import os
import shlex

LOADED = []  # a Marker that was unpickled appends here


def _record(name):
    LOADED.append(name)
    return name


class Shell:
    """Unpickling it runs ``touch <path>`` in a shell: the file appearing proves code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.path))}",)


class Marker:
    """Unpickling it calls a function of this module (recorded in ``LOADED``)."""

    def __reduce__(self):
        return _record, ("marker",)


def payload(touch):
    """Both kinds: a shell command that creates ``touch`` and a recorded call."""
    return {"shell": Shell(touch), "marker": Marker()}
