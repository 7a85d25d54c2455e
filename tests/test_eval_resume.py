"""Stage 05 resumes per model and per benchmark: adding a benchmark evaluates only what is new, nothing
earlier is deleted, a retrained model is evaluated again; the judge caches, retries and keeps a budget."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest

from revlib.evaluation import harness
from revlib.stages import benchmarks
from revlib.evaluation.judge import JudgeBudgetSpent, LLMJudge
from revlib.params.benchmarks import BenchmarkParams


def fake_samples(task: str, answer: str) -> list[dict]:
    return [{"doc_id": i, "doc": {"question": f"{task} q{i}", "gold": "2"}, "filtered_resps": [f"Answer: {answer}"]}
            for i in range(3)]


@pytest.fixture
def evaluated(monkeypatch):
    """harness.evaluate replaced by a recorder: (model label, tasks) per call."""
    calls: list[tuple[str, tuple[str, ...]]] = []

    def evaluate(ref, bp, data_dir, seed=0, work_dir=None, tasks=None, world_files=None):
        tasks = list(bp.all_tasks if tasks is None else tasks)
        calls.append((ref.label, tuple(tasks)))
        return harness.ModelEval(ref, {t: 1.0 for t in tasks}, {t: fake_samples(t, "2") for t in tasks}, 0.1)

    monkeypatch.setattr(harness, "evaluate", evaluate)
    return calls


def make_ctx(tmp_path: Path, tasks: list[str]) -> SimpleNamespace:
    bp = BenchmarkParams(tasks=tasks, models=["sft"])
    exp = SimpleNamespace(benchmarks=bp, seed=0, run_root=tmp_path / "outputs" / "exp")
    run_dir = exp.run_root / "05_benchmarks" / "micro"
    run_dir.mkdir(parents=True, exist_ok=True)
    code = {"revlib/modeling/train.py": "a", "revlib/evaluation/score.py": "b"}  # what the stage's fingerprint covers
    return SimpleNamespace(exp=exp, dir=run_dir, values={"model": "micro"}, upstream=lambda *a: None, code_hashes=code)


@pytest.fixture
def refs(tmp_path):
    out = []
    for label in ("sft", "dpo"):
        folder = tmp_path / "models" / label
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(label.encode())
        out.append(harness.ModelRef(label, "forward", "Qwen/base", str(folder), "Qwen/base"))
    return out


def test_adding_a_benchmark_evaluates_only_what_is_new(tmp_path, evaluated, refs):
    first = benchmarks.run(make_ctx(tmp_path, ["math500"]), refs)
    assert evaluated == [("sft", ("math500",)), ("dpo", ("math500",))]
    # the runner starts a stale cell clean: the stored evaluations live outside the cell's directory
    ctx = make_ctx(tmp_path, ["math500", "aime24"])
    for child in ctx.dir.iterdir():
        child.unlink() if child.is_file() else None
    evaluated.clear()
    second = benchmarks.run(ctx, refs)
    assert evaluated == [("sft", ("aime24",)), ("dpo", ("aime24",))]
    assert sorted(second.reused) == ["dpo__forward/math500", "sft__forward/math500"]
    results = pd.read_csv(ctx.dir / "results.csv")
    assert set(zip(results["stage"], results["task"])) == {(m, t) for m in ("sft", "dpo") for t in ("math500", "aime24")}
    assert first.results["accuracy"].tolist() == [1.0, 1.0]
    for tag in ("sft__forward", "dpo__forward"):
        assert (ctx.dir / "samples" / tag / "math500.jsonl").exists()
    # a retrained model (its weights rewritten at the same path) is evaluated again; the other one is not
    evaluated.clear()
    (Path(refs[1].adapter) / "adapter_model.safetensors").write_bytes(b"retrained")
    benchmarks.run(ctx, refs)
    assert evaluated == [("dpo", ("math500", "aime24"))]


def test_an_evaluation_cut_short_is_redone(tmp_path, evaluated, refs):
    ctx = make_ctx(tmp_path, ["math500"])
    benchmarks.run(ctx, refs[:1])
    entry = next((ctx.exp.run_root / benchmarks.EVAL_STORE).iterdir())
    (entry / "meta.json").unlink()  # killed between the samples and the marker
    evaluated.clear()
    benchmarks.run(ctx, refs[:1])
    assert evaluated == [("sft", ("math500",))]


def _server(replies: list[tuple[int, str]], seen: list):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        status, reply = replies.pop(0) if replies else (200, "YES")
        return httpx.Response(status, json={"choices": [{"message": {"content": reply}}]})

    return httpx.MockTransport(handler)


def test_judge_retries_caches_and_keeps_its_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("REVLIB_TEST_JUDGE_KEY", "k")
    seen: list = []
    sleeps: list[float] = []
    cache = tmp_path / "judge.jsonl"

    def judge(**kw):
        return LLMJudge("http://judge.local/v1", "gpt-4o-mini", "REVLIB_TEST_JUDGE_KEY", cache_path=cache,
                        transport=_server([(429, ""), (500, ""), (200, "YES")], seen), sleep=sleeps.append, **kw)

    assert judge().equivalent("q", "Evelyn's", "Evelyn") == (True, "YES")
    assert len(seen) == 3 and len(sleeps) == 2  # a 429 and a 500, retried with backoff
    seen.clear()
    again = judge(budget_requests=1)
    assert again.equivalent("q", "Evelyn's", "Evelyn") == (True, "YES")  # from the cache: no request, no budget used
    assert seen == [] and again.usage.cache_hits == 1
    # the budget counts paid requests: one fresh question passes (after its retries), the next stops cleanly
    assert again.equivalent("q2", "x", "y")[0] is True
    with pytest.raises(JudgeBudgetSpent, match="budget"):
        again.equivalent("q3", "x", "y")


def test_stage_judge_uses_the_experiment_cache(tmp_path):
    bp = BenchmarkParams(tasks=["math500"], judge={"budget_requests": 5})
    judge = benchmarks.make_judge(bp, tmp_path / "teacher_cache")
    assert judge.cache_path == tmp_path / "teacher_cache" / "judge.jsonl" and judge.budget_requests == 5


def test_store_key_follows_generation_code_not_scoring_code(refs):
    bp = BenchmarkParams(tasks=["synthetic_forward"], models=["sft"])
    code = {"revlib/modeling/train.py": "a", "revlib/evaluation/score.py": "b", "revlib/data/teachers/api.py": "c"}

    def key(**changed):
        return benchmarks.store_key(refs[0], "synthetic_forward", bp, None, 0, code_hashes={**code, **changed})

    assert key() == key(**{"revlib/evaluation/score.py": "b2"}) == key(**{"revlib/data/teachers/api.py": "c2"})
    assert key() != key(**{"revlib/modeling/train.py": "a2"})
