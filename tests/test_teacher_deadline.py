"""timeout_s is a total per-request deadline, and a fully cached re-run needs no API key."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from revlib.data import reverse
from revlib.params import load
from revlib.params.data import ApiTeacher as ApiTeacherParams
from revlib.data.teachers.api import ApiTeacher
from test_teacher_api import KEY_ENV, SMOKE_API, Scripted, _params


@pytest.fixture
def trickle():
    """Sends its headers at once, then a valid reply one byte every 0.1 s."""
    body = json.dumps({"choices": [{"message": {"content": "Answer: 3"}}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_trickling_server_cannot_outlast_the_deadline(trickle, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-deadline-test")
    params = ApiTeacherParams(kind="api", base_url=trickle, model="m", api_key_env=KEY_ENV, timeout_s=1.0,
                              max_retries=0, concurrency=1)
    teacher = ApiTeacher(params, None)
    t0 = time.monotonic()
    [res] = teacher.chat_many([[{"role": "user", "content": "hi"}]])
    took = time.monotonic() - t0
    teacher.close()
    assert getattr(res, "reason", None) == "timeout", res
    assert took < 2.0, f"a 1 s deadline held the request {took:.1f} s"  # the full trickle takes ~5 s


def test_fully_cached_rerun_needs_no_key(params_copy, monkeypatch):
    exp = load(params_copy(SMOKE_API))
    forwards, _ = reverse.forward_pool(exp)
    server = Scripted(forwards)
    try:
        monkeypatch.setenv(KEY_ENV, "sk-cached-rerun")
        params_file = _params(params_copy, server.url)
        first = reverse.build(load(params_file))
        assert not first.rejects
        calls = len(server.calls)
        monkeypatch.delenv(KEY_ENV)
        again = reverse.build(load(params_file))
        assert len(server.calls) == calls  # nothing asked of the server
        assert again.sets == first.sets and again.info["teacher_usage"]["paid_requests"] == 0
    finally:
        server.close()


def test_every_retry_gets_its_own_deadline_and_the_retries_stop(trickle, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-deadline-test")
    params = ApiTeacherParams(kind="api", base_url=trickle, model="m", api_key_env=KEY_ENV, timeout_s=0.5,
                              max_retries=2, backoff_s=0.0, concurrency=1)
    teacher = ApiTeacher(params, None)
    t0 = time.monotonic()
    [res] = teacher.chat_many([[{"role": "user", "content": "hi"}]])
    took = time.monotonic() - t0
    teacher.close()
    assert res.reason == "timeout" and res.detail.startswith("after 3 attempts"), res
    assert teacher.usage.attempts == 3 and teacher.usage.retries == {"timeout": 3}
    assert 1.5 <= took < 3.0, f"three 0.5 s deadlines took {took:.1f} s"
