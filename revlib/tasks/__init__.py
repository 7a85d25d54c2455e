"""Registry of verifiable task families: built-ins, plug-ins and `module:Class` paths.

A family from outside revlib registers in either of two ways, without editing revlib:
- an entry point in the group `revlib.tasks` of an installed package (`name = "package.module:Class"`),
  discovered when this module is imported;
- a `module:Class` path given as the task name in params (`task: my_tasks.listrev:ListReverse`), imported
  when first asked for and registered under the class's `name`.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from revlib.core.records import Record
from revlib.tasks.arith import ArithChain
from revlib.tasks.base import TaskFamily, TaskKnobs
from revlib.tasks.star_graph import StarGraph

ENTRY_POINT_GROUP = "revlib.tasks"

REGISTRY: dict[str, type[TaskFamily]] = {}  # by the family's own `name`
ALIASES: dict[str, type[TaskFamily]] = {}  # other names it was asked for by: entry point names, module:Class paths
# entry points that failed to load: name -> why (reported when that name is asked for, not at import)
BROKEN: dict[str, str] = {}


def register(family: type[TaskFamily]) -> type[TaskFamily]:
    if not (isinstance(family, type) and issubclass(family, TaskFamily)):
        raise TypeError(f"{family!r} is not a TaskFamily subclass")
    name = getattr(family, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"task family {family.__qualname__} has no `name`")
    if not isinstance(getattr(family, "Knobs", None), type) or not issubclass(family.Knobs, TaskKnobs):
        raise TypeError(f"task family {name!r} has no `Knobs` (a TaskKnobs subclass)")
    REGISTRY[name] = family
    return family


def load_entry_points() -> None:
    """Register every family installed under the `revlib.tasks` entry point group."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in REGISTRY:
            continue
        try:
            family = ep.load()
            register(family)
            if family.name != ep.name:  # reachable under the entry point's name too
                ALIASES[ep.name] = family
        except Exception as err:  # one broken plug-in must not take revlib down
            BROKEN[ep.name] = f"entry point {ep.value!r} failed to load: {type(err).__name__}: {err}"


def resolve(name: str) -> type[TaskFamily]:
    """The family class for a registered name or a `module:Class` path; KeyError saying what is known."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in ALIASES:
        return ALIASES[name]
    if name in BROKEN:
        raise KeyError(f"task {name!r}: {BROKEN[name]}")
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            family = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise KeyError(f"task {name!r}: cannot import {attr} from {module} ({err})") from None
        try:
            register(family)
        except TypeError as err:
            raise KeyError(f"task {name!r}: {err}") from None
        ALIASES[name] = family
        return family
    raise KeyError(f"unknown task {name!r}; registered: {', '.join(sorted(REGISTRY))} "
                   f"(or give a module:Class path, or install a package with a '{ENTRY_POINT_GROUP}' entry point)")


def get_task(name: str, knobs: dict[str, Any] | None = None) -> TaskFamily:
    return resolve(name)(knobs)


register(ArithChain)
register(StarGraph)
load_entry_points()


__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "Record", "TaskFamily", "TaskKnobs", "get_task", "load_entry_points", "register",
           "resolve"]
