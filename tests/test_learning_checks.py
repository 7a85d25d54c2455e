"""03's kept-skill check: DPO that moves log-probabilities but breaks generation fails its stage."""

from __future__ import annotations

from revlib import learning
from revlib.records import Record


def _records(n):
    return [Record(id=f"p{i}-f", pair_id=f"p{i}", direction="forward", task="arith", question=f"q{i}",
                   reasoning="r", answer=str(i), gold=str(i)) for i in range(n)]


def test_kept_skill_passes_a_small_drop_and_fails_a_collapse(monkeypatch):
    monkeypatch.setattr(learning, "_in_distribution", lambda data_dir, train_set: _records(100))
    scores = {"sft": 98, "ok": 90, "collapsed": 25}
    monkeypatch.setattr(learning, "greedy_outcomes", lambda ckpt, picked: [i < scores[ckpt] for i in range(len(picked))])
    kept = learning.kept_skill_checks("sft", "ok", None, "forward")[0]
    assert kept.passed and kept.value == 0.90 and kept.reference == 0.98
    broken = learning.kept_skill_checks("sft", "collapsed", None, "forward")[0]
    assert not broken.passed and "25/100" in broken.detail and "98/100" in broken.detail


def test_no_task_problems_no_check(monkeypatch):
    monkeypatch.setattr(learning, "_in_distribution", lambda data_dir, train_set: [])
    assert learning.kept_skill_checks("sft", "dpo", None, "forward") == []
