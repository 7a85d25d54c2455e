"""A local Hugging Face model as teacher, for offline use on a GPU: vLLM when installed, else batched `generate`."""

from __future__ import annotations

from typing import Any

from revlib.modeling import rollouts
from revlib.params.data import HFTeacher as HFTeacherParams
from revlib.data.teachers.base import ChatTeacher, Completion, Failure, Messages, split_think
from revlib.data.teachers.cache import ResponseCache


class HFTeacher(ChatTeacher):
    name = "hf"

    def __init__(self, params: HFTeacherParams, cache: ResponseCache | None):
        super().__init__(cache)
        self.params = params
        if params.engine == "vllm" and not rollouts.vllm_available():
            raise RuntimeError("teacher.engine is 'vllm' but vLLM is not installed; use engine 'hf' or 'auto'")
        self.engine = "vllm" if params.engine == "vllm" or (params.engine == "auto" and rollouts.vllm_available()) else "hf"
        self._llm: Any = None
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def identity(self) -> dict[str, Any]:
        p = self.params
        # the engine is left out on purpose: vLLM and generate sample the same distribution
        return {"kind": "hf", "model": p.model, "temperature": p.temperature, "max_new_tokens": p.max_new_tokens,
                "seed": p.seed}

    def _generate(self, items: list[tuple[str, Messages]]) -> list[Completion | Failure]:
        texts_tokens = self._vllm(items) if self.engine == "vllm" else self._hf(items)
        out: list[Completion | Failure] = []
        for (key, _), (text, n_tokens) in zip(items, texts_tokens):
            reasoning, answer = split_think(text)
            out.append(self._received(key, Completion(answer, reasoning, n_tokens), {"engine": self.engine}))
        return out

    def _vllm(self, items: list[tuple[str, Messages]]) -> list[tuple[str, int]]:
        from vllm import LLM, SamplingParams

        p = self.params
        if self._llm is None:
            self._llm = LLM(model=p.model, seed=p.seed)
        sampling = SamplingParams(temperature=p.temperature, max_tokens=p.max_new_tokens, seed=p.seed)
        results = self._llm.chat([m for _, m in items], sampling, use_tqdm=False)
        return [(r.outputs[0].text, len(r.prompt_token_ids or []) + len(r.outputs[0].token_ids)) for r in results]

    def _hf(self, items: list[tuple[str, Messages]]) -> list[tuple[str, int]]:
        import torch

        from revlib.modeling.models import device, load_model, load_tokenizer

        p = self.params
        if self._model is None:
            self._tokenizer = load_tokenizer(p.model)
            if self._tokenizer.pad_token_id is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model = load_model(p.model, device=device()).eval()
        tok, model = self._tokenizer, self._model
        out: list[tuple[str, int]] = []
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            for start in range(0, len(items), p.batch_size):
                batch = items[start:start + p.batch_size]
                prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for _, m in batch]
                enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                torch.manual_seed(p.seed + start)  # reproducible sampling, batch by batch
                sample = p.temperature > 0
                with torch.no_grad():
                    gen = model.generate(**enc, max_new_tokens=p.max_new_tokens, do_sample=sample,
                                         temperature=p.temperature if sample else None, top_p=None, top_k=None,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                new = gen[:, enc["input_ids"].shape[1]:]
                for row_in, row_new in zip(enc["attention_mask"], new):
                    n_new = int((row_new != tok.pad_token_id).sum())
                    out.append((tok.decode(row_new, skip_special_tokens=True), int(row_in.sum()) + n_new))
        finally:
            tok.padding_side = side
        return out
