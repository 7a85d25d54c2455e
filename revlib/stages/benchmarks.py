"""Notebook 05: evaluate every final model of the matrix for one base model and write the tables.

Artifacts in the run directory: results.csv (one row per model x benchmark), samples/<model>/<task>.jsonl
(every response with its extracted answer and verdict), table1/table2 as CSV, Markdown and HTML,
and headline_table1.html / headline_table2.html for the experiment index.

Each (model, benchmark) evaluation is kept in `outputs/<experiment>/eval_store/<key>/`, keyed by the model's
weight files, the benchmark's data, the evaluation settings, the seed and the code that produced it. A re-run
(another benchmark added, a model retrained, a killed run) evaluates only what has no entry yet, and
nothing earlier is deleted. Grading and the judge's verdicts (cached too) are re-applied every time.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from revlib.core import io
from revlib.core.io import JSONObject, Metrics
from revlib.evaluation import harness, score, stage_checks, tables
from revlib.evaluation.learning import Check
from revlib.evaluation.judge import LLMJudge
from revlib.params.benchmarks import SYNTHETIC_TASKS
from revlib.stages.context import StageContext


def dpo_label(variant: str) -> str:
    """A DPO model's label in results.csv and the tables: dpo (directional), dpo_per_step, dpo_<name> (dpo.variants)."""
    return "dpo" if variant == "directional" else f"dpo_{variant}"


def models_to_evaluate(ctx: StageContext) -> list[harness.ModelRef]:
    """The base model and the final SFT/DPO checkpoints of this cell's model, as params ask and stages allow."""

    exp, bp, name = ctx.exp, ctx.exp.benchmarks, ctx.values["model"]
    refs: list[harness.ModelRef] = []
    if "base" in bp.models:
        if "00_base_model" not in exp.stages:
            raise ValueError("benchmarks.models has 'base' but 00_base_model is not among the experiment's stages")
        path = ctx.base_path()
        refs.append(harness.ModelRef("base", "(base)", path, None, path))
    from revlib.modeling import train
    from revlib.params.stages import dpo_cells

    sft_cells = [(f"{name}__{s}", "sft", s) for s in (exp.sft.train_sets if exp.sft else [])]
    # per-step DPO and each named variant get their own label, so Table 2 shows them beside directional DPO
    dpo = [(cell, dpo_label(v["variant"]), v["train_set"]) for cell, v in dpo_cells(exp, name)]
    for stage, label_set, cells in (("02_sft", "sft", sft_cells), ("03_dpo", "dpo", dpo)):
        if label_set not in bp.models or stage not in exp.stages:
            continue
        for cell, label, s in cells:
            run_dir = ctx.upstream(stage, cell)
            ckpts = train.load_checkpoints(run_dir)
            if not ckpts:
                raise FileNotFoundError(f"{run_dir} holds no finished checkpoint; re-run {stage}")
            refs.append(harness.ModelRef.from_checkpoint(label, s, ckpts[-1]))
    if not refs:
        raise ValueError(f"nothing to evaluate: benchmarks.models={bp.models} but stages are {exp.stages}")
    return refs


def models_table(refs: list[harness.ModelRef]) -> pd.DataFrame:
    return pd.DataFrame([{"model": r.label, "train set": r.train_set, "weights": r.pretrained, "adapter": r.adapter or "-"}
                         for r in refs])


def print_model(ref: harness.ModelRef, ev: harness.ModelEval) -> None:
    """A line per model evaluated: how long it took and lm-eval's own accuracy per benchmark."""
    print(f"{ref.label}/{ref.train_set}: {ev.seconds:.1f}s {ev.lm_eval_acc}")


EVAL_STORE = "eval_store"
# modules that only grade, judge and tabulate stored samples: changing them re-scores, never re-generates
# (the teachers' modules are reached only through the judge's API client; stages/context.py only names what a stage
# reads from its context, stages/maybe.py only shows report parts)
POSTPROCESSING = {"revlib/evaluation/judge.py", "revlib/evaluation/score.py", "revlib/evaluation/tables.py",
                  "revlib/core/stats.py", "revlib/stages/benchmarks.py", "revlib/stages/context.py",
                  "revlib/stages/maybe.py"}
POSTPROCESSING_FOLDERS = ("revlib/data/teachers/",)


def make_judge(bp, cache_dir: Path | None = None) -> LLMJudge | None:
    j = bp.judge
    if not j:
        return None
    cache = Path(cache_dir) / "judge.jsonl" if cache_dir else None
    return LLMJudge(j.base_url, j.model, j.api_key_env, j.timeout_s, cache_path=cache, max_retries=j.max_retries,
                    budget_requests=j.budget_requests)


