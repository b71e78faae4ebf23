"""The wheel set of ``bench/gpu_sweep.sh``: which wheels ``--pack`` downloads for an offline GPU
node, and whether what the node installed from them works.

    python bench/wheelset.py constraints node.txt        # the node's pins pip may keep (stdout)
    python bench/wheelset.py select report.json pins.txt  # name==version per wheel to download
    python bench/wheelset.py check TARGET MODULE...       # with PYTHONPATH=TARGET, on the node

``constraints``: the ``name==version`` lines of the node's ``pip freeze``, less PyTorch's own stack
(``NODE_HAS``: never packed, and its pins name CUDA wheels that exist only for the node's exact
tags, which made pip's resolution impossible). ``select``: every package of pip's resolution
report (``pip install --dry-run --report``) but this project, PyTorch's stack, and what the node
already has at the resolved version; the count of the last goes to stderr. ``check``: every
requirement of every distribution installed in TARGET (extras followed) is met by what the Python
sees, and each module imports; one line either way, exit status 1 when not.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import re
import sys
from typing import Iterable, List, Optional, Sequence, Set, Tuple

NODE_HAS = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$", re.I)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==([^\s;#]+)\s*$")
PROJECT = "prune-sweep"


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints(freeze: Iterable[str]) -> List[str]:
    """The node's pins pip may keep: ``name==version`` lines outside PyTorch's stack."""
    out = []
    for line in freeze:
        m = PIN.match(line.strip())
        if m and not NODE_HAS.match(m.group(1)):
            out.append(f"{m.group(1)}=={m.group(2)}")
    return out


def select(report: dict, pins: Iterable[str]) -> Tuple[List[str], int]:
    """``name==version`` of each wheel to download, and how many the node has already."""
    node: Set[Tuple[str, str]] = set()
    for line in pins:
        m = PIN.match(line.strip())
        if m:
            node.add((normalize(m.group(1)), m.group(2)))
    todo, kept = [], 0
    for item in report["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if normalize(name) == PROJECT or NODE_HAS.match(name):
            continue
        if (normalize(name), version) in node:
            kept += 1
        else:
            todo.append(f"{name}=={version}")
    return todo, kept


def unmet(target: str) -> Tuple[List[str], int]:
    """What the distributions installed in ``target`` require and cannot find, and how many
    (distribution, extras) pairs were checked."""
    try:
        from packaging.requirements import Requirement  # a dependency of Ray's, so in every packed set
    except ImportError:
        return ["packaging is not installed (Ray needs it, and this check reads requirements with it)"], 0
    todo = [(d.metadata["Name"], ()) for d in md.distributions(path=[target])]
    seen: Set[Tuple[str, Tuple[str, ...]]] = set()
    out: List[str] = []
    while todo:
        name, extras = todo.pop()
        if (name.lower(), extras) in seen:
            continue
        seen.add((name.lower(), extras))
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                continue
            try:
                version = md.version(req.name)
            except md.PackageNotFoundError:
                out.append(f"{name} needs {req} (not installed)")
                continue
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                out.append(f"{name} needs {req}, found {version}")
            if req.extras:
                todo.append((req.name, tuple(sorted(req.extras))))
    return sorted(set(out)), len(seen)


def check(target: str, modules: Sequence[str]) -> Tuple[bool, str]:
    """Whether the install in ``target`` works, and the line that says so."""
    missing, checked = unmet(target)
    if missing:
        return False, "unmet: " + "; ".join(missing[:5])
    where = []
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except Exception as exc:
            return False, f"import {m} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if "." in m:
            continue
        try:
            version = md.version({"prune_core": PROJECT, "prune_sweep": PROJECT}.get(m, m).replace("_", "-"))
        except md.PackageNotFoundError:
            version = getattr(mod, "__version__", "?")
        origin = "target" if str(getattr(mod, "__file__", "")).startswith(target) else "node"
        where.append(f"{m} {version} ({origin})")
    try:
        import torch

        where.append(f"torch {torch.__version__} (node)")
    except ImportError:
        pass
    return True, f"requirements: all {checked} met; imports: " + ", ".join(where)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "constraints":
        with open(args[1]) as fh:
            print("\n".join(constraints(fh)))
        return 0
    if len(args) == 3 and args[0] == "select":
        with open(args[1]) as fh:
            report = json.load(fh)
        with open(args[2]) as fh:
            todo, kept = select(report, fh)
        print("\n".join(todo))
        if kept:
            print(f"the node has {kept} of the packages at the resolved version: not packed", file=sys.stderr)
        return 0
    if len(args) >= 2 and args[0] == "check":
        ok, line = check(args[1], args[2:])
        print(line)
        return 0 if ok else 1
    print("usage: wheelset.py constraints FREEZE | select REPORT PINS | check TARGET MODULE...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
