"""Arithmetic chain: start from v, apply operations in order; the reverse asks for v."""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import Field, model_validator

from revlib.core.records import Record
from revlib.tasks.base import TaskFamily, TaskKnobs

Op = Literal["add", "sub", "mul"]
_WORD = {"add": "add", "sub": "subtract", "mul": "multiply by"}
_SYM = {"add": "+", "sub": "-", "mul": "*"}
_INV = {"add": "-", "sub": "+", "mul": "/"}
# one step of a forward or reverse chain, "(i) a + k = b"
STEP = re.compile(r"^\((\d+)\) (-?\d+) ([-+*/]) (-?\d+) = (-?\d+)$")
_VERB = {"+": "add", "-": "subtract", "*": "multiply by", "/": "divide by"}


class ArithKnobs(TaskKnobs):
    steps: int = Field(3, ge=1, le=12, description="operations in a chain")
    min_value: int = Field(1, description="smallest start value and operand")
    max_value: int = Field(20, description="largest start value and operand")
    ops: list[Op] = Field(default_factory=lambda: ["add", "sub", "mul"], min_length=1)
    max_multiplier: int = Field(3, ge=2, description="largest operand of a multiplication")
    min_start: int | None = Field(None, description="smallest start value; empty: min_value (benchmarks shift it)")
    max_start: int | None = Field(None, description="largest start value; empty: max_value")
    max_abs_value: int | None = Field(None, ge=1, description="redraw a chain whose start or any value exceeds this "
                                                               "in size (keeps a benchmark inside the numbers a base knows)")

    @model_validator(mode="after")
    def _range(self):
        if self.min_value > self.max_value:
            raise ValueError("min_value must not exceed max_value")
        if self.start_range[0] > self.start_range[1]:
            raise ValueError("min_start must not exceed max_start")
        return self

    @property
    def start_range(self) -> tuple[int, int]:
        return (self.min_value if self.min_start is None else self.min_start,
                self.max_value if self.max_start is None else self.max_start)


def _apply(op: str, value: int, k: int) -> int:
    return value + k if op == "add" else value - k if op == "sub" else value * k


def _describe(ops: list[tuple[str, int]]) -> str:
    # Numbered operations: a step of the chain finds its operand by its number, in either direction.
    return ", ".join(f"({i}) {_WORD[o]} {k}" for i, (o, k) in enumerate(ops, 1))


class ArithChain(TaskFamily):
    """Steps are numbered lines "(i) a op k = b" (the default splitter, one per line); the answer is one number (the
    default parser); a teacher writes the steps in four forms (`restyle_step`)."""

    name = "arith"
    Knobs = ArithKnobs

    def _draw(self, rng: random.Random) -> tuple[int, list[tuple[str, int]]]:
        kn: ArithKnobs = self.knobs
        for _ in range(10_000):
            start = rng.randint(*kn.start_range)
            ops = []
            for _ in range(kn.steps):
                op = rng.choice(kn.ops)
                k = rng.randint(2, kn.max_multiplier) if op == "mul" else rng.randint(kn.min_value, kn.max_value)
                ops.append((op, k))
            if kn.max_abs_value is None:
                return start, ops
            values = [start]
            for op, k in ops:
                values.append(_apply(op, values[-1], k))
            if max(abs(v) for v in values) <= kn.max_abs_value:
                return start, ops
        raise ValueError(f"arith: no chain within max_abs_value={kn.max_abs_value} in 10,000 draws; widen it")

    def sample_forward(self, rng: random.Random, index: int) -> Record:
        start, ops = self._draw(rng)
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

    def middle(self, forward: Record, step: int) -> Record:
        """The unknown in the middle: start, operations and result are given; asks for the value after `step`.

        Neither training direction asks this, and both can answer it in the shared step grammar: forward from the
        start through step `step`, or backward from the result through the later steps. The gold chain is the
        forward one.
        """
        ops = [tuple(o) for o in forward.meta["ops"]]
        if not 1 <= step < len(ops):
            raise ValueError(f"middle: step must be between 1 and {len(ops) - 1} (a chain of {len(ops)} operations)")
        lines, value = [], forward.meta["start"]
        for i, (op, k) in enumerate(ops[:step], 1):
            new = _apply(op, value, k)
            lines.append(f"({i}) {value} {_SYM[op]} {k} = {new}")
            value = new
        return Record(
            id=f"{forward.pair_id}-m{step}", pair_id=forward.pair_id, direction="forward", task=self.name,
            question=(f"Start from {forward.meta['start']}. After applying in order: {_describe(ops)}, the result is "
                      f"{forward.meta['result']}. What is the value after step ({step})?"),
            reasoning="\n".join(lines), answer=str(value), gold=str(value),
            meta={**forward.meta, "query": "middle", "step": step})

    def premise(self, forward: Record) -> str:
        return str(forward.meta["start"])

    teacher_forms = ("canonical", "result_first", "verbose", "worded")

    def restyle_step(self, step: str, form: str) -> str:
        """"(i) a + k = b" in the teacher's form: canonical (as is), result_first "(i) b = a + k", verbose
        "(i) we have a; add k: a + k = b", or worded "(i) add k to a: a + k = b" ("subtract k from a"). A line of
        another shape is kept as it is."""
        super().restyle_step(step, form)  # names an unknown form
        m = STEP.match(step.strip())
        if m is None or form == "canonical":
            return step
        i, a, op, k, b = m.groups()
        if form == "result_first":
            return f"({i}) {b} = {a} {op} {k}"
        if form == "worded":
            return f"({i}) {_VERB[op]} {k} {'from' if op == '-' else 'to'} {a}: {a} {op} {k} = {b}"
        return f"({i}) we have {a}; {_VERB[op]} {k}: {a} {op} {k} = {b}"

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
