"""Append-only on-disk cache of teacher responses, keyed by teacher and prompt.

A response is appended (and fsynced) before the caller sees it, so a crash, a kill or an
exhausted budget followed by a re-run never pays for the same request twice. A line cut
short by a kill is ignored on reading; it is re-requested because it never reached disk whole.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from revlib.core import io, redact


def cache_key(identity: dict[str, Any], messages: list[dict[str, str]]) -> str:
    """Stable key of one request: who answers (model and sampling settings) and the exact messages."""
    return io.sha256_text(json.dumps({"teacher": identity, "messages": messages}, sort_keys=True, ensure_ascii=False))


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self.torn_lines = 0
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self._entries[row["key"]] = row
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.torn_lines += 1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Append one response durably; only then is it visible to readers."""
        row = redact.redact_obj({"key": key, **response})
        line = json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n"
        with self._lock:
            # a torn last line from a killed run would glue onto ours: start on a fresh line
            needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(("\n" if needs_newline else "") + line)
                f.flush()
                os.fsync(f.fileno())
            self._entries[key] = row


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
