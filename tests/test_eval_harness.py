"""lm-evaluation-harness as the engine: our task YAMLs, the chat-rendered prompt, the HF backend with and
without a LoRA adapter, samples per problem, and scoring by the task family's verifier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from revlib.core import render
from revlib.evaluation import harness, score
from revlib.modeling import rollouts
from revlib.params.benchmarks import BenchmarkParams
from revlib.tasks import get_task

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A notebook-01-shaped run dir with 3 forward and 3 reverse test problems."""
    from tests.conftest import write_synthetic_test_sets

    return write_synthetic_test_sets(tmp_path_factory.mktemp("data"), seed=7, n=3)


def _bp(**kw) -> BenchmarkParams:
    return BenchmarkParams(**({"max_gen_toks": 8, "batch_size": 4} | kw))


def test_tasks_are_registered_through_the_include_path():
    names = harness.task_manager().all_subtasks
    for task in ("synthetic_forward", "synthetic_reverse", "aime24", "math500", "gpqa_diamond"):
        assert harness.lm_eval_name(task) in names


def test_synthetic_task_needs_the_data_file(tmp_path):
    with pytest.raises(ValueError, match="test_forward"):
        harness.task_config("synthetic_forward", None)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        harness.task_config("synthetic_forward", tmp_path / "nope.jsonl")


def test_hf_backend_prompt_is_the_rendered_chat_prompt(tiny_model_dir, task_tokenizer, data_dir):
    ref = harness.ModelRef("base", "-", str(tiny_model_dir))
    ev = harness.evaluate(ref, _bp(), data_dir)
    assert set(ev.samples) == {"synthetic_forward", "synthetic_reverse"}
    assert all(len(v) == 3 for v in ev.samples.values())
    for task, samples in ev.samples.items():
        for s in samples:
            context, gen = s["arguments"][0]
            assert context == render.prompt_text(task_tokenizer, s["doc"]["question"])
            assert gen["max_gen_toks"] == 8 and "<|im_end|>" in gen["until"]
        rows = score.score_samples(task, samples)
        # our re-grading agrees with lm-eval's own score per problem
        assert [r["correct"] for r in rows] == [bool(s["acc"]) for s in samples]


def test_lora_adapter_is_passed_to_lm_eval(tiny_model_dir, data_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))
    with torch.no_grad():  # make the adapter matter for greedy decoding
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert rollouts.adapter_rank(tmp_path / "adapter") == 4
    bp = _bp(tasks=["synthetic_reverse"], max_gen_toks=12)
    with_adapter = harness.evaluate(harness.ModelRef("sft", "reverse", str(tiny_model_dir), str(tmp_path / "adapter")), bp, data_dir)
    plain = harness.evaluate(harness.ModelRef("base", "-", str(tiny_model_dir)), bp, data_dir)
    assert with_adapter.config["model_args"]["peft"] == str(tmp_path / "adapter")
    resp = [s["resps"] for s in with_adapter.samples["synthetic_reverse"]]
    assert resp != [s["resps"] for s in plain.samples["synthetic_reverse"]]
    # merged into the base first (faster on CPU): the same greedy answers
    merged = harness.evaluate(harness.ModelRef("sft", "reverse", str(tiny_model_dir), str(tmp_path / "adapter")),
                              bp.model_copy(update={"merge_adapter": True}), data_dir, work_dir=tmp_path / "work")
    assert "peft" not in merged.config["model_args"] and (tmp_path / "work" / "merged" / "config.json").exists()
    assert [s["resps"] for s in merged.samples["synthetic_reverse"]] == resp


def test_samples_per_problem_are_all_kept_and_averaged(tiny_model_dir, data_dir):
    bp = _bp(tasks=["synthetic_forward"], temperature=1.0, samples=3)
    ev = harness.evaluate(harness.ModelRef("base", "-", str(tiny_model_dir)), bp, data_dir)
    rows = score.score_samples("synthetic_forward", ev.samples["synthetic_forward"])
    assert len(rows) == 9 and {r["sample"] for r in rows} == {0, 1, 2}
    summary = score.summarise("synthetic_forward", rows)
    assert summary["problems"] == 3 and summary["samples_per_problem"] == 3


class _Oracle:
    """Stand-in LM for lm-eval: answers each question with the given response (right or wrong)."""

    def __new__(cls, responses: dict[str, str]):
        from lm_eval.api.model import LM

        class Oracle(LM):
            def loglikelihood(self, requests):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

            def generate_until(self, requests):
                return [responses[r.args[0]] for r in requests]

        return Oracle()


@pytest.mark.parametrize("right", [True, False])
def test_lm_eval_scores_with_the_task_verifier(data_dir, right):
    from lm_eval import simple_evaluate

    fam = get_task("arith")
    recs = {r.question: r for r in fam.sample(7, 3)}
    recs |= {r.question: r for r in (fam.invert(f) for f in fam.sample(7, 3))}
    responses = {q: render.assistant_content(r.reasoning, r.answer if right else str(int(r.answer) + 1)) + "<|im_end|>"
                 for q, r in recs.items()}
    out = simple_evaluate(model=_Oracle(responses), tasks=harness.task_configs(_bp(), data_dir),
                          task_manager=harness.task_manager(), bootstrap_iters=0, log_samples=True)
    for task in ("revlib_synthetic_forward", "revlib_synthetic_reverse"):
        assert out["results"][task]["acc,none"] == (1.0 if right else 0.0)


def test_vllm_args_set_lora_rank_from_the_adapter(tmp_path, monkeypatch):
    import importlib.util
    import json

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 256}))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    kind, args = harness.model_args(harness.ModelRef("sft", "mix", "base-dir", str(adapter)),
                                    _bp(backend="vllm", data_parallel_size=4))
    assert kind == "vllm" and args["max_lora_rank"] == 256 and args["lora_local_path"] == str(adapter)
    assert args["data_parallel_size"] == 4
    assert rollouts.vllm_lora_rank(17) == 32
    with pytest.raises(ValueError, match="merge_adapter"):
        rollouts.vllm_lora_rank(1024)


def test_the_instruction_follows_real_questions_for_the_models_it_is_for():
    from pathlib import Path

    from revlib.params.benchmarks import INSTRUCTIONS, BenchmarkParams

    math500 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "math500.jsonl"
    local = {"math500": str(math500)} if math500.exists() else {}
    bp = BenchmarkParams(tasks=["math500"], models=["base", "sft"], instruction="qwen-math", local_paths=local)
    assert bp.instruction_text("base") == INSTRUCTIONS["qwen-math"]
    assert bp.instruction_text("sft") is None  # an s1-format model gets the bare problem
    assert BenchmarkParams(tasks=["math500"], instruction="Think, then answer.").instruction_text("base") == "Think, then answer."
    cfg = harness.task_configs(bp, None, ["math500"], instruction=bp.instruction_text("base"))[0]
    assert cfg["doc_to_text"]({"question": "What is 1+1?"}) == "What is 1+1?\n\n" + INSTRUCTIONS["qwen-math"]
    bare = harness.task_configs(bp, None, ["math500"])[0]
    assert bare["doc_to_text"]({"question": "What is 1+1?"}) == "What is 1+1?"
