"""Errors a caller of prune_core may need to tell apart.

``NotRetryable`` marks an error that running the same experiment again would repeat (a bad
config value, a diverging loss, a rebuild that does not compute what the masked model computes, an
ONNX graph that does not compute what the PyTorch model computes):
a launcher records it and does not retry. Any other exception (a lost node, a full disk) may not
repeat. ``disk_full`` tells whether a write failed for want of space where no errno says so.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Optional

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # no space left; disk quota exceeded
# a path that cannot be written whatever space there is: read-only, not a folder, too long
UNWRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG)
# Less than this free after a write failed: the filesystem is full. A full tmpfs kept 4 KiB after
# torch.save and pyarrow failed on it (ARCHITECTURE.md, facts); a write fails with far more left
# only on a quota, which says EDQUOT itself.
FULL_FREE_BYTES = 1 << 20


class NotRetryable(Exception):
    """The same experiment fails the same way when run again."""


class ConfigError(NotRetryable, ValueError):
    """A bad configuration value. The message names the dotted key and what is accepted."""


class Diverged(NotRetryable, RuntimeError):
    """The loss became NaN or infinite."""


class RebuildMismatch(NotRetryable, RuntimeError):
    """The rebuilt model does not compute what the masked model computes."""


class ExportMismatch(NotRetryable, RuntimeError):
    """ONNX Runtime's logits of the exported model differ from PyTorch's (``prune_core.export``)."""


class DatasetMissing(FileNotFoundError):
    """A dataset's files are not where ``data.root`` says, or not in the layout its reader expects;
    the message is one line saying where they were looked for and what was expected there."""


def free_bytes(path: str | os.PathLike) -> Optional[int]:
    """Bytes this user may still write on the filesystem holding ``path`` (or its nearest existing
    parent folder); None when that cannot be read."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(path: str | os.PathLike) -> bool:
    """Whether the filesystem holding ``path`` has less than ``FULL_FREE_BYTES`` free: how a write
    error without an errno (torch.save's "unexpected pos", an empty file) is told to be a full disk."""
    free = free_bytes(path)
    return free is not None and free < FULL_FREE_BYTES
