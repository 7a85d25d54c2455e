"""Average log-probability (ALP) of probe responses, fast, and a plain reference to check it against.

ALP(y|x) is the mean log p of the assistant-response tokens of y given x, the response capped at
`max_response_tokens`. Prompt and response are tokenized by `revlib.core.render.tokenize_example`, the
function training uses, so the scored tokens are exactly the completion tokens training saw.

The fast scorer:
- forms batches by a token budget from length-sorted rows;
- never materialises a full-vocabulary log-softmax for the batch: it takes the final hidden states
  at the positions that predict a response token, projects them through the LM head a chunk at a time
  and keeps `logit[target] - logsumexp(logits)` per token;
- scores chosen and rejected in one row that shares the prompt (a two-branch attention mask, the
  rejected branch re-using the prompt's positions) when the prompt is long enough for that to pay;
- keeps one base model loaded and swaps LoRA adapters in and out per checkpoint (`ModelBank`).
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from revlib.core import render
from revlib.core.records import Record
from revlib.modeling import frozen_stack, models, threads

SharePrompt = Literal["auto", "always", "never"]
CpuMatmul = Literal["float32", "bfloat16", "auto"]


@dataclass(frozen=True)
class ProbeItem:
    """One test probe x with y+ (its own response) and y- (its twin's response), as token ids."""

    id: str
    pair_id: str
    direction: str
    task: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    # further responses scored beside y+ and y- (where the probability mass goes): name -> token ids
    extras: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def responses(self) -> list[tuple[str, tuple[int, ...]]]:
        return [("chosen", self.chosen_ids), ("rejected", self.rejected_ids), *self.extras]


# The extra probes: another question's y+, y+ with its tokens shuffled; "argmax" is scored along y+ itself.
EXTRA_PROBES = ("irrelevant", "shuffled")


@dataclass
class ItemScore:
    id: str
    sum_chosen: float
    sum_rejected: float
    n_chosen: int
    n_rejected: int
    token_logps_chosen: np.ndarray | None = None
    token_logps_rejected: np.ndarray | None = None
    extra_sums: dict[str, float] = field(default_factory=dict)
    extra_counts: dict[str, int] = field(default_factory=dict)
    sum_argmax: float | None = None  # sum over y+'s positions of the most likely token's log p (teacher-forced)

    @property
    def alp_chosen(self) -> float:
        return self.sum_chosen / self.n_chosen

    @property
    def alp_rejected(self) -> float:  # nan where no rejected response was scored (the authors' ALP(text) alone)
        return self.sum_rejected / self.n_rejected if self.n_rejected else math.nan

    @property
    def margin(self) -> float:
        return self.alp_chosen - self.alp_rejected

    def alp_extra(self, name: str) -> float:
        return self.extra_sums[name] / self.extra_counts[name]

    @property
    def alp_argmax(self) -> float | None:
        return None if self.sum_argmax is None else self.sum_argmax / self.n_chosen

    def row(self) -> dict[str, Any]:
        out = {"id": self.id, "alp_chosen": self.alp_chosen, "alp_rejected": self.alp_rejected,
               "margin": self.margin, "n_chosen": self.n_chosen, "n_rejected": self.n_rejected,
               "sum_chosen": self.sum_chosen, "sum_rejected": self.sum_rejected}
        for name in self.extra_sums:
            out[f"alp_{name}"] = self.alp_extra(name)
        if self.sum_argmax is not None:
            out["alp_argmax"] = self.alp_argmax
        return out


def build_items(
    tokenizer: Any,
    records: Sequence[Record],
    twins: Sequence[Record],
    max_response_tokens: int,
    system: str | None = render.DEFAULT_SYSTEM,
    extras: bool = False,
) -> list[ProbeItem]:
    """Tokenize each test record with y+ = its own response and y- = its twin's (the directional preference).

    `twins` must hold, for every record, the record of the other direction with the same pair_id
    (the records themselves may be part of it, as with a mixed test set). With `extras`, each item
    also carries an irrelevant response (y+ of the next record of the same direction, another
    question's answer) and y+ with its tokens shuffled (seeded by the record's id).
    """
    if max_response_tokens < 1:
        raise ValueError(f"max_response_tokens must be >= 1, got {max_response_tokens}")
    by_key = {(t.pair_id, t.direction): t for t in [*twins, *records]}
    missing = [r.id for r in records if (r.pair_id, _other(r.direction)) not in by_key]
    if missing:
        raise ValueError(f"no twin of the other direction for probe records {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} ({len(missing)} in all); pass the twin set too")
    items = []
    for rec in records:
        twin = by_key[(rec.pair_id, _other(rec.direction))]
        prompt, chosen = render.tokenize_example(tokenizer, rec.question, rec.reasoning, rec.answer, system,
                                                 max_completion_tokens=max_response_tokens)
        prompt_r, rejected = render.tokenize_example(tokenizer, rec.question, twin.reasoning, twin.answer, system,
                                                     max_completion_tokens=max_response_tokens)
        assert prompt == prompt_r  # the same question renders to the same prompt
        if not chosen or not rejected:
            raise ValueError(f"probe {rec.id}: empty response after rendering")
        items.append(ProbeItem(rec.id, rec.pair_id, rec.direction, rec.task, tuple(prompt), tuple(chosen),
                               tuple(rejected)))
    return with_extras(items) if extras else items


def with_extras(items: Sequence[ProbeItem]) -> list[ProbeItem]:
    """Each item with an irrelevant response (the next item of its direction with another pair's y+) and
    its own y+ shuffled. A direction with a single item has no other question to borrow from."""
    import random

    out = []
    by_direction: dict[str, list[ProbeItem]] = {}
    for it in items:
        by_direction.setdefault(it.direction, []).append(it)
    for it in items:
        group = [g for g in by_direction[it.direction] if g.pair_id != it.pair_id]
        if not group:
            raise ValueError(f"probe {it.id}: no other {it.direction} probe to borrow an irrelevant response from")
        order = by_direction[it.direction]
        donor = next(g for g in order[order.index(it) + 1:] + order if g.pair_id != it.pair_id)
        shuffled = list(it.chosen_ids)
        random.Random(f"shuffle:{it.id}").shuffle(shuffled)
        out.append(ProbeItem(it.id, it.pair_id, it.direction, it.task, it.prompt_ids, it.chosen_ids, it.rejected_ids,
                             (("irrelevant", donor.chosen_ids[: len(it.chosen_ids)] or donor.chosen_ids),
                              ("shuffled", tuple(shuffled)))))
    return out


def _other(direction: str) -> str:
    return "reverse" if direction == "forward" else "forward"


# --- the reference: one forward pass per example and response, full log-softmax in float64 ---

@torch.no_grad()
def reference_scores(model: Any, items: Sequence[ProbeItem]) -> list[ItemScore]:
    """The plain computation the fast scorer must match: per-token log-probs of each response."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for it in items:
        per = []
        for resp in (it.chosen_ids, it.rejected_ids):
            ids = torch.tensor([list(it.prompt_ids) + list(resp)], device=dev)
            logits = model(input_ids=ids, use_cache=False).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            p = len(it.prompt_ids)
            targets = torch.tensor(resp, device=dev)
            per.append(logp[p - 1:p - 1 + len(resp)].gather(1, targets[:, None])[:, 0].cpu().numpy())
        out.append(ItemScore(it.id, float(per[0].sum()), float(per[1].sum()), len(per[0]), len(per[1]), per[0], per[1]))
    return out


# --- the fast scorer ---

@dataclass
class _Row:
    """One sequence of the batch: a prompt followed by one or two response branches."""

    item: int
    tokens: list[int]
    positions: list[int]
    branch: list[int]                      # 0 prompt, 1.. response branch
    # per scored token: (row index that predicts it, target id, which response: 0 chosen, 1 rejected, 2.. extras)
    targets: list[tuple[int, int, int]] = field(default_factory=list)


def _rows(items: Sequence[ProbeItem], share: bool) -> list[_Row]:
    rows = []
    for i, it in enumerate(items):
        p = list(it.prompt_ids)
        branches = [(w, list(ids)) for w, (_, ids) in enumerate(it.responses()) if ids]  # an empty one: nothing to score
        groups = [branches] if share else [[b] for b in branches]
        for group in groups:
            row = _Row(i, list(p), list(range(len(p))), [0] * len(p))
            for b, (which, resp) in enumerate(group, start=1):
                start = len(row.tokens)
                for j, tok in enumerate(resp):
                    row.targets.append((len(p) - 1 if j == 0 else start + j - 1, tok, which))
                row.tokens += resp
                row.positions += range(len(p), len(p) + len(resp))
                row.branch += [b] * len(resp)
            rows.append(row)
    return rows


def _batches(rows: list[_Row], token_budget: int) -> Iterator[list[_Row]]:
    """Length-sorted rows grouped so that rows x longest row <= token_budget (a longer row goes alone)."""
    order = sorted(rows, key=lambda r: len(r.tokens), reverse=True)
    batch: list[_Row] = []
    for row in order:
        if batch and (len(batch) + 1) * len(batch[0].tokens) > token_budget:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def should_share_prompt(items: Sequence[ProbeItem], share_prompt: SharePrompt) -> bool:
    """Sharing saves one prompt per item but makes rows longer (attention over both branches).

    It pays when prompts are a sizeable part of the tokens: here, when they are at least a quarter of
    the mean response length.
    """
    if share_prompt != "auto":
        return share_prompt == "always"
    if not items:
        return False
    prompt = np.mean([len(it.prompt_ids) for it in items])
    resp = np.mean([(len(it.chosen_ids) + len(it.rejected_ids)) / 2 for it in items])
    return bool(prompt >= 0.25 * resp)


def _mask(batch: list[_Row], length: int, attn: str, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """4D mask: a token sees earlier tokens of the prompt and of its own branch; padding sees itself."""
    branch = torch.full((len(batch), length), -1, dtype=torch.long)
    for r, row in enumerate(batch):
        branch[r, :len(row.tokens)] = torch.tensor(row.branch)
    idx = torch.arange(length)
    causal = idx[None, :] <= idx[:, None]
    q, k = branch[:, :, None], branch[:, None, :]
    allowed = causal[None] & (k >= 0) & ((k == 0) | (k == q))
    allowed |= torch.eye(length, dtype=torch.bool)[None]  # no empty rows (padding) -> no NaN
    allowed = allowed[:, None].to(dev)
    if attn == "sdpa":
        return allowed
    if attn == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill(~allowed, torch.finfo(dtype).min)
    raise ValueError(f"the fast scorer needs attn_implementation 'sdpa' or 'eager' (custom attention masks), "
                     f"the model uses {attn!r}; load it with attn_implementation='sdpa'")


class Scorer:
    """Token-budget batches, chunked target-only log-probs, prompt shared by chosen and rejected."""

    def __init__(self, token_budget: int = 16384, logit_chunk: int | None = None, share_prompt: SharePrompt = "auto",
                 cpu_matmul: CpuMatmul = "float32"):
        if token_budget < 1 or (logit_chunk is not None and logit_chunk < 1):
            raise ValueError(f"token_budget and logit_chunk must be >= 1, got {token_budget}, {logit_chunk}")
        if share_prompt not in ("auto", "always", "never"):
            raise ValueError(f"share_prompt must be 'auto', 'always' or 'never', got {share_prompt!r}")
        self.token_budget = token_budget
        self.logit_chunk = logit_chunk
        self.cpu_matmul = resolve_cpu_matmul(cpu_matmul)
        self.share_prompt = share_prompt
        self.tokens_scored = 0  # response tokens, summed over calls (for throughput)
        self._cache_key: tuple | None = None
        self._cache: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def score(self, model: Any, items: Sequence[ProbeItem], keep_token_logps: bool = False,
              frozen_below: int = 0) -> list[ItemScore]:
        """Scores of every item's responses.

        `frozen_below` k > 0 says the checkpoints scored with this scorer share the embeddings and
        decoder layers 0..k-1 (LoRA on upper layers only, or a merge of such an adapter): the hidden
        states after layer k-1 are computed once per batch and reused while those weights are the
        same (checked by a fingerprint of them), and only layers k.. run per checkpoint.
        """
        model.eval()
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = causal_lm.config
        if getattr(cfg, "final_logit_softcapping", None):
            raise ValueError("models with final_logit_softcapping are not supported by the chunked scorer")
        backbone, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
        attn = getattr(cfg, "_attn_implementation", None) or "eager"
        dev = next(causal_lm.parameters()).device
        dtype = next(causal_lm.parameters()).dtype
        share = should_share_prompt(items, self.share_prompt)
        n_resp = max(len(it.responses()) for it in items) if items else 2
        k = frozen_below if 0 < frozen_below < len(backbone.layers) else 0
        cache = self._prefix_cache(backbone, items, share, k) if k else None

        sums = np.zeros((len(items), n_resp))
        counts = np.zeros((len(items), n_resp), dtype=np.int64)
        argmax = np.zeros(len(items))
        tokens: list[list[np.ndarray | None]] = [[None, None] for _ in items]
        for b, batch in enumerate(_batches(_rows(items, share), self.token_budget)):
            length = len(batch[0].tokens)
            ids = torch.zeros((len(batch), length), dtype=torch.long)
            pos = torch.zeros((len(batch), length), dtype=torch.long)
            for r, row in enumerate(batch):
                ids[r, :len(row.tokens)] = torch.tensor(row.tokens)
                pos[r, :len(row.tokens)] = torch.tensor(row.positions)
            mask = _mask(batch, length, attn, dtype, dev)
            threads.shared().tick()  # torch's threads sized to the cores other programs leave free
            with self._autocast(dev):
                if cache is None:
                    hidden = backbone(input_ids=ids.to(dev), position_ids=pos.to(dev), attention_mask=mask,
                                      use_cache=False).last_hidden_state
                else:
                    if b not in cache:
                        cache[b] = frozen_stack.run_layers(backbone, slice(0, k), mask, pos.to(dev),
                                                           input_ids=ids.to(dev))
                    hidden = frozen_stack.run_layers(backbone, slice(k, None), mask, pos.to(dev),
                                                     inputs_embeds=cache[b])
            # flat index of each predicting position, its target and where the result goes
            where = torch.tensor([r * length + t[0] for r, row in enumerate(batch) for t in row.targets], device=dev)
            target = torch.tensor([t[1] for row in batch for t in row.targets], device=dev)
            hidden = hidden.to(dtype)  # the LM head and its log-softmax in the weights' own precision: bf16 logits
            # moved the set's mean ALP by up to 1.5e-3 nats/token on SmolLM2, float32 logits by under 1e-3
            logps, best = self._target_logps(hidden.reshape(-1, hidden.shape[-1]), head, where, target)
            logps, best = logps.cpu().numpy(), best.cpu().numpy()
            k_row = 0
            for row in batch:
                which = np.array([t[2] for t in row.targets])
                vals, tops = logps[k_row:k_row + len(which)], best[k_row:k_row + len(which)]
                k_row += len(which)
                for w in range(n_resp):
                    sel = vals[which == w]
                    if len(sel):
                        sums[row.item, w] += sel.sum()
                        counts[row.item, w] += len(sel)
                        if w == 0:
                            argmax[row.item] += tops[which == 0].sum()
                        if keep_token_logps and w < 2:
                            tokens[row.item][w] = sel
            self.tokens_scored += len(target)
        out = []
        for i, it in enumerate(items):
            names = [name for name, _ in it.extras]
            out.append(ItemScore(it.id, float(sums[i, 0]), float(sums[i, 1]), int(counts[i, 0]), int(counts[i, 1]),
                                 *(tokens[i] if keep_token_logps else (None, None)),
                                 extra_sums={n: float(sums[i, 2 + j]) for j, n in enumerate(names)},
                                 extra_counts={n: int(counts[i, 2 + j]) for j, n in enumerate(names)},
                                 sum_argmax=float(argmax[i])))
        return out

    def _autocast(self, dev: torch.device) -> contextlib.AbstractContextManager:
        if self.cpu_matmul == "bfloat16" and dev.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prefix_cache(self, backbone: Any, items: Sequence[ProbeItem], share: bool, k: int) -> dict[int, torch.Tensor]:
        """The per-batch hidden states after layer k-1, kept while the weights below layer k stay the same."""
        key = (tuple(it.id for it in items), share, self.token_budget, k, self.cpu_matmul,
               frozen_stack.lower_fingerprint(backbone, k))
        if self._cache_key != key:
            self._cache_key, self._cache = key, {}
        return self._cache

    def _target_logps(self, hidden: torch.Tensor, head: torch.nn.Module, where: torch.Tensor,
                      target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(target) and the largest log p at each predicting position, through the head `logit_chunk` rows at a time."""
        out = torch.empty(len(where), dtype=torch.float32, device=hidden.device)
        top = torch.empty(len(where), dtype=torch.float32, device=hidden.device)
        chunk = self.logit_chunk or auto_logit_chunk(head.weight.shape[0], hidden.device)
        for s in range(0, len(where), chunk):
            h = hidden.index_select(0, where[s:s + chunk])
            logits = head(h).float()
            tgt = target[s:s + chunk]
            lse = torch.logsumexp(logits, dim=-1)
            out[s:s + len(tgt)] = logits.gather(1, tgt[:, None])[:, 0] - lse
            top[s:s + len(tgt)] = logits.max(dim=-1).values - lse
        return out, top


def cpu_multiplies_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX512-BF16): there bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_cpu_matmul(choice: CpuMatmul) -> Literal["float32", "bfloat16"]:
    if choice not in ("float32", "bfloat16", "auto"):
        raise ValueError(f"cpu_matmul must be 'float32', 'bfloat16' or 'auto', got {choice!r}")
    if choice == "auto":
        return "bfloat16" if cpu_multiplies_bf16() else "float32"
    return choice


