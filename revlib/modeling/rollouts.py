"""Rollout engines: many sampled continuations of shared prefixes, cheaply.

Monte-Carlo step values need M rollouts from every step prefix of every sampled response, so
the prefixes are long and shared. `HFRolloutEngine` encodes each prefix ONCE: it prefills a
batch of (left-padded) prefixes into a `DynamicCache`, repeats that cache M times along the
batch (`Cache.batch_repeat_interleave`) and samples token by token, dropping rows as they end.
Plain `generate` on M copies of a prefix re-encodes it M times and pays its per-step overhead.

Sampling is reproducible per rollout: rollout i of a prefix draws its uniforms from its own
generator seeded by (seed, prefix, i), and picks tokens by inverse CDF, so what a rollout
samples does not depend on which other prefixes share its batch, and the on-disk cache
(keyed by model, prefix tokens, seed and sampling settings) returns exactly what a fresh
run would.

`VLLMEngine` does the same through vLLM with `enable_prefix_caching=True` when vLLM is installed.
Both answer `sample(requests, n, seed)` with text continuations, the interface `revlib.data.negatives` uses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from revlib.core import io, render
from revlib.modeling import threads
from revlib.params.negatives import VLLMSettings

# A request is (question, partial assistant text): the prompt is the chat-rendered question,
# and the assistant turn starts with the partial text (for example THINK + the first steps).
Request = tuple[str, str]


class Sampler(Protocol):
    """What the negative-data code needs from a policy: n continuations of each request."""

    def sample(self, requests: Sequence[Request], n: int, seed: int) -> list[list[str]]: ...


def request_ids(tokenizer: Any, question: str, partial: str, system: str | None = render.DEFAULT_SYSTEM) -> list[int]:
    """Prompt tokens (chat template + assistant header) followed by the partial assistant text."""
    ids = tokenizer(render.prompt_text(tokenizer, question, system), add_special_tokens=False)["input_ids"]
    if partial:
        ids = ids + tokenizer(partial, add_special_tokens=False)["input_ids"]
    return list(ids)


def vllm_available() -> bool:
    """Whether vLLM is installed (found, not imported: importing it costs seconds)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except ValueError:  # already imported without a spec (a stand-in module): importable all the same
        return True


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RolloutCache:
    """Rollouts on disk, one JSON file per (model, prefix, n, seed, settings) key."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str) -> list[list[int]] | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return io.read_json(path)["rollouts"]
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is recomputed

    def put(self, key: str, rollouts: list[list[int]]) -> None:
        io.write_json(self._path(key), {"rollouts": rollouts})


class HFRolloutEngine:
    """Batched sampling with a Hugging Face causal LM that reuses each prefix's key-value cache.

    `model_id` names the weights for the on-disk cache (a checkpoint path, say); without it or
    without `cache_dir` nothing is cached on disk.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        prefix_batch: int = 16,
        cache_dir: str | Path | None = None,
        model_id: str | None = None,
        system: str | None = render.DEFAULT_SYSTEM,
    ):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
        if max_new_tokens < 1 or prefix_batch < 1:
            raise ValueError("max_new_tokens and prefix_batch must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.prefix_batch = prefix_batch
        self.system = system
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.cache = RolloutCache(cache_dir) if cache_dir and model_id else None
        self.model_id = model_id
        self.stats = {"prefixes": 0, "rollouts": 0, "cache_hits": 0, "new_tokens": 0}

    # ---- text level -------------------------------------------------------------------------
    def request_ids(self, question: str, partial: str) -> list[int]:
        return request_ids(self.tokenizer, question, partial, self.system)

    def sample(self, requests: Sequence[Request], n: int, seed: int) -> list[list[str]]:
        prefixes = [self.request_ids(q, p) for q, p in requests]
        out = self.sample_ids(prefixes, n, seed)
        return [[self.decode(r) for r in rows] for rows in out]

    def decode(self, ids: list[int]) -> str:
        # keep special tokens: the s1 answer separator is <|im_start|>answer
        return self.tokenizer.decode(ids, skip_special_tokens=False).split(self.tokenizer.eos_token)[0]

    # ---- token level ------------------------------------------------------------------------
    def sample_ids(self, prefixes: Sequence[list[int]], n: int, seed: int) -> list[list[list[int]]]:
        """n continuations (token ids, without the end-of-turn token) of each prefix."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("every prefix needs at least one token")
        results: list[list[list[int]] | None] = [None] * len(prefixes)
        keys: list[str | None] = [None] * len(prefixes)
        todo = []
        for i, p in enumerate(prefixes):
            if self.cache is not None:
                keys[i] = RolloutCache.key(model=self.model_id, prefix=list(p), n=n, seed=seed,
                                           temperature=self.temperature, max_new_tokens=self.max_new_tokens)
                hit = self.cache.get(keys[i])
                if hit is not None:
                    results[i] = hit
                    self.stats["cache_hits"] += 1
                    continue
            todo.append(i)
        # similar lengths together: less padding in each prefill
        todo.sort(key=lambda i: len(prefixes[i]))
        for start in range(0, len(todo), self.prefix_batch):
            chunk = todo[start:start + self.prefix_batch]
            threads.shared().tick()  # torch's threads sized to the cores other programs leave free
            outs = self._sample_chunk([list(prefixes[i]) for i in chunk], n, seed)
            for i, rows in zip(chunk, outs):
                results[i] = rows
                if self.cache is not None:
                    self.cache.put(keys[i], rows)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _sample_chunk(self, prefixes: list[list[int]], n: int, seed: int) -> list[list[list[int]]]:
        device = next(self.model.parameters()).device
        k = len(prefixes)
        width = max(len(p) for p in prefixes)
        ids = torch.full((k, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((k, width), dtype=torch.long)
        for row, p in enumerate(prefixes):  # left padding: every prefix ends at the last column
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        # The prefix is encoded once; its cache is repeated for the n rollouts of each prefix.
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1, :].float().repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        next_pos = positions[:, -1:].repeat_interleave(n, dim=0) + 1

        rows = k * n
        # Per-rollout uniforms from per-rollout generators: reproducible whatever the batch.
        uniforms = torch.empty((rows, self.max_new_tokens))
        for r in range(rows):
            g = torch.Generator().manual_seed(_stable_seed(seed, prefixes[r // n], r % n))
            uniforms[r] = torch.rand(self.max_new_tokens, generator=g)
        uniforms = uniforms.to(device)

        generated: list[list[int]] = [[] for _ in range(rows)]
        active = torch.arange(rows, device=device)  # original row of each live batch row
        for step in range(self.max_new_tokens):
            tokens = self._pick(logits, uniforms[active, step])
            finished = tokens == self.eos_id
            for r, t, f in zip(active.tolist(), tokens.tolist(), finished.tolist()):
                if not f:
                    generated[r].append(t)
            self.stats["new_tokens"] += int(active.numel())
            keep = (~finished).nonzero().squeeze(-1)
            if keep.numel() == 0 or step == self.max_new_tokens - 1:
                break
            if keep.numel() < active.numel():  # drop finished rollouts from the batch and the cache
                cache.batch_select_indices(keep)
                active, tokens, mask, next_pos = active[keep], tokens[keep], mask[keep], next_pos[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos,
                             past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_pos = next_pos + 1
        self.stats["prefixes"] += k
        self.stats["rollouts"] += rows
        return [generated[j * n:(j + 1) * n] for j in range(k)]

    def _pick(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        cdf = probs.cumsum(-1)
        idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1).contiguous()).squeeze(-1)
        return idx.clamp(max=logits.shape[-1] - 1)


class GenerateBaseline:
    """Plain `generate`: each prefix copied n times and re-encoded for every rollout (the benchmark's baseline)."""

    def __init__(self, model: Any, tokenizer: Any, temperature: float = 1.0, max_new_tokens: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def sample_ids(self, prefixes: Sequence[list[int]], n: int, seed: int) -> list[list[list[int]]]:
        device = next(self.model.parameters()).device
        eos = self.tokenizer.eos_token_id
        out = []
        for j, p in enumerate(prefixes):
            torch.manual_seed(_stable_seed(seed, list(p)))
            ids = torch.tensor([p] * n, device=device)
            kwargs = dict(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0) if self.temperature > 0 \
                else dict(do_sample=False)
            gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      max_new_tokens=self.max_new_tokens, pad_token_id=eos, eos_token_id=eos, **kwargs)
            rows = []
            for row in gen[:, len(p):].tolist():
                rows.append(row[: row.index(eos)] if eos in row else row)
            out.append(rows)
        return out


# The process's one vLLM engine. Each LLM reserves gpu_memory_utilization of the GPU for itself, so a second
# one in the same process fails; checkpoints on the same base share it (LoRA adapters as LoRARequests).
_ENGINE: dict[str, Any] = {}


def shared_llm(base: str, lora_rank: int | None = None, **llm_kwargs: Any) -> Any:
    """The process's vLLM engine on `base`, built on first use and reused; rebuilt only for another base or
    settings, or an adapter of a higher rank than it was built for."""
    from vllm import LLM

    key = json.dumps({"base": str(base), **llm_kwargs}, sort_keys=True, default=str)
    have = _ENGINE.get("key") == key and (lora_rank is None or _ENGINE.get("max_lora_rank", 0) >= lora_rank)
    if have:
        return _ENGINE["llm"]
    free_engines()
    kwargs: dict[str, Any] = {"model": str(base), "enable_prefix_caching": True, **llm_kwargs}
    if lora_rank is not None:
        kwargs.update(enable_lora=True, max_lora_rank=vllm_lora_rank(lora_rank), max_loras=1)
    _ENGINE.update(key=key, llm=LLM(**kwargs), max_lora_rank=kwargs.get("max_lora_rank", 0), adapters={})
    return _ENGINE["llm"]


def free_engines() -> None:
    """Release the process's vLLM engine and its GPU memory (before training starts in the same process)."""
    llm = _ENGINE.pop("llm", None)
    _ENGINE.clear()
    if llm is None:
        return
    import gc

    shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
    if callable(shutdown):
        shutdown()
    del llm
    gc.collect()
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception:  # noqa: BLE001 - older/newer vLLM layouts, or nothing initialised
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _lora_request(adapter: str) -> Any:
    from vllm.lora.request import LoRARequest

    ids = _ENGINE.setdefault("adapters", {})
    if adapter not in ids:
        ids[adapter] = len(ids) + 1  # vLLM LoRA ids start at 1 and name one adapter for the engine's life
    return LoRARequest(f"adapter-{ids[adapter]}", ids[adapter], adapter)


def adapter_rank(adapter: str | Path) -> int:
    """The LoRA rank r of a saved adapter."""
    return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])


