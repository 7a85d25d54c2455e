"""What every verifiable task family provides."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from revlib.core.records import Record


# A piece of a pretraining document: (text, whether its tokens are labels).
Segment = tuple[str, bool]


class TaskKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskFamily(ABC):
    """A family of seeded forward problems, each with an exact inverse and a verifier."""

    name: ClassVar[str]
    Knobs: ClassVar[type[TaskKnobs]]

    def __init__(self, knobs: TaskKnobs | dict[str, Any] | None = None):
        self.knobs = knobs if isinstance(knobs, TaskKnobs) else self.Knobs.model_validate(knobs or {})

    @abstractmethod
    def sample_forward(self, rng: random.Random, index: int) -> Record:
        """A forward problem with its correct chain of thought and answer."""

    @abstractmethod
    def invert(self, forward: Record) -> Record:
        """The reverse twin: asks for a premise of `forward`, answered step by step (the oracle)."""

    @abstractmethod
    def premise(self, forward: Record) -> str:
        """The quantity of the forward question that the reverse question asks for."""

    def normalize(self, answer: str) -> str:
        return " ".join(answer.strip().rstrip(".").split())

    def verify(self, record: Record, answer: str) -> bool:
        return self.normalize(answer) == self.normalize(record.gold)

    # ---- what the stages ask of a family beyond drawing and verifying: each has a default a family may override

    # the forms a more capable teacher may write a chain in (06's D_syn): "canonical" is the family's own chain
    teacher_forms: ClassVar[tuple[str, ...]] = ("canonical",)

    def split_steps(self, reasoning: str) -> list[str]:
        """The steps of a chain of thought, each verbatim from it (06 cuts step prefixes by them): one per non-empty
        line."""
        return [line for line in reasoning.split("\n") if line.strip()]

    def parse_answer(self, answer: str) -> list[str]:
        """The answer's parts in order (a path's nodes, a list's items): one part, the normalized answer."""
        return [self.normalize(answer)]

    def answer_outcome(self, record: Record, answer: str) -> dict[str, bool]:
        """How an answer relates to its problem, beyond right or wrong (07 counts each key): "correct" alone."""
        return {"correct": self.verify(record, answer)}

    def restyle_step(self, step: str, form: str) -> str:
        """One step of a chain as the teacher writes it in `form` (one of `teacher_forms`); the canonical form is the
        step itself. A family with other forms overrides this; the answer must still verify."""
        if form not in self.teacher_forms:
            raise ValueError(f"task {self.name!r} has no teacher form {form!r}; it writes "
                             f"{', '.join(self.teacher_forms)}")
        return step

    def restyle(self, reasoning: str, form: str) -> str:
        """A whole chain in the teacher's `form`, line by line (`restyle_step`)."""
        return "\n".join(self.restyle_step(line, form) for line in reasoning.split("\n"))

    @abstractmethod
    def primitive_skills(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """Single-step skills in both directions as (prompt, target), for pretraining the base model."""

    def primitive_documents(self, rng: random.Random, n: int, max_pack: int) -> list[list[Segment]]:
        """`n` pretraining documents of 1..max_pack skills each, one per line, answers labelled."""
        skills = self.primitive_skills(rng, n * (max_pack + 1) // 2 + max_pack)
        docs, at = [], 0
        for _ in range(n):
            k = rng.randint(1, max_pack)
            doc: list[Segment] = []
            for prompt, target in (skills[(at + j) % len(skills)] for j in range(k)):
                doc += [(("\n" if doc else "") + prompt, False), (target, True)]
            at += k
            docs.append(doc)
        return docs

    def sample(self, seed: int, n: int, start: int = 0) -> list[Record]:
        """`n` distinct forward problems, deterministic in `seed`."""
        rng = random.Random(f"{self.name}:{seed}")
        seen: set[str] = set()
        out: list[Record] = []
        index = start
        attempts = 0
        while len(out) < n:
            rec = self.sample_forward(rng, index)
            attempts += 1
            if rec.question in seen:
                if attempts > 50 * n + 1000:
                    raise ValueError(f"task {self.name}: cannot draw {n} distinct problems with these knobs")
                continue
            seen.add(rec.question)
            out.append(rec)
            index += 1
        return out
