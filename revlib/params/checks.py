"""Checks across sections that need more than one field: run at `revlib check`, before any compute.

Each returns a list of problems, each starting with the YAML path it is about.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the schema calls these checks; at run time it imports this module, never the reverse
    from revlib.params import Experiment


def training(exp: Experiment) -> list[str]:
    problems = []
    for section in ("sft", "dpo"):
        p = getattr(exp, section)
        if p is not None and p.max_steps != -1 and p.max_steps < 1:
            problems.append(f"{section}.max_steps: must be at least 1, or -1 (the default) to run every epoch "
                            f"(got {p.max_steps})")
    for name in exp.dpo.variants if exp.dpo is not None else ():
        steps = exp.dpo.for_variant(name).max_steps
        if steps != -1 and steps < 1:
            problems.append(f"dpo.variants.{name}.max_steps: must be at least 1, or -1 to run every epoch (got {steps})")
    if exp.star_graph is not None and "07_star_graph" in exp.stages and exp.dpo is not None and (
            exp.dpo.max_steps < 1 or exp.dpo.save_every_steps is None):
        problems.append("dpo.max_steps: 07's per-step DPO runs a fixed step budget; set dpo.max_steps and "
                        f"dpo.save_every_steps (got max_steps {exp.dpo.max_steps}, save_every_steps "
                        f"{exp.dpo.save_every_steps})")
    return problems


def resolve_family(task: str):
    from revlib.tasks import resolve

    return resolve(task)


def tasks(exp: Experiment) -> list[str]:
    """negatives and star_graph name a task family and its knobs like data.source does: check them the same way."""
    from revlib.params.common import check_task

    problems = []
    checks = []
    if exp.negatives is not None:
        checks.append(("negatives", exp.negatives.task, exp.negatives.knobs))
    if exp.star_graph is not None:
        checks.append(("star_graph", "star_graph", exp.star_graph.knobs))
    if exp.benchmarks is not None and exp.benchmarks.world and "05_benchmarks" in exp.stages:
        src = exp.data.source
        if src.kind != "synthetic":
            problems.append(f"benchmarks.world: task-world benchmarks need a synthetic data source, not {src.kind!r}")
        else:
            for i, w in enumerate(exp.benchmarks.world):
                checks.append((f"benchmarks.world[{i}] ({w.name})", src.task, {**src.knobs, **w.knobs}))
                if w.query == "middle" and not hasattr(resolve_family(src.task), "middle"):
                    problems.append(f"benchmarks.world[{i}] ({w.name}): query 'middle' needs a task family with a "
                                    f"middle() method; {src.task!r} has none")
                if w.query == "middle" and {**src.knobs, **w.knobs}.get("steps", 3) < 2:
                    problems.append(f"benchmarks.world[{i}] ({w.name}): query 'middle' needs chains of 2 or more steps")
    for where, task, knobs in checks:
        try:
            check_task(task, knobs)
        except ValueError as err:
            problems.append(f"{where}: {err}")
    if exp.negatives is not None:
        try:
            forms = resolve_family(exp.negatives.task).teacher_forms
        except KeyError:
            forms = None  # an unknown task is named above
        unknown = [f for f in exp.negatives.teacher_forms if forms is not None and f not in forms]
        if unknown:
            problems.append(f"negatives.teacher_forms: task {exp.negatives.task!r} writes no form {unknown}; its "
                            f"teacher forms are {list(forms)}")
    return problems


def pool_sizes(exp: Experiment) -> list[str]:
    """Sizes that the configured pool cannot meet, where the pool is known before running: synthetic tasks
    (can they draw that many distinct problems?) and local files (how many distinct questions do they hold?)."""
    from revlib.params.common import check_task

    problems = []
    d = exp.data
    need = _data_need(d)
    wanted = " + ".join(k for k in ("n_train", "n_test", "probe_train", "probe_test") if k in need["parts"])
    src = d.source
    if "01_reverse_data" in exp.stages:
        if src.kind == "synthetic":
            try:
                check_task(src.task, src.knobs)
            except ValueError:
                pass  # reported by data.source itself
            else:
                if not _can_draw(src.task, src.knobs, exp.seed, need["total"]):
                    problems.append(f"data: {wanted} = {need['total']} distinct problems needed; task {src.task!r} "
                                    f"cannot draw that many with these knobs (widen them or ask for fewer)")
        elif src.path is not None:
            have = count_questions(src.path)
            if have is not None and have < need["total"]:
                problems.append(f"data: {wanted} = {need['total']} forward examples needed, but {src.path} holds "
                                f"{have} distinct questions")
        if d.probe_file is not None:
            have = count_questions(d.probe_file)
            if have is not None and have < d.probe_train:
                problems.append(f"data.probe_train: {d.probe_train} probe twins asked, but {d.probe_file} holds {have}")
    for section, task, knobs, n in _rollout_pools(exp):
        try:
            check_task(task, knobs)
        except ValueError:
            continue
        if not _can_draw(task, knobs, exp.seed, n):
            problems.append(f"{section}: {n} distinct {task} problems needed; the knobs cannot give that many")
    return problems


GROUP_PARAMS = {"test": "n_test", "probe_test": "probe_test", "probe": "probe_train", "train": "n_train"}


def _data_need(d) -> dict[str, Any]:
    parts = {GROUP_PARAMS[g]: n for g, n in d.group_sizes().items()}
    return {"parts": parts, "total": sum(parts.values())}


def _rollout_pools(exp: Experiment):
    if exp.negatives is not None and "06_negative_data" in exp.stages:
        n = exp.negatives
        yield "negatives", n.task, n.knobs, max(n.data_sizes) + n.n_test + n.n_validation
    if exp.star_graph is not None and "07_star_graph" in exp.stages:
        s = exp.star_graph
        yield "star_graph", "star_graph", s.knobs, s.n_train + s.n_test


def _can_draw(task: str, knobs: dict[str, Any], seed: int, n: int) -> bool:
    from revlib.tasks import get_task

    try:
        get_task(task, knobs).sample(seed, n)
    except ValueError:
        return False
    return True


def count_questions(path: Path) -> int | None:
    """Distinct non-empty questions in a local parquet/JSONL/CSV source; None when it cannot be read here
    (the stage then reports the file itself)."""
    path = Path(path)
    try:
        questions = _read_column(path, "question")
    except Exception:  # an unreadable file is named by the stage that reads it, with its own error
        return None
    if questions is None:
        return None
    return len({" ".join(q.lower().split()) for q in questions if isinstance(q, str) and q.strip()})


def _read_column(path: Path, column: str) -> list[Any] | None:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        if column not in schema.names:
            return None
        return pq.read_table(path, columns=[column]).column(column).to_pylist()
    if suffix in (".jsonl", ".json"):
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line).get(column))
        return out
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)
        return frame[column].tolist() if column in frame else None
    return None


def lora_targets(exp: Experiment) -> list[str]:
    """LoRA target_modules must name modules of every base model whose architecture is known here."""
    problems = []
    for section in ("sft", "dpo"):
        p = getattr(exp, section)
        if p is None or p.lora is None or isinstance(p.lora.target_modules, str):
            continue
        if not p.lora.target_modules:
            problems.append(f"{section}.lora.target_modules: empty; name modules, or 'all-linear'")
            continue
        for spec in exp.base_models:
            names = module_names(spec.source, spec.preset, str(spec.path) if spec.path else None)
            if names is None:
                continue
            unknown = [t for t in p.lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
            if unknown:
                linear = sorted({n.rsplit(".", 1)[-1] for n in names_linear(spec.source, spec.preset,
                                                                             str(spec.path) if spec.path else None)})
                problems.append(f"{section}.lora.target_modules: {unknown} match no module of base model "
                                f"{spec.name!r}; its linear layers are {', '.join(linear)}")
    return problems


@functools.lru_cache(maxsize=16)
def _meta_model(source: str, preset: str, path: str | None):
    """The architecture on the meta device (no weights): embedded presets and local checkpoints; None for the Hub."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

    if source == "embedded":
        from revlib.params.models import PRESETS

        config = Qwen2Config(**PRESETS[preset])
    elif source == "local" and path and (Path(path) / "config.json").exists():
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception:  # an unknown architecture is checked when 00 loads it
            return None
    else:
        return None
    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config)
        except Exception:
            return None


def module_names(source: str, preset: str, path: str | None) -> list[str] | None:
    model = _meta_model(source, preset, path)
    return None if model is None else [n for n, _ in model.named_modules() if n]


def names_linear(source: str, preset: str, path: str | None) -> list[str]:
    import torch

    model = _meta_model(source, preset, path)
    return [] if model is None else [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
