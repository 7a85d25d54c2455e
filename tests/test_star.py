"""The star graph's pretraining look-ups, its path read-out, and the state check of notebook 07."""

from __future__ import annotations

import random

import pytest

from revlib.core import io
from revlib.params.learning import LearningRules
from revlib.stages import star, star_report, star_result
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


def test_the_star_family_reads_an_answer_as_valid_wrong_arm_invalid_or_correct():
    rec = _problem()
    path_outcome = get_task("star_graph", KNOBS).answer_outcome
    path = rec.meta["path"]
    edges = rec.meta["edges"]
    other_first = next(b for a, b in edges if a == path[0] and b != path[1])
    other_arm = [path[0], other_first]
    while True:
        nxt = [b for a, b in edges if a == other_arm[-1]]
        if not nxt:
            break
        other_arm.append(nxt[0])
    assert path_outcome(rec, ",".join(map(str, path))) == {"valid": True, "first_node": True, "correct": True}
    assert path_outcome(rec, ",".join(map(str, other_arm))) == {"valid": True, "first_node": False, "correct": False}
    # stops early (not at a leaf), or jumps along a missing edge
    assert not path_outcome(rec, ",".join(map(str, path[:-1])))["valid"]
    jumped = [path[0], path[1], other_arm[-1]]
    assert path_outcome(rec, ",".join(map(str, jumped))) == {"valid": False, "first_node": True, "correct": False}
    assert path_outcome(rec, "") == {"valid": False, "first_node": False, "correct": False}


def _ckpt(step: int, valid: int, first: int, n: int = 100, train_first: int | None = None,
          train_valid: int | None = None) -> star_result.StarCheckpoint:
    train = star_result.PathCounts(n=n, valid=valid if train_valid is None else train_valid,
                            first_node=first if train_first is None else train_first, correct=0)
    return star_result.StarCheckpoint(epoch=step / 100, step=step, n=n, valid=valid, first_node=first, correct=first,
                               critical_token_prob=0.3, critical_q_value=0.9, start_value=0.3, train=train,
                               critical_token_prob_train=0.3, critical_q_value_train=0.9)


def _loss(values: list[float]) -> list[star_result.LossPoint]:
    return [star_result.LossPoint(step=i + 1, epoch=0.0, loss=v) for i, v in enumerate(values)]


def _result(curve: list[star_result.StarCheckpoint], dpo_loss: float = 0.2, lookup_acc: float = 0.7) -> star_result.StarResult:
    starts = star.choose_starts(curve, 2, 2, 3.0)
    runs = {s.name: star_result.PerStepDPO(
        start_epoch=s.epoch, start_step=s.step, pairs=120, samples=star_result.DrawnSamples(n=8, correct=2, critical_at_first_step=2),
        checkpoints=[_ckpt(50, 90, 70), _ckpt(100, 90, 80)], loss=_loss([0.69] * 10 + [dpo_loss] * 30)) for s in starts}
    return star_result.StarResult(
        knobs=get_task("star_graph", {"degree": 2, "path_length": 4, "node_count": 50}).knobs, model_layers=4,
        train_graphs=5000,
        base_lookup=star_result.BaseLookup(k=int(lookup_acc * 200), n=200, accuracy=lookup_acc, chance=0.05),
        sft_checkpoints=curve, sft_loss=[star_result.LossPoint(step=c.step, epoch=c.epoch, loss=0.5) for c in curve],
        starts=starts, asked_under=2, over_factor=3.0, per_step_dpo=runs)


# SFT that follows edges from step 100 on, guesses the first node until step 300, then memorises its training graphs
CLEVER_HANS = [_ckpt(50, 40, 50), _ckpt(100, 90, 50, train_first=52), _ckpt(200, 95, 50, train_first=58),
               _ckpt(300, 96, 51, train_first=59), _ckpt(400, 96, 50, train_first=75), _ckpt(1000, 97, 52, train_first=93)]


def test_starts_are_chosen_by_state_on_the_training_graphs():
    starts = star.choose_starts(CLEVER_HANS, 2, 2, 3.0)
    # step 50 writes too few valid paths; 100..300 are in the state; 400 memorises; the over start has >= 3x the steps
    assert [(s.name, s.step) for s in starts] == [("under_1", 100), ("under_2", 300), ("over", 1000)]
    assert starts[-1].first_node_train == 0.93 and starts[-1].first_node_test == 0.52
    # the over-trained start must have 3x the latest under-trained one's steps: 400 < 3 * 300 rules 300 out
    short = CLEVER_HANS[:-1] + [_ckpt(800, 97, 52, train_first=93)]
    assert [(s.name, s.step) for s in star.choose_starts(short, 2, 2, 3.0)] == [("under_1", 100), ("under_2", 200),
                                                                                   ("over", 800)]
    # within 0.1 of 1/degree: 61% on the training graphs is out; never in the state, no starts at all
    assert star.choose_starts([_ckpt(100, 90, 50, train_first=61), _ckpt(900, 90, 50, train_first=95)], 2, 2, 3.0) == []
    assert star.choose_starts([_ckpt(100, 50, 50), _ckpt(900, 60, 50)], 2, 2, 3.0) == []
    assert star_result.state_rule() == "valid paths at least 70% and the first node within 0.1 of 1/degree, both on the training graphs"


