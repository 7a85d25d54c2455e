"""Notebooks 06 and 07 end to end on the smoke params (micro model, tiny sizes), and their params checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from revlib.core import io
from revlib.params import ParamsError, load, validate
from revlib.stages.scaling_result import ScalingResult
from revlib.stages.star_result import StarResult

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "negatives.yaml"


def test_full_and_smoke_params_validate():
    for name in ("negative-data-full.yaml", "star-graph-full.yaml", "smoke/negatives.yaml"):
        exp = load(REPO / "params" / name)
        assert exp.negatives is not None or exp.star_graph is not None


def test_bad_negative_params_are_named(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["negatives"]["critical_step"] = "worst"
    raw["star_graph"]["under_epochs"] = 3
    with pytest.raises(ParamsError) as err:
        validate(raw, tmp_path / "p.yaml")
    assert "negatives.critical_step" in str(err.value) and "under_epochs" in str(err.value)
    raw = yaml.safe_load(SMOKE.read_text())
    raw["negatives"]["data_sizes"] = [4, 4]
    with pytest.raises(ParamsError, match="data_sizes must be distinct"):
        validate(raw, tmp_path / "p.yaml")


@pytest.mark.notebook
def test_stages_06_and_07_run_end_to_end(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["output_dir"] = str(tmp_path / "outputs")
    params = tmp_path / "smoke.yaml"
    params.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "revlib.lab.cli", "run", str(params)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = tmp_path / "outputs" / "smoke-negatives"
    neg = root / "06_negative_data" / "micro"
    metrics = io.read_json(neg / "metrics.json")
    assert {"sft/error@4", "sft/error@8", "sft/error@16"} <= set(metrics)
    # the micro base learns nothing in 4 steps: every SFT point is pinned at error 1 (all 4 test problems wrong)
    assert [metrics[f"sft/error@{n}"] for n in (4, 8, 16)] == pytest.approx([1.0, 1.0, 1.0], abs=0.26)
    for n in (4, 8):
        samples = list(io.read_jsonl(neg / f"n{n}" / "samples.jsonl"))
        assert len(samples) == n * 2 and all("correct" in s and "steps" in s for s in samples)
        under = neg / f"n{n}" / "under" / "samples.jsonl"  # the under-trained start draws under_samples_per_problem
        assert not under.exists() or len(list(io.read_jsonl(under))) == n
        right = {s["problem_id"] for s in samples if s["correct"]}
        own = list(io.read_jsonl(neg / f"n{n}" / "rft_self.jsonl"))  # RFT on D+: only verified own samples
        assert all(r["meta"]["source"] == "rft" and r["meta"]["sample"].rsplit("-s", 1)[0] in right for r in own)
        rft = list(io.read_jsonl(neg / f"n{n}" / "rft.jsonl"))  # synthetic positives plus the same own samples
        assert len(rft) == n + len(own) and sum(r["meta"].get("source") == "rft" for r in rft) == len(own)
    scaling = ScalingResult.load(neg)  # what the findings page reads
    assert "optimizer steps" in scaling.budget_rule and {r.method for r in scaling.rows} >= {"sft", "rft"}
    # SFT read out on the 4 validation problems at steps 2 and 4 of its 4-step budget, at every size; the kept one
    assert [(c.size, c.steps) for c in scaling.sft_curves] == [(4, [2, 4]), (8, [2, 4]), (16, [2, 4])]
    assert all(c.chosen_step in c.steps and c.train_accuracy is not None for c in scaling.sft_curves)
    assert not (neg / "n16" / "rft.jsonl").exists()  # 16 is an SFT-only size
    # every RFT-type run at the method sizes: pass 0 (its start) and its 1 pass, the best kept
    rft = scaling.passes_of("rft")
    assert [p.size for p in rft] == [4, 8] and all(len(p.passes) == 2 and p.passes[p.kept].validation ==
                                                    max(x.validation for x in p.passes) for p in rft)
    # a pass's step counts the method's own run (0 at its start), whatever SFT step the run started from
    assert all(p.passes[0].step == 0 < p.passes[1].step for p in rft), [(p.start_step, p.passes) for p in rft]
    assert scaling.rollouts == 2 and scaling.best_of_rule == "plug_in" and scaling.teacher_forms
    assert "inf" not in (neg / "scaling.json").read_text().lower()
    assert all(len(v) == 4 for size in scaling.outcomes.values() for v in size.values() if v)  # n_test outcomes
    star_dir = root / "07_star_graph" / "micro"
    star = StarResult.load(star_dir)
    # a checkpoint every step (readout_every_steps 1): 6 problems, batch 4, 2 epochs; each read on test and train graphs
    assert [r.step for r in star.sft_checkpoints] == [1, 2, 3, 4]
    assert all(0.0 <= r.critical_token_prob <= 1.0 and r.train.n == 4 for r in star.sft_checkpoints)
    assert star.model_layers == 1 and star.train_graphs == 6 and star.test_n == 4
    # the micro model never follows edges: no start meets the under-trained rule, so no per-step DPO ran, and says so
    assert star.starts == [] and star.per_step_dpo == {} and not star.state.reached
    assert (star_dir / "07_star_graph.html").exists()
    _per_step_dpo_runs_its_step_budget(raw, star_dir, tmp_path)


def _per_step_dpo_runs_its_step_budget(raw, star_dir, tmp_path):
    """Per-step DPO from the smoke SFT's last checkpoint. The micro policy writes no paths, so its samples are stood in
    for by wrong-arm answers with a pit at the first step and no verified rollout: the pairs take the gold
    continuation, DPO runs dpo.max_steps steps, and each checkpoint (every dpo.save_every_steps) is read out on test
    and training graphs."""
    from revlib.core import render
    from revlib.data import negatives
    from revlib.modeling import train
    from revlib.stages import star

    exp = validate(raw, tmp_path / "p.yaml")
    P = exp.star_graph

    def wrong_arm(sampler, task, problems, n, seed, mode="task"):
        out = []
        for p in problems:
            centre, right = p.meta["path"][0], p.meta["path"][1]
            wrong = next(b for a, b in p.meta["edges"] if a == centre and b != right)
            text = f"{render.THINK}{centre}>{wrong}{render.ANSWER_SEP}{render.ANSWER_PREFIX}{centre},{wrong}"
            out += [negatives.parse_sample(task, p, text, i, mode) for i in range(n)]
        return out

    def first_step_pit(sampler, task, problems, samples, *args, **kwargs):
        return [negatives.StepCredit(s, [1.0] + [0.0] * len(s.steps), [[] for _ in range(len(s.steps) + 1)])
                for s in samples]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(negatives, "sample_policy", wrong_arm)
        m.setattr(negatives, "estimate_values", first_step_pit)
        start = train.load_checkpoints(star_dir / "sft")[-1]
        run = star.per_step_dpo(exp.dpo, start, "under_1", P, star.draw_problems(P, exp.seed), exp.seed,
                                tmp_path / "dpo", log=lambda _: None)
    assert run.samples.n == 6 * P.samples_per_problem and 0 < run.pairs <= run.samples.n
    assert run.samples.gold_chosen == run.pairs
    assert run.samples.critical_at_first_step == run.pairs
    assert [c.step for c in run.checkpoints] == [1, 2] and all(c.train.n == 4 for c in run.checkpoints)
    assert run.start_step == start.step and len(run.loss) == 2 and all(0 < p.loss < 1 for p in run.loss)
