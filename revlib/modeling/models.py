"""Base models: build the embedded task-world model and tokenizer, or load any checkpoint.

The embedded model is a Qwen2-architecture model saved with `save_pretrained`, so every later
stage loads it with the same `from_pretrained` calls as a Hub model.
"""

from __future__ import annotations

import copy

import json
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from revlib.core import io
from revlib.core.render import DEFAULT_SYSTEM
from revlib.params.models import PRESETS

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML as Qwen2.5 uses it; the default system prompt is the one training renders.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

NumberTokens = Literal["whole", "digits"]


def build_tokenizer(corpus: list[str], vocab_size: int = 1024, numbers: NumberTokens = "digits") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus`.

    Digit runs are split off from the text around them, so a number is the same token(s) wherever it
    stands. `numbers: whole` lets BPE merge a frequent number into one token (arithmetic becomes a fact
    to recall, a graph node one symbol); `digits` keeps one token per digit, as Qwen2.5 does.
    Byte-level means any text (a real probe set, say) still tokenizes, only less compactly.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=numbers == "digits"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def build_model(preset: str, tokenizer: Any, seed: int = 0, **overrides: Any) -> Qwen2ForCausalLM:
    """A random-initialised Qwen2 model of a preset size, its vocabulary fitted to `tokenizer`."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    shape = {"vocab_size": len(tokenizer), "tie_word_embeddings": True, **PRESETS[preset], **overrides}
    config = Qwen2Config(
        max_position_embeddings=4096,
        rope_theta=10000.0,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


@torch.no_grad()
def expand_layers(model: Qwen2ForCausalLM, layers: int) -> Qwen2ForCausalLM:
    """Deepen a trained model to `layers` decoder layers without changing what it computes (block expansion, as in
    LLaMA Pro, Wu et al. 2024): each layer is followed by copies of itself whose attention output and MLP down
    projections are zero, so every added layer adds nothing to the residual stream until training moves it."""
    old = list(model.model.layers)
    if layers % len(old):
        raise ValueError(f"cannot grow {len(old)} layers to {layers}: not a multiple")
    grown = []
    for block in old:
        grown.append(block)
        for _ in range(layers // len(old) - 1):
            copy_ = copy.deepcopy(block)
            copy_.self_attn.o_proj.weight.zero_()
            copy_.mlp.down_proj.weight.zero_()
            grown.append(copy_)
    for i, block in enumerate(grown):
        block.self_attn.layer_idx = i
    model.model.layers = torch.nn.ModuleList(grown)
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[0]] * layers
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def greedy_complete(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 64) -> list[str]:
    """Greedy continuations of raw-text prompts (left-padded batches)."""
    out: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True)
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def load_tokenizer(path_or_id: str | Path, revision: str = "main") -> Any:
    """The checkpoint's tokenizer, exactly as its tokenizer.json defines it.

    For a qwen2 config, AutoTokenizer builds Qwen2Tokenizer and swaps in Qwen2's pre-tokenizer (one
    token per digit), whatever tokenizer.json says. A folder whose tokenizer_config declares the
    tokenizers backend (every embedded revlib model) is loaded through that backend instead.
    """
    if _declares_backend(path_or_id):
        tok = TokenizersBackend.from_pretrained(str(path_or_id), revision=revision)
    else:
        tok = AutoTokenizer.from_pretrained(str(path_or_id), revision=revision)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _declares_backend(path_or_id: str | Path) -> bool:
    config = Path(path_or_id) / "tokenizer_config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_model(path_or_id: str | Path, revision: str = "main", dtype: str = "auto", device: str | None = None,
               attn_implementation: str | None = None) -> Any:
    """The one loader of a causal LM: a local folder or a Hub id, in `dtype` ("auto": as saved), on `device`."""
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(str(path_or_id), revision=revision, dtype=torch_dtype, **extra)
    if device:
        model.to(device)
    return model


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


BASE_JSON = "base.json"  # what stage 00 records in its run directory: the base's path or Hub id, revision, source


def base_path(base_run_dir: Path) -> str:
    """The path or Hub id of the base model stage 00 recorded in `base_run_dir`."""
    return io.read_json(Path(base_run_dir) / BASE_JSON)["path_or_id"]
