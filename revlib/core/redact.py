"""One redaction of secret values for every string that can reach a file, a log or the terminal.

Secrets are known by the environment variables params name (`api_key_env`); their values are read
at redaction time, so a key exported after start-up is still covered. Values shorter than
MIN_SECRET_CHARS are ignored: replacing "1" everywhere would wreck the outputs and protect nothing.
"""

from __future__ import annotations

import os
import threading
from typing import Any

MASK = "[REDACTED]"
MIN_SECRET_CHARS = 6

_lock = threading.Lock()
# tokens revlib itself tells users to export (gated Hub datasets), beside every api_key_env params name
_env_names: set[str] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}
_values: set[str] = set()


def register_env(name: str | None) -> None:
    """Treat the value of environment variable `name` as a secret from now on."""
    if name:
        with _lock:
            _env_names.add(name)


def register_params(raw: Any) -> None:
    """Every `api_key_env` named anywhere in a params tree (a pydantic model or plain dicts)."""
    if hasattr(raw, "model_dump"):
        raw = raw.model_dump(mode="json")
    if isinstance(raw, dict):
        for k, v in raw.items():
            if k == "api_key_env" and isinstance(v, str):
                register_env(v)
            else:
                register_params(v)
    elif isinstance(raw, list):
        for v in raw:
            register_params(v)


def secrets() -> list[str]:
    with _lock:
        found = set(_values) | {os.environ.get(n, "") for n in _env_names}
    # longest first, so a key that contains another is masked whole
    return sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: Any) -> Any:
    """`text` with every secret value masked; non-strings pass through."""
    if not isinstance(text, str) or not text:
        return text
    for s in secrets():
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_bytes(data: bytes) -> bytes:
    for s in secrets():
        b = s.encode("utf-8")
        if b in data:
            data = data.replace(b, MASK.encode())
    return data


def redact_obj(obj: Any) -> Any:
    """Strings anywhere in nested dicts, lists and tuples, redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj
