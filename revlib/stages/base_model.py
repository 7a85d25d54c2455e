"""Notebook 00: record a Hub/local base model, or build and pretrain the embedded one."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from revlib.core import io
from revlib.core.io import JSONObject, Metrics
from revlib.modeling import models, pretrain
from revlib.params import Experiment
from revlib.params.models import BaseModelSpec
from revlib.tasks import REGISTRY, TaskFamily, get_task

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from revlib.evaluation.learning import Check

CARD_JSON = "card.json"
CARD_MD = "README.md"


def task_knobs(exp: Experiment, spec: BaseModelSpec | None = None) -> dict[str, JSONObject]:
    """The families an embedded base pretrains on, with the knobs this experiment uses them with.

    Only these families enter the base's fingerprint: registering another family leaves it fresh.
    """
    used: dict[str, dict[str, Any]] = {}
    src = exp.data.source
    if src.kind == "synthetic":
        used[src.task] = dict(src.knobs)
    if exp.negatives is not None:
        used.setdefault(exp.negatives.task, {}).update(exp.negatives.knobs)
    if exp.star_graph is not None:
        used.setdefault("star_graph", {}).update(exp.star_graph.knobs)
    chosen = spec.pretrain.families if spec is not None and spec.pretrain.families else None
    if chosen:
        return {name: used.get(name, {}) for name in chosen}
    return used or {name: {} for name in REGISTRY}


@dataclass
class BaseResult:
    ref: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)
    accuracy: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> Metrics:
        out = {"parameters": self.ref["parameters"], "source": self.ref["source"]}
        if self.curve:
            out["final_loss"] = self.curve[-1]["loss"]
        for row in self.accuracy:
            out[f"primitive_accuracy/{row['task']}"] = row["accuracy"]
            out[f"primitive_chance/{row['task']}"] = row["chance"]
        return out


def build(exp: Experiment, spec: BaseModelSpec, out_dir: Path, on_step=None) -> BaseResult:
    if spec.source == "embedded":
        return _build_embedded(exp, spec, out_dir, on_step)
    if spec.source == "gguf":
        return _build_from_gguf(spec, out_dir)
    ident = str(spec.path) if spec.source == "local" else spec.id
    card = verify_shipped(Path(ident), spec.sha256) if spec.source == "local" else None
    model = models.load_model(ident, revision=spec.revision, dtype=spec.dtype)
    ref = {"source": spec.source, "path_or_id": ident, "revision": spec.revision,
           "parameters": models.count_parameters(model), "architecture": type(model).__name__,
           "sha256": card["sha256"] if card else None}
    accuracy = []
    if card and card.get("families"):  # a shipped embedded base: measure its skills again, here
        families = {name: get_task(name, kn) for name, kn in card["families"].items()}
        accuracy = pretrain.primitive_accuracy(model, models.load_tokenizer(ident), _held_out(families, exp.seed, 200))
    io.write_json(out_dir / models.BASE_JSON, ref)
    return BaseResult(ref, accuracy=accuracy)


def build_with_progress(exp: Experiment, spec: BaseModelSpec, out_dir: Path) -> BaseResult:
    """`build`, with a progress bar over the embedded base's pretraining steps (the loss beside it)."""
    from tqdm import tqdm

    progress = tqdm(total=spec.pretrain.steps if spec.source == "embedded" else 0, desc="pretraining", mininterval=30,
                    disable=False)

    def on_step(step: int, loss: float) -> None:
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.3f}", refresh=False)

    try:
        return build(exp, spec, out_dir, on_step=on_step)
    finally:
        progress.close()


