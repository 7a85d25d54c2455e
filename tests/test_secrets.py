"""Secrets never get out: a server that echoes the API key in 401, 500 and 200 bodies leaves no trace of it
in the run directory, the teacher cache, the rejects, the executed notebook, its HTML, the index or the CLI output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revlib.data import reverse
from revlib.core import redact
from revlib.params import load
from revlib.data.teachers import TeacherConfigError
from test_teacher_api import KEY_ENV, REPO, SMOKE_API, Scripted, _params

KEY = "sk-ECHO-CANARY-4d1f0b9e2a77"


class Echoing(Scripted):
    """Every body repeats the Authorization header it got: errors in their message, answers in their reasoning."""

    def __init__(self, forwards):
        super().__init__(forwards)
        self.unauthorised = False

    def handle(self, h, body):
        if self.unauthorised:
            return self._send(h, 401, {"error": {"message": f"invalid key: Bearer {KEY} is not allowed"}})
        return super().handle(h, body)

    def _send(self, h, status, payload):
        if isinstance(payload, dict):
            payload = json.loads(json.dumps(payload))
            if status == 200:
                msg = payload["choices"][0]["message"]
                msg["reasoning_content"] = (msg.get("reasoning_content") or "") + f"\n(you called with {KEY})"
            else:
                payload = {"error": {"message": f"request with key {KEY} failed", "was": payload}}
        return super()._send(h, status, payload)


@pytest.fixture
def echo(params_copy):
    exp = load(params_copy(SMOKE_API))
    forwards, _ = reverse.forward_pool(exp)
    srv = Echoing(forwards)
    yield srv
    srv.close()


def _leaks(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def test_redact_masks_registered_values(monkeypatch):
    monkeypatch.setenv("REVLIB_TEST_SECRET_ENV", "abcdef-123456")
    redact.register_env("REVLIB_TEST_SECRET_ENV")
    assert redact.redact("x abcdef-123456 y") == f"x {redact.MASK} y"
    assert redact.redact_obj({"a": ["abcdef-123456"]}) == {"a": [redact.MASK]}
    assert redact.redact_bytes(b"abcdef-123456") == redact.MASK.encode()
    monkeypatch.setenv("HF_TOKEN", "hf_exampleTokenValue123")  # the gated-dataset token, without registering it
    assert redact.redact("token hf_exampleTokenValue123") == f"token {redact.MASK}"
    monkeypatch.setenv("REVLIB_TEST_SECRET_ENV", "1")  # too short to be a key: nothing is masked
    assert redact.redact("a 1 b") == "a 1 b"


def test_teacher_errors_and_answers_never_carry_the_key(echo, params_copy, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    echo.script = {("A", 0): ["500"], ("B", 1): ["500"] * 10}
    exp = load(_params(params_copy, echo.url, max_retries=1))
    built = reverse.build(exp)
    assert echo.auth == {f"Bearer {KEY}"}
    text = json.dumps([r.model_dump() for recs in built.sets.values() for r in recs]) + json.dumps(built.rejects)
    assert KEY not in text and redact.MASK in text
    assert [r["reason"] for r in built.rejects] == ["server_error"]
    assert not _leaks(Path(exp.output_dir))
    echo.unauthorised = True
    with pytest.raises(TeacherConfigError) as err:
        reverse.build(load(_params(params_copy, echo.url, max_retries=0, cache_dir=str(exp.run_root / "other_cache"))))
    assert "401" in str(err.value) and KEY not in str(err.value) and redact.MASK in str(err.value)


@pytest.mark.notebook
def test_echoed_key_in_no_file_and_no_cli_output(echo, params_copy, tmp_path):
    """401, 500 and 200 bodies echo the key; the run directory and the terminal never show it."""
    import os

    env = {**os.environ, KEY_ENV: KEY, "HF_HUB_OFFLINE": "1"}
    echo.script = {("A", 0): ["500"], ("B", 1): ["429"]}
    params_file = _params(params_copy, echo.url)
    exp = load(params_file)
    cli = [sys.executable, "-m", "revlib.lab.cli"]
    ok = subprocess.run(cli + ["run", str(params_file)], capture_output=True, text=True, cwd=REPO, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert echo.auth == {f"Bearer {KEY}"}
    # the same experiment, now rejected with a 401 that repeats the key: the cell fails and reports it
    echo.unauthorised = True
    fresh = _params(params_copy, echo.url, cache_dir=str(tmp_path / "cache401"))
    bad = subprocess.run(cli + ["run", str(fresh), "--force"], capture_output=True, text=True, cwd=REPO, env=env)
    assert bad.returncode == 1 and "401" in bad.stdout + bad.stderr
    st = subprocess.run(cli + ["status", str(exp.run_root)], capture_output=True, text=True, cwd=REPO, env=env)
    run_dir = exp.run_root / "01_reverse_data" / "data"
    nb = (run_dir / "01_reverse_data.ipynb").read_text()
    assert "TeacherConfigError" in nb and "HTTP 401" in nb  # the error is shown, only the key is masked
    assert (exp.run_root / "index.html").exists() and (run_dir / "01_reverse_data.html").exists()
    assert not _leaks(tmp_path), "API key written under the run directory"
    for out in (ok, bad, st):
        assert KEY not in out.stdout + out.stderr
