"""A teacher behind an OpenAI-compatible chat-completions endpoint (DeepSeek-R1, any vLLM server, ...).

Requests run in a thread pool (notebook kernels already own an event loop) with a concurrency
limit, a total per-request deadline, and retries (tenacity) with exponential backoff on rate limits, server errors,
timeouts, dropped connections and malformed replies. The key is read from the environment
variable named in params and only ever placed in the Authorization header.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import tenacity

from revlib.core import redact
from revlib.params.data import ApiTeacher as ApiTeacherParams
from revlib.data.teachers.base import ChatTeacher, Completion, Failure, Messages, TeacherConfigError, split_think
from revlib.data.teachers.cache import ResponseCache

RETRYABLE_STATUS = {408, 409, 425, 429}
FATAL_STATUS = {401, 403, 404}

# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 and its minor versions; not the non-reasoning gpt-5 chat
# snapshots) answer HTTP 400 to `max_tokens` and to any temperature but the default: they take
# `max_completion_tokens`, which also bounds their hidden reasoning
OPENAI_REASONING = re.compile(r"^(o\d+|gpt-5)([.-]|$)(?!.*chat)")
# DeepSeek's reasoner alias takes `max_tokens` and accepts but ignores temperature (DeepSeek's reasoning guide)
DEEPSEEK_REASONER = re.compile(r"^deepseek-reasoner$")


def model_family(model: str) -> str:
    """The model's request family, "openai-reasoning", "deepseek-reasoner" or "chat", from its name as the endpoint
    spells it (a router's "provider/" prefix is ignored)."""
    name = model.rsplit("/", 1)[-1].lower()
    if OPENAI_REASONING.match(name):
        return "openai-reasoning"
    if DEEPSEEK_REASONER.match(name):
        return "deepseek-reasoner"
    return "chat"


def length_and_sampling(model: str, max_tokens: int, temperature: float) -> dict[str, Any]:
    """The request's length limit and sampling fields as the model's family accepts them: reasoning models get no
    temperature (refused by OpenAI's, ignored by DeepSeek's) and OpenAI's get `max_completion_tokens`; any other
    chat model gets `max_tokens` and the temperature asked for."""
    family = model_family(model)
    if family == "openai-reasoning":
        return {"max_completion_tokens": max_tokens}
    if family == "deepseek-reasoner":
        return {"max_tokens": max_tokens}
    return {"max_tokens": max_tokens, "temperature": temperature}


class _Retryable(Exception):
    """A failed attempt worth retrying: the failure it leaves if it was the last, and the server's Retry-After."""

    def __init__(self, failure: Failure, retry_after: float | None = None):
        super().__init__(failure.reason)
        self.failure = failure
        self.retry_after = retry_after


class ApiTeacher(ChatTeacher):
    name = "api"

    def __init__(self, params: ApiTeacherParams, cache: ResponseCache | None, sleep=time.sleep,
                 transport: httpx.BaseTransport | None = None):
        """`transport`: httpx's, for a client that talks to something other than the network (tests' mock servers)."""
        super().__init__(cache)
        self.params = params
        self._sleep = sleep
        redact.register_env(params.api_key_env)
        self.url = params.base_url.rstrip("/") + "/chat/completions"
        # the per-operation timeout bounds connecting and each read; _post adds the total deadline
        self._client = httpx.Client(headers={"Content-Type": "application/json"}, timeout=httpx.Timeout(params.timeout_s),
                                    limits=httpx.Limits(max_connections=params.concurrency), transport=transport)
        self._in_flight = 0
        self._stopped: str | None = None  # set once the budget is spent: no new request starts

    def _auth(self) -> dict[str, str]:
        """The Authorization header, read when a request is really made: a fully cached run needs no key."""
        p = self.params
        if not p.api_key_env:
            return {}
        key = os.environ.get(p.api_key_env, "")
        if not key:
            raise TeacherConfigError(
                f"environment variable {p.api_key_env} is not set; export the API key for {p.base_url} "
                f"under that name (params hold only the variable's name, never the key)")
        return {"Authorization": f"Bearer {key}"}

    @property
    def identity(self) -> dict[str, Any]:
        p = self.params
        return {"kind": "api", "base_url": p.base_url.rstrip("/"), "model": p.model, "temperature": p.temperature,
                "max_tokens": p.max_tokens}

    def _generate(self, items: list[tuple[str, Messages]]) -> list[Completion | Failure]:
        self._headers = self._auth()
        with ThreadPoolExecutor(max_workers=self.params.concurrency, thread_name_prefix="teacher") as pool:
            return list(pool.map(lambda item: self._request(*item), items))

    # -- budget: a request may start only while paid + in-flight requests stay within it
    def _reserve(self) -> bool:
        p = self.params
        with self._lock:
            if p.budget_requests is not None and self.usage.requests + self._in_flight >= p.budget_requests:
                self._stopped = "requests"
            if p.budget_tokens is not None and self.usage.tokens >= p.budget_tokens:
                self._stopped = "tokens"
            if self._stopped:
                return False
            self._in_flight += 1
            self.usage.attempts += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _count_retry(self, reason: str) -> None:
        with self._lock:
            self.usage.retries[reason] = self.usage.retries.get(reason, 0) + 1

    def _request(self, key: str, messages: Messages) -> Completion | Failure:
        p = self.params
        body = {"model": p.model, "messages": messages, **length_and_sampling(p.model, p.max_tokens, p.temperature),
                "stream": False}
        doubling = tenacity.wait_exponential(multiplier=p.backoff_s, max=p.max_backoff_s)

        def wait(state: tenacity.RetryCallState) -> float:
            if state.attempt_number > p.max_retries:  # tenacity asks for a wait before it sees that it stops
                return 0.0
            # backoff_s doubling per retry up to max_backoff_s, plus up to 10% jitter; a longer Retry-After wins
            return max(doubling(state) * (1 + 0.1 * random.random()), state.outcome.exception().retry_after or 0.0)

        def gave_up(state: tenacity.RetryCallState) -> Failure:
            last = state.outcome.exception().failure
            return Failure(last.reason, f"after {state.attempt_number} attempts: {last.detail}")

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(_Retryable), wait=wait, sleep=self._sleep,
                                     stop=tenacity.stop_after_attempt(p.max_retries + 1), retry_error_callback=gave_up)
        return retrying(self._attempt, key, body)

    def _attempt(self, key: str, body: dict[str, Any]) -> Completion | Failure:
        """One request: its completion, or a failure no retry can fix; raises _Retryable for one worth retrying."""
        p = self.params
        if not self._reserve():
            return Failure("budget_exhausted", f"{self._stopped} budget spent")
        try:
            try:
                status, text, headers = self._post(body)
            except httpx.TimeoutException as err:
                detail = f"no complete reply within {p.timeout_s:g} s ({type(err).__name__})"
                raise self._retryable(Failure("timeout", detail))
            except httpx.TransportError as err:
                raise self._retryable(Failure("connection_error", type(err).__name__))
            if status == 200:
                try:
                    completion = parse_chat_response(redact.redact_obj(json.loads(text)))
                except (ValueError, KeyError, IndexError, TypeError) as err:
                    raise self._retryable(Failure("malformed_response", f"{type(err).__name__}: {text[:200]!r}"))
                return self._received(key, completion, {"model": p.model})  # counted before the slot is released
            if status in FATAL_STATUS:
                raise TeacherConfigError(
                    f"{self.url} answered HTTP {status} ({text[:200]!r}); "
                    f"check base_url, model and the key in ${p.api_key_env}")
            if status in RETRYABLE_STATUS or status >= 500:
                kind = "rate_limited" if status == 429 else "server_error"
                raise self._retryable(Failure(kind, f"HTTP {status}: {text[:200]!r}"), _retry_after(headers))
            return Failure(f"http_{status}", text[:300])  # 400 and friends: this request will never succeed
        finally:
            self._release()

    def _retryable(self, failure: Failure, retry_after: float | None = None) -> _Retryable:
        self._count_retry(failure.reason)
        return _Retryable(failure, retry_after)

    def _post(self, body: dict[str, Any]) -> tuple[int, str, httpx.Headers]:
        """(status, body text with secrets masked, headers); the whole exchange must finish within timeout_s,
        so a server that trickles bytes cannot hold a request open past its deadline."""
        timeout = self.params.timeout_s
        deadline = time.monotonic() + timeout
        with self._client.stream("POST", self.url, json=body, headers=self._headers) as resp:
            chunks = []
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"reply not complete within {timeout:g} s")
            raw = b"".join(chunks)
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout(f"reply not complete within {timeout:g} s")
        return resp.status_code, redact.redact(raw.decode(resp.encoding or "utf-8", errors="replace")), resp.headers

    def close(self) -> None:
        self._client.close()


def parse_chat_response(payload: dict[str, Any]) -> Completion:
    """The first choice's content and reasoning (DeepSeek `reasoning_content`, vLLM `reasoning`, or <think> tags),
    and the model the reply names."""
    msg = payload["choices"][0]["message"]
    content = msg.get("content") or ""
    if not isinstance(content, str):
        raise TypeError("message.content is not a string")
    reasoning_field = msg.get("reasoning_content") or msg.get("reasoning")
    reasoning, answer = split_think(content, reasoning_field if isinstance(reasoning_field, str) else None)
    usage = payload.get("usage") or {}
    tokens = int(usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)))
    model = payload.get("model")  # what answered, which may differ from the alias asked for
    return Completion(content=answer, reasoning=reasoning, tokens=tokens, model=model if isinstance(model, str) else None)


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


