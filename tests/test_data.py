"""Notebook 01's sets: determinism, disjointness, the mixes, directional pairs, validation reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from revlib.data import reverse
from revlib.data.sets import PAIR_SETS, PROBE_SETS, TEST_SETS, TRAIN_SETS
from revlib.core import render
from revlib.params import load
from revlib.core.records import Record

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "params" / "smoke" / "data.yaml"
R1K_FILE = REPO.parent / "shared" / "data" / "r1k-probe-100.parquet"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(params_copy, tmp_path):
    exp = load(params_copy(SMOKE))
    a, b = tmp_path / "a", tmp_path / "b"
    reverse.write(reverse.build(exp), a)
    reverse.write(reverse.build(exp), b)
    files_a = _files(a)
    assert {f"sets/{n}.jsonl" for n in TRAIN_SETS + TEST_SETS + PROBE_SETS} <= set(files_a)
    assert {f"pairs/{n}.jsonl" for n in PAIR_SETS} <= set(files_a)
    assert "rejects.jsonl" in files_a and "stats.json" in files_a
    assert files_a == _files(b)
    other = load(params_copy(SMOKE, seed=1))
    c = tmp_path / "c"
    reverse.write(reverse.build(other), c)
    assert _files(c)["sets/forward.jsonl"] != files_a["sets/forward.jsonl"]


def test_sets_are_disjoint_twins_and_mixes(params_copy):
    exp = load(params_copy(SMOKE))
    built = reverse.build(exp)
    s = built.sets
    d = exp.data
    assert len(s["forward"]) == len(s["reverse"]) == d.n_train
    assert len(s["test_forward"]) == d.n_test and len(s["probe_forward"]) == d.probe_train
    assert len(s["probe_test_reverse"]) == d.probe_test
    ids = {name: {r.pair_id for r in s[name]} for name in ("forward", "test_forward", "probe_forward", "probe_test_forward")}
    names = list(ids)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not ids[x] & ids[y], f"{x} and {y} share pair_ids"
    # every forward example has its reverse twin, linked by pair_id, with the right directions
    assert [r.pair_id for r in s["forward"]] == [r.pair_id for r in s["reverse"]]
    assert {r.direction for r in s["forward"]} == {"forward"} and {r.direction for r in s["reverse"]} == {"reverse"}
    assert sorted(r.id for r in s["mix"]) == sorted(r.id for r in s["forward"] + s["reverse"])
    half = s["half_mix"]
    assert len(half) == 2 * (d.n_train // 2)
    assert sorted(r.pair_id for r in half if r.direction == "forward") == sorted(r.pair_id for r in half if r.direction == "reverse")
    assert set(r.id for r in s["test_mix"]) == {r.id for r in s["test_forward"] + s["test_reverse"]}


def test_directional_pairs_prefer_the_asked_direction(params_copy):
    built = reverse.build(load(params_copy(SMOKE)))
    fwd = {r.pair_id: r for r in built.sets["forward"]}
    rev = {r.pair_id: r for r in built.sets["reverse"]}
    pairs = built.pairs["mix"]
    assert len(pairs) == len(built.sets["mix"])
    for p in pairs:
        f, r = fwd[p.meta["pair_id"]], rev[p.meta["pair_id"]]
        asked, other = (f, r) if p.meta["direction"] == "forward" else (r, f)
        assert p.prompt == render.prompt_messages(asked.question)
        assert p.chosen == render.assistant_message(asked.reasoning, asked.answer)
        assert p.rejected == render.assistant_message(other.reasoning, other.answer)
        assert p.kind == "directional"


def _twin(question="An unknown start, after applying in order: add 3, gives 10. What was the start?", answer="7",
          reasoning="10 - 3 = 7", gold="7"):
    fwd = Record(id="p-f", pair_id="p", direction="forward", task="arith",
                 question="Start from 7. Apply in order: add 3. What is the result?", reasoning="7 + 3 = 10",
                 answer="10", gold="10", meta={"start": 7, "ops": [["add", 3]], "result": 10})
    rev = Record(id="p-r", pair_id="p", direction="reverse", task="arith", question=question, reasoning=reasoning,
                 answer=answer, gold=gold, meta={})
    return fwd, rev


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"reasoning": "  "}, "empty_reasoning"),
    ({"reasoning": "x" * 50}, "reasoning_too_long"),
    ({"answer": ""}, "no_answer"),
    ({"answer": "8"}, "answer_mismatch"),
    ({"question": "The start was 7; adding 3 gives 10. What was the start?"}, "question_states_answer"),
])
def test_check_reverse_names_the_reason(params_copy, change, reason):
    from revlib.tasks import get_task

    d = load(params_copy(SMOKE, data={"max_reasoning_chars": 40})).data
    fwd, rev = _twin(**change)
    assert reverse.check_reverse(fwd, rev, d, get_task("arith")) == reason


def test_math_answers_checked_with_math_verify(params_copy):
    d = load(params_copy(SMOKE)).data
    fwd = Record(id="m-f", pair_id="m", direction="forward", task="s1k", question="Compute 3/2 + 1.", reasoning="r",
                 answer="The answer is \\boxed{5/2}", gold="5/2")
    good = Record(id="m-r", pair_id="m", direction="reverse", task="s1k", question="x + 1 = 5/2; find x.",
                  reasoning="subtract", answer="So x = \\boxed{\\frac{3}{2}}", gold="3/2")
    bad = good.model_copy(update={"answer": "So x = \\boxed{2}"})
    assert reverse.check_reverse(fwd, good, d) is None
    assert reverse.check_reverse(fwd, bad, d) == "answer_mismatch"


def test_rejects_are_written_with_reasons(params_copy, tmp_path):
    exp = load(params_copy(SMOKE))
    built = reverse.build(exp)
    fwd, rev = built.sets["forward"][0], built.sets["reverse"][0]
    bad = rev.model_copy(update={"answer": str(int(rev.answer) + 1)})
    kept, rejects = reverse.validate([reverse.Outcome(fwd, bad)], exp.data, reverse.get_task("arith"))
    assert kept == [] and rejects[0]["reason"] == "answer_mismatch" and rejects[0]["pair_id"] == fwd.pair_id
    built.rejects.extend(rejects)
    stats = reverse.write(built, tmp_path / "out")
    assert stats["rejects_by_reason"] == {"answer_mismatch": 1}
    assert (tmp_path / "out" / "rejects.jsonl").read_text().count("answer_mismatch") == 1


@pytest.mark.skipif(not R1K_FILE.exists(), reason="needs ../shared/data beside the repository")
def test_r1k_file_as_probe_set_with_s1k_source(params_copy):
    """The r1k sample serves as probe_forward/probe_reverse; s1K-schema rows from the same file are the source."""
    raw = {"experiment": "probe-file", "stages": ["01_reverse_data"], "base_models": [{"name": "m", "preset": "micro"}],
           "data": {"source": {"kind": "r1k", "path": str(R1K_FILE)}, "n_train": 20, "n_test": 5, "probe_train": 50,
                    "probe_test": 5, "probe_file": str(R1K_FILE)}}
    exp = load(params_copy(raw))
    built = reverse.build(exp)
    pf, pr = built.sets["probe_forward"], built.sets["probe_reverse"]
    assert len(pf) == len(pr) == 50
    assert [r.pair_id for r in pf] == [r.pair_id for r in pr]
    assert len(built.pairs["probe_mix"]) == 100
    assert all(p.chosen != p.rejected for p in built.pairs["probe_mix"])


def test_free_text_answers_go_to_the_judge(params_copy):
    """Answers math-verify cannot match are judged by the model teacher when free_text_check is 'judge'."""
    from revlib.data.teachers import ChatTeacher, Completion

    class Judge(ChatTeacher):
        identity = {"kind": "fake-judge"}

        def _generate(self, items):
            return [self._received(k, Completion("YES" if "GOATHERDS" in m[0]["content"].split("Final answer:")[1] else "NO", ""))
                    for k, m in items]

    raw = {"experiment": "judge", "stages": ["01_reverse_data"], "base_models": [{"name": "m", "preset": "micro"}],
           "data": {"source": {"kind": "s1k", "path": str(R1K_FILE) if R1K_FILE.exists() else None},
                    "teacher": {"kind": "api", "base_url": "http://127.0.0.1:9", "model": "j"},
                    "free_text_check": "judge", "n_train": 20, "n_test": 5, "probe_train": 5, "probe_test": 5}}
    if not R1K_FILE.exists():
        pytest.skip("needs ../shared/data beside the repository")
    d = load(params_copy(raw)).data
    fwd = Record(id="c-f", pair_id="c", direction="forward", task="s1k", question="Great dosh arranged (9)",
                 reasoning="r", answer="GOATHERDS", gold="GOATHERDS")
    good = Record(id="c-r", pair_id="c", direction="reverse", task="s1k", question="Which anagram of a 9-letter word?",
                  reasoning="letters", answer="It is GOATHERDS rearranged", gold="great dosh")
    bad = good.model_copy(update={"pair_id": "d", "answer": "no idea"})
    fwd_d = fwd.model_copy(update={"pair_id": "d"})
    kept, rejects = reverse.validate([reverse.Outcome(fwd, good), reverse.Outcome(fwd_d, bad)], d, None, Judge(None))
    assert [f.pair_id for f, _ in kept] == ["c"]
    assert [r["reason"] for r in rejects] == ["answer_mismatch_judge"]
