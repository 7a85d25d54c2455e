"""Check that `pip install -c requirements.lock -e ".[gpu,test]"` resolves, by pip's own resolver, metadata only.

One full resolution (`pip install --dry-run --ignore-installed --report`, nothing installed) of revlib's
dependencies with the `test` and `gpu` extras and the integrations revlib uses (trl[vllm,liger], lm-eval[vllm]),
under `-c requirements.lock`. What pip reports is compared with the lock: every package the lock pins must
resolve to its pin.

The two source builds stand apart: flash-attn and deepspeed ship only sdists, whose setup.py imports torch,
so pip cannot build them in a dry run's isolated build environment. Their own metadata is built once
against the installed torch with the CUDA build skipped, and what they require joins the resolution.

Metadata only, no multi-GB wheels: the package index here serves no PEP 658 metadata files, so a plain
dry run downloads every wheel it considers (torch's CUDA 13 wheel and the nvidia-* libraries: gigabytes).
pip's `fast-deps` reads each wheel's METADATA with HTTP range requests instead, and pip >= 26.0 returns from
`--dry-run` before downloading anything (pypa/pip#13482). That pip runs from its wheel, not installed.
Measured here: about 100 MB of network for the whole set.

Machine-local pip configuration (find-links folders of CPU wheels, constraint files) is left out, so the
resolution is the one a GPU machine gets from the index (`PIP_INDEX_URL` is honoured).

    python scripts/check_gpu_extra.py           # exit 0: resolves; 1: pip's conflict, or a lock pin it moved
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path(os.environ.get("REVLIB_LOCK", ROOT / "requirements.lock"))  # another lock: to try a change
RESOLVER_PIP = "pip==26.0.1"  # has pypa/pip#13482: --dry-run downloads nothing once metadata is read
SOURCE_BUILDS = ("flash-attn", "deepspeed")  # sdists whose setup.py imports torch
INTEGRATIONS = ("trl[vllm,liger]", "lm-eval[vllm]")  # what revlib's own pins declare for the gpu packages
# the lock is for Linux x86_64, CPython 3.11; its markers are read there
ENV = {**default_environment(), "extra": ""}


def lock_pins(text: str) -> dict[str, str]:
    """name -> exact version of every `name==version` line of a lock file."""
    out = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = next(s.version for s in req.specifier if s.operator == "==")
    return out


def requirements(project: dict) -> tuple[list[str], list[str]]:
    """(what the resolution gets, the source builds) from pyproject: dependencies, `test` and `gpu` extras."""
    extras = project["optional-dependencies"]
    plain, apart = [], []
    for spec in project["dependencies"] + extras["test"] + extras["gpu"]:
        name = canonicalize_name(Requirement(spec).name)
        target = apart if name in SOURCE_BUILDS else plain
        if spec not in target and not any(canonicalize_name(Requirement(s).name) == name for s in target):
            target.append(spec)
    return plain + list(INTEGRATIONS), apart


def resolver_pip(cache: Path) -> Path:
    """The pinned pip's wheel (run as `python <wheel>/pip`), downloaded once."""
    name = RESOLVER_PIP.replace("==", "-")
    found = sorted(cache.glob(f"{name}-py3-none-any.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(cache), RESOLVER_PIP],
                       check=True)
        found = sorted(cache.glob(f"{name}-py3-none-any.whl"))
    return found[0]


def index_env() -> dict[str, str]:
    """The environment for pip without this machine's local wheel folders and caps."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: its find-links and constraints are this machine's
    return env


def source_build_requires(spec: str) -> list[str]:
    """What an sdist requires, from its own metadata built against the installed torch (CUDA build skipped)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {**index_env(), "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE", "DS_BUILD_OPS": "0"}
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                               "--quiet", "--no-build-isolation", "--no-binary", Requirement(spec).name,
                               "--report", str(report), spec], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{spec}: pip could not build its metadata:\n{done.stderr.strip()[-1500:]}")
        meta = json.loads(report.read_text())["install"][0]["metadata"]
    return [r for r in meta.get("requires_dist", []) if Requirement(r).marker is None
            or Requirement(r).marker.evaluate(ENV)]


def resolve(reqs: list[str], lock: Path, pip_wheel: Path) -> tuple[int, dict[str, str], str]:
    """(pip's exit status, name -> version it would install, its output's tail)."""
    with tempfile.TemporaryDirectory() as tmp:
        req_file, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        req_file.write_text("\n".join(reqs) + "\n")
        done = subprocess.run([sys.executable, str(pip_wheel / "pip"), "install", "--dry-run", "--ignore-installed",
                               "--use-feature=fast-deps", "--progress-bar", "off", "--disable-pip-version-check",
                               "--report", str(report), "-c", str(lock), "-r", str(req_file)],
                              capture_output=True, text=True, env=index_env())
        tail = (done.stdout + done.stderr).strip()[-4000:]
        if done.returncode != 0:
            return done.returncode, {}, tail
        installs = json.loads(report.read_text())["install"]
    return 0, {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}, tail


def environment_yml(pins: dict[str, str]) -> list[str]:
    """environment.yml installs with -c requirements.lock and pins nothing different."""
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip = next((d["pip"] for d in deps if isinstance(d, dict) and "pip" in d), [])
    out = [] if "-c requirements.lock" in pip else ["environment.yml: its pip section does not use -c requirements.lock"]
    for line in pip:
        if "==" in line and not line.startswith("-"):
            req = Requirement(line)
            want, have = pins.get(canonicalize_name(req.name)), str(req.specifier).lstrip("=")
            if want is not None and have != want:
                out.append(f"environment.yml pins {req.name}=={have}; requirements.lock pins {want}")
    return out


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins(LOCK.read_text())
    reqs, apart = requirements(project)
    problems = environment_yml(pins)
    for spec in apart:
        name, version = canonicalize_name(Requirement(spec).name), str(Requirement(spec).specifier).lstrip("=")
        if pins.get(name, version) != version:
            problems.append(f"pyproject pins {spec}; requirements.lock pins {name}=={pins[name]}")
        needs = source_build_requires(spec)
        print(f"{spec} (source build, its own metadata): requires {', '.join(needs) or 'nothing'}")
        reqs += needs
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "revlib"
    cache.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    code, resolved, tail = resolve(reqs, LOCK, resolver_pip(cache))
    print(f"pip's resolution of .[gpu,test] under -c requirements.lock: {time.monotonic() - start:.0f} s")
    if code != 0:
        problems.append(f"pip could not resolve (exit {code}):\n{tail}")
    else:
        for name in ("torch", "vllm", "transformers", "trl", "numpy", "mistral-common", "flashinfer-python", "ray"):
            print(f"  {name} {resolved.get(name, '-')}")
        print(f"  ({len(resolved)} packages)")
        problems += [f"{name}: the lock pins {pins[name]}, pip resolved {v}"
                     for name, v in sorted(resolved.items()) if name in pins and pins[name] != v.split("+")[0]]
    for p in problems:
        print("CONFLICT", p)
    print("OK: the gpu extra resolves with revlib's pins" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
