"""Manifests: what a cell's run directory says about itself (status, fingerprint, provenance), and whether the
process that wrote one is still alive."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from revlib.core import io


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        return None
    try:
        return io.read_json(path)
    except (json.JSONDecodeError, OSError):
        return None


def process_alive(pid: Any, host: Any) -> bool | None:
    """Is the process that wrote a manifest still there? None when it ran on another host (cannot tell)."""
    import socket

    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def live_status(run_dir: Path, manifest: dict[str, Any] | None = None) -> tuple[str, str | None]:
    """(status, last log line): a cell recorded as running whose process is gone is 'interrupted'."""
    m = manifest if manifest is not None else (read_manifest(run_dir) or {})
    status = m.get("status") or "new"
    if status == "running" and process_alive(m.get("pid"), m.get("host")) is False:
        return "interrupted", last_log_line(Path(run_dir) / f"{m.get('stage', '')}.ipynb")
    return status, None


def last_log_line(notebook: Path) -> str | None:
    """The last non-empty line the partly executed notebook printed (papermill saves it after every cell)."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return None
    for cell in reversed(cells):
        for out in reversed(cell.get("outputs", [])):
            text = out.get("text") or (out.get("data") or {}).get("text/plain") or \
                "\n".join(x for x in [out.get("ename"), out.get("evalue")] if x)
            text = "".join(text) if isinstance(text, list) else text
            lines = [ln.strip() for ln in str(text).replace("\r", "\n").splitlines() if ln.strip()]
            if lines:
                return lines[-1][:300]
    return None


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    io.write_json(Path(run_dir) / "manifest.json", manifest)
