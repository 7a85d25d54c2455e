"""A base model from a GGUF file: found by path or inside an installed package, checked, de-quantised once.

transformers reads GGUF through the `gguf` package and de-quantises every tensor to float32. The model
it returns still carries a `quantization_config` and refuses `save_pretrained`, so stage 00 rebuilds it
from its config without that entry, loads the same state dict, and saves an ordinary folder (safetensors,
tokenizer, chat template) that every later stage loads like any checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revlib.core import io

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
