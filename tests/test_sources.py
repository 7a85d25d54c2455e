"""Forward sources: the r1k published format and the s1K schema, from a local file through the Hub code path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from revlib.data import sources

REPO = Path(__file__).resolve().parent.parent
R1K_FILE = REPO.parent / "shared" / "data" / "r1k-probe-100.parquet"
pytestmark = pytest.mark.skipif(not R1K_FILE.exists(), reason="needs ../shared/data beside the repository")


@pytest.fixture(scope="module")
def r1k_rows():
    return sources.load_rows(None, R1K_FILE)


def test_r1k_sample_imports_as_50_forward_and_50_reverse_twins(r1k_rows):
    twins = sources.r1k_twins(r1k_rows)
    assert len(twins) == 50
    frame = pd.read_parquet(R1K_FILE)
    originals = frame[frame.sample_type == "original"]
    assert {f.question for f, _ in twins} == set(originals.question.str.strip())
    assert {r.question for _, r in twins} == set(originals["relevant-question"].str.strip())
    for f, r in twins:
        assert f.pair_id == r.pair_id and f.id != r.id
        assert (f.direction, r.direction) == ("forward", "reverse")
        assert f.reasoning and f.answer and r.reasoning and r.answer
        assert "<|im_start|>" not in f.reasoning + f.answer + r.reasoning + r.answer
    assert len({f.pair_id for f, _ in twins}) == 50
    # responses come from the row whose `text` holds them: y_r from the flipped row
    flipped = frame[frame.sample_type == "flipped"].iloc[0]
    _, reasoning, _ = sources.parse_chat_text(flipped["text"])
    twin = next(r for _, r in twins if r.question == flipped["relevant-question"].strip())
    assert twin.reasoning == reasoning


def test_hub_id_and_local_file_share_one_code_path(r1k_rows, monkeypatch):
    """A Hub id goes to the same load_dataset call; given the same rows it yields the same twins."""
    import datasets

    calls = []
    local = datasets.Dataset.from_list(r1k_rows)

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, kwargs.get("split")))
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub_rows = sources.load_rows("16demi/ReasonAlign-analysis", None, "train")
    assert calls == [("16demi/ReasonAlign-analysis", "train")]
    assert sources.r1k_twins(hub_rows) == sources.r1k_twins(r1k_rows)


def test_jsonl_copy_reads_the_same(r1k_rows, tmp_path):
    path = tmp_path / "r1k.jsonl"
    pd.read_parquet(R1K_FILE).to_json(path, orient="records", lines=True, force_ascii=False)
    assert sources.r1k_twins(sources.load_rows(None, path)) == sources.r1k_twins(r1k_rows)


def test_one_sided_r1k_rows_complete_from_worse_text(r1k_rows):
    """Only `original` rows: y_r comes from their worse-text, still one twin per forward question."""
    originals = [r for r in r1k_rows if r["sample_type"] == "original"]
    twins = sources.r1k_twins(originals)
    full = {f.pair_id: r for f, r in sources.r1k_twins(r1k_rows)}
    assert len(twins) == 50
    for f, r in twins:
        assert r.question == full[f.pair_id].question and r.reasoning and r.meta["column"] == "worse-text"


def test_s1k_schema_forward_records_by_trace(r1k_rows):
    rows = [r for r in r1k_rows if r["sample_type"] == "original"]
    deepseek = sources.s1k_forward(rows, "deepseek")
    gemini = sources.s1k_forward(rows, "gemini")
    assert len(deepseek) == 50
    assert deepseek[0].reasoning == rows[0]["deepseek_thinking_trajectory"].strip()
    assert deepseek[0].answer == rows[0]["deepseek_attempt"].strip()
    assert gemini[0].reasoning == rows[0]["gemini_thinking_trajectory"].strip()
    assert deepseek[0].gold == rows[0]["solution"].strip()
    assert deepseek[0].pair_id == gemini[0].pair_id  # ids follow the question, not the trace
    assert deepseek[0].meta["cot_type"] == rows[0]["cot_type"]


def test_wrong_schema_errors_name_the_missing_columns():
    with pytest.raises(ValueError, match="deepseek_thinking_trajectory"):
        sources.s1k_forward([{"question": "q", "solution": "s"}], "deepseek")
    with pytest.raises(ValueError, match="relevant-question"):
        sources.r1k_twins([{"question": "q", "text": "t"}])
    with pytest.raises(ValueError, match="unsupported file type"):
        sources.load_rows(None, Path("data.xlsx"))