# vLLM supports these LoRA ranks; max_lora_rank must be one of them and at least the adapter's rank
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}; set merge_adapter: true")


class VLLMEngine:
    """vLLM with automatic prefix caching: the shared prefix's KV blocks are computed once and reused.

    `model_path` is a full model folder (or Hub id); with `adapter`, it is the adapter's base and the adapter
    is served as a LoRARequest on the process's shared engine, so several checkpoints need one engine.
    """

    def __init__(self, model_path: str, temperature: float = 1.0, max_new_tokens: int = 64,
                 system: str | None = render.DEFAULT_SYSTEM, adapter: str | None = None, **llm_kwargs: Any):
        if not vllm_available():
            raise RuntimeError("vLLM is not installed; use HFRolloutEngine (engine: hf) instead")
        from revlib.modeling.models import load_tokenizer

        self.adapter = str(adapter) if adapter else None
        has_tok = self.adapter and (Path(self.adapter) / "tokenizer_config.json").exists()
        self.tokenizer = load_tokenizer(self.adapter if has_tok else model_path)
        self.llm = shared_llm(str(model_path), adapter_rank(self.adapter) if self.adapter else None, **llm_kwargs)
        self.lora_request = _lora_request(self.adapter) if self.adapter else None
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.system = system

    def sample(self, requests: Sequence[Request], n: int, seed: int) -> list[list[str]]:
        from vllm import SamplingParams

        prompts = [render.prompt_text(self.tokenizer, q, self.system) + p for q, p in requests]
        outs = []
        for i, prompt in enumerate(prompts):  # one SamplingParams per request: per-request seeds
            params = SamplingParams(n=n, temperature=self.temperature, max_tokens=self.max_new_tokens,
                                    seed=_stable_seed(seed, prompt) % (2**31), skip_special_tokens=False,
                                    stop_token_ids=[self.tokenizer.eos_token_id])
            outs.append((prompt, params))
        results = self.llm.generate([p for p, _ in outs], [s for _, s in outs], use_tqdm=False,
                                    lora_request=self.lora_request)
        return [[c.text.split(self.tokenizer.eos_token)[0] for c in r.outputs] for r in results]


