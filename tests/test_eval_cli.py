"""`revlib eval`: one model, alone, through notebook 05 and its lm-eval tasks, writing the experiment's tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from revlib.lab.cli import app

REPO = Path(__file__).resolve().parent.parent
MATH500 = REPO.parent / "shared" / "data" / "math500.jsonl"
runner = CliRunner()


def test_bad_arguments_exit_2_before_any_compute(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", str(tmp_path), "-b", "mmlu", "--local", "math500", "--output-dir", str(out)])
    assert result.exit_code == 2
    assert "mmlu" in result.output and "want name=path" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["eval", "not a model", "-b", "math500", "--output-dir", str(out)])
    assert result.exit_code == 2 and "neither a model folder nor a Hub id" in result.output


def test_local_file_is_checked_like_params(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"question_text": "1+1"}\n')
    (tmp_path / "model").mkdir()
    result = runner.invoke(app, ["eval", str(tmp_path / "model"), "-b", "math500", "--local", f"math500={bad}",
                                 "--output-dir", str(tmp_path / "out")], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "local_paths.math500" in " ".join(result.output.split())


@pytest.mark.notebook
@pytest.mark.skipif(not MATH500.exists(), reason="needs ../shared/data beside the repository")
def test_eval_of_the_embedded_base_writes_the_tables(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "revlib.lab.cli", "eval", str(tiny_model_dir), "-b", "math500",
           "--local", f"math500={MATH500}", "--limit", "3", "--max-gen-toks", "8", "--name", "tiny-eval",
           "--output-dir", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    params = yaml.safe_load((out / "tiny-eval.yaml").read_text())
    assert params["stages"] == ["00_base_model", "05_benchmarks"]
    assert params["base_models"][0] == {"name": "model", "source": "local", "path": str(tiny_model_dir)}
    cell = out / "tiny-eval" / "05_benchmarks" / "model"
    results = (cell / "results.csv").read_text()
    assert "math500" in results and "base" in results
    assert (cell / "05_benchmarks.html").exists() and list(cell.glob("table1.*"))
    assert len((cell / "samples").rglob("*.jsonl").__next__().read_text().splitlines()) == 3
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)  # finished: nothing re-runs
    assert again.returncode == 0 and "skip" in again.stdout


def test_an_adapter_is_merged_into_its_base_first(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from revlib.modeling import models
    from revlib.lab.cli import eval_params

    model = models.load_model(str(tiny_model_dir), dtype="float32")
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    raw = eval_params(str(adapter), ["math500"], {}, "ad", tmp_path / "out")
    spec = raw["base_models"][0]
    assert spec["source"] == "local" and spec["path"] == str((tmp_path / "out" / "ad" / "merged_model").resolve())
    assert (Path(spec["path"]) / "config.json").exists() and not (Path(spec["path"]) / "adapter_config.json").exists()
    hub = eval_params("Qwen/Qwen2.5-0.5B-Instruct", ["aime24"], {}, "hub", tmp_path / "out")
    assert hub["base_models"][0] == {"name": "model", "source": "hub", "id": "Qwen/Qwen2.5-0.5B-Instruct"}
