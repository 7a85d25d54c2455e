"""The one record shape for every task, forward or reverse, and the preference-pair shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from revlib.core import io

Direction = Literal["forward", "reverse"]


class Record(BaseModel):
    """One example: a question, the chain of thought and the final answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="stable, unique")
    pair_id: str = Field(description="shared by a forward example and its reverse twin")
    direction: Direction
    task: str = Field(description='task family: "arith", "star_graph", "s1k", ...')
    question: str
    reasoning: str = Field(description="the chain of thought (the thinking part)")
    answer: str = Field(description="the final answer as the responder wrote it")
    gold: str = Field(description="the reference answer used for verification")
    meta: dict[str, Any] = Field(default_factory=dict)


class PreferencePair(BaseModel):
    """A DPO pair in conversational form; per-step pairs also carry the shared prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    kind: Literal["directional", "naive", "per_step"]
    prefix: str | None = None
    step_index: int | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


def write_records(path: str | Path, records: list[Record] | list[PreferencePair]) -> Path:
    return io.write_jsonl(path, (r.model_dump(mode="json") for r in records))


def read_records(path: str | Path) -> list[Record]:
    return _read(path, Record)


def read_pairs(path: str | Path) -> list[PreferencePair]:
    return _read(path, PreferencePair)


def _read(path: str | Path, model: type[BaseModel]) -> list:
    out = []
    for lineno, row in enumerate(io.read_jsonl(path), 1):
        try:
            out.append(model.model_validate(row))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<row>'}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"{path}: row {lineno}: {problems}") from None
    return out
