"""YAML as prune-sweep reads it from users and from shared storage: bounded, so that no file can
make a reader hang, run out of memory or overflow the stack, and strict, so that nothing a file
says is silently dropped.

``load_yaml`` refuses, in one line naming the file and (where it has one) the line:

- a file over ``MAX_BYTES`` (1 MiB; the largest shipped sweep is under 6 KiB);
- bytes that are not UTF-8 text (a binary file, UTF-16);
- aliases (``*name``) that stand for more than ``MAX_NODES`` values in all, each counted as often
  as it is used: a "billion laughs" file expands a few hundred bytes into gigabytes through
  nested aliases, and every reader that walks or prints the value pays for all of them;
- nesting deeper than ``MAX_DEPTH`` levels;
- a key given twice in one mapping (PyYAML lets the last one win).

Everything else is PyYAML's ``SafeLoader``: no Python object tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import yaml

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 50


class YamlError(ValueError):
    """A file ``load_yaml`` refuses; the message is one line without the file's name."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases, bounds nesting and refuses duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0  # values composed so far, an alias counting every value it stands for
        self._depth = 0
        self._aliases = False
        self._sizes: Dict[int, int] = {}

    def _size(self, node: Any) -> int:
        """Values ``node`` stands for, itself included (an alias's node, counted in full)."""
        key = id(node)
        if key not in self._sizes:
            self._sizes[key] = 1  # a node cannot contain itself while being counted
            children = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else ()
            flat = [c for pair in children for c in pair] if isinstance(node, yaml.MappingNode) else children
            self._sizes[key] = 1 + sum(self._size(c) for c in flat)
        return self._sizes[key]

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._nodes += self._size(node) if alias else 1
        self._aliases = self._aliases or alias
        if self._nodes > MAX_NODES:
            how = " once aliases (*name) are expanded" if self._aliases else ""
            raise YamlError(f"line {mark.line + 1}: more than {MAX_NODES:,} values{how}; expected at most "
                            f"{MAX_NODES:,}")
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):  # the node's own keys; merged ones (<<) may be overridden
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeConstructor names it
                    break
                if duplicate:
                    raise YamlError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice in one "
                                    "mapping; expected each key once")
        return super().construct_mapping(node, deep=deep)


def parse_yaml(data: Union[str, bytes]) -> Any:
    """The value of one YAML document in ``data``, bounded as the module says; YamlError otherwise."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise YamlError(f"{len(data):,} bytes; expected a file under {MAX_BYTES:,} bytes")
        if b"\0" in data:
            raise YamlError("binary data (a NUL byte); expected UTF-8 text")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlError(f"not UTF-8 text (byte {exc.start}); expected UTF-8 text") from None
    elif len(data) > MAX_BYTES:
        raise YamlError(f"{len(data):,} characters; expected a file under {MAX_BYTES:,} bytes")
    if "\0" in data:
        raise YamlError("binary data (a NUL byte); expected UTF-8 text")
    loader = None
    try:
        loader = _BoundedLoader(data)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise YamlError(f"not YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise YamlError(f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(path: Union[str, Path]) -> Any:
    """The YAML value in the file at ``path``; OSError when it cannot be read, YamlError when
    ``parse_yaml`` refuses it. At most ``MAX_BYTES`` + 1 bytes are read."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    return parse_yaml(data)


def parse_value(text: str, where: str) -> Any:
    """One YAML value given on a command line (``--set KEY=VALUE``); ConfigError naming ``where``."""
    from prune_core.errors import ConfigError

    try:
        return parse_yaml(text)
    except YamlError as exc:
        raise ConfigError(f"{where}: {exc}") from None
