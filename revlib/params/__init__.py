"""The experiment schema: one YAML file, validated strictly before any compute."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from revlib.params.benchmarks import BenchmarkParams
from revlib.params.probes import ProbeParams
from revlib.params.stages import BY_NAME, STAGE_NAMES
from revlib.params import checks
from revlib.params.common import ResolvedPath, Strict
from revlib.params.data import DataParams
from revlib.params.learning import LearningRules
from revlib.params.models import BaseModelSpec
from revlib.params.negatives import NegativeParams, StarGraphParams
from revlib.params.train import DPOParams, SFTParams

StageName = Literal[STAGE_NAMES]
ALL_STAGES: list[str] = list(STAGE_NAMES)


class Experiment(Strict):
    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="name; outputs go to <output_dir>/<experiment>")
    description: str = ""
    seed: int = Field(0, ge=0)
    output_dir: ResolvedPath = Field(Path("../outputs"), description="relative to the params file")
    stages: list[StageName] = Field(default_factory=lambda: list(ALL_STAGES), min_length=1)
    budget_minutes: float | None = Field(None, gt=0, description="wall-time budget shown in the index")
    show_code: bool = Field(False, description="exported HTML reports open with their code cells shown (hidden by "
                            "default; a button in each report shows or hides them)")
    require_learning: bool = Field(True, description="a stage whose models learned nothing fails, after saving its "
                                   "results; false: it finishes, the stages after it run, and findings.json lists "
                                   "the failed gate under learned.failed_gates (smoke runs, too short to learn; the "
                                   "paper replicas, whose later stages must run after days of training)")
    base_models: list[BaseModelSpec] = Field(min_length=1)
    data: DataParams = DataParams()
    sft: SFTParams | None = None
    dpo: DPOParams | None = None
    probes: ProbeParams | None = None
    benchmarks: BenchmarkParams | None = None
    negatives: NegativeParams | None = None
    star_graph: StarGraphParams | None = None
    learning: LearningRules = Field(default_factory=LearningRules, description="what 'trained' and 'kept skill' "
                                    "demand of 02, 03, 06 and 07 and of the claims resting on them")

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        names = [m.name for m in self.base_models]
        if len(set(names)) != len(names):
            problems.append(f"base_models: names must be unique, got {names}")
        for stage in self.stages:
            for section in BY_NAME[stage].needs:
                if getattr(self, section) is None:
                    problems.append(f"stage {stage} needs a '{section}' section")
        if self.sft and self.dpo and "03_dpo" in self.stages:
            missing = [s for s in self.dpo.on if s not in self.sft.train_sets]
            if missing:
                problems.append(f"dpo.on: {missing} not among sft.train_sets {self.sft.train_sets}")
        if self.probes and self.probes.models == "stages" and "04_probe_dynamics" in self.stages:
            # a probe-training set without DPO is scored across its SFT checkpoints only
            for section, have in (("sft.train_sets", self.sft.train_sets if self.sft else []),):
                missing = [s for s in self.probes.train_sets if s not in have]
                if missing:
                    problems.append(f"probes.models 'stages' scores 02/03 models of {missing}, not in {section}")
        problems += checks.training(self) + checks.tasks(self) + checks.pool_sizes(self) + checks.lora_targets(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def run_root(self) -> Path:
        return Path(self.output_dir) / self.experiment

    def model(self, name: str) -> BaseModelSpec:
        for m in self.base_models:
            if m.name == name:
                return m
        raise KeyError(f"no base model named {name!r}; have {[m.name for m in self.base_models]}")


class ParamsError(Exception):
    """A params file that cannot run; `problems` lists every fault by its YAML path."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # an unhashable key is reported by the constructor itself
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]}, again on line {line}); "
                            "give each key once", key_node.start_mark)
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`, or ParamsError naming why the file cannot be read as params."""
    if path.is_dir():
        raise ParamsError(path, [f"{path} is a directory; give the params YAML file inside it"])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParamsError(path, [f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                                 "save the params file as UTF-8"]) from None
    except OSError as err:
        raise ParamsError(path, [f"cannot read the params file: {err.strerror}"]) from None
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise ParamsError(path, ["the params file is empty"])
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ParamsError(path, [f"not valid YAML: {err}"]) from None


def load(path: str | Path) -> Experiment:
    path = Path(path).resolve()
    if not path.exists():
        raise ParamsError(path, [f"params file not found: {path}"])
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ParamsError(path, ["the file must hold a mapping of keys to values"])
    return validate(raw, path)


def validate(raw: dict[str, Any], path: Path) -> Experiment:
    from revlib.core import redact

    redact.register_params(raw)  # every process that reads params knows which values never to write
    try:
        return Experiment.model_validate(raw, context={"base_dir": path.parent})
    except ValidationError as err:
        raise ParamsError(path, [_describe(e, raw) for e in err.errors()]) from None


def dump(exp: Experiment) -> str:
    """The resolved params as YAML (paths absolute, defaults filled in)."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)


def _describe(error: dict, raw: dict) -> str:
    loc = [p for p in error["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
    where = _yaml_path(loc)
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        valid = _valid_keys(loc[:-1], raw)
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else (f"; valid keys: {', '.join(sorted(valid))}" if valid else "")
        return f"{where}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: required field missing"
    msg = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{where}: {msg}{shown}" if where else msg


_UNION_TAGS = {"synthetic", "s1k", "r1k", "oracle", "api", "hf", "list[str]", "literal['all-linear']", "Lora"}


def _yaml_path(loc: list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _valid_keys(loc: list, raw: dict) -> list[str]:
    """Field names of the model at `loc`, following the raw data through lists and unions."""
    import typing

    model: Any = Experiment
    node: Any = raw
    by_name = False  # the last field maps names to models (dpo.variants): the next part is a name, not a field
    for part in loc:
        if isinstance(part, int) or by_name:
            node = (node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node)
                    else node.get(part) if isinstance(node, dict) else None)
            by_name = False
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        model = _model_of(field.annotation, node)
        by_name = typing.get_origin(field.annotation) is dict
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_of(annotation: Any, node: Any) -> Any:
    import typing

    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    candidates = []
    for arg in args:
        sub = _model_of(arg, node)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            candidates.append(sub)
    if len(candidates) > 1 and isinstance(node, dict) and "kind" in node:
        for c in candidates:
            kind = c.model_fields.get("kind")
            if kind is not None and node["kind"] in typing.get_args(kind.annotation):
                return c
    return candidates[0] if candidates else None


__all__ = [
    "ALL_STAGES",
    "BaseModelSpec",
    "BenchmarkParams",
    "DPOParams",
    "DataParams",
    "Experiment",
    "NegativeParams",
    "ParamsError",
    "ProbeParams",
    "SFTParams",
    "StarGraphParams",
    "dump",
    "load",
    "validate",
]