def _build_from_gguf(spec: BaseModelSpec, out_dir: Path) -> BaseResult:
    """De-quantise the GGUF file once into `out_dir/model`; its card records the file, checksum, dtype and size."""
    from revlib.core import gguf_file
    from revlib.modeling import gguf_source

    target = spec.gguf_target()
    sha = gguf_file.verify(target, spec.sha256)
    dtype = "float32" if spec.dtype == "auto" else spec.dtype
    converted = gguf_source.convert(target, out_dir / "model", dtype)
    card = {"name": spec.name, "source": "gguf", **gguf_source.describe(target, sha, converted),
            "package": spec.package, "converted_sha256": folder_sha256(out_dir / "model")}
    io.write_json(out_dir / "model" / CARD_JSON, card)
    ref = {"source": "gguf", "path_or_id": str(out_dir / "model"), "revision": None,
           "parameters": converted.parameters, "architecture": converted.architecture, "dtype": dtype,
           "sha256": sha, "gguf_file": str(target), "vocab_size": converted.vocab_size}
    io.write_json(out_dir / models.BASE_JSON, ref)
    return BaseResult(ref)


def _held_out(families: dict[str, TaskFamily], seed: int, n: int) -> dict[str, list[tuple[str, str]]]:
    return {name: fam.primitive_skills(random.Random(f"eval:{seed}:{name}"), n) for name, fam in families.items()}


def _build_embedded(exp: Experiment, spec: BaseModelSpec, out_dir: Path, on_step) -> BaseResult:
    started = time.time()
    knobs = task_knobs(exp, spec)
    families = {name: get_task(name, kn) for name, kn in knobs.items()}
    pt = spec.pretrain
    overrides = {}
    if pt.layers:
        overrides["num_hidden_layers"] = pt.layers
    if pt.hidden_size:
        overrides.update(hidden_size=pt.hidden_size, intermediate_size=3 * pt.hidden_size)
    model, tokenizer, curve = pretrain.build_base(
        families, spec.preset, seed=exp.seed, steps=pt.steps, batch_size=pt.batch_size, lr=pt.lr,
        corpus_size=pt.corpus_size, max_pack=pt.max_pack, numbers=pt.numbers, overrides=overrides, on_step=on_step,
        grow_layers=pt.grow_layers)
    accuracy = pretrain.primitive_accuracy(model, tokenizer, _held_out(families, exp.seed, pt.eval_size))
    with io.atomic_dir(out_dir / "model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    ref = {"source": "embedded", "path_or_id": str(out_dir / "model"), "revision": None, "preset": spec.preset,
           "parameters": models.count_parameters(model), "architecture": type(model).__name__,
           "vocab_size": len(tokenizer), "sha256": folder_sha256(out_dir / "model")}
    io.write_json(out_dir / "pretrain_curve.json", curve)
    if spec.publish_to:
        ref["published"] = str(publish(exp, spec, out_dir / "model", Path(spec.publish_to), knobs, accuracy,
                                       time.time() - started))
    io.write_json(out_dir / models.BASE_JSON, ref)
    return BaseResult(ref, curve, accuracy)


