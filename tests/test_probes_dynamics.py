"""Stage 04 plumbing: the schedule, scoring every checkpoint, the three-panel figure and the saved scores.

Training is replaced by a stand-in with the `revlib.modeling.train` interface that saves random LoRA adapters,
so these tests run in seconds; the notebook smoke test runs the real trainers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from revlib.data import reverse
from revlib.stages import dynamics
from revlib.core import io
from revlib import params
from revlib.modeling.train import Checkpoint, TrainResult, expected_epochs, merge_adapter

SMOKE = Path(__file__).resolve().parent.parent / "params" / "smoke" / "probes.yaml"


class StandInTrainer:
    """sft/dpo with the revlib.modeling.train signatures; each checkpoint is a random LoRA adapter."""

    def __init__(self):
        self.calls: list[tuple] = []

    def _adapters(self, base: str, out_dir: Path, epochs: int, every: int, seed: int) -> TrainResult:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        ckpts = []
        for step, epoch in enumerate(expected_epochs(epochs, every), start=1):
            folder = Path(out_dir) / "checkpoints" / f"checkpoint-{step}"
            torch.manual_seed(seed * 100 + epoch)
            model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                   LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False))
            model.save_pretrained(folder)
            ck = Checkpoint(folder, float(epoch), step, base, str(folder))
            io.write_json(folder / "revlib_checkpoint.json", ck.to_json())
            ckpts.append(ck)
        return TrainResult(ckpts)

    def sft(self, base, records, out_dir, params, seed=0, epochs=None, save_every_epochs=None, on_log=None):
        self.calls.append(("sft", len(records), epochs, save_every_epochs, params.epochs))
        return self._adapters(base, out_dir, epochs, save_every_epochs, seed + len(self.calls))

    def dpo(self, base, pairs, out_dir, params, seed=0, sft_adapter=None, epochs=None, save_every_epochs=None,
            on_log=None):
        self.calls.append(("dpo", len(pairs), epochs, save_every_epochs, params.epochs))
        merged = merge_adapter(base, sft_adapter, Path(out_dir) / "merged_sft")
        return self._adapters(merged, out_dir, epochs, save_every_epochs, seed + len(self.calls))


@pytest.fixture(scope="module")
def stage(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("stage04")
    from tests.conftest import write_params

    exp = params.load(write_params(SMOKE, tmp))
    data_dir = tmp / "data"
    reverse.write(reverse.build(exp), data_dir)
    trainer = StandInTrainer()
    ckpts = dynamics.train_probe_models(exp, str(tiny_model_dir), data_dir, tmp / "run", trainer=trainer)
    from revlib.modeling import models

    items, members = dynamics.load_probe_items(exp, data_dir, models.load_tokenizer(tiny_model_dir))
    scores, stats = dynamics.score_checkpoints(exp, ckpts, items, members)
    return exp, trainer, ckpts, items, members, scores, stats, tmp


def test_schedule_follows_params(stage):
    exp, trainer, ckpts, *_ = stage
    p = exp.probes
    assert [c[0] for c in trainer.calls] == ["sft", "dpo"] * len(p.train_sets)
    for kind, _, epochs, every, params_epochs in trainer.calls:
        assert (epochs, every) == ((p.sft_epochs, p.sft_save_every) if kind == "sft" else (p.dpo_epochs, p.dpo_save_every))
        assert params_epochs == epochs  # the sft/dpo sections are reused with epochs overridden
    per_set = 1 + len(expected_epochs(p.sft_epochs, p.sft_save_every)) + len(expected_epochs(p.dpo_epochs, p.dpo_save_every))
    assert len(ckpts) == len(p.train_sets) * per_set
    for ts in p.train_sets:
        mine = [c for c in ckpts if c.train_set == ts]
        assert [c.x for c in mine] == list(range(per_set))
        assert [c.phase for c in mine] == ["base"] + ["sft"] * p.sft_epochs + ["dpo"] * p.dpo_epochs
        assert all(Path(c.base).name == "merged_sft" for c in mine if c.phase == "dpo")


def test_every_checkpoint_scored_on_its_pairs(stage):
    exp, _, ckpts, items, members, scores, stats, _ = stage
    assert stats["base_loads"] == 1 + len(exp.probes.train_sets)  # the base once, each merged SFT once
    assert stats["adapter_loads"] == sum(c.adapter is not None for c in ckpts)
    want = {dynamics.pair_name(t, s) for t, s in exp.probes.pairs}
    assert set(scores["pair"]) == want
    for (pair, x), g in scores.groupby(["pair", "x"]):
        test_set = g["test_set"].iloc[0]
        assert sorted(g["example"]) == sorted(members[test_set])
    # the mixed test set is the forward and reverse probes together, scored once per checkpoint
    assert len(items) == len(members["forward"]) + len(members["reverse"]) == len(members["mix"])
    assert (scores["margin"] - (scores["alp_chosen"] - scores["alp_rejected"])).abs().max() < 1e-12
    # y+ is the example's own response: for a forward probe in (D_f,T_f) and (D_r,T_f) the same scores at base
    base = scores[scores["phase"] == "base"].set_index(["pair", "example"])["margin"]
    assert base.loc["(D_f, T_f)"].equals(base.loc["(D_r, T_f)"])
    # different checkpoints give different scores (adapters really swapped)
    dff = scores[scores["pair"] == "(D_f, T_f)"].groupby("x")["alp_chosen"].mean()
    assert dff.nunique() == len(dff)


def test_figure_table_and_files(stage):
    exp, _, _, _, _, scores, stats, tmp = stage
    summary = dynamics.summarize(scores)
    fig = dynamics.figure(summary)
    n_pairs = len(exp.probes.pairs)
    assert len(fig.data) == 3 * n_pairs  # one line per pair in each of the three panels
    assert [a.text for a in fig.layout.annotations[:3]] == [t for _, t in dynamics.PANELS]
    assert sum(1 for s in fig.layout.shapes if s.type == "line") == 3  # the SFT | DPO boundary in each panel
    assert all("margin %{customdata[3]:.6f}" in t.hovertemplate for t in fig.data)
    first = summary[summary["pair"] == "(D_f, T_f)"].sort_values("x")
    trace = next(t for t in fig.data if t.name.startswith("(D_f, T_f)") and t.xaxis == "x3")
    assert list(trace.y) == pytest.approx(list(first["margin"]))
    assert list(fig.layout.xaxis.ticktext)[0] == "base" and "DPO" in list(fig.layout.xaxis.ticktext)[-1]
    tbl = dynamics.table(summary)
    assert {"ALP(y+)", "ALP(y-)", "margin"} <= set(tbl.columns) and len(tbl) == len(summary)
    paths = dynamics.save(scores, summary, tmp / "run")
    back = pd.read_parquet(paths["scores"])
    assert len(back) == len(scores) and {"alp_chosen", "alp_rejected", "margin", "direction", "n_chosen"} <= set(back.columns)
    assert (tmp / "run" / "headline_probes.html").read_text().count("<tr") == n_pairs + 1
    m = dynamics.metrics(summary, stats)
    assert "(D_f, T_f)/margin_after_DPO" in m and m["scoring/tokens_per_second"] > 0


def test_stage_metrics_and_the_parts_a_run_may_not_have(stage):
    exp, _, ckpts, items, _, scores, stats, tmp = stage
    summary = dynamics.summarize(scores)
    check = dynamics.checks(summary)[0]
    comparison = pd.DataFrame([{"model": "SFT mix", "test set": "T_m", "margin": 0.25},
                               {"model": "SFT mix + per-step DPO", "test set": "T_m", "margin": 0.5}])
    m = dynamics.stage_metrics(summary, stats, ckpts, items, comparison, [check])
    assert m == dynamics.metrics(summary, stats) | {
        "checkpoints": len(ckpts), "examples": len(items), "variants/SFT mix/T_m/margin": 0.25,
        "variants/SFT mix + per-step DPO/T_m/margin": 0.5, "learned": check.passed, f"learned/{check.what}": check.passed}
    assert "checkpoints" in dynamics.stage_metrics(summary, stats, ckpts, items, None, [])
    assert dynamics.comparison_figure(None) is None and len(dynamics.comparison_figure(comparison).data) == 2
    # without per-step DPO in the experiment there are no variants to score, and no file
    assert dynamics.dpo_variants(exp, None, "micro", items, {}, tmp) is None and not (tmp / dynamics.VARIANTS_FILE).exists()
    assert not exp.probes.in_sample and dynamics.in_sample(exp, ckpts, tmp, "unused", summary, tmp) is None
    sliced = dynamics.margin_by_direction(scores, last=4)
    assert len(sliced) == 4 and list(sliced.columns) == ["pair", "checkpoint", "direction", "margin"]
    assert dynamics.models_note(exp) == "probe models: trained here on the probe sets"


def test_params_reject_inconsistent_schedule():
    from revlib.params.probes import ProbeParams

    with pytest.raises(ValueError, match="sft_save_every"):
        ProbeParams(sft_epochs=2, sft_save_every=3)
    with pytest.raises(ValueError, match="not in train_sets"):
        ProbeParams(train_sets=["forward"], pairs=[("reverse", "reverse")])


@pytest.fixture(scope="module")
def probes_run(tmp_path_factory):
    """Stage 04 end to end through the runner with the real trainers (about a minute and a half on CPU)."""
    from revlib.lab import runner
    from tests.conftest import write_params

    tmp = tmp_path_factory.mktemp("probes_run")
    params_file = write_params(SMOKE, tmp)
    exp = params.load(params_file)
    runner.run(exp, params_file)
    return exp.run_root / "04_probe_dynamics" / "micro", tmp


@pytest.mark.notebook
def test_notebook_smoke(probes_run):
    run_dir, _ = probes_run
    metrics = io.read_json(run_dir / "metrics.json")
    assert metrics["checkpoints"] == 3 * (1 + 2 + 2)
    assert metrics["scoring/base_loads"] == 1 + 3  # the base, then each merged SFT model once
    scores = pd.read_parquet(run_dir / "scores.parquet")
    assert scores["alp_chosen"].notna().all() and set(scores["phase"]) == {"base", "sft", "dpo"}
    html = (run_dir / "04_probe_dynamics.html").read_text()
    assert "(c) margin" in html and "plotly" in html.lower()
    # the task world has no chat transcripts: the authors' measure is recorded as not applicable, with the reason
    assert metrics["authors/applicable"] is False and "authors/base_first50_alp" not in metrics
    assert not dynamics.AuthorsMeasure.load(run_dir).applicable
    assert "The r1k authors&#x27; ALP measure: not applicable here" in html or \
        "The r1k authors' ALP measure: not applicable here" in html


@pytest.mark.notebook
@pytest.mark.browser
def test_figure_renders_offline_in_a_browser(probes_run):
    import re
    import shutil

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("headless chromium not installed")
    from tests.test_browser import rendered_dom

    run_dir, tmp = probes_run
    dom = rendered_dom((run_dir / "04_probe_dynamics.html").resolve(), tmp)
    assert len(re.findall(r'class="[^"]*js-plotly-plot', dom)) >= 1 and 'class="main-svg"' in dom
    assert "SFT | DPO" in dom  # the stage boundary annotation, drawn by plotly.js


def _summary_rows(train_set: str, phases: list[tuple[str, float, float, float]]) -> list[dict]:
    return [{"train_set": train_set, "test_set": train_set, "pair": dynamics.pair_name(train_set, train_set),
             "distribution": "ID", "phase": phase, "x": x, "alp_chosen": pos, "alp_rejected": neg,
             "margin": pos - neg} for phase, x, pos, neg in phases]


def test_dpo_check_compares_the_training_sets_that_have_dpo():
    # D_f and D_r end SFT far lower in y- than D_m; only D_m gets DPO, which lowers its y- by 0.002
    rows = (_summary_rows("forward", [("base", 0, -2.2, -2.4), ("sft", 2, -2.0, -2.30)])
            + _summary_rows("reverse", [("base", 0, -2.2, -2.5), ("sft", 2, -2.0, -2.30)])
            + _summary_rows("mix", [("base", 0, -2.2, -2.4), ("sft", 2, -1.9, -2.150), ("dpo", 3, -1.9, -2.152)]))
    summary = pd.DataFrame(rows)
    fall = [c for c in dynamics.checks(summary, 0.1, None, 0.001) if c.what.startswith("in-distribution ALP(y-)")]
    assert len(fall) == 1 and fall[0].passed and fall[0].reference == pytest.approx(-2.150)
    assert not [c for c in dynamics.checks(summary, 0.1, None, 0.005) if c.what.startswith("in-distribution ALP(y-)")][0].passed
    assert not [c for c in dynamics.checks(summary, 0.1, None, None) if c.what.startswith("in-distribution ALP(y-)")]


def test_in_sample_scores_are_per_example_on_the_training_rows(stage):
    from revlib.data.sets import load_set
    from revlib.modeling import models

    exp, _, ckpts, _, _, scores, _, tmp = stage
    data_dir = tmp / "data"
    frame = dynamics.in_sample_scores(exp, ckpts, data_dir, models.load_tokenizer(ckpts[0].base))
    for train, test in exp.probes.pairs:
        part = frame[frame["pair"] == dynamics.pair_name(train, test)]
        assert list(dict.fromkeys(part["phase"])) == ["base", "sft", "dpo"]  # the base, the last SFT and DPO checkpoint
        rows = {r.id for r in load_set(data_dir, f"probe_{test}")}  # the training rows of that direction (or twins)
        for _, g in part.groupby("x"):
            assert set(g["example"]) == rows
    assert {"alp_chosen", "alp_rejected", "margin", "alp_irrelevant"} <= set(frame.columns)
    assert "alp_shuffled" not in frame  # only the extra probe a claim reads in sample
    base = frame[frame["phase"] == "base"].set_index(["pair", "example"])["alp_rejected"]
    assert base.loc["(D_f, T_f)"].equals(base.loc["(D_r, T_f)"])  # one base scored once for every training set
    back = dynamics.InSampleScores.load(dynamics.InSampleScores(frame).save(tmp / "in_sample").parent)
    assert len(back.scores) == len(frame) and back.at("sft") is not None
    assert not dynamics.ProbeResult.exists(tmp / "in_sample")  # a sibling file beside scores.parquet, not it
    table = dynamics.in_sample_table(frame, dynamics.summarize(scores))
    ff = frame[(frame["pair"] == "(D_f, T_f)") & (frame["phase"] == "sft")]
    row = table[(table["pair"] == "(D_f, T_f)") & (table["checkpoint"] == ff["checkpoint"].iloc[0])].iloc[0]
    assert row["in-sample ALP(y-)"] == pytest.approx(ff["alp_rejected"].mean()) and row["in-sample n"] == len(ff)
    assert {"held-out ALP(y+)", "held-out ALP(y-)", "held-out margin"} <= set(table.columns)


# ---------------------------------------------------------------- the r1k authors' measure in 04

R1K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "r1k-probe-100.parquet"


@pytest.fixture(scope="module")
def r1k_stage(tmp_path_factory, tiny_model_dir):
    """04's probe models (stand-in adapters) on the published r1k rows, the authors' measure read at the ends."""
    if not R1K.exists():
        pytest.skip(f"{R1K} not present")
    import yaml

    from revlib.modeling import models
    from tests.conftest import write_params

    tmp = tmp_path_factory.mktemp("stage04_r1k")
    raw = yaml.safe_load(SMOKE.read_text())
    raw["data"] = {"source": {"kind": "r1k", "path": str(R1K)}, "teacher": {"kind": "oracle"}, "n_train": 3,
                   "n_test": 1, "probe_train": 3, "probe_test": 3, "probe_from_train": True}
    raw["sft"]["train_sets"] = ["forward", "mix"]
    raw["dpo"]["on"] = ["mix"]
    raw["probes"] |= {"train_sets": ["forward", "mix"], "pairs": [["forward", "forward"], ["mix", "mix"],
                                                                  ["forward", "reverse"]],
                      "sft_epochs": 2, "sft_save_every": 1, "dpo_epochs": 1, "dpo_save_every": 1,
                      "in_sample": True, "authors_measure_max_tokens": 24, "authors_measure_checkpoints": "ends",
                      "gates_measure": "authors"}
    exp = params.load(write_params(raw, tmp))
    data_dir = tmp / "data"
    reverse.write(reverse.build(exp), data_dir)
    ckpts = dynamics.train_probe_models(exp, str(tiny_model_dir), data_dir, tmp / "run", trainer=StandInTrainer())
    tokenizer = models.load_tokenizer(tiny_model_dir)
    out = tmp / "out"
    out.mkdir()
    reading = dynamics.authors_measure(exp, ckpts, data_dir, tokenizer, out)
    return exp, ckpts, data_dir, tokenizer, reading, out


def test_authors_measure_reads_the_file_rows_at_the_ends(r1k_stage):
    from revlib.data.sets import load_set

    exp, ckpts, data_dir, tokenizer, reading, out = r1k_stage
    m = reading.measure
    assert m.applicable and m.max_tokens == 24 and m.checkpoints == "ends" and "r1k-probe-100.parquet" in m.texts
    ends = {(c.train_set, c.x) for c in dynamics.end_checkpoints(ckpts)}
    assert len(ends) == 2 * 3  # each set's base, last SFT and last DPO (probes.models: train runs DPO on each)
    for frame, prefix in ((reading.held_out, "probe_test"), (reading.in_sample, "probe")):
        assert set(zip(frame["train_set"], frame["x"])) == ends
        for (pair, x), g in frame.groupby(["pair", "x"]):
            test = g["test_set"].iloc[0]
            assert set(g["example"]) == {r.id for r in load_set(data_dir, f"{prefix}_{test}")}
        assert (frame["n_chosen"] == 23).all()  # every text is longer than the cap: cut to 24, first token dropped
    # files for the claims, and the record
    assert dynamics.AuthorsScores.exists(out) and dynamics.AuthorsInSampleScores.exists(out)
    back = dynamics.AuthorsMeasure.load(out)
    assert back == m and "24 tokens" in m.note and "theirs is 1,000" in m.note
    assert {"authors/max_tokens", "authors/base_first50_alp"} <= set(m.metrics())


def test_authors_measure_scores_each_row_as_their_script_does(r1k_stage):
    """One in-sample forward row and one reverse row at the base, against their loop on the file's own row."""
    import pandas as pd
    from transformers import AutoModelForCausalLM

    from tests.test_probes import their_calculate_log_probs, their_format_prompt

    exp, ckpts, data_dir, tokenizer, reading, out = r1k_stage
    rows = pd.read_parquet(R1K).to_dict("records")
    base = AutoModelForCausalLM.from_pretrained(ckpts[0].base, dtype=torch.float32).eval()
    frame = reading.in_sample[reading.in_sample["phase"] == "base"].drop_duplicates("example")
    from revlib.data.sets import load_set

    records = {r.id: r for r in load_set(data_dir, "probe_mix")}
    seen = set()
    for _, got in frame.iterrows():
        rec = records[got["example"]]
        row = rows[rec.meta["row"]]
        assert row["sample_type"] == ("original" if rec.direction == "forward" else "flipped")
        prompt = their_format_prompt(row)  # a flipped row's `question` is still the forward one, used as is
        assert got["alp_chosen"] == pytest.approx(their_calculate_log_probs(base, tokenizer, prompt, row["text"], 24), abs=1e-4)
        assert got["alp_rejected"] == pytest.approx(
            their_calculate_log_probs(base, tokenizer, prompt, row["worse-text"], 24), abs=1e-4)
        seen.add(rec.direction)
    assert seen == {"forward", "reverse"}
    # the base's first50 value is theirs at 1,000 tokens, whatever the run's cap
    first = [their_calculate_log_probs(base, tokenizer, their_format_prompt(r), r["text"], 1000) for r in rows[:50]]
    assert reading.measure.base_first_rows == 50
    assert reading.measure.base_first_rows_alp == pytest.approx(sum(first) / len(first), abs=1e-4)


