"""Errors a caller of prune_core may need to tell apart.

``NotRetryable`` marks an error that running the same experiment again would repeat (a bad
config value, a diverging loss, a rebuild that does not compute what the masked model computes, an
ONNX graph that does not compute what the PyTorch model computes):
a launcher records it and does not retry. Any other exception (a lost node, a full disk) may not
repeat.
"""

from __future__ import annotations


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
