"""Shared fixtures: tiny random models built from a config, and params files redirected to tmp dirs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
PARAMS = REPO / "params"

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the multiprocess tier runs the GPU launch configs (ddp, zero3) as CPU processes on purpose; tests of the refusal unset it
os.environ.setdefault("REVLIB_ALLOW_CPU", "1")


@pytest.fixture(scope="session")
def task_tokenizer():
    """A byte-level BPE tokenizer for the task world, with the chat template."""
    from revlib.core import render
    from revlib.modeling.models import build_tokenizer
    from revlib.tasks import get_task

    corpus = [render.DEFAULT_SYSTEM]
    for name in ("arith", "star_graph"):
        fam = get_task(name)
        corpus += [p + t for p, t in fam.primitive_skills(random.Random(0), 300)]
        for fwd in fam.sample(0, 50):
            for r in (fwd, fam.invert(fwd)):
                corpus.append(r.question + "\n" + render.assistant_content(r.reasoning, r.answer))
    return build_tokenizer(corpus, vocab_size=512)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, task_tokenizer) -> Path:
    """A random-initialised micro Qwen2 model and its tokenizer, saved with save_pretrained."""
    from revlib.modeling.models import build_model

    path = tmp_path_factory.mktemp("micro_base")
    model = build_model("micro", task_tokenizer, seed=0)
    model.save_pretrained(path)
    task_tokenizer.save_pretrained(path)
    return path


def write_params(src: Path | dict, tmp_path: Path, **overrides) -> Path:
    """Copy a params file (or dict) into tmp_path with outputs under tmp_path/outputs; overrides merge top-level keys."""
    raw = yaml.safe_load(Path(src).read_text()) if not isinstance(src, dict) else dict(src)
    raw["output_dir"] = str(tmp_path / "outputs")
    raw.update(overrides)
    base = Path(src).parent if not isinstance(src, dict) else PARAMS
    # keep relative data paths working from the copy
    target = tmp_path / "params.yaml"
    text = yaml.safe_dump(raw, sort_keys=False)
    target.write_text(text)
    if base.resolve() != tmp_path.resolve():
        _rebase_paths(raw, base, target)
    return target


def _rebase_paths(raw: dict, base: Path, target: Path) -> None:
    def fix(node):
        if isinstance(node, dict):
            return {k: (str((base / v).resolve()) if k in ("path", "probe_file") and isinstance(v, str) and not os.path.isabs(v) else fix(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    target.write_text(yaml.safe_dump(fix(raw), sort_keys=False))


@pytest.fixture
def params_copy(tmp_path):
    def make(src, **overrides):
        return write_params(src, tmp_path, **overrides)

    return make


@pytest.fixture(scope="session")
def foundation_run(tmp_path_factory):
    """The foundation smoke experiment (params/smoke/foundation.yaml), run once through the CLI."""
    import subprocess
    import sys

    from revlib.params import load

    tmp = tmp_path_factory.mktemp("foundation_run")
    raw = yaml.safe_load((PARAMS / "smoke" / "foundation.yaml").read_text())
    raw["output_dir"] = str(tmp / "outputs")
    params = tmp / "smoke.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "revlib.lab.cli", "run", str(params)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return params, load(params)


def write_synthetic_test_sets(run_dir: Path, seed: int, n: int) -> Path:
    """A notebook-01-shaped run dir holding n forward arith test problems and their reverse twins."""
    from revlib.core.records import write_records
    from revlib.tasks import get_task

    fam = get_task("arith")
    fwd = fam.sample(seed, n)
    write_records(run_dir / "sets" / "test_forward.jsonl", fwd)
    write_records(run_dir / "sets" / "test_reverse.jsonl", [fam.invert(f) for f in fwd])
    return run_dir
