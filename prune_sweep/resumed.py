"""What ``--resume`` continues: the sweep stored in the experiment at launch (``sweep.yaml``),
never the sweep file as it reads now. A sweep file edited since launch is shown as a difference
against its text at launch (``sweep.source.yaml``) and refused unless ``--stored`` says to
continue the stored sweep anyway: Tune cannot add, drop or change the trials of a started
experiment, so an edited sweep is a new experiment (``--name``; it reuses the trained bases).
``--resume --dry-run`` prints the plan ``--resume`` would run, with the same check.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional

from prune_core.yamlfile import YamlError, parse_yaml
from prune_sweep.checks import SweepError
from prune_sweep.expand import validate
from prune_sweep.spec import Sweep, parse_sweep
from prune_sweep.storage import Store

SOURCE_FILE = "sweep.source.yaml"  # the sweep file's text at launch, as the user wrote it
MAX_DIFF_LINES = 80


def save_source(sweep: Sweep, exp: Store) -> None:
    """Keep the text of the file ``sweep`` was read from beside the resolved ``sweep.yaml``."""
    path = Path(sweep.source)
    if path.is_file():
        exp.write_text(SOURCE_FILE, path.read_text(encoding="utf-8"))


def stored_sweep(exp: Store, limit: int) -> Sweep:
    """The sweep stored in ``exp`` at launch, read and validated as a sweep file is."""
    text = exp.read_text("sweep.yaml")  # Tune's state may be missing: stopped while bases trained
    if text is None:
        raise SweepError(f"--resume: {exp.location} holds no interrupted sweep to continue")
    try:
        stored = parse_sweep(parse_yaml(text), exp.uri("sweep.yaml"))
    except YamlError as exc:
        raise SweepError(f"--resume: {exp.uri('sweep.yaml')}: {exc}") from None
    validate(stored, limit)
    return stored


def difference(given: Optional[str], exp: Store) -> Optional[str]:
    """The unified difference between the sweep file ``given`` on the command line and its text
    at launch; None when they agree, when no file was given, or when the experiment kept no
    text (launched before it was kept)."""
    if given is None:
        return None
    then = exp.read_text(SOURCE_FILE)
    if then is None:
        return None
    try:
        now = Path(given).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # load_sweep has read it already: it cannot fail here but by a race
    if now == then:
        return None
    lines = list(difflib.unified_diff(then.splitlines(), now.splitlines(), lineterm="",
                                      fromfile=f"{exp.uri(SOURCE_FILE)} (at launch)", tofile=f"{given} (now)"))
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... {len(lines) - MAX_DIFF_LINES} more lines"]
    return "\n".join(lines)


def check_unchanged(given: Optional[str], exp: Store, keep_stored: bool) -> Optional[str]:
    """Print the difference of an edited sweep file and refuse it (SweepError) unless
    ``keep_stored`` (``--stored``); returns the difference that ``--stored`` let pass, else None."""
    diff = difference(given, exp)
    if diff is None:
        return None
    print(diff)
    if not keep_stored:
        raise SweepError(f"--resume: {given} changed since {exp.location} was launched (the difference is above); "
                         "continue the sweep as launched with --resume --stored, or launch the edited file with "
                         "another --name (it reuses the trained bases)")
    return diff


def describe(exp: Store, edited: Optional[str], given: Optional[str]) -> str:
    """The line saying what ``--resume`` continues."""
    line = f"--resume: continuing the sweep stored at launch ({exp.uri('sweep.yaml')})"
    return line + (f", not {given} as it reads now (--stored)" if edited else "")
