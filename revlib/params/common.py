"""Shared pieces of the experiment schema: strict models and paths resolved against the params file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


class Strict(BaseModel):
    """Unknown keys are errors, so a typo never silently falls back to a default."""

    # inf and nan pass `gt=0`-style bounds; no numeric param has a use for them
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir", "."))


def _resolve_existing(value: Any, info: ValidationInfo) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (_base_dir(info) / path).resolve()
    if not path.exists():
        raise ValueError(f"file not found: {path}")
    return path


def _resolve(value: Any, info: ValidationInfo) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (_base_dir(info) / path).resolve()


# A path that must exist, resolved relative to the params file's folder.
ExistingPath = Annotated[Path, AfterValidator(_resolve_existing)]
# A path that may not exist yet (an output folder), resolved the same way.
ResolvedPath = Annotated[Path, AfterValidator(_resolve)]


def check_task(task: str, knobs: dict[str, Any]) -> None:
    """Raise ValueError naming an unknown task family or a bad knob, so it fails at check time."""
    from pydantic import ValidationError

    from revlib.tasks import resolve

    try:
        family = resolve(task)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    try:
        family.Knobs.model_validate(knobs)
    except ValidationError as err:
        problems = "; ".join(f"knobs.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise ValueError(f"task {task!r}: {problems}") from None
