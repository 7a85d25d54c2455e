"""The API teacher against a loopback chat-completions server that replays scripted answers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from revlib.data import reverse
from revlib.params import load
from revlib.tasks import get_task
from revlib.data.teachers import TeacherConfigError, parse_reverse_question, split_think
from revlib.data.teachers.cache import ResponseCache

REPO = Path(__file__).resolve().parent.parent
SMOKE_API = REPO / "params" / "smoke" / "data-api.yaml"
KEY_ENV = "REVLIB_SMOKE_API_KEY"


class Scripted:
    """A chat-completions endpoint answering with the arith oracle, unless a script says otherwise.

    `script[(round, index)]` is a list of actions consumed one per request for that forward example
    (round "A" writes the reverse question, "B" answers it): 429, 500, timeout, malformed, wrong,
    leak, think (reasoning in <think> tags), hang. `hang_after` makes every request after that many
    successful answers hang until `release` is set.
    """

    def __init__(self, forwards, timeout_sleep=1.0):
        fam = get_task("arith")
        self.by_forward = {f.question: (i, f, fam.invert(f)) for i, f in enumerate(forwards)}
        self.by_reverse = {r.question: (i, f, r) for i, f, r in self.by_forward.values()}
        self.script: dict[tuple[str, int], list[str]] = {}
        self.timeout_sleep = timeout_sleep
        self.ok = Counter()  # prompt digest -> successful (paid) answers served
        self.calls: list[tuple[str, int, str]] = []
        self.auth: set[str] = set()
        self.hang_after: int | None = None
        self.served_model: str | None = None  # the model string replies name; None: the one asked for
        self.release = threading.Event()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.auth.add(self.headers.get("Authorization", ""))
                try:
                    outer.handle(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _send(self, h, status, payload):
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def handle(self, h, body):
        prompt = body["messages"][-1]["content"]
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        m = re.search(r"Forward question:\n(.*?)\n\nForward final answer:", prompt, re.S)
        if m:
            rnd, (index, fwd, rev) = "A", self.by_forward[m.group(1)]
        else:
            rnd, (index, fwd, rev) = "B", self.by_reverse[prompt.split("\n\nThink step by step")[0].split(" (Hint:")[0].strip()]
        with self.lock:
            queue = self.script.get((rnd, index), [])
            action = queue.pop(0) if queue else "ok"
            if self.hang_after is not None and sum(self.ok.values()) >= self.hang_after:
                action = "hang"
            self.calls.append((rnd, index, action))
        if action == "hang":
            self.release.wait(20)
            return self._send(h, 503, {"error": "released"})
        if action == "429":
            return self._send(h, 429, {"error": {"message": "rate limited"}})
        if action == "500":
            return self._send(h, 500, {"error": {"message": "boom"}})
        if action == "timeout":
            time.sleep(self.timeout_sleep)
            return self._send(h, 500, {"error": "too late"})
        if action == "malformed":
            return self._send(h, 200, b'{"choices": [{"message": ')
        if rnd == "A":
            question = rev.question
            if action == "leak":
                question = f"{rev.question} (Hint: the start was {rev.gold}.)"
            content, reasoning = (f"<reverse_question>{question}</reverse_question>\n<target>{rev.gold}</target>",
                                  "I will ask for the start.")
        else:
            answer = str(int(rev.gold) + 1) if action == "wrong" else rev.gold
            content, reasoning = f"Undo each step.\nAnswer: {answer}", rev.reasoning
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        if action == "think":
            message = {"role": "assistant", "content": f"<think>{reasoning}</think>{content}"}
        with self.lock:
            self.ok[digest] += 1
        self._send(h, 200, {"id": "x", "object": "chat.completion", "model": self.served_model or body["model"],
                            "choices": [{"index": 0, "message": message}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})


def _params(params_copy, url, **teacher):
    raw = yaml.safe_load(SMOKE_API.read_text())
    raw["data"]["teacher"].update({"base_url": url, "timeout_s": 0.5, **teacher})
    return params_copy(raw)


@pytest.fixture
def server(params_copy):
    exp = load(params_copy(SMOKE_API))
    forwards, _ = reverse.forward_pool(exp)
    srv = Scripted(forwards)
    yield srv
    srv.close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-not-secret")


def test_failures_are_retried_or_rejected_with_reasons(server, params_copy, api_key):
    server.script = {("A", 0): ["429"], ("A", 1): ["500", "500"], ("B", 2): ["timeout"], ("B", 3): ["think"],
                     ("A", 4): ["malformed"] * 10, ("B", 5): ["wrong"], ("A", 6): ["leak"]}
    exp = load(_params(params_copy, server.url))
    built = reverse.build(exp)
    by_pair = {r["pair_id"]: r["reason"] for r in built.rejects}
    forwards, _ = reverse.forward_pool(exp)
    reason = [by_pair.get(f.pair_id) for f in forwards]
    assert reason[:7] == [None, None, None, None, "malformed_response", "answer_mismatch", "question_states_answer"]
    assert all(r is None for r in reason[7:])
    usage = built.info["teacher_usage"]
    assert usage["retries"]["rate_limited"] == 1 and usage["retries"]["server_error"] == 2
    assert usage["retries"]["timeout"] == 1 and usage["retries"]["malformed_response"] == 4  # 1 + max_retries
    kept = {r.pair_id: r for name in ("reverse", "test_reverse", "probe_reverse", "probe_test_reverse")
            for r in built.sets[name]}
    assert kept[forwards[3].pair_id].reasoning  # reasoning taken from <think> tags
    assert kept[forwards[0].pair_id].reasoning == get_task("arith").invert(forwards[0]).reasoning
    assert server.auth == {"Bearer sk-test-not-secret"}
    # a re-run is served from the cache: only the example that never got a usable answer is asked again
    before = len(server.calls)
    again = reverse.build(exp)
    assert {(rnd, i) for rnd, i, _ in server.calls[before:]} == {("A", 4)}
    assert again.sets == built.sets and max(server.ok.values()) == 1


def test_killed_run_resumes_without_paying_twice(server, params_copy, api_key, tmp_path):
    params_file = _params(params_copy, server.url, concurrency=2, max_retries=0)
    exp = load(params_file)
    server.hang_after = 5
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from revlib import params; from revlib.data import reverse; "
                             "reverse.build(params.load(sys.argv[1]))", str(params_file)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cache_dir = exp.run_root / "teacher_cache"
    deadline = time.time() + 60
    while time.time() < deadline:
        files = list(cache_dir.glob("*.jsonl"))
        if files and len(ResponseCache(files[0])) >= 5:
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.1)
    else:
        pytest.fail("the first run never cached 5 answers")
    proc.kill()
    proc.wait()
    assert sum(server.ok.values()) == 5
    server.hang_after = None
    server.release.set()
    built = reverse.build(load(_params(params_copy, server.url, concurrency=2)))
    assert max(server.ok.values()) == 1, "a finished request was paid for twice"
    assert built.info["teacher_usage"]["cache_hits"] == 5
    assert not built.rejects and len(built.sets["reverse"]) == exp.data.n_train


def test_budget_stops_cleanly_and_the_next_run_resumes(server, params_copy, api_key):
    exp = load(_params(params_copy, server.url, budget_requests=7))
    built = reverse.build(exp)
    usage = built.info["teacher_usage"]
    assert usage["paid_requests"] == 7
    reasons = Counter(r["reason"] for r in built.rejects)
    assert set(reasons) == {"budget_exhausted"} and reasons["budget_exhausted"] > 0
    total = sum(len(built.sets[k]) for k in ("reverse", "test_reverse", "probe_reverse", "probe_test_reverse"))
    assert total + len(built.rejects) == 12  # every forward example is accounted for
    resumed = reverse.build(load(_params(params_copy, server.url, budget_requests=None)))
    assert resumed.info["teacher_usage"]["cache_hits"] == 7
    assert not resumed.rejects and max(server.ok.values()) == 1


def test_the_model_each_reply_names_is_recorded(server, params_copy, api_key, tmp_path):
    """An alias answered by another model (deepseek-reasoner is no longer R1) shows on 01's page and in its
    metrics, for fresh answers and for answers read back from the cache."""
    from revlib.stages.reverse_data import DataRun

    server.served_model = "deepseek-v3.2-thinking"
    exp = load(_params(params_copy, server.url))
    built = reverse.build(exp)
    answers = sum(server.ok.values())
    assert answers > 0 and built.info["teacher_models"] == {"asked": "scripted-r1",
                                                            "named_by_replies": {"deepseek-v3.2-thinking": answers}}
    run = DataRun(built, reverse.write(built, tmp_path / "01"), exp.data)
    assert run.metrics["teacher_models"] == {"deepseek-v3.2-thinking": answers}
    table = run.teacher_models_table()
    assert table.to_dict("records") == [{"asked for": "scripted-r1", "named by the reply": "deepseek-v3.2-thinking",
                                         "answers": answers}]
    again = reverse.build(exp)  # all from the cache: the names come back with the answers
    assert again.info["teacher_usage"]["cache_hits"] == answers and again.info["teacher_usage"]["paid_requests"] == 0
    assert again.info["teacher_models"]["named_by_replies"] == {"deepseek-v3.2-thinking": answers}


def test_missing_key_and_rejected_credentials_stop_with_a_clear_error(server, params_copy, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(TeacherConfigError, match=KEY_ENV):
        reverse.build(load(_params(params_copy, server.url)))


def test_reply_parsing():
    assert split_think("<think>a\nb</think>\nAnswer: 3") == ("a\nb", "Answer: 3")
    assert split_think("Answer: 3", "field reasoning") == ("field reasoning", "Answer: 3")
    assert split_think("<think>cut off while thinking") == ("cut off while thinking", "")
    assert parse_reverse_question("<reverse_question> Q? </reverse_question><target>7</target>") == ("Q?", "7")
    assert parse_reverse_question("just prose") is None


def test_cache_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = ResponseCache(path)
    cache.put("k1", {"content": "a", "reasoning": "r"})
    with open(path, "a") as f:
        f.write('{"key": "k2", "content": "half')  # killed mid-write
    reopened = ResponseCache(path)
    assert "k1" in reopened and "k2" not in reopened and reopened.torn_lines == 1
    reopened.put("k3", {"content": "b", "reasoning": "r"})
    assert "k3" in ResponseCache(path) and "k1" in ResponseCache(path)


@pytest.mark.notebook
def test_api_key_never_written_under_outputs(server, params_copy, monkeypatch, tmp_path):
    """Run notebook 01 through the runner with a recognisable key and scan every output file for it."""
    from revlib.lab import runner

    key = "sk-REVLIB-CANARY-7f3a9c1e5b"
    monkeypatch.setenv(KEY_ENV, key)
    server.script = {("A", 0): ["429"], ("B", 1): ["500"]}  # error paths must not leak it either
    params_file = _params(params_copy, server.url)
    exp = load(params_file)
    results = runner.run(exp, params_file, only=["01_reverse_data"])
    assert results[-1]["status"] == "done"
    assert server.auth == {f"Bearer {key}"}  # the key was really used
    outputs = Path(exp.output_dir)
    scanned = [p for p in outputs.rglob("*") if p.is_file()]
    assert any(p.name == "rejects.jsonl" for p in scanned) and any(p.suffix == ".html" for p in scanned)
    assert any("teacher_cache" in p.parts for p in scanned)
    leaks = [str(p) for p in scanned if key.encode() in p.read_bytes()]
    assert not leaks, f"API key written to {leaks}"


def _mock_teacher(replies, monkeypatch, **params):
    """An ApiTeacher on httpx's MockTransport: `replies` are (status, headers, body) answered in order."""
    import httpx

    from revlib.data.teachers.api import ApiTeacher
    from revlib.params.data import ApiTeacher as ApiTeacherParams

    monkeypatch.setenv(KEY_ENV, "sk-mock-not-secret")
    queue, sleeps = list(replies), []

    def handler(request):
        status, headers, body = queue.pop(0)
        return httpx.Response(status, headers=headers, json=body)

    p = ApiTeacherParams(kind="api", base_url="http://teacher.local/v1", model="m", api_key_env=KEY_ENV,
                         concurrency=1, **params)
    return ApiTeacher(p, None, sleep=sleeps.append, transport=httpx.MockTransport(handler)), queue, sleeps


