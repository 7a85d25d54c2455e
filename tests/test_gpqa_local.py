"""Local benchmark files are checked at `revlib check`, and both GPQA layouts grade with the right letter."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import datasets
import yaml
from typer.testing import CliRunner

from revlib.lab.cli import app
from revlib.core.grade import grade_letter
from revlib.evaluation.lmeval_tasks.utils import process_gpqa

runner = CliRunner()

HUB_ROW = {"Question": "Which particle mediates the electromagnetic force?", "Correct Answer": "photon",
           "Incorrect Answer 1": "gluon", "Incorrect Answer 2": "W boson", "Incorrect Answer 3": "graviton"}
LETTERED_ROW = {"question": "Which particle mediates the electromagnetic force?\n(A) gluon\n(B) W boson\n"
                            "(C) photon\n(D) graviton", "answer": "C"}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _params(tmp_path: Path, **local) -> Path:
    raw = {"experiment": "gpqa", "stages": ["05_benchmarks"], "base_models": [{"name": "m", "preset": "micro"}],
           "output_dir": str(tmp_path / "out"),
           "benchmarks": {"tasks": sorted(local), "models": ["base"], "local_paths": {k: str(v) for k, v in local.items()}}}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_pre_lettered_layout_keeps_the_users_letters(tmp_path):
    [doc] = process_gpqa(datasets.Dataset.from_list([LETTERED_ROW])).to_list()
    assert doc["gold"] == "C" and doc["choices"] == ["gluon", "W boson", "photon", "graviton"]
    assert "(C) photon" in doc["question"]  # shown as the user lettered it
    assert grade_letter("<|im_start|>answer\nAnswer: C", doc["gold"]).correct
    result = runner.invoke(app, ["check", str(_params(tmp_path, gpqa_diamond=_jsonl(tmp_path / "g.jsonl", [LETTERED_ROW])))])
    assert result.exit_code == 0, result.output


def test_hub_layout_orders_choices_by_the_stated_seeded_rule(tmp_path):
    [doc] = process_gpqa(datasets.Dataset.from_list([HUB_ROW])).to_list()
    expected = ["photon", "gluon", "W boson", "graviton"]
    random.Random(int(hashlib.sha256(HUB_ROW["Question"].encode()).hexdigest()[:8], 16)).shuffle(expected)
    assert doc["choices"] == expected
    assert doc["choices"]["ABCD".index(doc["gold"])] == "photon"
    assert f"{doc['gold']}) photon" in doc["question"]
    result = runner.invoke(app, ["check", str(_params(tmp_path, gpqa_diamond=_jsonl(tmp_path / "g.jsonl", [HUB_ROW])))])
    assert result.exit_code == 0, result.output


def test_missing_fields_fail_check_naming_file_and_fields(tmp_path):
    bad_gpqa = _jsonl(tmp_path / "gpqa.jsonl", [HUB_ROW, {"Question": "q?", "Correct Answer": "x"}])
    result = runner.invoke(app, ["check", str(_params(tmp_path, gpqa_diamond=bad_gpqa))], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "benchmarks.local_paths.gpqa_diamond" in text or "local_paths.gpqa_diamond" in text
    assert f"{bad_gpqa} line 2" in text and "Incorrect Answer 1" in text and "pre-lettered" in text
    bad_math = _jsonl(tmp_path / "math.jsonl", [{"question_text": "1+1", "solution": "2"}])
    result = runner.invoke(app, ["check", str(_params(tmp_path, math500=bad_math))], env={"COLUMNS": "400"})
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and f"{bad_math} line 1" in text and "problem + answer" in text
