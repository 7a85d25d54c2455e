"""Check that the `gpu` extra's pins resolve together with revlib's own pins, without installing CUDA builds.

Pins are revlib's dependencies in pyproject.toml, requirements.lock and the `gpu` extra itself.
For each pinned package of the extra, pip is asked for its metadata only
(`pip install --dry-run --no-deps --report`: nothing is installed; flash-attn and deepspeed build their
metadata from the sdist with the CUDA build skipped). Checked:

1. every requirement a gpu package declares on a pinned package (torch, transformers, lark, ray...) against
   that pin;
2. one level further for the packages a gpu package pins exactly (vllm's torchvision==, compressed-tensors==...):
   their requirements on pinned packages, against the pins;
3. the other direction: what revlib's pinned packages declare for their integration with a gpu package
   (trl's `vllm`, `liger` and `deepspeed` extras, lm-eval's `vllm` extra...), against the gpu pins;
4. environment.yml: it installs with `-c requirements.lock` and its pip pins equal revlib's (a different pin
   there could not install together with the extra, which README's GPU section adds on top of it).

Exit 1 and one line per conflict if any. pip reads a wheel's metadata by fetching the wheel when the index does
not serve the metadata file on its own; the largest is vllm's (about 300 MB, no CUDA libraries).

    python scripts/check_gpu_extra.py
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
ENV = {**default_environment(), "extra": ""}


def _exact(req: Requirement) -> str | None:
    return next((s.version.split("+")[0] for s in req.specifier if s.operator == "=="), None)


def pins() -> dict[str, str]:
    """name -> exact version, from pyproject's dependencies and requirements.lock."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    lines = list(project["dependencies"]) + (ROOT / "requirements.lock").read_text().splitlines()
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            req = Requirement(line)
            out.setdefault(canonicalize_name(req.name), _exact(req))
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


def conflicts(who: str, requires: list[str], have: dict[str, str], env: dict) -> list[str]:
    """Requirements (active under env's markers) that a pinned version does not satisfy."""
    out = []
    for dep in requires:
        d = Requirement(dep)
        if d.marker is not None and not d.marker.evaluate(env):
            continue
        pinned = have.get(canonicalize_name(d.name))
        if pinned is not None and d.specifier and not d.specifier.contains(pinned, prereleases=True):
            out.append(f"{who} needs {d.name}{d.specifier}; pinned {d.name}=={pinned}")
    return out


def integration_extras(extras: list[str], gpu: set[str]) -> list[str]:
    """Extras of a package named for a gpu package: trl's 'vllm' and 'liger' (liger-kernel), lm-eval's 'vllm'..."""
    return sorted(e for e in extras
                  if any(g == canonicalize_name(e) or g.startswith(canonicalize_name(e) + "-") for g in gpu))


def pinned_metadata(name: str, version: str) -> tuple[list[str], list[str]]:
    """(requirements, extras) of a revlib pin: from the installed copy when it is that version, else the index."""
    try:
        dist = importlib.metadata.distribution(name)
        if dist.version.split("+")[0] == version:
            return dist.requires or [], dist.metadata.get_all("Provides-Extra") or []
    except importlib.metadata.PackageNotFoundError:
        pass
    meta = metadata(f"{name}=={version}")
    return meta.get("requires_dist", []), meta.get("provides_extra", [])


def environment_yml(have: dict[str, str]) -> list[str]:
    path = ROOT / "environment.yml"
    if not path.exists():
        return []
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])
    out = []
    if "-c requirements.lock" not in pip:
        out.append("environment.yml: its pip section does not install with -c requirements.lock")
    for line in pip:
        if line.startswith("-") or "==" not in line:
            continue
        req = Requirement(line)
        want = have.get(canonicalize_name(req.name))
        if want is not None and _exact(req) != want:
            out.append(f"environment.yml pins {req.name}=={_exact(req)}; revlib pins {req.name}=={want}")
    return out


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    have = pins()
    gpu = {}
    problems = []
    for spec in project["optional-dependencies"]["gpu"]:
        req = Requirement(spec)
        if _exact(req) is None:
            problems.append(f"{spec}: not pinned")
            continue
        gpu[canonicalize_name(req.name)] = _exact(req)
    have_all = {**gpu, **have}
    for name, version in gpu.items():
        if name in have and have[name] != version:
            problems.append(f"gpu extra pins {name}=={version}; revlib pins {name}=={have[name]}")

    # 1 and 2: what the gpu packages (and what they pin exactly) need of revlib's pins
    seen = set()
    for name, version in gpu.items():
        try:
            meta = metadata(f"{name}=={version}")
        except subprocess.CalledProcessError as err:
            problems.append(f"{name}=={version}: pip could not read its metadata: {err.stderr.strip()[-300:]}")
            continue
        print(f"{meta['name']} {meta['version']}")
        requires = meta.get("requires_dist", [])
        problems += conflicts(f"{meta['name']} {meta['version']}", requires, have_all, ENV)
        for dep in requires:
            d = Requirement(dep)
            pinned_here, key = _exact(d), canonicalize_name(d.name)
            if pinned_here is None or key in have_all or key in seen or (d.marker and not d.marker.evaluate(ENV)):
                continue
            seen.add(key)
            try:
                sub = metadata(f"{d.name}=={pinned_here}")
            except subprocess.CalledProcessError as err:
                problems.append(f"{d.name}=={pinned_here} (for {meta['name']}): pip could not read its metadata: "
                                f"{err.stderr.strip()[-300:]}")
                continue
            print(f"  {sub['name']} {sub['version']} (pinned by {meta['name']})")
            problems += conflicts(f"{sub['name']} {sub['version']} (pinned by {meta['name']} {meta['version']})",
                                  sub.get("requires_dist", []), have_all, ENV)

    # 3: what revlib's pins declare for working with a gpu package
    for name, version in sorted(have.items()):
        try:
            requires, extras = pinned_metadata(name, version)
        except subprocess.CalledProcessError:
            continue  # a lock entry for another platform; its own install is checked by scripts/env.sh
        for extra in integration_extras(extras, set(gpu)):
            found = conflicts(f"{name} {version} (its '{extra}' extra)", requires, have_all, {**ENV, "extra": extra})
            print(f"{name} {version}[{extra}]: {'conflict' if found else 'ok'}")
            problems += found

    # 4: environment.yml installs the same pins
    problems += environment_yml(have_all)

    for p in problems:
        print("CONFLICT", p)
    print("OK: the gpu extra resolves with revlib's pins" if not problems else f"{len(problems)} conflict(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
