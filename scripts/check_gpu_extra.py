"""Check that the `gpu` extra's pins resolve together with revlib's own pins, without downloading CUDA builds.

For each pinned package of the extra, pip's resolver is asked for its metadata only
(`pip install --dry-run --no-deps --report`, which reads the index's metadata files, not the wheels);
every requirement it declares on a package revlib pins (torch, transformers, ...) is checked against
that pin. Exit 1 and one line per conflict if any.

    python scripts/check_gpu_extra.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    """name -> exact version, from pyproject's dependencies and requirements.lock."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    lines = list(project["dependencies"]) + (ROOT / "requirements.lock").read_text().splitlines()
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            req = Requirement(line)
            out.setdefault(canonicalize_name(req.name), next(iter(req.specifier)).version.split("+")[0])
    return out


def metadata(requirement: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        # sdists (flash-attn, deepspeed) build their metadata against the installed torch, CUDA kernels skipped
        env = {**os.environ, "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE", "DS_BUILD_OPS": "0"}
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
                        "--no-build-isolation", "--disable-pip-version-check", "--report", str(report), requirement],
                       check=True, capture_output=True, text=True, env=env)
        return json.loads(report.read_text())["install"][0]["metadata"]


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    have = pins()
    env = {**default_environment(), "extra": ""}
    problems = []
    for spec in project["optional-dependencies"]["gpu"]:
        req = Requirement(spec)
        if not any(s.operator == "==" for s in req.specifier):
            problems.append(f"{spec}: not pinned")
            continue
        try:
            meta = metadata(spec)
        except subprocess.CalledProcessError as err:
            problems.append(f"{spec}: pip could not resolve its metadata: {err.stderr.strip()[-300:]}")
            continue
        print(f"{meta['name']} {meta['version']}")
        for dep in meta.get("requires_dist", []):
            d = Requirement(dep)
            if d.marker is not None and not d.marker.evaluate(env):
                continue
            pinned = have.get(canonicalize_name(d.name))
            if pinned is not None and d.specifier and not d.specifier.contains(pinned, prereleases=True):
                problems.append(f"{meta['name']} {meta['version']} needs {d.name}{d.specifier}; revlib pins {d.name}=={pinned}")
    for p in problems:
        print("CONFLICT", p)
    print("OK: the gpu extra resolves with revlib's pins" if not problems else f"{len(problems)} conflict(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
