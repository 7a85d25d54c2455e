"""Finished work is never erased: a cell's run that is not resumed is moved aside, whole, before a new run starts.

A run directory whose inputs changed (or that `--force` / `--fresh` re-runs) is renamed, not copied, to
`<run root>/previous/<stage>/<cell>@<fingerprint[:12]>` (a suffix `.2`, `.3`... when that name is taken), so a
week of checkpoints survives a changed `max_length` byte for byte, and the move costs nothing on one filesystem.
Later cells read only the current run at `<run root>/<stage>/<cell>`; `revlib status` lists the previous ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from revlib.lab.manifest import read_manifest

PREVIOUS = "previous"  # under the experiment's run root


@dataclass(frozen=True)
class PreviousRun:
    stage: str
    cell: str
    path: Path
    status: str
    fingerprint: str
    end: str
    size_bytes: int


def set_aside(run_root: Path, stage: str, cell: str, run_dir: Path) -> Path:
    """Move `run_dir` to the experiment's previous runs; returns where it went."""
    manifest = read_manifest(run_dir) or {}
    tag = str(manifest.get("fingerprint") or "unrecorded")[:12]
    folder = run_root / PREVIOUS / stage
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / f"{cell}@{tag}", 1
    while target.exists():
        n += 1
        target = folder / f"{cell}@{tag}.{n}"
    os.replace(run_dir, target)
    return target


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed while we walked
                continue
    return total


def previous_runs(run_root: Path) -> list[PreviousRun]:
    """Every run set aside under the experiment, oldest first within a cell."""
    out = []
    for path in sorted((Path(run_root) / PREVIOUS).glob("*/*")):
        if not path.is_dir():
            continue
        m = read_manifest(path) or {}
        out.append(PreviousRun(stage=path.parent.name, cell=path.name.partition("@")[0], path=path,
                               status=str(m.get("status") or "unknown"), fingerprint=str(m.get("fingerprint") or ""),
                               end=str(m.get("end") or m.get("start") or ""), size_bytes=tree_size(path)))
    return sorted(out, key=lambda r: (r.stage, r.cell, r.end))


def kept_bytes(run_root: Path) -> tuple[int, int]:
    """(previous runs kept, their bytes) under the experiment."""
    runs = previous_runs(run_root)
    return len(runs), sum(r.size_bytes for r in runs)