def folder_sha256(folder: Path) -> str:
    """Checksum of a model folder: every file but its card, by relative name and content."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in (CARD_JSON, CARD_MD)):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + io.sha256_file(path).encode() + b"\n")
    return h.hexdigest()


def publish(exp: Experiment, spec: BaseModelSpec, model_dir: Path, target: Path, knobs: dict[str, JSONObject],
            accuracy: list[JSONObject], seconds: float) -> Path:
    """Write the built model and its card to `target`, the way a checkpoint is published on a hub."""
    from revlib.core.provenance import git_commit

    card = {
        "name": spec.name, "architecture": "Qwen2ForCausalLM", "preset": spec.preset,
        "pretrain": spec.pretrain.model_dump(mode="json"), "families": knobs, "seed": exp.seed,
        "commit": git_commit(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(seconds, 1),
        "primitive_accuracy": {r["task"]: {"accuracy": r["accuracy"], "chance": r["chance"], "problems": r["problems"]}
                               for r in accuracy},
        "sha256": folder_sha256(model_dir),
        "rebuild": f"revlib run params/{exp.experiment}.yaml",
    }
    with io.atomic_dir(target) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        io.write_json(Path(tmp) / CARD_JSON, card)
        io.write_text(Path(tmp) / CARD_MD, card_markdown(card))
    return target


def card_markdown(card: JSONObject) -> str:
    acc = "\n".join(f"| {t} | {v['accuracy']:.1%} | {v['chance']:.1%} | {v['problems']} |"
                     for t, v in card["primitive_accuracy"].items())
    return (f"# {card['name']}: embedded revlib base\n\n"
            f"A {card['architecture']} ({card['preset']} preset) pretrained from scratch on direction-neutral primitive "
            f"skills of the task families {', '.join(card['families'])}; never on chained forward or reverse formats.\n\n"
            f"- seed {card['seed']}, commit `{card['commit']}`, built {card['built_at']} in {card['build_seconds']} s\n"
            f"- sha256 `{card['sha256']}` (every file but this card and card.json)\n"
            f"- rebuild: `{card['rebuild']}`\n\n"
            "| family | held-out primitive accuracy | chance | problems |\n|---|---|---|---|\n" + acc + "\n\n"
            "Pretraining settings:\n\n```json\n" + json.dumps(card["pretrain"], indent=2) + "\n```\n")


def verify_shipped(folder: Path, expected: str | None) -> JSONObject | None:
    """The card of a shipped base, after checking the folder against its checksum; None if it has no card."""
    card_path = folder / CARD_JSON
    card = io.read_json(card_path) if card_path.exists() else None
    want = expected or (card or {}).get("sha256")
    if want is None:
        return card
    got = folder_sha256(folder)
    if got != want:
        raise ValueError(f"base model {folder}: sha256 {got} does not match the expected {want}; the folder was "
                         "changed or is incomplete. Rebuild it with the params file named in its card.")
    return card


def loss_figure(result: BaseResult) -> go.Figure | None:
    """The pretraining loss of an embedded base, by step; None for a base not pretrained here."""
    from revlib.core import report

    if not result.curve:
        return None
    return report.curves(result.curve, "step", ["loss"], "Pretraining loss on primitive skills", log_y=True)


def lr_figure(result: BaseResult) -> go.Figure | None:
    """The pretraining learning rate of an embedded base, by step; None for a base not pretrained here."""
    from revlib.core import report

    if not result.curve:
        return None
    return report.curves(result.curve, "step", ["lr"], "Learning rate")


def accuracy_table(result: BaseResult) -> pd.DataFrame:
    return pd.DataFrame(result.accuracy or [{"task": "(not an embedded model)", "accuracy": None}])


# Held-out primitive accuracy a base must reach before SFT can build on it (issue-tested targets). The star base's
# look-ups are reported against chance only: the 12,000-step base answered 96% of them but SFT from it wrote valid
# paths 1% of the time, the 6,000-step one 72.5% and 78% (docs/star_search.md); 07 gates on the SFT state instead.
PRIMITIVE_TARGETS = {"arith": 0.98, "star_graph": None}


def checks(result: BaseResult) -> list[Check]:
    from revlib.evaluation import learning

    return [learning.accuracy(f"{row['task']} primitive skills (held out)", row["correct"], row["problems"],
                              row["chance"], PRIMITIVE_TARGETS.get(row["task"], 0.9)) for row in result.accuracy]


def stage_metrics(result: BaseResult, checks: list[Check]) -> Metrics:
    """What 00 records in metrics.json: the base's size, source, final pretraining loss and skills, and the checks."""
    from revlib.evaluation import learning

    return result.metrics | learning.metrics(checks)


@dataclass(frozen=True)
class BaseSkills:
    """What 00 hands on to the findings page: the base's own checksum (a GGUF base) and its held-out primitive-skill
    accuracy per task family, read back from 00's run directory."""

    sha256: str | None
    primitive_accuracy: dict[str, float]

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / "metrics.json").exists()

    @classmethod
    def load(cls, run_dir: Path) -> BaseSkills:
        run_dir = Path(run_dir)
        ref = run_dir / models.BASE_JSON
        sha = io.read_json(ref).get("sha256") if ref.exists() else None
        prefix = "primitive_accuracy/"
        skills = {k.removeprefix(prefix): float(v) for k, v in io.read_json(run_dir / "metrics.json").items()
                  if k.startswith(prefix)}
        return cls(sha or None, skills)
