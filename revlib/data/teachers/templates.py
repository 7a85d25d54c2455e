"""The teacher prompts, kept as editable text files in revlib/data/teachers/templates/ (`$name` placeholders)."""

from __future__ import annotations

import string
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def load(name: str) -> string.Template:
    path = TEMPLATE_DIR / f"{name}.txt"
    if not path.exists():
        have = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
        raise FileNotFoundError(f"no prompt template {name!r} in {TEMPLATE_DIR}; have {have}")
    return string.Template(path.read_text(encoding="utf-8"))


def render(name: str, **values: str) -> str:
    """Fill a template; a missing value is an error naming the placeholder (values may hold `$` freely)."""
    try:
        return load(name).substitute(values).strip() + "\n"
    except KeyError as err:
        raise KeyError(f"template {name!r} needs a value for ${err.args[0]}") from None
