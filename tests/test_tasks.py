"""The task world: every reverse answer round-trips to its forward premise; verifiers and splitters behave."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revlib.tasks import REGISTRY, get_task
from revlib.tasks.arith import ArithChain


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 6), max_value=st.integers(2, 50),
       ops=st.lists(st.sampled_from(["add", "sub", "mul"]), min_size=1, max_size=3, unique=True))
def test_arith_reverse_answer_is_forward_start(seed, steps, max_value, ops):
    fam = get_task("arith", {"steps": steps, "max_value": max_value, "ops": ops})
    for fwd in fam.sample(seed, 3):
        rev = fam.invert(fwd)
        assert rev.pair_id == fwd.pair_id and rev.direction == "reverse"
        assert rev.answer == fam.premise(fwd) == str(fwd.meta["start"])
        assert fam.verify(rev, rev.answer) and fam.verify(fwd, fwd.answer)
        # the reverse chain walks the forward chain backwards, one step per operation
        assert len(fam.split_steps(rev.reasoning)) == len(fam.split_steps(fwd.reasoning)) == steps


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), degree=st.integers(2, 5), path_length=st.integers(2, 6))
def test_star_reverse_path_ends_at_the_forward_centre(seed, degree, path_length):
    fam = get_task("star_graph", {"degree": degree, "path_length": path_length, "node_count": 60})
    for fwd in fam.sample(seed, 2):
        rev = fam.invert(fwd)
        fwd_path = fwd.answer.split(",")
        rev_path = rev.answer.split(",")
        assert rev_path == list(reversed(fwd_path))
        assert rev_path[-1] == fam.premise(fwd)
        assert fwd_path[-1] == str(fwd.meta["goal"])
        edges = {tuple(e) for e in fwd.meta["edges"]}
        assert all((int(a), int(b)) in edges for a, b in zip(fwd_path, fwd_path[1:]))


def test_sampling_is_deterministic_and_distinct():
    fam = get_task("arith")
    a, b = fam.sample(7, 50), fam.sample(7, 50)
    assert a == b
    assert len({r.question for r in a}) == 50
    assert fam.sample(8, 50) != a


def test_verify_rejects_wrong_answers_and_normalises_whitespace():
    arith = get_task("arith")
    fwd = arith.sample(0, 1)[0]
    assert arith.verify(fwd, f" {fwd.gold}. ")
    assert not arith.verify(fwd, str(int(fwd.gold) + 1))
    star = get_task("star_graph")
    s = star.sample(0, 1)[0]
    assert star.verify(s, s.gold.replace(",", ", "))
    assert not star.verify(s, ",".join(reversed(s.gold.split(","))))


def test_primitive_skills_cover_both_directions():
    """Bare equations and numbered steps after an operation list, forward and inverted alike, every one right."""
    import re

    fam = ArithChain()
    skills = fam.primitive_skills(random.Random(0), 400)
    word = {"add": "+", "subtract": "-", "multiply by": "*"}
    inverse = {"+": "-", "-": "+", "*": "/"}
    signs = {"bare": set(), "numbered": set()}
    kinds = {"forward": 0, "inverse": 0}
    for prompt, target in skills:
        if ":" in prompt:
            listing, step = prompt.split(": ")
            ops = dict((int(i), (word[w], int(k))) for i, w, k in re.findall(r"\((\d+)\) ([a-z ]+?) (-?\d+)", listing))
            i, a, op = re.fullmatch(r"\((\d+)\) (-?\d+) ([-+*/])", step).groups()
            k, t = target.split(" = ")
            sym, operand = ops[int(i)]
            assert int(k) == operand  # the operand is the numbered operation's
            assert op in (sym, inverse[sym])
            kinds["forward" if op == sym else "inverse"] += 1
            signs["numbered"].add(op)
            a = int(a)
        else:
            a, op, k, _ = prompt.split()
            a, t = int(a), target
            signs["bare"].add(op)
        assert {"+": a + int(k), "-": a - int(k), "*": a * int(k), "/": a // int(k)}[op] == int(t)
    assert {"+", "-", "*", "/"} <= signs["bare"] and {"+", "-", "*", "/"} <= signs["numbered"]
    assert min(kinds.values()) > 0.4 * sum(kinds.values())  # neither direction favoured


def test_unknown_task_and_bad_knobs_are_named():
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="node_count"):
        get_task("star_graph", {"degree": 5, "path_length": 10, "node_count": 10})
    assert {"arith", "star_graph"} <= set(REGISTRY)
