"""Task families are plug-ins: a tiny package in tests/plugins registers `list_reverse` through the `revlib.tasks`
entry point group (installed, never edited into revlib), or is named by a `module:Class` path in params."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PLUGIN = Path(__file__).parent / "plugins" / "revlib-listrev"

SMOKE = {
    "experiment": "smoke-plugin", "seed": 0, "require_learning": False,  # too short to learn; checks the plumbing
    "stages": ["00_base_model", "01_reverse_data", "02_sft", "05_benchmarks"],
    "base_models": [{"name": "micro", "preset": "micro",
                     "pretrain": {"steps": 5, "batch_size": 8, "corpus_size": 200, "eval_size": 10}}],
    "data": {"source": {"kind": "synthetic", "task": "list_reverse", "knobs": {"length": 3}},
             "n_train": 8, "n_test": 4, "probe_train": 4, "probe_test": 4},
    "sft": {"train_sets": ["mix"], "lora": {"r": 4, "alpha": 8}, "epochs": 1, "lr": 0.01, "batch_size": 4,
            "max_length": 256},
    "benchmarks": {"tasks": ["synthetic_forward", "synthetic_reverse"], "models": ["sft"], "max_gen_toks": 16,
                   "batch_size": 8, "limit": 4},
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The plug-in installed (pip, no network) into a folder of its own; the environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("src")
    subprocess.run(["cp", "-r", str(PLUGIN), str(build)], check=True)  # the build writes beside the sources
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--target", str(target), str(build / PLUGIN.name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1"}


def _cli(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "revlib.lab.cli", *args], capture_output=True, text=True, cwd=REPO, env=env)


def _params(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(SMOKE)) | {"output_dir": str(tmp_path / "outputs")}
    for k, v in changes.items():
        raw["data"]["source"][k] = v
    p = tmp_path / "plugin.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def test_entry_point_registers_the_family(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "from revlib.tasks import REGISTRY, get_task; "
                            "t = get_task('list_reverse', {'length': 3}); f = t.sample(0, 1)[0]; "
                            "print(sorted(REGISTRY), t.verify(t.invert(f), t.premise(f)))"],
                           capture_output=True, text=True, env=installed)
    assert probe.returncode == 0, probe.stderr
    assert "'list_reverse'" in probe.stdout and probe.stdout.strip().endswith("True")
    assert _cli(installed, "check", str(_params(tmp_path))).returncode == 0
    bad = _cli(installed, "check", str(_params(tmp_path, knobs={"length": 1})))
    assert bad.returncode == 2 and "knobs.length" in bad.stdout + bad.stderr


def test_without_the_package_the_name_is_unknown(tmp_path):
    out = _cli({**os.environ}, "check", str(_params(tmp_path)))
    assert out.returncode == 2
    assert "unknown task 'list_reverse'" in out.stdout + out.stderr and "module:Class" in out.stdout + out.stderr


def test_module_class_path_needs_no_entry_point(tmp_path, monkeypatch):
    from revlib.params import load
    from revlib.tasks import REGISTRY, get_task

    monkeypatch.syspath_prepend(str(PLUGIN))  # importable, not installed: no entry point
    exp = load(_params(tmp_path, task="revlib_listrev:ListReverse"))
    family = get_task(exp.data.source.task, exp.data.source.knobs)
    assert family.name == "list_reverse" and "list_reverse" in REGISTRY
    with pytest.raises(KeyError, match="cannot import Nope"):
        get_task("revlib_listrev:Nope")


@pytest.mark.notebook
def test_plugin_family_runs_through_00_01_02_05(installed, tmp_path):
    params = _params(tmp_path)
    out = _cli(installed, "run", str(params))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    root = tmp_path / "outputs" / "smoke-plugin"
    sets = (root / "01_reverse_data" / "data" / "sets" / "test_reverse.jsonl").read_text()
    assert '"task": "list_reverse"' in sets and "What was the list?" in sets
    assert (root / "05_benchmarks" / "micro" / "results.csv").exists()
