"""List reversal: the forward question reverses a list one element at a time; the reverse question gives the
reversed list and asks for the original. A task family registered from outside revlib."""

from __future__ import annotations

import random

from pydantic import Field

from revlib.tasks import Record, TaskFamily, TaskKnobs


class ListKnobs(TaskKnobs):
    length: int = Field(4, ge=2, le=12, description="elements in a list")
    max_value: int = Field(9, ge=1, le=99, description="elements are 0..max_value")


class ListReverse(TaskFamily):
    name = "list_reverse"
    Knobs = ListKnobs

    def sample_forward(self, rng: random.Random, index: int) -> Record:
        kn: ListKnobs = self.knobs
        items = [rng.randint(0, kn.max_value) for _ in range(kn.length)]
        out = list(reversed(items))
        pair_id = f"listrev-{index:06d}"
        steps = [f"take {x}: {' '.join(map(str, out[: i + 1]))}" for i, x in enumerate(out)]
        return Record(id=f"{pair_id}-f", pair_id=pair_id, direction="forward", task=self.name,
                      question=f"Reverse the list {' '.join(map(str, items))}.", reasoning="\n".join(steps),
                      answer=" ".join(map(str, out)), gold=" ".join(map(str, out)), meta={"items": items})

    def invert(self, forward: Record) -> Record:
        items = forward.meta["items"]
        out = list(reversed(items))
        steps = [f"take {x}: {' '.join(map(str, items[: i + 1]))}" for i, x in enumerate(items)]
        return Record(id=f"{forward.pair_id}-r", pair_id=forward.pair_id, direction="reverse", task=self.name,
                      question=f"Reversing a list gave {' '.join(map(str, out))}. What was the list?",
                      reasoning="\n".join(steps), answer=" ".join(map(str, items)),
                      gold=self.premise(forward), meta=dict(forward.meta))

    def premise(self, forward: Record) -> str:
        return " ".join(map(str, forward.meta["items"]))

    def primitive_skills(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        """Last element of a list, and the list without it: the two moves of one reversal step."""
        out = []
        for _ in range(n):
            items = [rng.randint(0, self.knobs.max_value) for _ in range(rng.randint(2, self.knobs.length))]
            text = " ".join(map(str, items))
            out.append((f"last of {text}:", f" {items[-1]}") if rng.random() < 0.5 else
                       (f"drop last of {text}:", " " + " ".join(map(str, items[:-1]))))
        return out
