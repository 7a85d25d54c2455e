"""Params files: every shipped file passes `revlib check`; broken ones fail with exit 2 naming the fault."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from revlib.lab.cli import app

REPO = Path(__file__).resolve().parent.parent
BROKEN = Path(__file__).parent / "params_broken"
runner = CliRunner()

SHIPPED = sorted(p for p in (REPO / "params").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO / "params")))
def test_every_shipped_params_file_passes_check(path):
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output


# file -> fragments the message must contain (the YAML path and the fault)
EXPECTED = {
    "unknown_key.yaml": ["base_models[0].pretrian", "unknown key", "did you mean 'pretrain'"],
    "wrong_type.yaml": ["seed", "valid integer", "'lots'"],
    "missing_file.yaml": ["data.source.path", "file not found", "no/such/file.parquet"],
    "impossible_value.yaml": ["data.n_train", "greater than or equal to 2"],
    "missing_section.yaml": ["stage 02_sft needs a 'sft' section"],
    "not_yaml.yaml": ["not valid YAML"],
    "bad_task.yaml": ["data.source", "knobs.steps", "greater than or equal to 1", "knobs.colour"],
    "many_faults.yaml": ["seeed", "did you mean 'seed'", "base_models[0]", "unknown preset 'enormous'",
                         "data.n_test", "data.source.knobz", "did you mean 'knobs'"],
    "duplicate_key.yaml": ["duplicate key 'n_train'", "first on line 8, again on line 10"],
    "not_utf8.yaml": ["not UTF-8 text", "byte 0xe9"],
    "a_directory.yaml": ["is a directory"],
    "empty.yaml": ["the params file is empty"],
    "negative_max_steps.yaml": ["sft.max_steps", "at least 1, or -1", "got -50"],
    "infinite_lr.yaml": ["base_models[0].pretrain.lr", "finite number"],
    "pool_synthetic_too_small.yaml": ["data:", "200 distinct problems needed", "task 'arith' cannot draw"],
    "pool_file_too_small.yaml": ["data:", "650 forward examples needed", "r1k-probe-100.parquet holds 50 distinct questions"],
    "lora_bogus_targets.yaml": ["sft.lora.target_modules", "['qkv_proj', 'fc1'] match no module of base model 'm'",
                                "q_proj"],
    "negatives_task_typo.yaml": ["negatives:", "unknown task 'arithh'"],
    "negatives_knobs_typo.yaml": ["negatives:", "knobs.stepz"],
    "star_graph_bad_knobs.yaml": ["star_graph:", "knobs.degree", "greater than or equal to 2"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_params_fail_with_exit_2_and_name_the_fault(name):
    result = runner.invoke(app, ["check", str(BROKEN / name)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    text = " ".join(result.output.split())
    for fragment in EXPECTED[name]:
        assert fragment in text, f"{fragment!r} not in:\n{result.output}"


def test_broken_params_stop_run_before_any_compute(tmp_path):
    out = tmp_path / "outputs"
    broken = tmp_path / "broken.yaml"
    broken.write_text((BROKEN / "many_faults.yaml").read_text() + f"output_dir: {out}\n")
    result = runner.invoke(app, ["run", str(broken)])
    assert result.exit_code == 2
    assert not out.exists()


def test_every_broken_file_is_covered():
    assert {p.name for p in BROKEN.glob("*.yaml")} == set(EXPECTED)


def test_missing_params_file(tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "params file not found" in result.output


def test_paths_resolve_relative_to_the_params_file(tmp_path):
    from revlib.params import load

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "probe.parquet").write_bytes(b"")
    p = tmp_path / "sub" / "exp.yaml"
    p.write_text("experiment: x\nstages: [01_reverse_data]\nbase_models: [{name: m}]\n"
                 "output_dir: out\ndata: {source: {kind: r1k, path: probe.parquet}}\n")
    exp = load(p)
    assert exp.output_dir == (tmp_path / "sub" / "out").resolve()
    assert exp.data.source.path == (tmp_path / "sub" / "probe.parquet").resolve()