def _files_signature(path: str | None) -> Any:
    """A local model folder by its files (name, size, mtime), so a retrained checkpoint at the same path differs;
    a Hub id as itself."""
    if not path:
        return None
    folder = Path(path)
    if not folder.exists():
        return path
    files = [folder] if folder.is_file() else sorted(f for f in folder.iterdir() if f.is_file())
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _task_data(task: str, bp, data_dir: Path | None, world_files: dict[str, Path] | None = None) -> Any:
    if world_files and task in world_files:
        path = world_files[task]
    elif task in harness.SYNTHETIC_SETS:
        path = Path(data_dir) / "sets" / f"{harness.SYNTHETIC_SETS[task]}.jsonl" if data_dir else None
    else:
        path = bp.local_paths.get(task)
    return io.sha256_file(path) if path and Path(path).exists() else "hub"


def store_key(ref: harness.ModelRef, task: str, bp, data_dir: Path | None, seed: int,
              world_files: dict[str, Path] | None = None, code_hashes: dict[str, str] | None = None) -> str:
    """What one (model, benchmark) evaluation depends on, hashed; `code_hashes`: the stage's code (path -> sha256)."""
    code = {k: v for k, v in (code_hashes or {}).items() if k.startswith("revlib/") and k not in POSTPROCESSING
            and not k.startswith(POSTPROCESSING_FOLDERS)}
    settings = bp.model_dump(mode="json", exclude={"tasks", "models", "judge", "local_paths", "world"})
    settings["instruction"] = bp.instruction_text(ref.label)  # which prompt this model got
    parts = {"task": task, "data": _task_data(task, bp, data_dir, world_files), "settings": settings, "seed": seed, "code": code,
             "model": {k: _files_signature(getattr(ref, k)) for k in ("pretrained", "adapter", "tokenizer")}}
    return io.sha256_text(json.dumps(parts, sort_keys=True, default=str))[:24]


@dataclass(frozen=True)
class StoreEntry:
    """One stored (model, benchmark) evaluation: lm-eval's logged samples and its own aggregate."""

    lm_eval_acc: float | None
    samples: list[JSONObject]


def _load_entry(folder: Path) -> StoreEntry | None:
    meta = folder / "meta.json"  # written last: an entry without it was cut short
    if not meta.exists():
        return None
    return StoreEntry(io.read_json(meta)["lm_eval_acc"], io.read_jsonl(folder / "samples.jsonl"))


def _save_entry(folder: Path, ref: harness.ModelRef, task: str, samples: list[JSONObject], acc: float | None,
                seconds: float) -> None:
    rows = json.loads(json.dumps(samples, default=str))  # lm-eval's samples hold a few non-JSON values
    io.write_jsonl(folder / "samples.jsonl", rows)
    io.write_json(folder / "meta.json", {"task": task, "lm_eval_acc": acc, "seconds": seconds,
                                         "model": harness.ref_dict(ref)})


@dataclass
class BenchmarkRun:
    """05's run for one base model: the models evaluated, their results, the tables and the learning checks."""

    dir: Path
    refs: list[harness.ModelRef]
    results: pd.DataFrame
    table1: tables.Table
    table2: tables.Table
    checks: list[Check]
    seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # model/benchmark pairs read from the store, not evaluated
    world: list[WorldBenchmark] = field(default_factory=list)

    @property
    def metrics(self) -> Metrics:
        """What 05 records in metrics.json: accuracy and problems per model and benchmark, seconds, which task-world
        benchmarks are alive, and the learning checks."""
        from revlib.evaluation import learning

        out: Metrics = {}
        for _, r in self.results.iterrows():
            key = f"{r['stage']}/{r['train_set']}/{r['task']}"
            out[f"accuracy/{key}"] = r["accuracy"]
            out[f"problems/{key}"] = int(r["problems"])
        out["seconds"] = sum(self.seconds.values())
        for w in self.world:
            out[f"world_alive/{w.benchmark}"] = w.alive
        return out | learning.metrics(self.checks)

    def models_table(self) -> pd.DataFrame:
        return models_table(self.refs)

    def results_table(self) -> pd.DataFrame:
        """Accuracy per model and benchmark, with its interval and lm-eval's own aggregate."""
        return self.results[RESULT_COLUMNS]

    def world_table(self) -> pd.DataFrame | None:
        """The task-world benchmarks: chance, best model, alive; None when the experiment has none."""
        return pd.DataFrame([w.__dict__ for w in self.world]) if self.world else None

    def table1_html(self) -> str:
        return table_html(self.table1, "No SFT models in this experiment.")

    def table2_html(self) -> str:
        return table_html(self.table2, "No DPO models in this experiment.")

    def sample_responses(self, per_file: int = 2) -> pd.DataFrame:
        return sample_responses(self.dir, per_file)


