"""Which wheels ``bench/gpu_sweep.sh --pack`` downloads for an offline GPU node.

    python bench/wheelset.py constraints node.txt        # the node's pins pip may keep (stdout)
    python bench/wheelset.py select report.json pins.txt  # name==version per wheel to download

``constraints``: the ``name==version`` lines of the node's ``pip freeze``, less PyTorch's own stack
(``NODE_HAS``: never packed, and its pins name CUDA wheels that exist only for the node's exact
tags, which made pip's resolution impossible). ``select``: every package of pip's resolution
report (``pip install --dry-run --report``) but this project, PyTorch's stack, and what the node
already has at the resolved version; the count of the last goes to stderr.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Iterable, List, Optional, Set, Tuple

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
    print("usage: wheelset.py constraints FREEZE | select REPORT PINS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
