"""Source rows are validated like reverse examples: bad rows go to rejects.jsonl with their row number and reason,
the run goes on, and the stage stops only when fewer examples survive than params ask for, naming each short set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from revlib.data import reverse, sources
from revlib.params import load

REPO = Path(__file__).resolve().parent.parent
R1K_FILE = REPO.parent / "shared" / "data" / "r1k-probe-100.parquet"
pytestmark = pytest.mark.skipif(not R1K_FILE.exists(), reason="needs ../shared/data beside the repository")


def _r1k_rows() -> list[dict]:
    frame = pd.read_parquet(R1K_FILE, columns=["question", "relevant-question", "text", "worse-text", "sample_type",
                                                "solution", "cot_type", "source_type"])
    return json.loads(frame.to_json(orient="records"))


def _broken_r1k(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """The published sample with one fault per chosen row; returns the file and {row: expected reason}."""
    rows = _r1k_rows()
    originals = [i for i, r in enumerate(rows) if r["sample_type"] == "original"]
    faults = {}

    def hit(k, reason, change):
        i = originals[k]
        change(rows[i])
        faults[i] = reason

    hit(0, "missing_field", lambda r: r.pop("question"))
    hit(1, "missing_field", lambda r: r.update(question=None))
    hit(2, "wrong_type", lambda r: r.update(question=12345))
    hit(3, "empty_field", lambda r: r.update(text=""))
    hit(4, "bad_sample_type", lambda r: r.update(sample_type="sideways"))
    hit(5, "unparseable_response", lambda r: r.update(text="no chat turns here"))
    long_trace = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n" + "x" * 255_000 + \
        "\n<|im_start|>answer\nAnswer: 1<|im_end|>"
    hit(6, "forward_reasoning_too_long", lambda r: r.update(text=long_trace))
    dup = dict(rows[originals[7]])
    rows.append(dup)
    faults[len(rows) - 1] = "duplicate_question"
    path = tmp_path / "broken-r1k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path, faults


def _params(params_copy, path: Path, **sizes) -> Path:
    raw = {"experiment": "rows", "stages": ["01_reverse_data"], "base_models": [{"name": "m", "preset": "micro"}],
           "data": {"source": {"kind": "r1k", "path": str(path)}, "teacher": {"kind": "oracle"},
                    "n_train": 20, "n_test": 5, "probe_train": 5, "probe_test": 5, **sizes}}
    return params_copy(raw)


def test_bad_r1k_rows_are_rejected_with_row_and_reason(params_copy, tmp_path):
    path, faults = _broken_r1k(tmp_path)
    exp = load(_params(params_copy, path))
    built = reverse.build(exp)
    reverse.require_sizes(built, exp.data)  # enough survived: the stage goes on
    by_row = {r["row"]: r["reason"] for r in built.rejects}
    for row, reason in faults.items():
        assert by_row.get(row) == reason, (row, reason, by_row)
    stats = reverse.write(built, tmp_path / "out")
    on_disk = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {(r["row"], r["reason"]) for r in on_disk} >= set(faults.items())
    assert stats["rejects_by_reason"]["missing_field"] == 2
    every = [r for recs in built.sets.values() for r in recs]
    assert all(r.question.strip() for r in every)
    assert not any(r.question == "12345" for r in every)
    assert max(len(r.reasoning) for r in every) <= exp.data.max_reasoning_chars
    questions = [r.question for r in built.sets["forward"] + built.sets["test_forward"]]
    assert len(questions) == len(set(questions))


def test_s1k_rows_need_a_gold_answer_and_text_fields():
    rows = [{"question": "Q1", "solution": "", "deepseek_thinking_trajectory": "t", "deepseek_attempt": "a"},
            {"question": "Q2", "solution": "7", "deepseek_thinking_trajectory": "t", "deepseek_attempt": "a"},
            {"question": " q2 ", "solution": "7", "deepseek_thinking_trajectory": "t", "deepseek_attempt": "a"},
            {"question": 12345, "solution": "7", "deepseek_thinking_trajectory": "t", "deepseek_attempt": "a"},
            {"question": "Q5", "solution": "7", "deepseek_thinking_trajectory": None, "deepseek_attempt": "a"}]
    rejects: list[dict] = []
    kept = sources.s1k_forward(rows, "deepseek", source="f.jsonl", rejects=rejects)
    assert [r.question for r in kept] == ["Q2"]
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (0, "empty_field"), (2, "duplicate_question"), (3, "wrong_type"), (4, "missing_field")]
    assert all(r["source"] == "f.jsonl" and r["detail"] for r in rejects)
    with pytest.raises(ValueError, match="row 0: empty_field"):  # without a rejects list: an error naming the row
        sources.s1k_forward(rows, "deepseek")


def test_shortfall_names_every_short_set(params_copy, tmp_path):
    path, _ = _broken_r1k(tmp_path)
    exp = load(_params(params_copy, path, n_train=35))  # 50 asked: passes the check-time pool count  # 50 twins; broken originals are completed from their flipped row, the over-long one is lost
    built = reverse.build(exp)
    with pytest.raises(reverse.DataShortfall) as err:
        reverse.require_sizes(built, exp.data)
    msg = str(err.value)
    assert "n_train (forward, reverse, half_mix, mix): 34 of 35" in msg
    assert "n_test" not in msg  # held-out groups are filled first and are complete
    assert "missing_field x2" in msg


def test_zero_survivors_name_the_reason(params_copy):
    exp = load(params_copy(REPO / "params" / "smoke" / "data.yaml",
                           data=yaml.safe_load((REPO / "params" / "smoke" / "data.yaml").read_text())["data"]
                           | {"max_reasoning_chars": 5}))
    built = reverse.build(exp)
    assert not built.sets["forward"] and Counter(r["reason"] for r in built.rejects) == {
        "forward_reasoning_too_long": sum(exp.data.group_sizes().values())}
    with pytest.raises(reverse.DataShortfall, match="no example survived validation.*forward_reasoning_too_long"):
        reverse.require_sizes(built, exp.data)


@pytest.mark.notebook
def test_a_teacher_that_never_answers_well_gets_a_report(params_copy):
    """HTML pages, empty choices and cut-off bodies: notebook 01 shows the rejects and stops with a clear message."""
    import itertools
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from revlib.lab import runner
    from revlib.lab.manifest import read_manifest

    bodies = itertools.cycle([b"<html><body>Bad gateway</body></html>", b'{"choices": []}', b'{"choices": [{"mess'])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = next(bodies)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        raw = yaml.safe_load((REPO / "params" / "smoke" / "data-api.yaml").read_text())
        raw["data"]["teacher"].update(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key_env=None,
                                      max_retries=1, backoff_s=0.01)
        params_file = params_copy(raw)
        exp = load(params_file)
        with pytest.raises(runner.CellFailed, match="no example survived validation"):
            runner.run(exp, params_file, only=["01_reverse_data"])
    finally:
        server.shutdown()
        server.server_close()
    run_dir = exp.run_root / "01_reverse_data" / "data"
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "failed" and "DataShortfall" in manifest["error"]
    assert "malformed_response" in manifest["error"] and "KeyError" not in manifest["error"]
    report = (run_dir / "01_reverse_data.html").read_text()
    assert "Rejected, by reason" in report and "malformed_response" in report
    rejects = (run_dir / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == sum(exp.data.group_sizes().values())