def run(ctx: StageContext, refs: list[harness.ModelRef] | None = None,
        on_model: Callable[[harness.ModelRef, harness.ModelEval], None] | None = print_model) -> BenchmarkRun:
    """Evaluate every model (`refs`: default, the final checkpoints of this cell's model) on every benchmark,
    write results, tables and samples, and check that the SFT models learned."""
    from revlib.data import world

    bp = ctx.exp.benchmarks
    needs_data = any(t.startswith("synthetic_") for t in bp.tasks) or bool(bp.world)
    data_dir = ctx.upstream("01_reverse_data") if needs_data else None
    world_files = world.write_all(ctx.exp, data_dir, ctx.dir / "world")
    tasks_all = bp.all_tasks
    store = ctx.exp.run_root / EVAL_STORE
    judge = make_judge(bp, ctx.exp.run_root / "teacher_cache")
    refs = refs if refs is not None else models_to_evaluate(ctx)
    rows, seconds, reused = [], {}, []
    for ref in refs:
        tag = sample_folder(ref.label, ref.train_set)
        keys = {task: store_key(ref, task, bp, data_dir, ctx.exp.seed, world_files, ctx.code_hashes) for task in tasks_all}
        entries = {task: _load_entry(store / key) for task, key in keys.items()}
        missing = [task for task, entry in entries.items() if entry is None]
        t0 = time.time()
        if missing:
            ev = harness.evaluate(ref, bp, data_dir, seed=ctx.exp.seed, work_dir=ctx.dir / "work" / tag,
                                  tasks=missing, world_files=world_files)
            shutil.rmtree(ctx.dir / "work" / tag, ignore_errors=True)  # merged weights, if any: derived and large
            for task in missing:
                _save_entry(store / keys[task], ref, task, ev.samples[task], ev.lm_eval_acc.get(task), ev.seconds)
                entries[task] = _load_entry(store / keys[task])
        reused += [f"{tag}/{task}" for task in tasks_all if task not in missing]
        seconds[tag] = time.time() - t0
        ev = harness.ModelEval(ref, {t: e.lm_eval_acc for t, e in entries.items()},
                               {t: e.samples for t, e in entries.items()}, seconds[tag])
        for task in tasks_all:
            samples = entries[task].samples
            scored = score.score_samples(task, samples, judge)
            io.write_jsonl(ctx.dir / "samples" / tag / f"{task}.jsonl", scored)
            summary = score.summarise(task, scored)
            prompt = bp.instruction_text(ref.label) if task not in SYNTHETIC_TASKS else None
            rows.append({"model": ctx.values["model"], "stage": ref.label, "train_set": ref.train_set, **summary,
                         "prompt": "bare problem" if prompt is None else f"problem + instruction: {prompt}",
                         "lm_eval_acc": ev.lm_eval_acc.get(task), "pretrained": ref.pretrained, "adapter": ref.adapter})
        if on_model:
            on_model(ref, ev)
    results = pd.DataFrame(rows)
    io.write_text(ctx.dir / "results.csv", results.to_csv(index=False))
    t1, t2 = tables.table1(results, tasks_all), tables.table2(results, tasks_all)
    for t in (t1, t2):
        t.write(ctx.dir)
        io.write_text(ctx.dir / f"headline_{t.name}.html", t.html())
    from revlib.core.records import read_records

    what = {world.WORLD_PREFIX + w.name: w.what for w in bp.world}
    alive = world.summary(results, {t: read_records(p) for t, p in world_files.items()}, what)
    io.write_json(ctx.dir / WORLD_FILE, alive)
    io.write_json(ctx.dir / "seconds.json", seconds)
    io.write_json(ctx.dir / "reused.json", reused)
    if judge is not None:
        judge.close()
    return BenchmarkRun(ctx.dir, refs, results, t1, t2, checks(ctx, results), seconds, reused,
                        [WorldBenchmark(**w) for w in alive])


RESULT_COLUMNS = ["stage", "train_set", "task", "problems", "accuracy", "ci_low", "ci_high", "lm_eval_acc", "no_answer",
                  "judged", "judge_unreadable"]


def checks(ctx: StageContext, results: pd.DataFrame) -> list[Check]:
    """Did the SFT models learn? Each answers its own direction's synthetic test set above chance (the commonest
    answer of 01's test set, read only when a synthetic benchmark ran)."""
    needs_data = any(t.startswith("synthetic_") for t in ctx.exp.benchmarks.tasks)
    return stage_checks.benchmark_checks(results, ctx.upstream("01_reverse_data") if needs_data else None)


def table_html(table: tables.Table, missing: str) -> str:
    """A table as HTML, or a paragraph saying why it has no rows."""
    return table.html() if len(table.cells) else f"<p>{html.escape(missing)}</p>"


