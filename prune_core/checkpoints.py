"""Files that must survive kills and shared storage: written atomically with a SHA-256 beside them,
read back with ``weights_only=True`` and the checksum checked.

A file ``f.pt`` is written as ``f.pt.tmp``, its digest goes to ``f.pt.sha256`` (``<hex> <bytes>``),
then ``f.pt.tmp`` is renamed to ``f.pt``. The sidecar is renamed first, so a kill between the two
renames leaves a file that fails its check (and is redone) rather than one that passes unchecked.
A file without a sidecar (a model saved by hand, or by an older version) is loaded unchecked.

>>> save_atomic({"w": torch.zeros(2)}, Path("ckpt.pt"))  # doctest: +SKIP
>>> load_checked(Path("ckpt.pt"))["w"]  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import disk_full

SIDECAR = ".sha256"
# what torch's zip writer (caffe2 inline_container.cc) says when a write fails
TORCH_WRITE_FAILED = re.compile(r"unexpected pos \d+ vs \d+|PytorchStreamWriter failed|file write failed")


class CorruptFile(Exception):
    """A file that is truncated, fails its checksum, or holds something ``weights_only`` refuses."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, the checksum beside it, then rename: a kill mid-write never
    leaves half a file that passes for a whole one, and a failed write removes its temporary files.
    A full disk raises ``OSError(ENOSPC)`` naming the file, whatever torch said (``torch_save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    side_tmp = path.with_name(path.name + SIDECAR + ".tmp")
    try:
        torch_save(obj, tmp)
        side_tmp.write_text(f"{sha256_file(tmp)} {tmp.stat().st_size}\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
        raise
    os.replace(side_tmp, sidecar(path))
    os.replace(tmp, path)


def torch_save(obj: Any, path: Path) -> None:
    """``torch.save``, with its zip writer failing on a full disk raised as ``OSError(ENOSPC, path)``.
    That writer says no errno: torch 2.14 on a full tmpfs raised ``[enforce fail at
    inline_container.cc:672] . unexpected pos 804096 vs 803992`` (ARCHITECTURE.md, facts), so the
    filesystem's free space decides, read before the caller removes the partial file."""
    try:
        torch.save(obj, path)
        return
    except RuntimeError as exc:
        if not TORCH_WRITE_FAILED.search(str(exc)) or not disk_full(Path(path).parent):
            raise
        chained, seen = exc, set()
        while chained is not None and id(chained) not in seen:  # torch's frames hold its zip writer, and
            seen.add(id(chained))  # the writer the file: without them, its space returns with the unlink
            chained.__traceback__ = None
            chained = chained.__cause__ or chained.__context__
        cause = exc
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from cause


def verify(path: Path) -> None:
    """Raise ``CorruptFile`` when ``path``'s sidecar names another size or digest."""
    side = sidecar(path)
    try:
        recorded = side.read_text().split()
    except FileNotFoundError:
        return
    if len(recorded) != 2 or not recorded[1].isdigit():
        raise CorruptFile(path, f"unreadable checksum file {side.name}")
    size = path.stat().st_size
    if size != int(recorded[1]):
        raise CorruptFile(path, f"{size} bytes, {recorded[1]} written (truncated?)")
    if sha256_file(path) != recorded[0]:
        raise CorruptFile(path, "SHA-256 differs from the one written with it")


def load_checked(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` after the checksum check. Raises ``CorruptFile`` for
    a file that fails it, cannot be read as a torch file, or holds objects other than tensors and
    plain data (``weights_only`` refuses them: a checkpoint on shared storage cannot run code)."""
    path = Path(path)
    verify(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFile(path, f"refused by weights_only=True ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFile(path, f"not a readable torch file ({first[:160]})") from None


def rename(src: Path, dst: Path) -> None:
    """Move a file written by ``save_atomic`` and its checksum (the checksum first, as written)."""
    if sidecar(Path(src)).exists():
        os.replace(sidecar(Path(src)), sidecar(Path(dst)))
    os.replace(src, dst)


def remove(path: Path) -> None:
    """Delete a file written by ``save_atomic`` and its checksum, if there."""
    Path(path).unlink(missing_ok=True)
    sidecar(Path(path)).unlink(missing_ok=True)


def move_aside(path: Path) -> Path:
    """Rename a bad file (and its sidecar) to ``<name>.corrupt-<time>``, kept for inspection;
    returns the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    if path.exists():
        rename(path, aside)
    elif sidecar(path).exists():
        os.replace(sidecar(path), sidecar(aside))
    return aside


def warn(message: str, log: Optional[Any] = None) -> None:
    """One line, to the run's log when it has one, else stderr."""
    line = f"warning: {message}"
    if log is not None:
        log(line)
    else:
        print(line, file=sys.stderr)


def load_or_discard(path: Path, what: str, log: Optional[Any] = None, map_location: Any = "cpu") -> Optional[Any]:
    """The checked contents of ``path``; None when absent, or when it is bad: then it is moved aside
    with a one-line warning saying ``what`` happens instead."""
    if not Path(path).exists():
        return None
    try:
        return load_checked(path, map_location)
    except CorruptFile as exc:
        aside = move_aside(path)
        warn(f"{exc.path} is bad ({exc.reason}); moved to {aside.name}, {what}", log)
        return None
