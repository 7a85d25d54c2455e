"""Arithmetic chain: start from v, apply operations in order; the reverse asks for v."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, model_validator

from revlib.records import Record
from revlib.tasks.base import TaskFamily, TaskKnobs

Op = Literal["add", "sub", "mul"]
_WORD = {"add": "add", "sub": "subtract", "mul": "multiply by"}
_SYM = {"add": "+", "sub": "-", "mul": "*"}
_INV = {"add": "-", "sub": "+", "mul": "/"}


class ArithKnobs(TaskKnobs):
    steps: int = Field(3, ge=1, le=12, description="operations in a chain")
    min_value: int = Field(1, description="smallest start value and operand")
    max_value: int = Field(20, description="largest start value and operand")
    ops: list[Op] = Field(default_factory=lambda: ["add", "sub", "mul"], min_length=1)
    max_multiplier: int = Field(3, ge=2, description="largest operand of a multiplication")

    @model_validator(mode="after")
    def _range(self):
        if self.min_value > self.max_value:
            raise ValueError("min_value must not exceed max_value")
        return self


def _apply(op: str, value: int, k: int) -> int:
    return value + k if op == "add" else value - k if op == "sub" else value * k


def _describe(ops: list[tuple[str, int]]) -> str:
    # Numbered operations: a step of the chain finds its operand by its number, in either direction.
    return ", ".join(f"({i}) {_WORD[o]} {k}" for i, (o, k) in enumerate(ops, 1))


class ArithChain(TaskFamily):
    name = "arith"
    Knobs = ArithKnobs

    def sample_forward(self, rng: random.Random, index: int) -> Record:
        kn: ArithKnobs = self.knobs
        start = rng.randint(kn.min_value, kn.max_value)
        ops = []
        for _ in range(kn.steps):
            op = rng.choice(kn.ops)
            k = rng.randint(2, kn.max_multiplier) if op == "mul" else rng.randint(kn.min_value, kn.max_value)
            ops.append((op, k))
        lines, value = [], start
        for i, (op, k) in enumerate(ops, 1):
            new = _apply(op, value, k)
            lines.append(f"({i}) {value} {_SYM[op]} {k} = {new}")
            value = new
        pair_id = f"arith-{index:06d}"
        return Record(
            id=f"{pair_id}-f",
            pair_id=pair_id,
            direction="forward",
            task=self.name,
            question=f"Start from {start}. Apply in order: {_describe(ops)}. What is the result?",
            reasoning="\n".join(lines),
            answer=str(value),
            gold=str(value),
            meta={"start": start, "ops": [list(o) for o in ops], "result": value},
        )

    def invert(self, forward: Record) -> Record:
        ops = [tuple(o) for o in forward.meta["ops"]]
        result = forward.meta["result"]
        lines, value = [], result
        for i, (op, k) in reversed(list(enumerate(ops, 1))):
            if op == "add":
                new = value - k
            elif op == "sub":
                new = value + k
            else:
                new = value // k
            lines.append(f"({i}) {value} {_INV[op]} {k} = {new}")
            value = new
        return Record(
            id=f"{forward.pair_id}-r",
            pair_id=forward.pair_id,
            direction="reverse",
            task=self.name,
            question=(
                f"An unknown start, after applying in order: {_describe(ops)}, gives {result}. "
                "What was the start?"
            ),
            reasoning="\n".join(lines),
            answer=str(value),
            gold=str(value),
            meta=dict(forward.meta),
        )

    def premise(self, forward: Record) -> str:
        return str(forward.meta["start"])

    def primitive_skills(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """Single steps drawn from random chains, so operands follow the task's own distribution.

        Half are bare equations; half are a numbered step after a chain's operation list, which must
        find its operand by number (the retrieval a chain step makes); the step's sign is given.
        Steps are drawn at a uniform position and applied forward or inverted with equal odds, so
        neither direction is favoured.
        """
        lines = []
        for _ in range(n):
            chain = self.sample_forward(rng, 0)
            ops = [tuple(o) for o in chain.meta["ops"]]
            a = chain.meta["start"]
            steps = []
            for op, k in ops:
                steps.append((op, a, k, _apply(op, a, k)))
                a = steps[-1][3]
            i = rng.randrange(len(steps))
            op, a, k, b = steps[i]
            inverse = rng.random() < 0.5
            x, sym, y = (b, _INV[op], a) if inverse else (a, _SYM[op], b)
            if rng.random() < 0.5:
                lines.append((f"{x} {sym} {k} =", f" {y}"))
            else:
                # the sign is given (it says forward or inverse); the operand is found by its number
                lines.append((f"{_describe(ops)}: ({i + 1}) {x} {sym}", f" {k} = {y}"))
        return lines
