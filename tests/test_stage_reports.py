"""Notebooks are reports: their code cells only call the stage modules and show what comes back.

Also the pieces moved out of the notebooks into revlib/stages: DPO started from an SFT checkpoint (one function
for 03, 04, 06 and 07), 03's per-step pairs and step budget, and what 02 and 03 record as metrics.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from revlib.core import io, records
from revlib.modeling import preference
from revlib.data.sets import set_path
from revlib.evaluation import learning
from revlib.modeling.train import Checkpoint, TrainResult
from revlib.params.train import DPOParams
from revlib.stages import dpo, sft
from revlib.tasks import get_task

from tests.test_direction_aware import ScriptedChainPolicy, _exp

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# What a report cell may hold: imports, names bound to what a call returns (or to a part of the context), calls
# (with literal, f-string, attribute, subscript and negative-index arguments) and a bare expression to display.
# No branch, loop, comprehension, lambda, operator, comparison or dict building: that is logic, and it lives in
# revlib/stages.
REPORT_NODES = (ast.Module, ast.Expr, ast.Assign, ast.Import, ast.ImportFrom, ast.alias, ast.Call, ast.keyword,
                ast.Attribute, ast.Name, ast.Constant, ast.Subscript, ast.Tuple, ast.List, ast.JoinedStr,
                ast.FormattedValue, ast.Load, ast.Store, ast.UnaryOp, ast.USub)


def logic_in(source: str) -> list[str]:
    """What in a code cell is more than a call, a figure or a table: 'line N: NodeType' per offending node."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, REPORT_NODES):
            found.append(f"line {getattr(node, 'lineno', '?')}: {type(node).__name__}")
        elif isinstance(node, ast.UnaryOp) and not (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):
            found.append(f"line {node.lineno}: {type(node.op).__name__} of an expression")
        elif isinstance(node, ast.Assign) and not isinstance(node.value, (ast.Call, ast.Attribute, ast.Subscript)):
            found.append(f"line {node.lineno}: a name bound to something built in the cell")
    return sorted(found)


def test_the_logic_finder_finds_logic():
    def kinds(source: str) -> set[str]:
        return {f.split(": ", 1)[1] for f in logic_in(source)}

    assert logic_in('result = stage.run(ctx)\nreport.table(result.table(), f"Run {x}")\nresults[-1].credits') == []
    assert logic_in("P = ctx.exp.negatives\nspec = ctx.values['model']") == []
    assert logic_in("if x:\n    report.show(fig)") == ["line 1: If"]
    assert kinds("rows = [r for r in results]") == {"ListComp", "comprehension", "a name bound to something built in the cell"}
    assert kinds("ctx.finish(a | b)") == {"BinOp", "BitOr"}
    assert "IfExp" in kinds("f(a if b else c)") and "Lambda" in kinds("run(on=lambda r: print(r))")
    assert "Dict" in kinds("report.table(pd.DataFrame([{'a': 1}]))") and "Raise" in kinds("raise ValueError('x')")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_hold_only_calls_figures_and_tables(path):
    nb = nbformat.read(path, as_version=4)
    offenders = {c.get("id"): logic_in(c.source) for c in nb.cells
                 if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])}
    assert {cid: found for cid, found in offenders.items() if found} == {}


# ---------------------------------------------------------------- DPO from an SFT checkpoint


class RecordingTrainer:
    def __init__(self):
        self.calls = []

    def dpo(self, base, pairs, out_dir, params, seed=0, sft_adapter=None, epochs=None, save_every_epochs=None,
            on_log=None):
        self.calls.append({"base": base, "sft_adapter": sft_adapter, "seed": seed, "epochs": epochs,
                           "save_every_epochs": save_every_epochs, "on_log": on_log})
        return TrainResult([Checkpoint(Path(out_dir) / "ck", 1.0, 1, base, None)])