class ServedCheckpoint(Protocol):
    """What a rollout engine serves (revlib.modeling.train.Checkpoint is one): a full model folder at `path`, or a
    LoRA `adapter` on its `base`. A protocol, not an import: train imports this module to free engines."""

    path: Path
    base: str
    adapter: str | None


VLLM_SETTINGS = ("gpu_memory_utilization", "tensor_parallel_size", "data_parallel_size", "max_model_len", "dtype")


def make_engine(kind: str, model: Any, tokenizer: Any, model_path: str | None = None, checkpoint: ServedCheckpoint | None = None,
                vllm: VLLMSettings | dict[str, Any] | None = None, **kwargs: Any) -> Sampler:
    """`hf`, `vllm`, or `auto` (vLLM when installed and a model folder or checkpoint is given, else Hugging Face).

    `checkpoint` (revlib.modeling.train.Checkpoint): vLLM serves its LoRA adapter on its base, or its full model folder.
    `vllm`: engine settings (gpu_memory_utilization, tensor/data parallel sizes, max_model_len) as a mapping or model.
    """
    if kind not in ("hf", "vllm", "auto"):
        raise ValueError(f"unknown rollout engine {kind!r}; choose hf, vllm or auto")
    if kind == "vllm" or (kind == "auto" and vllm_available() and (model_path or checkpoint)):
        adapter = None
        if checkpoint is not None:
            adapter = checkpoint.adapter
            model_path = checkpoint.base if adapter else str(checkpoint.path)
        if not model_path:
            raise ValueError("the vLLM engine needs a model folder or a checkpoint; got neither")
        settings = vllm.model_dump() if hasattr(vllm, "model_dump") else dict(vllm or {})
        llm_kwargs = {k: v for k, v in settings.items() if k in VLLM_SETTINGS and v is not None}
        if llm_kwargs.get("data_parallel_size") == 1:
            llm_kwargs.pop("data_parallel_size")
        engine_kwargs = {k: v for k, v in kwargs.items() if k in ("temperature", "max_new_tokens", "system")}
        return VLLMEngine(str(model_path), adapter=adapter, **engine_kwargs, **llm_kwargs)
    return HFRolloutEngine(model, tokenizer, **kwargs)