def auto_logit_chunk(vocab_size: int, device: torch.device) -> int:
    """Positions per LM-head chunk: about 16 MiB of float32 logits on CPU (the chunk stays in cache while
    logsumexp reads it back; measured 1.5-2x faster than 1024 rows at a 152k vocabulary), 1 GiB on a GPU."""
    budget = (1 << 30) if device.type == "cuda" else (16 << 20)
    return max(8, budget // (4 * vocab_size))


# --- the r1k authors' ALP measure (analysis/analyze_training_dynamics.py of 16demi/ReasonAlign-analysis, MIT) ---
#
# Their script scores a row of their published parquet as: the prompt is their own ChatML string around the row's
# `question` (the forward question, in `flipped` rows too), the completion the row's whole `text` (resp.
# `worse-text`) chat string, which repeats the system turn and the question before the response. Each is tokenized
# on its own by `tokenizer.encode` with its defaults; the completion is cut to `max_tokens` and its first token
# dropped; ALP is the mean log-probability of the remaining completion tokens given the prompt and the tokens before
# them. A completion of one token or none gives -inf in their script, and the row is skipped.

# their string, kept exactly (the "\n" before <|im_end|> in the system turn is theirs)
AUTHORS_PROMPT = ("<|im_start|>system\nYou are a helpful assistant.\n<|im_end|>\n<|im_start|>user\n{question}"
                  "<|im_end|>\n<|im_start|>assistant\n")
AUTHORS_MAX_TOKENS = 1000  # their default cap


@dataclass(frozen=True)
class AuthorsRow:
    """One row as the authors' script reads it: `question`, `text` (y+'s chat string) and `worse-text` (y-'s).
    `worse_text` None: only ALP(text) is wanted."""

    id: str
    question: str
    text: str
    worse_text: str | None
    pair_id: str = ""
    direction: str = ""
    task: str = ""


def authors_prompt(question: str) -> str:
    return AUTHORS_PROMPT.format(question=question)


def conversation_text(tokenizer: Any, question: str, reasoning: str, answer: str,
                      system: str | None = render.DEFAULT_SYSTEM) -> str:
    """The whole conversation as training renders it (system, question, the s1 think/answer turn): what the authors'
    `text` is for rows they did not publish (their `text` is the string their SFT trained on)."""
    return tokenizer.apply_chat_template(render.prompt_messages(question, system)
                                         + render.assistant_message(reasoning, answer), tokenize=False)


def authors_completion_ids(tokenizer: Any, completion: str, max_tokens: int) -> tuple[int, ...] | None:
    """The completion tokens the authors score: `tokenizer.encode`'s defaults, cut to `max_tokens`, the first token
    dropped; None where their script gives -inf (an empty completion, or one token or none after the cut)."""
    if not isinstance(completion, str) or not completion.strip():
        return None
    ids = list(tokenizer.encode(completion))[:max_tokens]
    return tuple(ids[1:]) if len(ids) > 1 else None


def authors_items(tokenizer: Any, rows: Sequence[AuthorsRow], max_tokens: int = AUTHORS_MAX_TOKENS
                  ) -> tuple[list[ProbeItem], dict[str, str]]:
    """Probe items whose scores are the authors' ALP(text) (chosen) and ALP(worse-text) (rejected, empty where the
    row has none), and the rows their script would skip, with why."""
    if max_tokens < 2:
        raise ValueError(f"the authors' token cap must be >= 2 (their first token is dropped), got {max_tokens}")
    items, skipped = [], {}
    for row in rows:
        text = authors_completion_ids(tokenizer, row.text, max_tokens)
        worse = () if row.worse_text is None else authors_completion_ids(tokenizer, row.worse_text, max_tokens)
        if text is None or worse is None:
            which = "text" if text is None else "worse-text"
            skipped[row.id] = f"its {which} is empty or one token long (the authors' script gives -inf and skips it)"
            continue
        prompt = tuple(tokenizer.encode(authors_prompt(row.question)))
        items.append(ProbeItem(row.id, row.pair_id, row.direction, row.task, prompt, text, worse))
    return items, skipped


def authors_scores(model: Any, tokenizer: Any, rows: Sequence[AuthorsRow], max_tokens: int = AUTHORS_MAX_TOKENS,
                   scorer: Scorer | None = None, frozen_below: int = 0) -> list[ItemScore]:
    """The authors' ALP of each row's `text` (alp_chosen) and `worse-text` (alp_rejected), through the fast scorer;
    rows their script skips are left out (`authors_items` names them)."""
    items, _ = authors_items(tokenizer, rows, max_tokens)
    return (scorer or Scorer()).score(model, items, frozen_below=frozen_below)


# --- one base loaded, adapters swapped per checkpoint ---

class CheckpointLike(Protocol):
    path: Path
    base: str
    adapter: str | None


class ModelBank:
    """Serves the model of each checkpoint, reloading only when the base changes.

    A LoRA checkpoint is its adapter loaded into the already-loaded base (peft `load_adapter` /
    `set_adapter`); the previous adapter is deleted. A full checkpoint (adapter None) is loaded whole.
    """

    def __init__(self, dtype: str = "float32", device: str | None = None, attn_implementation: str = "sdpa"):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "by_device":  # bfloat16 where it is native (a GPU); CPU keeps float32's exact sums
            dtype = "bfloat16" if str(self.device).startswith("cuda") else "float32"
        self.dtype = dtype
        self.attn = attn_implementation
        self._base_path: str | None = None
        self._model: Any = None
        self._adapter: str | None = None
        self.base_loads = 0
        self.adapter_loads = 0

    def _load_base(self, path: str) -> Any:
        if self._base_path == str(path):
            return self._model
        self._model = None
        gc.collect()
        self._model = models.load_model(path, dtype=self.dtype, device=self.device,
                                        attn_implementation=self.attn).eval()
        self._base_path, self._adapter = str(path), None
        self.base_loads += 1
        return self._model

    @contextlib.contextmanager
    def use(self, ckpt: CheckpointLike) -> Iterator[Any]:
        if ckpt.adapter is None:
            model = self._load_base(str(ckpt.path))
            if hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    yield model
            else:
                yield model
            return
        model = self._load_base(str(ckpt.base))
        name = f"ckpt{self.adapter_loads}"
        if not hasattr(model, "load_adapter") or not hasattr(model, "peft_config"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(ckpt.adapter), adapter_name=name, is_trainable=False)
            self._model = model
        else:
            model.load_adapter(str(ckpt.adapter), adapter_name=name, is_trainable=False)
            model.set_adapter(name)
            if self._adapter is not None:
                model.delete_adapter(self._adapter)
        self._adapter = name
        self.adapter_loads += 1
        model.eval()
        yield model

    def close(self) -> None:
        self._model, self._base_path, self._adapter = None, None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def tokens_per_second(n_tokens: int, seconds: float) -> float:
    return n_tokens / seconds if seconds > 0 else math.inf
