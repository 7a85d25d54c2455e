"""The local Hugging Face teacher: batched generate on a tiny random model, cached like the API teacher."""

from __future__ import annotations

from pathlib import Path

import yaml

from revlib.data import reverse
from revlib.params import load

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "data.yaml"


def test_hf_teacher_builds_and_caches(tiny_model_dir, params_copy, monkeypatch):
    from revlib.data.teachers import hf
    from revlib.modeling import rollouts

    monkeypatch.setattr(rollouts, "vllm_available", lambda: False)
    raw = yaml.safe_load(SMOKE.read_text())
    raw["data"].update({"n_train": 2, "n_test": 1, "probe_train": 1, "probe_test": 1,
                        "teacher": {"kind": "hf", "model": str(tiny_model_dir), "batch_size": 3, "max_new_tokens": 6,
                                    "temperature": 0.0, "engine": "auto"}})
    exp = load(params_copy(raw))
    built = reverse.build(exp)
    usage = built.info["teacher_usage"]
    # a random model writes no tagged reverse question: every example is rejected with that reason, none lost
    assert usage["paid_requests"] == 5 and usage["cache_hits"] == 0
    assert [r["reason"] for r in built.rejects] == ["malformed_reverse_question"] * 5
    assert built.info["shortfall"]["train"] == 2
    calls = []
    monkeypatch.setattr(hf.HFTeacher, "_hf", lambda self, items: calls.append(items) or [])
    again = reverse.build(exp)
    assert calls == [] and again.info["teacher_usage"]["cache_hits"] == 5
    assert again.rejects == built.rejects
