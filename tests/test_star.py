"""The star graph's pretraining look-ups, its path read-out, and the state check of notebook 07."""

from __future__ import annotations

import random

import pytest

from revlib.core import io
from revlib.stages import star
from revlib.tasks import get_task

KNOBS = {"degree": 3, "path_length": 4, "node_count": 50}


def _problem():
    return get_task("star_graph", KNOBS).sample(0, 1)[0]


def test_lookups_have_one_answer_each_and_skip_the_centres_children():
    fam = get_task("star_graph", KNOBS)
    rec = _problem()
    edges = {tuple(e) for e in rec.meta["edges"]}
    centre = rec.meta["centre"]
    looks = fam.lookups(rec, random.Random(0))
    # 9 edges: 6 child look-ups (not from the centre) and 9 parent look-ups
    assert len(looks) == 6 + 9
    for prompt, target in looks:
        node, arrow = int(prompt[:-1]), prompt[-1]
        if arrow == ">":
            assert node != centre and (node, int(target)) in edges
        else:
            assert (int(target), node) in edges


def test_documents_label_only_the_lookup_answers_after_one_edge_list():
    fam = get_task("star_graph", KNOBS)
    docs = fam.primitive_documents(random.Random(1), 20, 6)
    assert len(docs) == 20
    for doc in docs:
        header, *rest = doc
        assert header[0].startswith("Edges: ") and header[1] is False
        assert 1 <= len(rest) // 2 <= 6
        prompts, answers = rest[0::2], rest[1::2]
        assert all(not lab and text.startswith("\n") for text, lab in prompts)
        assert all(lab and text.isdigit() for text, lab in answers)
        assert len({p for p, _ in prompts}) == len(prompts)  # distinct look-ups


def test_path_outcome_tells_valid_wrong_arm_from_invalid_and_correct():
    rec = _problem()
    path = rec.meta["path"]
    edges = rec.meta["edges"]
    other_first = next(b for a, b in edges if a == path[0] and b != path[1])
    other_arm = [path[0], other_first]
    while True:
        nxt = [b for a, b in edges if a == other_arm[-1]]
        if not nxt:
            break
        other_arm.append(nxt[0])
    assert star.path_outcome(rec, ",".join(map(str, path))) == {"valid": True, "first_node": True, "correct": True}
    assert star.path_outcome(rec, ",".join(map(str, other_arm))) == {"valid": True, "first_node": False, "correct": False}
    # stops early (not at a leaf), or jumps along a missing edge
    assert not star.path_outcome(rec, ",".join(map(str, path[:-1])))["valid"]
    jumped = [path[0], path[1], other_arm[-1]]
    assert star.path_outcome(rec, ",".join(map(str, jumped))) == {"valid": False, "first_node": True, "correct": False}
    assert star.path_outcome(rec, "") == {"valid": False, "first_node": False, "correct": False}


def _ckpt(epoch: float, valid: int, first: int, n: int = 100) -> star.StarCheckpoint:
    return star.StarCheckpoint(epoch=epoch, step=int(epoch) * 10, n=n, valid=valid, first_node=first, correct=first,
                               critical_token_prob=0.3, critical_q_value=0.9, start_value=0.3)


def _result(lookup_acc: float, valid: int, first: int, n: int = 100) -> star.StarResult:
    drawn = star.DrawnSamples(n=8, correct=2, critical_at_first_step=0)
    return star.StarResult(
        knobs=get_task("star_graph", KNOBS).knobs,
        base_lookup=star.BaseLookup(k=int(lookup_acc * 200), n=200, accuracy=lookup_acc, chance=0.05),
        sft_checkpoints=[_ckpt(4.0, valid, first, n)], sft_loss=[star.LossPoint(epoch=4.0, loss=0.5)],
        per_step_dpo={"under": star.PerStepDPO(start_epoch=4.0, pairs=0, samples=drawn, checkpoints=[], loss=[])})


def test_state_check_needs_valid_paths_and_a_first_node_near_one_over_degree():
    assert _result(0.95, 80, 33).state.reached
    # look-up accuracy is reported, not required: a 55% base that SFT carries into valid paths reaches the state
    low_lookup = _result(0.55, 80, 33).state
    assert low_lookup.reached and "base look-ups 55%" in low_lookup.text
    few_valid = _result(0.95, 40, 33).state
    assert not few_valid.reached and few_valid.text.startswith("Not reached")
    # SFT that already picks the right arm (80% against 1/3) is not the Clever-Hans state; 18% is 15.3 points off
    assert not _result(0.95, 90, 80).state.reached
    assert not _result(0.95, 90, 18).state.reached and _result(0.95, 90, 19).state.reached
    # the prose names the constants the check uses
    assert star.state_rule() == "valid paths at least 70%, first node within 15 points of 1/degree"