def test_dpo_from_merges_a_lora_sft_and_starts_a_full_one_from_itself(tmp_path):
    trainer = RecordingTrainer()
    lora = Checkpoint(tmp_path / "sft" / "checkpoint-2", 2.0, 8, "/models/base", str(tmp_path / "sft" / "checkpoint-2"))
    full = Checkpoint(tmp_path / "sft" / "checkpoint-3", 3.0, 12, "/models/base", None)
    params = DPOParams()
    preference.dpo_from(lora, [], tmp_path / "a", params, 7, epochs=2, save_every_epochs=1, trainer=trainer)
    preference.dpo_from(full, [], tmp_path / "b", params, 7, trainer=trainer)
    assert trainer.calls == [
        # LoRA: train.dpo gets the adapter's base and the adapter, and merges them into the start and reference
        {"base": "/models/base", "sft_adapter": lora.adapter, "seed": 7, "epochs": 2, "save_every_epochs": 1,
         "on_log": None},
        # full fine-tuning: the SFT checkpoint itself is the start
        {"base": str(full.path), "sft_adapter": None, "seed": 7, "epochs": None, "save_every_epochs": None,
         "on_log": None},
    ]


def test_per_step_dpo_trains_its_step_budget_in_whole_epochs():
    params = _exp({"on": ["mix"], "steps": 80}).dpo.model_copy(update={"batch_size": 16})
    per_step = dpo.params_for(params, "per_step", 24)
    assert (per_step.epochs, per_step.save_every_epochs) == (54, 54)  # 80 steps x 16 pairs over 24 pairs, rounded up
    assert dpo.params_for(params, "per_step", 1280).epochs == 1
    assert dpo.params_for(params, "directional", 24) is params
    no_budget = _exp({"on": ["mix"]}).dpo
    assert dpo.params_for(no_budget, "per_step", 24) is no_budget


class FakeContext:
    """The part of revlib.lab.context.StageRun the stage functions read (revlib.stages.context.StageContext)."""

    def __init__(self, exp, values, run_dir, upstream_dirs):
        self.exp, self.values, self.dir, self._upstream = exp, values, run_dir, upstream_dirs
        self.code_hashes = {}

    def upstream(self, stage, cell=None):
        return self._upstream[stage]

    def base_path(self):
        return "/models/base"


@pytest.fixture
def per_step_cell(tmp_path):
    fam = get_task("arith", {"steps": 3, "max_value": 9, "ops": ["add", "sub"]})
    fwd = fam.sample(0, 12)
    mixed = fwd + [fam.invert(r) for r in fwd]
    data_dir = tmp_path / "data"
    records.write_records(set_path(data_dir, "mix"), mixed)
    exp = _exp({"on": ["mix"], "problems": 24, "samples_per_problem": 4, "rollouts": 16,
                "critical_step": "most_negative"})
    ctx = FakeContext(exp, {"model": "m", "train_set": "mix", "variant": "per_step"}, tmp_path / "run",
                      {"01_reverse_data": data_dir})
    start = dpo.Start("m", "mix", "per_step", Checkpoint(tmp_path / "sft", 1.0, 1, "/models/base", None), data_dir)
    return ctx, start, mixed


def test_per_step_pairs_are_written_before_training(per_step_cell):
    ctx, start, mixed = per_step_cell
    pairs = dpo.preference_pairs(ctx, start, sampler=ScriptedChainPolicy(mixed, p=0.5))
    assert pairs.stats["pairs"] == len(pairs.pairs) > 0 and pairs.source == "per-step pairs from the SFT policy on mix"
    assert [p.id for p in records.read_pairs(ctx.dir / dpo.PAIRS_FILE)] == [p.id for p in pairs.pairs]
    assert list(pairs.table()["statistic"]) == list(pairs.stats)


def test_no_per_step_pairs_stop_the_cell_after_writing_the_empty_file(per_step_cell):
    ctx, start, mixed = per_step_cell
    with pytest.raises(ValueError, match="no per-step pairs: none of 96 samples"):
        dpo.preference_pairs(ctx, start, sampler=ScriptedChainPolicy(mixed, p=1.0))  # every sample right
    assert records.read_pairs(ctx.dir / dpo.PAIRS_FILE) == []


# ---------------------------------------------------------------- what 02 and 03 record


def _train_result(tmp_path):
    cks = [Checkpoint(tmp_path / f"checkpoint-{i}", float(i), 4 * i, "/models/base", None) for i in (1, 2)]
    return TrainResult(cks, metrics={"train_runtime": 3.5, "train_tokens_per_second": 120.0,
                                     "max_length_cut": {"rows": 3, "cut": 1, "answer_lost": 1}})


