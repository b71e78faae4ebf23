"""Where a sweep's files live: a local or NFS directory, or a cloud URI (``s3://``, ``gs://``),
through pyarrow's filesystems (as Ray Tune), and the layout of the trained-base cache in it.

An experiment directory keeps each base at ``base_cache/<base hash>/base.pt`` (``base_rel``), the
layout ``prune_core.base_path`` uses under ``runtime.cache_dir`` (``cache_dir``); with cloud
storage a node works on a local copy under ``node_cache``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pyarrow.fs as pafs

BASE_CACHE = "base_cache"  # in the experiment directory; prune_core's runtime.cache_dir points here
BASE_FILE = "base.pt"
BASE_SUM = BASE_FILE + ".sha256"  # its checksum (prune_core.checkpoints): copied wherever base.pt goes
BASE_LOG = "base_task.log"  # one line per base training, written by the base task
RESULT_FILE = "result.json"  # a trial's reports, one JSON object per line (ray.tune.result.EXPR_RESULT_FILE)


def json_rows(text: Optional[str]) -> List[Dict[str, Any]]:
    """The JSON objects of a JSON-lines text such as ``RESULT_FILE``; a line that is not one (a
    half-written last line, a line a kill cut short) is skipped."""
    rows = []
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def is_uri(location: str) -> bool:
    return "://" in location


def base_rel(base_hash: str, name: str = BASE_FILE) -> str:
    """A file of one base, relative to the experiment directory."""
    return posixpath.join(BASE_CACHE, base_hash, name)


def node_cache(exp_location: str) -> Path:
    """Where a node keeps bases of an experiment in cloud storage (local and NFS storage hold them
    in place)."""
    tag = hashlib.sha256(exp_location.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "prune-sweep" / tag / BASE_CACHE


def cache_dir(exp: str) -> str:
    """``runtime.cache_dir`` of the experiment ``exp``'s trials and base tasks on this node."""
    return posixpath.join(exp, BASE_CACHE) if not is_uri(exp) else str(node_cache(exp))


class Store:
    """Files under one directory of local, NFS or cloud (``s3://``, ``gs://``) storage. The
    filesystem is opened on first use, so naming a bucket costs nothing (``--dry-run``)."""

    def __init__(self, location: str):
        self.location = location.rstrip("/") if is_uri(location) else os.path.abspath(location)
        self.local = not is_uri(location)
        self._fs: Any = None
        self._root = ""

    def _open(self) -> Tuple[Any, str]:
        """The filesystem and the location's path in it (for a bucket: without the scheme, which
        only opening it tells)."""
        if self._fs is None:
            if self.local:
                self._fs, self._root = pafs.LocalFileSystem(), self.location
            else:
                self._fs, self._root = pafs.FileSystem.from_uri(self.location)
        return self._fs, self._root

    @property
    def fs(self) -> Any:
        return self._open()[0]

    def path(self, rel: str = "") -> str:
        """The filesystem path of ``rel`` (for a bucket: without the scheme)."""
        root = self._open()[1]
        return posixpath.join(root, rel) if rel else root

    def uri(self, rel: str = "") -> str:
        return posixpath.join(self.location, rel) if rel else self.location

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_text(self, rel: str) -> Optional[str]:
        if not self.exists(rel):
            return None
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read().decode()

    def write_text(self, rel: str, text: str) -> None:
        """Local: through a temporary name that a failed write (a full disk) removes, so the file is
        whole or as it was; cloud: one PUT, which is whole or nothing."""
        self.fs.create_dir(posixpath.dirname(self.path(rel)), recursive=True)
        target = self.path(rel)
        tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp" if self.local else target
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(text.encode())
            if self.local:
                os.replace(tmp, target)
        except BaseException:
            if self.local:
                Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, local: Path, rel: str) -> None:
        self.fs.create_dir(posixpath.dirname(self.path(rel)), recursive=True)
        pafs.copy_files(str(local), self.path(rel), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def get(self, rel: str, local: Path) -> None:
        """Copy to ``local`` through a temporary name: readers never see half a file."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}")
        pafs.copy_files(self.path(rel), str(tmp), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        os.replace(tmp, local)

    def subdirs(self, rel: str = "") -> List[str]:
        if not self.exists(rel):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel)))
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)
