"""Named DPO variants (dpo.variants): their own 03 cells beside directional DPO, trained with the section's settings
as the variant changes them (the r1k authors' released script: full parameters, beta 0.1, lr 5e-7, 50 steps), scored
by 04 beside directional DPO and shown in Table 2 as their own rows."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from revlib.evaluation import tables
from revlib.lab.plan import plan
from revlib.modeling import preference, train
from revlib.params import load
from revlib.stages import benchmarks, dpo

from conftest import PARAMS, write_params
from test_train import dpo_params, pairs, records, sft_params, weights  # noqa: F401  (fixtures)


def _with_variant(tmp_path, **variant):
    raw = yaml.safe_load((PARAMS / "smoke" / "train.yaml").read_text())
    raw["stages"] += ["04_probe_dynamics", "05_benchmarks"]
    raw["probes"] = {"models": "stages", "train_sets": ["forward", "mix"], "pairs": [["forward", "forward"], ["mix", "forward"]]}
    raw["benchmarks"] = {"tasks": ["synthetic_forward"], "models": ["sft", "dpo"]}
    raw["dpo"]["variants"] = {"authors-code": {"lora": None, "beta": 0.1, "lr": 5e-7, "max_steps": 3, **variant}}
    return load(write_params(raw, tmp_path))


def test_a_variant_adds_its_own_cells_and_keeps_the_section(tmp_path):
    exp = _with_variant(tmp_path)
    cells = {c.name: c for c in plan(exp) if c.stage == "03_dpo"}
    assert set(cells) == {"micro__forward", "micro__mix", "micro__forward__authors-code", "micro__mix__authors-code"}
    assert cells["micro__mix__authors-code"].values["variant"] == "authors-code"
    assert ("02_sft", "micro__mix") in cells["micro__mix__authors-code"].deps
    own, theirs = exp.dpo.for_variant("directional"), exp.dpo.for_variant("authors-code")
    assert (own.beta, own.lr, own.max_steps, own.lora.r) == (0.6, 0.01, -1, 4)  # the section is untouched
    assert (theirs.beta, theirs.lr, theirs.max_steps, theirs.lora) == (0.1, 5e-7, 3, None)
    assert theirs.max_length == own.max_length and theirs.epochs == own.epochs  # what it leaves out is the section's
    probes = next(c for c in plan(exp) if c.stage == "04_probe_dynamics")
    assert {("03_dpo", "micro__mix__authors-code"), ("03_dpo", "micro__forward__authors-code")} <= set(probes.deps)
    bench = next(c for c in plan(exp) if c.stage == "05_benchmarks")
    assert ("03_dpo", "micro__forward__authors-code") in bench.deps


def test_a_variant_on_some_sft_models_only(tmp_path):
    exp = _with_variant(tmp_path, on=["mix"])
    names = [c.name for c in plan(exp) if c.stage == "03_dpo"]
    assert names == ["micro__forward", "micro__mix", "micro__mix__authors-code"]


def test_the_cell_trains_with_the_variants_settings(tmp_path):
    exp = _with_variant(tmp_path)
    assert dpo.params_for(exp.dpo, "authors-code", 8).lora is None
    assert dpo.params_for(exp.dpo, "directional", 8) is exp.dpo
    assert benchmarks.dpo_label("authors-code") == "dpo_authors-code" and benchmarks.dpo_label("directional") == "dpo"


def test_full_parameter_variant_from_a_lora_sft(tiny_model_dir, records, pairs, tmp_path):  # noqa: F811
    """The authors' script trains every weight of the SFT model against a frozen copy of it: from a LoRA SFT,
    revlib merges the adapter, trains the merge in full, and saves whole models (no adapter)."""
    sft = train.sft(str(tiny_model_dir), records, tmp_path / "sft", sft_params(epochs=1))
    section = dpo_params(epochs=2, variants={"authors-code": {"lora": None, "beta": 0.1, "lr": 1e-3, "max_steps": 3}})
    settings = dpo.params_for(section, "authors-code", len(pairs))
    result = preference.dpo_from(sft.final, pairs, tmp_path / "dpo", settings, seed=0)
    assert result.final.adapter is None and result.final.step == 3  # max_steps ends it inside the first epoch
    merged = weights(tmp_path / "dpo" / "merged_sft")
    trained = weights(result.final.path)
    moved = [k for k in merged if k in trained and not torch.equal(merged[k].float(), trained[k].float())]
    assert len(moved) > len(merged) // 2, "full-parameter DPO should move most weight tensors"
    first = train.curves_rows(result.log_history)[0]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # the reference is the SFT model itself


def test_table2_shows_a_variant_as_its_own_row():
    rows = [{"model": "m", "stage": s, "train_set": "mix", "task": "t", "accuracy": a, "ci_low": a - 0.1,
             "ci_high": a + 0.1, "problems": 50} for s, a in (("sft", 0.5), ("dpo", 0.6), ("dpo_authors-code", 0.4))]
    table = tables.table2(pd.DataFrame(rows), ["t"])
    assert list(table.numbers["variant"]) == ["DPO", "DPO authors-code"]
    assert list(table.numbers["t_delta"].round(3)) == [0.1, -0.1]


def test_04_scores_a_variant_beside_directional_dpo_from_the_same_sft_model(tmp_path):
    from revlib.core import io
    from revlib.stages import dynamics

    exp = _with_variant(tmp_path, on=["mix"])

    def upstream(stage, cell):
        run = tmp_path / "runs" / stage / cell
        io.write_json(train.checkpoint_dir(run) / "checkpoint-7" / train.MARKER,
                      {"epoch": 1.0, "step": 7, "base": f"/models/{cell}", "adapter": None})
        return run

    models = dynamics.dpo_variant_models(exp, upstream, "micro")
    assert {label: ck.base for label, ck in models.items()} == {
        "SFT mix": "/models/micro__mix", "SFT mix + directional DPO": "/models/micro__mix",
        "SFT mix + DPO authors-code": "/models/micro__mix__authors-code"}


def test_adding_a_variant_leaves_finished_dpo_cells_current(tmp_path):
    """A 03 cell's fingerprint reads its own variant only: adding the authors' variant re-runs no directional DPO."""
    from revlib.lab import fingerprint

    for sub in "abc":
        (tmp_path / sub).mkdir()
    raw = yaml.safe_load((PARAMS / "smoke" / "train.yaml").read_text())
    before = load(write_params(raw, tmp_path / "a"))
    raw["dpo"]["variants"] = {"authors-code": {"lora": None, "beta": 0.1}}
    after = load(write_params(raw, tmp_path / "b"))
    cells = {c.name: c for c in plan(after) if c.stage == "03_dpo"}
    for cell in plan(before):
        if cell.stage == "03_dpo":
            assert fingerprint.fingerprint_parts(before, cell)["params"] == fingerprint.fingerprint_parts(
                after, cells[cell.name])["params"], cell.name
    raw["dpo"]["variants"]["authors-code"]["beta"] = 0.2  # its own settings are its inputs
    changed = load(write_params(raw, tmp_path / "c"))
    cell = cells["micro__mix__authors-code"]
    assert fingerprint.fingerprint_parts(after, cell)["params"] != fingerprint.fingerprint_parts(changed, cell)["params"]
