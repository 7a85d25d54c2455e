"""03's kept-skill check: DPO that moves log-probabilities but breaks generation fails its stage."""

from __future__ import annotations

from revlib.evaluation import stage_checks
from revlib.core.records import Record


def _records(n):
    return [Record(id=f"p{i}-f", pair_id=f"p{i}", direction="forward", task="arith", question=f"q{i}",
                   reasoning="r", answer=str(i), gold=str(i)) for i in range(n)]


def test_kept_skill_passes_a_small_drop_and_fails_a_collapse(monkeypatch):
    monkeypatch.setattr(stage_checks, "_in_distribution", lambda data_dir, train_set: _records(100))
    scores = {"sft": 98, "ok": 90, "collapsed": 25}
    monkeypatch.setattr(stage_checks, "greedy_outcomes", lambda ckpt, picked: [i < scores[ckpt] for i in range(len(picked))])
    kept = stage_checks.kept_skill_checks("sft", "ok", None, "forward")[0]
    assert kept.passed and kept.value == 0.90 and kept.reference == 0.98
    broken = stage_checks.kept_skill_checks("sft", "collapsed", None, "forward")[0]
    assert not broken.passed and "25/100" in broken.detail and "98/100" in broken.detail


def test_no_task_problems_no_check(monkeypatch):
    monkeypatch.setattr(stage_checks, "_in_distribution", lambda data_dir, train_set: [])
    assert stage_checks.kept_skill_checks("sft", "dpo", None, "forward") == []


def test_dpo_checks_read_policy_against_reference_on_the_same_pairs():
    import pytest

    from revlib.evaluation import stage_checks

    # raw summed log p jumps between batches of different responses; the reward (policy minus reference) is paired
    moved = [{"logps/rejected": -400.0 - 80 * (i % 2), "rewards/rejected": -0.1 * i, "rewards/margins": 0.1 * i}
             for i in range(20)]
    checks = stage_checks.dpo_checks(moved, beta=0.6)
    assert [c.passed for c in checks] == [True, True]
    assert checks[0].value == pytest.approx(-1.85 / 0.6)  # the last tenth: steps 18 and 19
    still = [{"logps/rejected": -480.0 + 12 * i, "rewards/rejected": -0.01, "rewards/margins": 0.3} for i in range(20)]
    rejected, margin = stage_checks.dpo_checks(still, beta=0.6)
    assert not rejected.passed and margin.passed  # under 1 nat below the reference, whatever the raw log p did
