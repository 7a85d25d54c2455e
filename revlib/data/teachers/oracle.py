"""The oracle teacher: a synthetic task family's exact inverse."""

from __future__ import annotations

from revlib.core.records import Record
from revlib.tasks import TaskFamily


class OracleTeacher:
    name = "oracle"

    def __init__(self, family: TaskFamily):
        self.family = family

    def reverse(self, forward: Record) -> Record:
        return self.family.invert(forward)
