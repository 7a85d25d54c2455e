"""An optional LLM judge through any OpenAI-compatible chat API (the paper used gpt-4o-mini).

It is asked only about answers math-verify cannot decide, with the one judge prompt and verdict reading
(revlib.data.teachers.judge). Requests go through the API teacher (revlib.data.teachers.api), which sends the
length limit and temperature the model's family accepts (a reasoning model: `max_completion_tokens`, no
temperature; a chat model such as the paper's gpt-4o-mini: `max_tokens` and temperature 0). Every verdict
is cached on disk before it is used, so a re-run never pays twice; rate limits, server errors and timeouts are
retried with backoff; a request budget stops it cleanly. The API key is read from the environment variable that params name, when a request is
really made, and is never written anywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from revlib.params.data import ApiTeacher as ApiTeacherParams
from revlib.data.teachers import judge
from revlib.data.teachers.api import ApiTeacher, model_family
from revlib.data.teachers.base import Failure, TeacherConfigError
from revlib.data.teachers.cache import ResponseCache


VERDICT_TOKENS = 4  # YES or NO
# a reasoning model's completion limit covers its hidden reasoning too: 4 tokens would end it before any verdict
REASONING_VERDICT_TOKENS = 4096


def verdict_tokens(model: str) -> int:
    """The completion limit a judge request carries for this model's family."""
    return VERDICT_TOKENS if model_family(model) == "chat" else REASONING_VERDICT_TOKENS


class JudgeError(RuntimeError):
    pass


class JudgeBudgetSpent(JudgeError):
    """The judge's request budget is spent; the verdicts so far are cached, a re-run with a larger budget goes on."""


@dataclass
class LLMJudge:
    base_url: str
    model: str
    api_key_env: str
    timeout_s: float = 60.0
    transport: httpx.BaseTransport | None = None  # tests pass a mock transport
    cache_path: str | Path | None = None  # verdicts, appended as they arrive; none: no cache
    max_retries: int = 4
    backoff_s: float = 1.0
    budget_requests: int | None = None
    sleep: Callable[[float], None] = time.sleep
    _client: ApiTeacher | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> ApiTeacher:
        if self._client is None:
            params = ApiTeacherParams(kind="api", base_url=self.base_url, model=self.model, api_key_env=self.api_key_env,
                                      concurrency=1, timeout_s=self.timeout_s, max_retries=self.max_retries,
                                      backoff_s=self.backoff_s, max_tokens=verdict_tokens(self.model), temperature=0.0,
                                      budget_requests=self.budget_requests)
            cache = ResponseCache(self.cache_path) if self.cache_path else None
            self._client = ApiTeacher(params, cache, sleep=self.sleep, transport=self.transport)
        return self._client

    @property
    def usage(self) -> Any:
        return self.client.usage

    def equivalent(self, question: str, answer: str, gold: str) -> tuple[bool | None, str]:
        """(verdict, raw reply) for one undecided answer; verdict None when the reply is neither YES nor NO (one
        unreadable reply must not end an evaluation: the caller records it as undecided and counts it)."""
        try:
            result = self.client.chat_many([judge.messages(question, gold, answer)])[0]
        except TeacherConfigError as err:
            raise JudgeError(f"LLM judge: {err}") from None
        if isinstance(result, Failure):
            if result.reason == "budget_exhausted":
                raise JudgeBudgetSpent(f"LLM judge budget spent ({self.budget_requests} requests); verdicts so far are "
                                       f"cached in {self.cache_path}; raise benchmarks.judge.budget_requests and re-run")
            raise JudgeError(f"judge API {self.client.url} failed: {result.reason}: {result.detail}")
        return judge.parse_verdict(result.content), result.content

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
