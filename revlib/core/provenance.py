"""Provenance of a run: the package versions, the device and the git commit it ran on."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

from revlib.core.io import REPO_ROOT

PACKAGES = ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "lm_eval", "math-verify", "papermill"]


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    if torch.cuda.is_available():
        dev = {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    else:
        dev = {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    return {"python": sys.version.split()[0], "packages": versions, "device": dev, "git_commit": git_commit()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return None
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