SAMPLE_COLUMNS = ["model", "task", "doc_id", "gold", "extracted", "correct", "reason", "response"]


def sample_responses(out_dir: Path, per_file: int = 2) -> pd.DataFrame:
    """The first responses of each benchmark for every model, as `run` saved them under samples/."""
    samples = pd.concat([pd.read_json(p, lines=True).head(per_file).assign(model=p.parent.name)
                         for p in sorted((Path(out_dir) / "samples").glob("*/*.jsonl"))], ignore_index=True)
    return samples[SAMPLE_COLUMNS]


# ---------------------------------------------------------------- what 05 hands on: typed, read back from its run dir


def sample_folder(stage: str, train_set: str) -> str:
    """The samples/<folder> of one model's responses."""
    return io.slug(f"{stage}__{train_set}")


@dataclass(frozen=True)
class ModelScore:
    """One model's accuracy on one benchmark (a row of results.csv)."""

    stage: str        # "base", "sft", "dpo", "dpo_per_step" or "dpo_<variant>"
    train_set: str
    task: str
    problems: int
    accuracy: float

    @property
    def correct(self) -> int:
        return round(self.accuracy * self.problems)

    @property
    def model(self) -> str:
        return f"{self.stage}/{self.train_set}"


@dataclass(frozen=True)
class WorldBenchmark:
    """A task-world benchmark outside both training sets (world.json): chance, best model, alive."""

    benchmark: str
    n: int
    chance: float
    alive: bool
    best_accuracy: float | None = None
    best_model: str | None = None
    what: str = ""


@dataclass
class BenchmarkResults:
    """05's results as later readers use them: accuracy per (model, benchmark), the task-world benchmarks, and
    per-problem outcomes and benchmark records read from samples/ and world/ on demand."""

    dir: Path
    scores: list[ModelScore]
    world: list[WorldBenchmark]

    FILE = "results.csv"

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / cls.FILE).exists()

    @classmethod
    def load(cls, run_dir: Path) -> BenchmarkResults:
        run_dir = Path(run_dir)
        frame = pd.read_csv(run_dir / cls.FILE)
        scores = [ModelScore(str(r["stage"]), str(r["train_set"]), str(r["task"]), int(r["problems"]), float(r["accuracy"]))
                  for r in frame.to_dict("records")]
        world = [WorldBenchmark(**w) for w in io.read_json(run_dir / WORLD_FILE)] if (run_dir / WORLD_FILE).exists() else []
        return cls(run_dir, scores, world)

    def score(self, stage: str, train_set: str, task: str) -> ModelScore | None:
        return next((s for s in self.scores if (s.stage, s.train_set, s.task) == (stage, train_set, task)), None)

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(s.task for s in self.scores))

    def alive(self) -> list[str]:
        return [w.benchmark for w in self.world if w.alive]

    def per_problem(self, stage: str, train_set: str, tasks: Sequence[str]) -> dict[tuple[str, int], float]:
        """(task, problem) -> the share of this model's samples that were right, over `tasks`."""
        out: dict[tuple[str, int], float] = {}
        for s in self.scores:
            if (s.stage, s.train_set) != (stage, train_set) or s.task not in tasks:
                continue
            path = self.dir / "samples" / sample_folder(stage, train_set) / f"{s.task}.jsonl"
            if not path.exists():
                continue
            per: dict[int, list[bool]] = {}
            for row in io.read_jsonl(path):
                per.setdefault(int(row["doc_id"]), []).append(bool(row["correct"]))
            out.update({(s.task, k): sum(v) / len(v) for k, v in per.items()})
        return out

    def models(self) -> list[tuple[str, str]]:
        """(stage, train set) of every model evaluated, in results.csv's order."""
        return list(dict.fromkeys((s.stage, s.train_set) for s in self.scores))

    def golds(self, task: str) -> list[str]:
        """The gold answers of a benchmark's problems (first sample of the first model's responses)."""
        for path in sorted((self.dir / "samples").glob(f"*/{task}.jsonl"))[:1]:
            return [str(r["gold"]) for r in io.read_jsonl(path) if int(r.get("sample", 0)) == 0]
        return []

    def world_directions(self) -> dict[str, list[str]]:
        """Task-world benchmarks asked both ways (no 'middle' queries): the direction of each problem, in order."""
        from revlib.core.records import read_records

        out: dict[str, list[str]] = {}
        folder = self.dir / "world"
        for path in sorted(folder.glob("world_*.jsonl")) if folder.exists() else []:
            recs = read_records(path)
            if {r.direction for r in recs} == {"forward", "reverse"} and not any(r.meta.get("query") == "middle" for r in recs):
                out[path.stem] = [r.direction for r in recs]
        return out


WORLD_FILE = "world.json"
