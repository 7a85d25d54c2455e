"""One `revlib run` of an experiment at a time: an OS file lock on the experiment's run directory.

The lock (filelock's FileLock: fcntl on Unix, released by the kernel when its process dies) is held for the whole
run; a sidecar file names its holder (pid, host, since, command) so that a second run can say who holds it. A
sidecar left by a killed run (the lock itself is free then) is taken over, with a message naming the dead holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from revlib.core.provenance import now
from revlib.lab.manifest import process_alive

LOCK_FILE = ".revlib-run.lock"
HOLDER_FILE = ".revlib-run.holder.json"


class RunLocked(RuntimeError):
    """Another live `revlib run` holds the experiment."""

    def __init__(self, run_root: Path, holder: dict[str, Any]):
        self.run_root, self.holder = run_root, holder
        super().__init__(f"another revlib run holds {run_root}: {describe(holder)}. Nothing was run or written; "
                         f"wait for it to finish (or stop it) and run again")


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown (no holder file)"
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def read_holder(run_root: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_root) / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def hold(run_root: Path, say: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """Hold the experiment's lock for the block; raise RunLocked at once when a live run holds it."""
    run_root = Path(run_root)
    run_root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_root / LOCK_FILE), is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunLocked(run_root, read_holder(run_root)) from None
    try:
        left = read_holder(run_root)
        if left and say is not None:
            alive = process_alive(left.get("pid"), left.get("host"))
            state = "whose process is gone" if alive is False else "no longer holding it"
            say(f"taking over the lock of {run_root} left by {describe(left)}, {state}")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": now(),
                  "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        (run_root / HOLDER_FILE).write_text(json.dumps(holder), encoding="utf-8")
        yield holder
    finally:
        with contextlib.suppress(OSError):
            if read_holder(run_root).get("pid") == os.getpid():
                (run_root / HOLDER_FILE).unlink()
        lock.release()