def test_checks_gate_on_valid_paths_and_the_first_node_not_on_lookups():
    passed = {c.what.split(" (")[0]: c.passed for c in star.checks(_result(0.55, 80, 33))}
    assert all(passed.values()), passed
    failed = [c.what for c in star.checks(_result(0.95, 80, 70)) if not c.passed]
    assert len(failed) == 1 and "first node" in failed[0]


def test_result_round_trips_through_star_json_and_metrics_read_its_counts(tmp_path):
    result = _result(0.95, 80, 33)
    result.per_step_dpo["over"] = star.PerStepDPO(
        start_epoch=4.0, pairs=12, samples=star.DrawnSamples(n=8, correct=3, critical_at_first_step=2),
        checkpoints=[_ckpt(1.0, 70, 50), _ckpt(2.0, 75, 60)], loss=[star.LossPoint(step=1, epoch=1.0, loss=0.69)])
    assert not star.StarResult.exists(tmp_path)
    path = result.save(tmp_path)
    assert path == tmp_path / "star.json" and star.StarResult.exists(tmp_path)
    again = star.StarResult.load(tmp_path)
    assert again == result
    raw = io.read_json(path)  # counts once each, and for a reader the derived error and state
    assert raw["base_lookup"]["k"] == 190 and raw["sft_checkpoints"][0]["test_error"] == pytest.approx(0.67) and raw["reached"]
    assert "sft_valid_path" not in raw and "dpo_epoch" not in raw["per_step_dpo"]["over"]["checkpoints"][0]
    # without DPO checkpoints (no pairs) per-step DPO ends where it started
    assert again.end("under") == again.start("under") == again.final_sft
    assert [x for x, _ in again.curve("over")] == [4.0, 5.0, 6.0]
    m = star.metrics(again)
    assert m["sft/valid_path_rate"] == 0.8 and m["sft/first_node_accuracy"] == 0.33 and m["sft/test_n"] == 100
    assert m["pairs/over"] == 12 and m["dpo_from_over/final_error"] == pytest.approx(0.4) and m["dpo_from_under/final_error"] == pytest.approx(0.67)
    run = star.StarRun(again, star.checks(again))
    assert len(run.summary_table()) == 3 and run.metrics["learned"] is True
    for fig in (run.q_figure(), run.p_figure(), run.dpo_loss_figure(), run.sft_figure(), run.error_figure()):
        assert fig.data


def test_star_experiment_loads_the_shipped_base_it_was_built_for():
    from pathlib import Path

    from revlib.stages import base_model
    from revlib.core import io
    from revlib.params import load

    repo = Path(__file__).resolve().parent.parent
    exp = load(repo / "params" / "star-graph.yaml")
    spec = exp.base_models[0]
    assert spec.source == "local" and exp.stages == ["00_base_model", "07_star_graph"]
    card = base_model.verify_shipped(Path(spec.path), spec.sha256)  # raises on a checksum mismatch
    assert card["sha256"] == spec.sha256 == base_model.folder_sha256(Path(spec.path))
    # the base was pretrained on star graphs of the experiment's knobs, and learned its look-ups
    pretrained = get_task("star_graph", card["families"]["star_graph"]).knobs
    assert pretrained == get_task("star_graph", exp.star_graph.knobs).knobs
    skill = card["primitive_accuracy"]["star_graph"]
    assert skill["accuracy"] > skill["chance"] + 0.5  # far above chance (no longer a 90% target: docs/star_search.md)
    built_by = load(repo / "params" / "base-star.yaml").base_models[0]
    assert card["pretrain"]["steps"] == built_by.pretrain.steps  # the shipped base is the one its params build
    assert Path(built_by.publish_to) == Path(spec.path)
    assert io.read_json(Path(spec.path) / "card.json")["rebuild"] == "revlib run params/base-star.yaml"


def test_base_stage_reports_star_lookups_against_chance_without_a_90_percent_target():
    from revlib.stages import base_model

    def check(task, correct):
        row = {"task": task, "correct": correct, "problems": 200, "chance": 0.05}
        return base_model.checks(base_model.BaseResult(ref={}, accuracy=[row]))[0]

    assert check("star_graph", 145).passed  # the shipped base: 72.5%
    assert not check("star_graph", 12).passed  # at chance (6%): not learned
    assert not check("arith", 190).passed  # arithmetic keeps its 98% target
