"""Whether a sweep's driver (``launch.py``) is alive: the ``.driver.json`` marker in its experiment
directory, written by ``driver_marker`` around ``tuner.fit()`` and read by ``prune_sweep.results``.

The marker is ``{"host", "pid", "started", "heartbeat"}`` (times in seconds since the epoch); a
daemon thread refreshes ``heartbeat`` every ``HEARTBEAT_S``. On leaving, the driver adds
``"ended"`` instead of deleting the file: Tune's ``fit()`` returns normally after Ctrl-C with its
unfinished trials still RUNNING in the experiment state, and a missing marker could not tell that
sweep from one launched before markers existed (``alive`` below). A SIGKILLed or crashed driver
leaves the marker as it was: its pid is gone and its heartbeat stops. On a full disk, where even
the last write fails, the marker is removed: the reader then goes by the experiment state's age,
as for a sweep without one.

    with driver_marker(Store(exp_dir)):
        tuner.fit()
    alive(Path(exp_dir))  # None when nothing says (no marker, no experiment state)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from prune_sweep.storage import Store

DRIVER_FILE = ".driver.json"
HEARTBEAT_S = 15.0  # how often the driver refreshes its marker
STALE_S = 60.0  # a marker from another host whose heartbeat is older: its driver is gone (4 missed beats)
# Without a marker (a sweep launched before markers existed), a newest experiment_state-*.json
# older than this means the driver is gone: a live Tune driver rewrites it every ~10 s
# (tune/execution/experiment_state.py: checkpoint_period "auto" = max(10 s, 19 x the time one
# save takes), and after every trial checkpoint), so 5 minutes leaves room for slow cloud syncs.
STATE_STALE_S = 300.0


def _marker(started: float, ended: Optional[float] = None) -> str:
    values: Dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "started": started,
                              "heartbeat": time.time()}
    if ended is not None:
        values["ended"] = ended
    return json.dumps(values)


def _write(exp: Store, text: str) -> bool:
    """Local: through a temporary name (removed when the write fails), so a reader never sees half a
    marker; cloud: one PUT. Returns whether it was written."""
    try:
        exp.write_text(DRIVER_FILE, text)
        return True
    except OSError:  # a missed beat reads as a late heartbeat; it must never stop the sweep
        return False


def _end(exp: Store, text: str) -> None:
    """The last write, with ``ended``. On a full disk the temporary copy cannot be written, but the
    marker's own block can be overwritten in place (a reader may then see a torn marker for a
    moment: it reads as none); if that fails too, the marker goes (module docstring)."""
    if _write(exp, text) or not exp.local:
        return
    path = os.path.join(exp.location, DRIVER_FILE)
    try:
        with open(path, "r+") as f:
            f.write(text)
            f.truncate()
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass


@contextmanager
def driver_marker(exp: Store, period: float = HEARTBEAT_S) -> Iterator[None]:
    """Mark ``exp`` as driven by this process while the block runs; a daemon thread beats every
    ``period`` seconds. The marker says ``ended`` afterwards, however the block was left."""
    started = time.time()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            _write(exp, _marker(started))

    _write(exp, _marker(started))
    thread = threading.Thread(target=beat, name="prune-sweep-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=period + 5)
        _end(exp, _marker(started, ended=time.time()))


def read_marker(exp_dir: Path) -> Optional[Dict[str, Any]]:
    """The marker of a local experiment directory; None when absent or unreadable."""
    try:
        value = json.loads((Path(exp_dir) / DRIVER_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def marker_alive(marker: Dict[str, Any], now: Optional[float] = None, host: Optional[str] = None) -> bool:
    """Whether the driver that wrote ``marker`` runs: on this host, its pid exists; on another,
    its heartbeat is younger than ``STALE_S`` (as far as the two clocks agree)."""
    if marker.get("ended") is not None:
        return False
    host = socket.gethostname() if host is None else host
    if marker.get("host") == host:
        pid = marker.get("pid")
        return isinstance(pid, int) and pid > 0 and _pid_exists(pid)
    beat = marker.get("heartbeat")
    now = time.time() if now is None else now
    return isinstance(beat, (int, float)) and now - beat < STALE_S


def alive(exp_dir: Path, state_mtime: Optional[float] = None, now: Optional[float] = None) -> Optional[bool]:
    """Whether the sweep in ``exp_dir`` has a live driver: its marker's word; without one (a sweep
    launched before markers existed), whether the newest experiment state (modified at
    ``state_mtime``) is younger than ``STATE_STALE_S``; None when neither exists."""
    marker = read_marker(exp_dir)
    if marker is not None:
        return marker_alive(marker, now)
    if state_mtime is None:
        return None
    return (time.time() if now is None else now) - state_mtime < STATE_STALE_S


LAUNCH_LOCK = ".launch.lock"  # held by the one launch that drives an experiment directory


@contextmanager
def exclusive(exp: Store) -> Iterator[None]:
    """Let one launch at a time drive ``exp`` (local or NFS storage): a second one, a new sweep of
    the same name or a ``--resume`` of a sweep still running, would write the same Tune state.
    A lease file (``filelock.SoftFileLease``) with a heartbeat: a launch that was killed on this
    host leaves nothing that blocks the next, one killed on another host blocks it for a minute.
    Raises ``SweepError`` naming the running launch. Cloud storage has no exclusive create: there
    the caller is trusted."""
    if not exp.local:
        yield
        return
    from filelock import SoftFileLease, Timeout

    from prune_sweep.spec import SweepError

    Path(exp.location).mkdir(parents=True, exist_ok=True)
    lease = SoftFileLease(os.path.join(exp.location, LAUNCH_LOCK), lease_duration=STALE_S)
    try:
        lease.acquire(timeout=0)
    except Timeout:
        marker = read_marker(Path(exp.location)) or {}
        who = f"pid {marker['pid']} on {marker['host']}" if "pid" in marker and "host" in marker else "another launch"
        raise SweepError(f"{exp.location} is being run by {who}; wait for it to end, or start another "
                         "sweep with --name") from None
    try:
        yield
    finally:
        lease.release()
