"""Tables 1 and 2 from a results frame; the LLM judge through a mock OpenAI-compatible API; benchmark params."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from revlib import params
from revlib.evaluation import score, tables
from revlib.evaluation.judge import JudgeError, LLMJudge
from revlib.params.benchmarks import BenchmarkParams

REPO = Path(__file__).resolve().parent.parent
TASKS = ["aime24", "math500"]


def _results() -> pd.DataFrame:
    rows = []
    acc = {("sft", "forward"): (0.10, 0.50), ("sft", "reverse"): (0.20, 0.40),
           ("dpo", "forward"): (0.15, 0.45), ("dpo", "reverse"): (0.20, 0.40)}
    for (stage, ts), (a, m) in acc.items():
        for task, v, n in (("aime24", a, 30), ("math500", m, 500)):
            rows.append({"model": "q7b", "stage": stage, "train_set": ts, "task": task, "problems": n,
                         "accuracy": v, "ci_low": v - 0.05, "ci_high": v + 0.05})
    return pd.DataFrame(rows)


def test_table1_best_per_model_in_bold_with_counts(tmp_path):
    t = tables.table1(_results(), TASKS)
    assert list(t.cells["train set"]) == ["forward", "reverse"]
    assert t.cells.loc[0, "math500"] == "50.0 [45.0, 55.0] n=500"
    assert t.bold.loc[0, "math500"] and not t.bold.loc[1, "math500"]
    assert t.bold.loc[1, "aime24"] and not t.bold.loc[0, "aime24"]
    assert t.numbers.loc[0, tables.AVERAGE] == pytest.approx(0.30)
    files = t.write(tmp_path)
    assert "**50.0 [45.0, 55.0] n=500**" in files["md"].read_text()
    assert "<b>50.0 [45.0, 55.0] n=500</b>" in files["html"].read_text()
    assert pd.read_csv(files["csv"])["aime24_n"].tolist() == [30, 30]


def test_table2_changes_from_the_sft_baseline():
    t = tables.table2(_results(), TASKS)
    fwd = t.cells.iloc[0]
    assert fwd["train set"] == "forward + DPO"
    assert fwd["aime24"] == "15.0 (+5.0 ↑)" and fwd["math500"] == "45.0 (-5.0 ↓)"
    assert t.cells.iloc[1]["aime24"] == "20.0 (+0.0 =)"
    assert "[+0.0% rel.]" in fwd[tables.AVERAGE]  # (0.15+0.45)/2 == (0.10+0.50)/2
    assert t.numbers.iloc[0]["aime24_delta"] == pytest.approx(0.05)


def test_table2_empty_without_dpo():
    res = _results()
    t = tables.table2(res[res["stage"] == "sft"], TASKS)
    assert len(t.cells) == 0 and "Table 2" in t.html()


def _judge(reply: str, seen: list, status: int = 200) -> LLMJudge:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"choices": [{"message": {"content": reply}}]})
    return LLMJudge("http://judge.local/v1", "gpt-4o-mini", "REVLIB_TEST_JUDGE_KEY", transport=httpx.MockTransport(handler),
                    sleep=lambda s: None)


def test_judge_settles_only_undecided_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("REVLIB_TEST_JUDGE_KEY", "sk-secret-123")
    seen: list = []
    judge = _judge("YES", seen)
    samples = [
        {"doc_id": 0, "doc": {"question": "q0", "gold": "2"}, "filtered_resps": ["Answer: 2"]},  # decided right
        {"doc_id": 1, "doc": {"question": "q1", "gold": "2"}, "filtered_resps": ["Answer: 3"]},  # decided wrong
        {"doc_id": 2, "doc": {"question": "q2", "gold": "\\text{Evelyn}"}, "filtered_resps": ["Answer: Evelyn's"]},
    ]
    rows = score.score_samples("math500", samples, judge)
    assert [r["correct"] for r in rows] == [True, False, True]
    assert [r["judged"] for r in rows] == [False, False, True]
    assert len(seen) == 1 and seen[0].headers["Authorization"] == "Bearer sk-secret-123"
    body = json.loads(seen[0].content)
    assert body["model"] == "gpt-4o-mini" and "Evelyn's" in body["messages"][0]["content"]
    # the key never lands in what is written
    assert "sk-secret" not in json.dumps(rows)


def test_judge_errors_are_clear(monkeypatch):
    monkeypatch.delenv("REVLIB_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(JudgeError, match="REVLIB_TEST_JUDGE_KEY"):
        _judge("YES", []).equivalent("q", "a", "b")
    monkeypatch.setenv("REVLIB_TEST_JUDGE_KEY", "k")
    with pytest.raises(JudgeError, match="HTTP 500"):
        _judge("YES", [], status=500).equivalent("q", "a", "b")
    assert _judge("maybe", []).equivalent("q", "a", "b") == (None, "maybe")


def test_an_unreadable_judge_reply_is_counted_not_fatal(monkeypatch):
    """One reply that is neither YES nor NO leaves the answer ungraded-right, is marked and counted, and the rest
    of the evaluation goes on."""
    monkeypatch.setenv("REVLIB_TEST_JUDGE_KEY", "k")
    sample = {"doc_id": 0, "doc": {"question": "q", "gold": "\\text{Evelyn}"}, "filtered_resps": ["Answer: Evelyn's"]}
    rows = score.score_samples("math500", [sample], _judge("maybe", []))
    assert rows[0]["judged"] and rows[0]["judge_unreadable"] and rows[0]["correct"] is False
    assert "unreadable" in rows[0]["reason"]
    assert score.summarise("math500", rows)["judge_unreadable"] == 1


def test_benchmark_params_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="cannot be replaced"):
        BenchmarkParams(local_paths={"synthetic_forward": str(REPO / "params" / "demo.yaml")})
    with pytest.raises(ValueError, match="not among tasks"):
        BenchmarkParams(tasks=["aime24"], local_paths={"math500": str(REPO / "params" / "demo.yaml")})
    with pytest.raises(ValueError, match="temperature"):
        BenchmarkParams(samples=4)
    with pytest.raises(ValueError, match="file not found"):
        BenchmarkParams(tasks=["math500"], local_paths={"math500": str(tmp_path / "missing.jsonl")})
    with pytest.raises(ValueError):
        BenchmarkParams(judge={"api_key_env": "sk-not a name"})


# The benchmarks section proposed for the paper replicas (params/r1k-qwen2.5-*.yaml).
REPLICA_BENCHMARKS = """
benchmarks:
  tasks: [aime24, math500, gpqa_diamond]
  models: [base, sft, dpo]
  backend: vllm
  dtype: bfloat16
  max_gen_toks: 30000
  max_model_len: 32768
  temperature: 0.0
  samples: 1
  data_parallel_size: 8
  judge: {base_url: "https://api.openai.com/v1", model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
"""


@pytest.mark.parametrize("name", ["r1k-qwen2.5-7b.yaml", "r1k-qwen2.5-14b.yaml", "demo.yaml", "smoke/benchmarks.yaml"])
def test_params_with_benchmarks_pass_check(name, tmp_path):
    path = REPO / "params" / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    raw = yaml.safe_load(path.read_text())
    if "benchmarks" not in raw and name.startswith("r1k"):
        raw |= yaml.safe_load(REPLICA_BENCHMARKS)
        raw["stages"] = list(dict.fromkeys(raw["stages"] + ["05_benchmarks"]))
    if "benchmarks" not in raw:
        pytest.skip(f"{name} has no benchmarks section yet")
    exp = params.validate(raw, path)
    assert exp.benchmarks is not None
    assert [c for c in __import__("revlib.lab.plan", fromlist=["plan"]).plan(exp) if c.stage == "05_benchmarks"]