def test_gates_read_the_measure_they_are_derived_on(r1k_stage, stage):
    exp, ckpts, data_dir, tokenizer, reading, out = r1k_stage
    summary = reading.held_out_summary()
    found = dynamics.gate_checks(exp.probes, pd.DataFrame(), reading)  # the response-only summary is not read
    assert found and all(c.what.endswith("(the authors' measure)") for c in found)
    rise = next(c for c in found if c.what.startswith("in-distribution ALP(y+), base to last SFT"))
    idf = summary[summary["distribution"] == "ID"]
    assert rise.reference == pytest.approx(idf[idf["phase"] == "base"]["alp_chosen"].mean())
    # on the task world the authors' measure does not apply: a gate on it fails and says why
    toy_exp, _, toy_ckpts, *_ , toy_tmp = stage
    from revlib.modeling import models

    toy_out = toy_tmp / "authors_toy"
    toy_out.mkdir(exist_ok=True)
    toy = dynamics.authors_measure(toy_exp, toy_ckpts, toy_tmp / "data", models.load_tokenizer(toy_ckpts[0].base),
                                   toy_out)
    assert not toy.measure.applicable and "no `text` / `worse-text`" in toy.measure.reason
    assert dynamics.AuthorsMeasure.load(toy_out) == toy.measure and not dynamics.AuthorsScores.exists(toy_out)
    assert "not applicable" in toy.measure.note and toy.measure.metrics() == {"authors/applicable": False,
                                                                             "authors/max_tokens": 1000}
    gated = dynamics.gate_checks(toy_exp.probes.model_copy(update={"gates_measure": "authors"}), pd.DataFrame(), toy)
    assert len(gated) == 1 and not gated[0].passed and "not applicable" in gated[0].detail
    assert isinstance(toy.table(pd.DataFrame(), None), dynamics.Missing)


def test_authors_table_sets_both_measures_side_by_side(r1k_stage):
    exp, ckpts, data_dir, tokenizer, reading, out = r1k_stage
    from revlib.modeling import models

    items, members = dynamics.load_probe_items(exp, data_dir, tokenizer)
    scores, _ = dynamics.score_checkpoints(exp, ckpts, items, members)
    revlib_in_sample = dynamics.in_sample_scores(exp, ckpts, data_dir, models.load_tokenizer(ckpts[0].base))
    table = reading.table(dynamics.summarize(scores), revlib_in_sample)
    assert set(table["measure"]) == {"the authors'", "revlib's (response only)"}
    assert set(table["reading"]) == {"in sample", "held out"}
    # only the checkpoints where the authors' measure was read, each pair's in both measures and readings
    assert len(table) == 4 * len(set(zip(reading.held_out["pair"], reading.held_out["x"])))
    # the two measures differ: theirs reads the whole chat string, revlib's the response
    a = table[(table["measure"] == "the authors'") & (table["reading"] == "held out")]["ALP(y+)"].to_numpy()
    b = table[(table["measure"] != "the authors'") & (table["reading"] == "held out")]["ALP(y+)"].to_numpy()
    assert not np.allclose(a, b)