OK_REPLY = (200, {}, {"choices": [{"message": {"content": "Answer: 3"}}], "usage": {"total_tokens": 7}})


def test_backoff_doubles_to_its_cap_with_jitter_and_retry_after_wins(monkeypatch):
    replies = [(500, {}, {}), (429, {"Retry-After": "30"}, {}), (503, {}, {}), (408, {}, {}), OK_REPLY]
    teacher, queue, sleeps = _mock_teacher(replies, monkeypatch, max_retries=6, backoff_s=1.0, max_backoff_s=3.0)
    [res] = teacher.chat_many([[{"role": "user", "content": "q"}]])
    assert res.content == "Answer: 3" and res.tokens == 7 and not queue
    assert len(sleeps) == 4 and sleeps[1] == 30.0  # the server's Retry-After beats the 2 s backoff
    for got, base in zip([sleeps[0], sleeps[2], sleeps[3]], [1.0, 3.0, 3.0]):  # 1, (2), 4 -> 3, 8 -> 3
        assert base <= got <= 1.1 * base
    u = teacher.usage
    assert (u.attempts, u.requests, u.tokens) == (5, 1, 7)
    assert u.retries == {"server_error": 3, "rate_limited": 1}


def test_retries_stop_after_max_retries_and_final_errors_are_not_retried(monkeypatch):
    teacher, queue, sleeps = _mock_teacher([(502, {}, {"error": "x"})] * 3 + [OK_REPLY], monkeypatch,
                                           max_retries=2, backoff_s=0.5)
    [res] = teacher.chat_many([[{"role": "user", "content": "q"}]])
    assert res.reason == "server_error" and res.detail.startswith("after 3 attempts: HTTP 502")
    assert len(queue) == 1 and len(sleeps) == 2 and teacher.usage.retries == {"server_error": 3}
    teacher, queue, sleeps = _mock_teacher([(400, {}, {"error": "bad"}), OK_REPLY], monkeypatch, max_retries=3)
    [res] = teacher.chat_many([[{"role": "user", "content": "q"}]])
    assert res.reason == "http_400" and len(queue) == 1 and sleeps == [] and teacher.usage.retries == {}
    teacher, queue, sleeps = _mock_teacher([(401, {}, {"error": "no"}), OK_REPLY], monkeypatch, max_retries=3)
    with pytest.raises(TeacherConfigError, match="HTTP 401"):
        teacher.chat_many([[{"role": "user", "content": "q"}]])
    assert len(queue) == 1 and sleeps == [] and teacher._in_flight == 0
    # a spent budget ends the retries at once, without sleeping on them
    teacher, queue, sleeps = _mock_teacher([(500, {}, {})] * 3, monkeypatch, max_retries=5, budget_requests=1)
    teacher.usage.requests = 1
    [res] = teacher.chat_many([[{"role": "user", "content": "q"}]])
    assert res.reason == "budget_exhausted" and len(queue) == 3 and sleeps == []
