"""What a model teacher returns, and the cache-first request loop every model teacher shares."""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from revlib.core.extract import final_answer, last_boxed  # the one answer module, re-exported
from revlib.data.teachers.cache import ResponseCache, cache_key

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Completion:
    content: str  # the visible answer, with any <think> block removed
    reasoning: str  # the chain of thought: the API's reasoning field or the <think> block
    tokens: int = 0  # tokens paid for (prompt + completion); 0 for a cache hit
    cached: bool = False
    model: str | None = None  # the model the reply names (an API reply's `model` field); None where none is named


@dataclass(frozen=True)
class Failure:
    reason: str  # budget_exhausted, timeout, rate_limited, server_error, malformed_response, connection_error, ...
    detail: str = ""


class TeacherConfigError(RuntimeError):
    """A fault no retry can fix (missing key, wrong URL, rejected credentials): the stage stops."""


@dataclass
class Usage:
    requests: int = 0  # paid requests (answered with a usable response)
    tokens: int = 0
    cache_hits: int = 0
    attempts: int = 0  # HTTP calls or generate calls, retries included
    retries: dict[str, int] = field(default_factory=dict)
    # answers used, by the model their reply named (an alias such as deepseek-reasoner can move to another model)
    served_models: dict[str, int] = field(default_factory=dict)

    def count_model(self, model: str | None) -> None:
        if model:
            self.served_models[model] = self.served_models.get(model, 0) + 1


class ChatTeacher(ABC):
    """Answers chat conversations; looks each one up in the cache first and caches every new answer on arrival."""

    name: str = "teacher"

    def __init__(self, cache: ResponseCache | None):
        self.cache = cache
        self.usage = Usage()
        self._lock = threading.Lock()

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes the answer (model, endpoint, sampling), never a secret: the cache key's teacher part."""

    def chat_many(self, conversations: list[Messages]) -> list[Completion | Failure]:
        keys = [cache_key(self.identity, m) for m in conversations]
        out: list[Completion | Failure | None] = [None] * len(conversations)
        todo: list[int] = []
        for i, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is not None:
                out[i] = Completion(hit["content"], hit["reasoning"], 0, cached=True, model=hit.get("served_model"))
                self.usage.cache_hits += 1
                self.usage.count_model(out[i].model)
            else:
                todo.append(i)
        if todo:
            fresh = self._generate([(keys[i], conversations[i]) for i in todo])
            for i, res in zip(todo, fresh):
                out[i] = res
        return out  # type: ignore[return-value]

    @abstractmethod
    def _generate(self, items: list[tuple[str, Messages]]) -> list[Completion | Failure]:
        """Answer uncached conversations; call `_received` for each answer before returning it."""

    def _received(self, key: str, completion: Completion, extra: dict[str, Any] | None = None) -> Completion:
        """Cache first, then count: what is paid for is on disk before anyone uses it."""
        if self.cache is not None:
            served = {"served_model": completion.model} if completion.model else {}
            self.cache.put(key, {"teacher": self.identity, "content": completion.content,
                                 "reasoning": completion.reasoning, "tokens": completion.tokens, **served,
                                 **(extra or {})})
        with self._lock:
            self.usage.requests += 1
            self.usage.tokens += completion.tokens
            self.usage.count_model(completion.model)
        return completion

    def close(self) -> None:
        pass


_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def split_think(content: str, reasoning: str | None = None) -> tuple[str, str]:
    """(reasoning, answer text): the API's reasoning field if given, else a <think>...</think> block in the content."""
    content = content or ""
    if reasoning and reasoning.strip():
        return reasoning.strip(), _THINK.sub("", content).strip()
    m = _THINK.search(content)
    if m:
        return m.group(1).strip(), (content[: m.start()] + content[m.end():]).strip()
    if "</think>" in content:  # templates that put <think> in the prompt leave only the closing tag
        head, tail = content.split("</think>", 1)
        return head.strip(), tail.strip()
    if "<think>" in content:  # cut off while thinking: all reasoning, no answer
        return content.split("<think>", 1)[1].strip(), ""
    return "", content.strip()

__all__ = ["ChatTeacher", "Completion", "Failure", "Messages", "TeacherConfigError", "Usage", "final_answer",
           "last_boxed", "split_think"]
