"""Forward sources: s1K / s1K-1.1 and the r1k paper's published format, from the Hub or a local file.

Both read through `datasets.load_dataset`: a Hub id, or the same schema in a local parquet/JSONL
file (`load_dataset("parquet", data_files=...)`), so the code that reads `../shared/data/` is
the code that reads the Hub copy.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from revlib.core import render
from revlib.core.records import Record

_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}

# s1K-1.1 keeps both traces; s1K (1.0) has only Gemini's, as `thinking_trajectories` (a list) and `attempt`.
TRACE_COLUMNS = {
    "deepseek": [("deepseek_thinking_trajectory", "deepseek_attempt")],
    "gemini": [("gemini_thinking_trajectory", "gemini_attempt"), ("thinking_trajectories", "attempt")],
}
R1K_COLUMNS = ("question", "relevant-question", "text", "worse-text", "sample_type")


def load_rows(dataset: str | None, path: Path | None, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a Hub dataset or of a local file with the same schema, through the same `load_dataset` call."""
    from datasets import load_dataset

    if path is not None:
        fmt = _FORMATS.get(Path(path).suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: unsupported file type; use one of {sorted(_FORMATS)}")
        ds = load_dataset(fmt, data_files={split: str(path)}, split=split)
    elif dataset:
        ds = load_dataset(dataset, split=split)
    else:
        raise ValueError("a source needs a Hub dataset id or a local path")
    return ds.to_list()


def stable_pair_id(prefix: str, question: str) -> str:
    """Derived from the forward question, so ids do not depend on row order or on which file holds the example."""
    return f"{prefix}-{hashlib.sha256(question.strip().encode('utf-8')).hexdigest()[:12]}"


class RowError(ValueError):
    """One source row that cannot become an example: its reason (a short category) and a detail."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def field_text(row: dict[str, Any], column: str, allow_list: bool = False) -> str:
    """A required text field: present, a string (or a list of strings where the schema has one), not blank.

    Other types are rejected, not coerced: an integer question is a broken row, not the question "12345"."""
    value = row.get(column)
    if value is None:
        raise RowError("missing_field", f"{column!r} is missing or null")
    if allow_list and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = "\n\n".join(v for v in value if v)
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{column!r} is {type(value).__name__}, not text")
    if not value.strip():
        raise RowError("empty_field", f"{column!r} is empty")
    return value.strip()


def normalised_question(question: str) -> str:
    return " ".join(question.lower().split())


def row_reject(source: str, index: int, err: RowError, **extra: Any) -> dict[str, Any]:
    """A rejects.jsonl entry for a source row (row = 0-based position in the file)."""
    return {"source": source, "row": index, "reason": err.reason, "detail": err.detail, "pair_id": None,
            "forward": None, "reverse": None, **extra}


def _collect(rejects: list[dict[str, Any]] | None, source: str, index: int, err: RowError) -> None:
    if rejects is None:  # strict callers get the first bad row as an error
        raise ValueError(f"{source}: row {index}: {err}") from None
    rejects.append(row_reject(source, index, err))


def s1k_forward(rows: list[dict[str, Any]], trace: str = "deepseek", source: str = "s1k",
                rejects: list[dict[str, Any]] | None = None) -> list[Record]:
    """Forward records from s1K rows: x_f = question, reasoning and answer from the chosen trace, gold = solution.

    A bad row (a field missing, empty or not text, a repeated question) goes to `rejects` with its row
    number and reason; without a `rejects` list the first bad row is an error."""
    if not rows:
        raise ValueError(f"{source}: no rows")
    cols = set().union(*(set(r) for r in rows[:50]))
    pick = next(((r, a) for r, a in TRACE_COLUMNS[trace] if r in cols and a in cols), None)
    missing = [c for c in ("question", "solution") if c not in cols]
    if pick is None or missing:
        want = " or ".join(f"{r}+{a}" for r, a in TRACE_COLUMNS[trace])
        raise ValueError(f"{source}: not the s1K schema for trace {trace!r}: need question, solution and {want}; "
                         f"have {sorted(cols)}")
    r_col, a_col = pick
    out: list[Record] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        try:
            question = field_text(row, "question")
            gold = field_text(row, "solution")
            reasoning = field_text(row, r_col, allow_list=True)
            answer = field_text(row, a_col, allow_list=True)
            norm = normalised_question(question)
            if norm in seen:
                raise RowError("duplicate_question", f"same question as row {seen[norm]}")
        except RowError as err:
            _collect(rejects, source, index, err)
            continue
        seen[norm] = index
        pair_id = stable_pair_id("s1k", question)
        out.append(Record(
            id=f"{pair_id}-f", pair_id=pair_id, direction="forward", task="s1k", question=question,
            reasoning=reasoning, answer=answer, gold=gold,
            meta={"source": source, "row": index, "trace": trace, "cot_type": row.get("cot_type"),
                  "source_type": row.get("source_type")},
        ))
    return out


_ASSISTANT = "<|im_start|>assistant\n"


def parse_chat_text(text: str) -> tuple[str, str, str]:
    """(user question, reasoning, answer) from a rendered Qwen chat string in the s1 think/answer format."""
    if _ASSISTANT not in text:
        raise ValueError("no assistant turn in the rendered chat text")
    head, completion = text.rsplit(_ASSISTANT, 1)
    user = re.search(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", head, re.S)
    completion = completion.split("<|im_end|>")[0]
    reasoning, answer = render.split_answer(completion)
    return (user.group(1).strip() if user else ""), reasoning, answer


def r1k_twins(rows: list[dict[str, Any]], source: str = "r1k",
              rejects: list[dict[str, Any]] | None = None) -> list[tuple[Record, Record]]:
    """(forward, reverse) twins from the r1k published format, linked by pair_id.

    An `original` row holds x_f in `question`, y_f in `text` and y_r in `worse-text`; a `flipped` row
    holds x_r in `relevant-question`, y_r in `text` and y_f in `worse-text` (its `question` is still
    x_f). Each response is taken from the row whose `text` holds it; a twin seen only from one side is
    completed from that row's `worse-text`. A bad row goes to `rejects` with its row number and reason
    (without a `rejects` list it is an error); the other rows still make twins.
    """
    if not rows:
        raise ValueError(f"{source}: no rows")
    cols = set().union(*(set(r) for r in rows[:50]))
    missing = [c for c in R1K_COLUMNS if c not in cols]
    if missing:
        raise ValueError(f"{source}: not the r1k published format; missing columns {missing}")
    sides: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        try:
            kind = row.get("sample_type")
            if kind not in ("original", "flipped"):
                raise RowError("bad_sample_type", f"sample_type {kind!r} is neither 'original' nor 'flipped'")
            x_f, x_r = field_text(row, "question"), field_text(row, "relevant-question")
            key = (normalised_question(x_f), kind)
            if key in seen:
                raise RowError("duplicate_question", f"same question and sample_type as row {seen[key]}")
            own_resp = _parse(row, "text")
            other_resp = _parse(row, "worse-text")
            pair_id = stable_pair_id("r1k", x_f)
            if pair_id in sides and sides[pair_id]["x_r"] != x_r:
                raise RowError("twin_conflict", f"reverse question differs from row {sides[pair_id]['row']}'s "
                                                "for the same forward question")
        except RowError as err:
            _collect(rejects, source, index, err)
            continue
        seen[key] = index
        if pair_id not in sides:
            sides[pair_id] = {"x_f": x_f, "x_r": x_r, "row": index}
            order.append(pair_id)
        entry = sides[pair_id]
        own, other = ("forward", "reverse") if kind == "original" else ("reverse", "forward")
        entry[own] = (own_resp, row, index, "text")
        entry.setdefault(f"{other}_alt", (other_resp, row, index, "worse-text"))
    twins = []
    for pair_id in order:
        e = sides[pair_id]
        f_resp, f_row, f_index, f_col = e.get("forward") or e["forward_alt"]
        r_resp, r_row, r_index, r_col = e.get("reverse") or e["reverse_alt"]
        base_meta = {"source": source, "cot_type": f_row.get("cot_type"), "source_type": f_row.get("source_type")}
        solution = f_row.get("solution")
        gold = solution.strip() if isinstance(solution, str) and solution.strip() else f_resp[2]
        fwd = Record(id=f"{pair_id}-f", pair_id=pair_id, direction="forward", task="r1k", question=e["x_f"],
                     reasoning=f_resp[1], answer=f_resp[2], gold=gold,
                     meta={**base_meta, "row": f_index, "column": f_col})
        # the published reverse twins carry no reference answer: the teacher's answer is their gold
        rev = Record(id=f"{pair_id}-r", pair_id=pair_id, direction="reverse", task="r1k", question=e["x_r"],
                     reasoning=r_resp[1], answer=r_resp[2], gold=r_resp[2],
                     meta={**base_meta, "row": r_index, "column": r_col, "gold_from": "teacher"})
        twins.append((fwd, rev))
    return twins


def _parse(row: dict[str, Any], column: str) -> tuple[str, str, str]:
    text = field_text(row, column)
    try:
        parsed = parse_chat_text(text)
    except ValueError as err:
        raise RowError("unparseable_response", f"{column!r}: {err}") from None
    if not parsed[1].strip() or not parsed[2].strip():
        raise RowError("empty_response", f"{column!r} holds no reasoning or no answer")
    return parsed
