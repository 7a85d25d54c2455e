"""The judge's (and the API teacher's) request fields follow the model's family, against a loopback server that
refuses the wrong ones as OpenAI does: HTTP 400 with an OpenAI-style error body."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from revlib.data.teachers.api import ApiTeacher, model_family
from revlib.evaluation.judge import LLMJudge
from revlib.params.data import ApiTeacher as ApiTeacherParams

KEY_ENV = "REVLIB_TEST_JUDGE_KEY"
REASONING = {"o1", "o3-mini", "o4-mini", "gpt-5-mini"}  # refuse max_tokens and any temperature but 1


def _error(message: str, param: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


class OpenAILike:
    """A chat-completions endpoint that refuses what the asked model refuses: a reasoning model (REASONING)
    answers 400 to `max_tokens` and to a temperature other than 1; a chat model's server knows only `max_tokens`
    (as older OpenAI-compatible servers do) and answers 400 to `max_completion_tokens`. Every body is recorded."""

    def __init__(self, served_model: str | None = None):
        self.bodies: list[dict] = []
        self.served_model = served_model
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                status, payload = outer.answer(body)
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict) -> tuple[int, dict]:
        model = body["model"]
        if model in REASONING:
            if "max_tokens" in body:
                return 400, _error("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                                   "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
            if body.get("temperature", 1) != 1:
                return 400, _error(f"Unsupported value: 'temperature' does not support {body['temperature']} with "
                                   "this model. Only the default (1) value is supported.", "temperature",
                                   "unsupported_value")
        elif "max_completion_tokens" in body:
            return 400, _error("Unrecognized request argument supplied: max_completion_tokens",
                               "max_completion_tokens", "unknown_parameter")
        return 200, {"id": "c1", "object": "chat.completion", "model": self.served_model or model,
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "YES"}}],
                     "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-not-secret")
    srv = OpenAILike()
    yield srv
    srv.close()


@pytest.mark.parametrize("model", ["o3-mini", "gpt-5-mini"])
def test_the_server_refuses_what_the_old_request_sent_to_a_reasoning_model(server, model):
    old = {"model": model, "messages": [{"role": "user", "content": "q"}], "max_tokens": 4, "temperature": 0.0}
    reply = httpx.post(server.url + "/chat/completions", json=old)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "max_tokens"
    reply = httpx.post(server.url + "/chat/completions",
                       json={**{k: v for k, v in old.items() if k != "max_tokens"}, "max_completion_tokens": 4})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "temperature"


@pytest.mark.parametrize("model, sent, absent", [
    ("gpt-4o-mini", {"max_tokens": 4, "temperature": 0.0}, {"max_completion_tokens"}),  # the paper's judge
    ("o3-mini", {"max_completion_tokens": 4096}, {"max_tokens", "temperature"}),
    ("gpt-5-mini", {"max_completion_tokens": 4096}, {"max_tokens", "temperature"}),
])
def test_judge_request_follows_the_model_family(server, tmp_path, model, sent, absent):
    judge = LLMJudge(server.url, model, KEY_ENV, cache_path=tmp_path / "judge.jsonl", max_retries=0)
    try:
        assert judge.equivalent("What is 6/4?", "1.5", "3/2") == (True, "YES")
    finally:
        judge.close()
    [body] = server.bodies
    assert {k: body[k] for k in sent} == sent and not absent & set(body)


def test_teacher_request_follows_the_model_family(server):
    """The teacher's own max_tokens and temperature, as each family takes them (DeepSeek's reasoner takes
    max_tokens and ignores temperature, so none is sent; a local R1-distill keeps its temperature)."""
    expected = {"o4-mini": ({"max_completion_tokens": 32768}, {"max_tokens", "temperature"}),
                "deepseek-reasoner": ({"max_tokens": 32768}, {"max_completion_tokens", "temperature"}),
                "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": ({"max_tokens": 32768, "temperature": 0.6},
                                                             {"max_completion_tokens"})}
    for model, (sent, absent) in expected.items():
        server.bodies.clear()
        params = ApiTeacherParams(kind="api", base_url=server.url, model=model, api_key_env=KEY_ENV, concurrency=1,
                                  max_retries=0, max_tokens=32768, temperature=0.6)
        teacher = ApiTeacher(params, None)
        try:
            [res] = teacher.chat_many([[{"role": "user", "content": "q"}]])
        finally:
            teacher.close()
        assert res.content == "YES", (model, res)
        [body] = server.bodies
        assert {k: body[k] for k in sent} == sent and not absent & set(body), (model, body)


@pytest.mark.parametrize("model, family", [
    ("gpt-4o-mini", "chat"), ("gpt-4o", "chat"), ("o1", "openai-reasoning"), ("o1-preview", "openai-reasoning"),
    ("o3-mini", "openai-reasoning"), ("o4-mini", "openai-reasoning"), ("gpt-5", "openai-reasoning"),
    ("gpt-5.1", "openai-reasoning"), ("gpt-5-nano", "openai-reasoning"), ("gpt-5-chat-latest", "chat"),
    ("openai/o3-mini", "openai-reasoning"), ("deepseek-reasoner", "deepseek-reasoner"), ("deepseek-chat", "chat"),
    ("deepseek-ai/DeepSeek-R1", "chat"), ("omni-moderation-latest", "chat"),
])
def test_model_family(model, family):
    assert model_family(model) == family