def test_state_says_how_many_starts_were_found_and_whether_the_over_start_memorised():
    st = _result(CLEVER_HANS).state
    assert st.reached and st.under == 2 and st.over and st.memorised and st.text.startswith("Reached: 2 of 2")
    unmemorised = _result(CLEVER_HANS[:-1] + [_ckpt(1000, 97, 52, train_first=80)]).state
    assert unmemorised.reached and not unmemorised.memorised and "as far as the budget got" in unmemorised.text
    never = _result([_ckpt(100, 30, 50), _ckpt(900, 40, 50)]).state
    assert not never.reached and never.text.startswith("Not reached: 0 of 2")


def test_checks_gate_on_valid_paths_and_an_under_trained_start_not_on_lookups():
    assert all(c.passed for c in star_report.checks(_result(CLEVER_HANS, lookup_acc=0.3)))
    failed = [c.what for c in star_report.checks(_result([_ckpt(100, 90, 80), _ckpt(900, 95, 90)])) if not c.passed]
    assert failed == ["an under-trained start in the Clever-Hans state (training graphs)"]


def test_a_dpo_trained_only_when_its_final_loss_fell_10_percent_below_log_2():
    trained, flat = _result(CLEVER_HANS, dpo_loss=0.30), _result(CLEVER_HANS, dpo_loss=0.66)
    assert all(trained.trained(n) for n in trained.per_step_dpo)
    assert trained.final_loss("over") == pytest.approx(0.30)  # the mean of the last 25 steps
    assert not any(flat.trained(n) for n in flat.per_step_dpo)
    # the rule is the run's, saved with the result: a fall of 4% from log 2 (to 0.665) counts 0.66 as trained
    loose = flat.model_copy(update={"rules": LearningRules(dpo_loss_fall=0.04)})
    assert all(loose.trained(n) for n in loose.per_step_dpo)
    assert flat.kept_skill("over").kept  # valid paths 97% at the start, 90% after: within 15 points


def test_result_round_trips_through_star_json_and_metrics_read_its_counts(tmp_path):
    result = _result(CLEVER_HANS)
    assert not star_result.StarResult.exists(tmp_path)
    path = result.save(tmp_path)
    assert path == tmp_path / "star.json" and star_result.StarResult.exists(tmp_path)
    again = star_result.StarResult.load(tmp_path)
    assert again == result
    raw = io.read_json(path)  # counts once each, and for a reader the derived error and state
    assert raw["sft_checkpoints"][0]["test_error"] == pytest.approx(0.5) and raw["reached"]
    assert [s["name"] for s in raw["starts"]] == ["under_1", "under_2", "over"]
    assert again.start("under_2").step == 300 and again.end("over").step == 100
    assert [x for x, _ in again.curve("over")] == [0, 50, 100]
    m = star_report.metrics(again)
    assert m["sft/valid_path_rate"] == 0.97 and m["sft/first_node_accuracy_train"] == 0.93 and m["sft/test_n"] == 100
    assert m["pairs/over"] == 120 and m["dpo_from_over/final_error"] == pytest.approx(0.2)
    assert m["dpo_from_under_1/start_step"] == 100
    run = star_report.StarRun(again, star_report.checks(again))
    assert len(run.summary_table()) == len(CLEVER_HANS) + 6 and run.metrics["learned"] is True
    assert list(run.starts_table()["DPO trained"]) == ["yes"] * 3
    for fig in (run.dpo_loss_figure(), run.sft_figure(), run.error_figure("under"), run.error_figure("over")):
        assert fig.data
    assert len(run.error_figure("under").data) == 2 and len(run.error_figure("over").data) == 1


def test_block_expansion_keeps_what_the_model_computes(tiny_model_dir):
    import torch

    from revlib.modeling import models

    model = models.load_model(tiny_model_dir).eval()
    ids = torch.tensor([[5, 9, 3, 17, 2, 8]])
    before = model(input_ids=ids).logits
    grown = models.expand_layers(model, 2 * model.config.num_hidden_layers).eval()
    assert len(grown.model.layers) == grown.config.num_hidden_layers == 2
    assert torch.allclose(grown(input_ids=ids).logits, before, atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple"):
        models.expand_layers(grown, 3)


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