def test_sft_metrics_keep_the_keys_02_recorded(tmp_path):
    check = learning.Check("loss fell", 0.1, 0.0, True, "")
    run = sft.SFTRun("m", "forward", [object()] * 3, _train_result(tmp_path), [{"step": 4, "loss": 0.7}], [check])
    assert run.metrics == {"train_set": "forward", "examples": 3, "final_loss": 0.7, "checkpoints": [1.0, 2.0],
                           "steps": 8, "train_runtime": 3.5, "tokens_per_second": 120.0, "learned": True,
                           "learned/loss fell": True}
    table = run.run_table()
    assert list(table.columns) == ["model", "train set", "examples", "steps", "seconds", "tokens/s", "cut by max_length",
                                   "of them lost the answer"]
    assert table.iloc[0]["cut by max_length"] == 1 and table.iloc[0]["of them lost the answer"] == 1
    assert sft.SFTRun("m", "forward", [], _train_result(tmp_path), [], []).metrics["final_loss"] is None


def test_dpo_metrics_keep_the_keys_03_recorded(tmp_path):
    start = dpo.Start("m", "mix", "per_step", Checkpoint(tmp_path, 1.0, 1, "/models/base", None), tmp_path)
    pairs = dpo.Pairs([object()] * 2, {"pairs": 2, "pairs/forward": 1}, "per-step pairs from the SFT policy on mix")
    last = {"step": 8, "loss": 0.3, "rewards/margins": 1.5, "rewards/accuracies": 1.0}
    run = dpo.DPORun(start, pairs, 0.6, _train_result(tmp_path), [{"step": 4, "loss": 0.6}, last], [])
    assert run.metrics == {"sft": "m__mix", "variant": "per_step", "pairs": pairs.source, "n_pairs": 2,
                           "pair_stats/pairs": 2, "pair_stats/pairs/forward": 1, "beta": 0.6,
                           "checkpoints": [1.0, 2.0], "steps": 8, "final_loss": 0.3, "final_margin": 1.5,
                           "final_accuracy": 1.0, "train_runtime": 3.5, "tokens_per_second": 120.0, "learned": True}
    assert run.run_table()["pairs"].iloc[0] == "per-step pairs from the SFT policy on mix (2)"
    assert io.read_json(io.write_json(tmp_path / "m.json", run.metrics))["final_margin"] == 1.5


def test_a_missing_part_says_why_or_shows_nothing(monkeypatch, capsys):
    import pandas as pd
    import plotly.graph_objects as go

    from revlib.stages import maybe

    shown = []
    monkeypatch.setattr(maybe.report, "show", lambda fig: shown.append(("figure", fig.layout.title.text)))
    monkeypatch.setattr(maybe.report, "table", lambda frame, caption="": shown.append(("table", caption, len(frame))))
    maybe.show(go.Figure(layout={"title": "loss"}), "no loss")
    maybe.show(None, "Not an embedded model: no pretraining.")
    maybe.show(None)
    maybe.table(pd.DataFrame(), "empty, still shown", "never printed")
    maybe.table(None, "rejects")
    maybe.checks([], "Did the base learn?")
    maybe.checks([learning.Check("x", 1.0, 0.0, True, "")], "Did the base learn?")
    assert shown == [("figure", "loss"), ("table", "empty, still shown", 0), ("table", "Did the base learn?", 1)]
    assert capsys.readouterr().out == "Not an embedded model: no pretraining.\n"


def test_report_only_stage_modules_leave_stored_evaluations_valid(tmp_path):
    from revlib.evaluation import harness
    from revlib.params.benchmarks import BenchmarkParams
    from revlib.stages import benchmarks

    ref = harness.ModelRef("sft", "forward", "Qwen/base", None, "Qwen/base")
    bp = BenchmarkParams(tasks=["synthetic_forward"], models=["sft"])
    code = {"revlib/modeling/train.py": "a", "revlib/stages/context.py": "b", "revlib/stages/maybe.py": "c"}

    def key(**changed):
        return benchmarks.store_key(ref, "synthetic_forward", bp, None, 0, code_hashes={**code, **changed})

    # 05's context protocol and its optional report parts change no generation: the eval store keeps its entries
    assert key() == key(**{"revlib/stages/context.py": "b2"}) == key(**{"revlib/stages/maybe.py": "c2"})
    assert key() != key(**{"revlib/modeling/train.py": "a2"})
