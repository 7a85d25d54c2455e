"""Negative data on a task whose truth is known: advantages, RFT data, per-step pairs."""

from __future__ import annotations

import random
import re

import pytest

from revlib.data import negatives as neg
from revlib.core import render
from revlib.tasks import get_task

_LINE = re.compile(r"^\((\d+)\) (-?\d+) ([+*-]) (-?\d+) = (-?\d+)$")
_SYM = {"add": "+", "sub": "-", "mul": "*"}


class ScriptedArithPolicy:
    """A policy on the arithmetic chain whose success probability is known.

    From a prefix whose steps are all right, a continuation finishes the chain correctly with
    probability p_success, else it slips by one on its next step; from a prefix holding a wrong step
    it carries the wrong value on faithfully, so it can never reach the right answer.
    """

    def __init__(self, problems, p_success: float):
        self.by_q = {p.question: p for p in problems}
        self.p = p_success
        self.calls = 0

    def sample(self, requests, n, seed):
        self.calls += 1
        out = []
        for q, prefix in requests:
            prob = self.by_q[q]
            rng = random.Random(f"{seed}:{q}:{prefix}")
            done = [line for line in prefix[len(render.THINK):].split("\n") if line.strip()]
            value = int(_LINE.match(done[-1]).group(5)) if done else prob.meta["start"]
            rows = []
            for _ in range(n):
                slip = rng.random() >= self.p
                v, lines = value, []
                for j, (op, k) in enumerate(prob.meta["ops"][len(done):]):
                    new = v + k if op == "add" else v - k if op == "sub" else v * k
                    if slip and j == 0:
                        new += 1
                    lines.append(f"({len(done) + j + 1}) {v} {_SYM[op]} {k} = {new}")
                    v = new
                body = "\n".join(lines)
                sep = "" if not done or not lines else ""
                rows.append(sep + body + render.ANSWER_SEP + render.ANSWER_PREFIX + str(v))
            out.append(rows)
        return out


def _response_wrong_at(problem, k: int) -> str:
    """The oracle chain with step k (1-based) off by one and the rest carried on faithfully."""
    v, lines = problem.meta["start"], []
    for j, (op, kk) in enumerate(problem.meta["ops"], 1):
        new = v + kk if op == "add" else v - kk if op == "sub" else v * kk
        if j == k:
            new += 1
        lines.append(f"({j}) {v} {_SYM[op]} {kk} = {new}")
        v = new
    return render.assistant_content("\n".join(lines), str(v))


@pytest.fixture
def task():
    return get_task("arith", {"steps": 5, "max_value": 9})


@pytest.mark.parametrize("k", [1, 3, 5])
def test_advantage_most_negative_at_first_wrong_step(task, k):
    problems = task.sample(0, 6)
    policy = ScriptedArithPolicy(problems, p_success=0.7)
    samples = [neg.parse_sample(task, p, _response_wrong_at(p, k), 0) for p in problems]
    assert all(not s.correct and len(s.steps) == 5 for s in samples)
    credits = neg.estimate_values(policy, task, problems, samples, rollouts=400, seed=0)
    assert policy.calls == 1  # every prefix in one batched call
    for cr in credits:
        adv = cr.advantages
        assert min(range(5), key=lambda i: adv[i]) + 1 == k
        assert adv[k - 1] == pytest.approx(-0.7, abs=0.1)
        assert cr.values[k:] == [0.0] * (6 - k)
        assert neg.critical_step(adv, "first_below", -0.5) == k
        assert neg.critical_step(adv, "most_negative") == k


def test_values_of_a_correct_response_stay_high(task):
    problems = task.sample(1, 3)
    policy = ScriptedArithPolicy(problems, p_success=0.6)
    samples = [neg.parse_sample(task, p, render.assistant_content(p.reasoning, p.answer), 0) for p in problems]
    assert all(s.correct for s in samples)
    for cr in neg.estimate_values(policy, task, problems, samples, rollouts=300, seed=1):
        assert cr.values[0] == pytest.approx(0.6, abs=0.1)
        assert neg.critical_step(cr.advantages, "first_below", -0.5) is None


def test_critical_step_modes():
    assert neg.critical_step([0.0, -0.2, -0.6, -0.9], "first_below", -0.5) == 3
    assert neg.critical_step([0.0, -0.2, -0.6, -0.9], "most_negative") == 4
    assert neg.critical_step([0.1, 0.0], "most_negative") is None
    assert neg.critical_step([-0.4], "first_below", -0.5) is None
    with pytest.raises(ValueError, match="critical_step mode"):
        neg.critical_step([0.0], "worst")


def test_first_pit_is_the_first_step_where_the_value_is_lowest():
    # values 0.8 -> 0.2 -> 0.6 -> 0.0 -> 0.0: the lowest value (0.0) is first reached at step 3
    assert neg.critical_step([-0.6, 0.4, -0.6, 0.0], "first_pit") == 3
    # the deepest single drop (step 1) is not the pit when the value later falls lower; most_negative takes it
    assert neg.critical_step([-0.6, 0.4, -0.6, 0.0], "most_negative") == 1
    # ties at the bottom: the first; float drift (0.1 + 0.2 - 0.3) does not move it
    assert neg.critical_step([-1.0, 0.0, 0.0], "first_pit") == 1
    # 0.1 + 0.2 - 0.3 is 5.6e-17 in floats: the value at step 3 ties the one at step 5, and the first one is the pit
    assert neg.critical_step([0.1, 0.2, -0.3, 0.3, -0.3], "first_pit") == 3
    assert neg.critical_step([0.2, -0.2, 0.0], "first_pit") == 2  # lowest over steps 1..L, reached by a drop
    assert neg.critical_step([0.0, 0.0], "first_pit") is None and neg.critical_step([], "first_pit") is None


def test_best_of_k_values_count_groups_with_a_success(task):
    problems = task.sample(0, 6)
    policy = ScriptedArithPolicy(problems, p_success=0.3)
    samples = [neg.parse_sample(task, p, _response_wrong_at(p, 2), 0) for p in problems]
    mean = neg.estimate_values(policy, task, problems, samples, rollouts=400, seed=0)
    bok = neg.estimate_values(policy, task, problems, samples, rollouts=400, seed=0, best_of=5)
    for m, b in zip(mean, bok):
        assert m.values[0] == pytest.approx(0.3, abs=0.08)
        # the best-of-5 policy succeeds unless all 5 fail: 1 - 0.7^5 = 0.83
        assert b.values[0] == pytest.approx(1 - 0.7 ** 5, abs=0.1)
        assert b.values[2:] == [0.0] * 4 and neg.critical_step(b.advantages, "first_pit") == 2
    one = neg.estimate_values(policy, task, problems, samples, rollouts=5, seed=0, best_of=5)
    assert all(v in (0.0, 1.0) for cr in one for v in cr.values)
    with pytest.raises(ValueError, match="multiple of best_of"):
        neg.estimate_values(policy, task, problems, samples, rollouts=6, seed=0, best_of=5)


def test_step_pairs_reject_the_negative_ending_at_its_critical_step(task, task_tokenizer):
    from revlib.modeling import train, train_rows
    from revlib.params.negatives import Sampling

    problems = task.sample(3, 4)
    policy = ScriptedArithPolicy(problems, p_success=0.8)
    samples = [neg.parse_sample(task, p, _response_wrong_at(p, 3), 0) for p in problems]
    credits = neg.estimate_values(policy, task, problems, samples, rollouts=10, seed=0, best_of=5)
    pairs = neg.per_step_pairs(credits, problems, "first_pit", rejected="step")
    assert len(pairs) == len(problems)
    for pair, s in zip(pairs, samples):
        assert pair.step_index == 3 and pair.meta["open_rejected"]
        assert pair.rejected[0]["content"] == s.prefix(3) == pair.prefix + s.steps[2] + "\n"
    rows = train_rows.dpo_rows(task_tokenizer, pairs, 512, 256)[0]
    for row, pair in zip(rows, pairs):
        rejected = task_tokenizer.decode(row["rejected_ids"])
        chosen = task_tokenizer.decode(row["chosen_ids"])
        assert rejected.endswith(pair.rejected[0]["content"]) and "<|im_end|>" not in rejected  # left open
        assert "<|im_end|>" in chosen  # the chosen answer is a whole turn
    with pytest.raises(ValueError, match="rejected"):
        neg.per_step_pairs(credits, problems, "first_pit", rejected="half")
    with pytest.raises(ValueError, match="multiple of best_of"):
        Sampling(rollouts=6, best_of=5)


def test_cap_negatives_keeps_every_positive_and_the_first_k_negatives_per_problem(task):
    p0, p1 = task.sample(5, 2)
    good = lambda p: render.assistant_content(p.reasoning, p.answer)  # noqa: E731
    samples = [neg.parse_sample(task, p0, _response_wrong_at(p0, 1 + i % 2), i) for i in range(5)]
    samples += [neg.parse_sample(task, p0, good(p0), 5), neg.parse_sample(task, p1, _response_wrong_at(p1, 1), 0)]
    kept = neg.cap_negatives(samples, 2)
    assert [(s.problem_id, s.index) for s in kept] == [(p0.id, 0), (p0.id, 1), (p0.id, 5), (p1.id, 0)]
    assert neg.cap_negatives(samples, None) == samples


def test_rft_keeps_only_verified_positives_deduplicated(task):
    problems = task.sample(2, 3)
    p0, p1, p2 = problems
    good0 = render.assistant_content(p0.reasoning, p0.answer)
    texts = [(p0, good0), (p0, good0), (p0, good0.replace("\n", "\n ")),  # duplicates up to whitespace
             (p0, _response_wrong_at(p0, 2)), (p1, _response_wrong_at(p1, 1)),
             (p2, render.assistant_content(p2.reasoning, p2.answer)),
             (p2, render.assistant_content(p2.reasoning + "\n", p2.answer))]
    samples = [neg.parse_sample(task, p, t, i) for i, (p, t) in enumerate(texts)]
    recs = neg.rft_records(samples, problems, k=2)
    assert [r.question for r in recs] == [p0.question, p2.question]
    for r in recs:
        prob = next(p for p in problems if p.question == r.question)
        assert task.verify(prob, r.answer) and r.gold == prob.gold
    assert len(neg.rft_records(samples, problems, k=1)) == 2
    with pytest.raises(ValueError, match="k must be"):
        neg.rft_records(samples, problems, k=0)


def test_per_step_pairs_share_their_prefix_exactly(task, task_tokenizer):
    problems = task.sample(3, 4)
    policy = ScriptedArithPolicy(problems, p_success=0.8)
    samples = [neg.parse_sample(task, p, _response_wrong_at(p, 3), 0) for p in problems]
    credits = neg.estimate_values(policy, task, problems, samples, rollouts=64, seed=0)
    pairs = neg.per_step_pairs(credits, problems, "first_below", -0.5)
    assert len(pairs) == len(problems)
    tok = task_tokenizer
    for pair, s in zip(pairs, samples):
        assert pair.kind == "per_step" and pair.step_index == 3
        chosen, rejected = pair.chosen[0]["content"], pair.rejected[0]["content"]
        assert chosen.startswith(pair.prefix) and rejected.startswith(pair.prefix)
        assert pair.prefix == render.THINK + "\n".join(s.steps[:2]) + "\n"
        assert rejected == s.text
        # the chosen continuation verifies, the rejected does not, and they differ right after the prefix
        prob = next(p for p in problems if p.question == pair.prompt[-1]["content"])
        assert task.verify(prob, render.split_answer(chosen)[1]) and not task.verify(prob, render.split_answer(rejected)[1])
        assert chosen[len(pair.prefix):].split("\n")[0] != rejected[len(pair.prefix):].split("\n")[0]
        # token level: the rendered conversations agree through the prompt and the whole prefix
        ids = [tok.apply_chat_template(pair.prompt + m, tokenize=False) for m in (pair.chosen, pair.rejected)]
        enc = [tok(t, add_special_tokens=False)["input_ids"] for t in ids]
        prompt_and_prefix = tok(tok.apply_chat_template(pair.prompt, tokenize=False, add_generation_prompt=True)
                                + pair.prefix, add_special_tokens=False)["input_ids"]
        n = len(prompt_and_prefix)
        assert enc[0][:n] == enc[1][:n] == prompt_and_prefix


def test_naive_pairs_and_advantage_filter(task):
    problems = task.sample(4, 2)
    p0, p1 = problems
    good = lambda p: render.assistant_content(p.reasoning, p.answer)  # noqa: E731
    samples = [neg.parse_sample(task, p0, good(p0), 0), neg.parse_sample(task, p0, _response_wrong_at(p0, 2), 1),
               neg.parse_sample(task, p1, _response_wrong_at(p1, 1), 0)]  # p1 has no positive
    pairs = neg.naive_pairs(samples, problems)
    assert len(pairs) == 1 and pairs[0].kind == "naive"
    assert pairs[0].chosen[0]["content"] == samples[0].text and pairs[0].rejected[0]["content"] == samples[1].text
    # advantage filter: of two positives the one with the deeper dip is dropped
    a = neg.StepCredit(samples[0], [0.5, 0.9, 0.2, 1.0])
    b = neg.StepCredit(neg.parse_sample(task, p0, good(p0), 5), [0.5, 0.6, 0.7, 1.0])
    assert [s.index for s in neg.advantage_filtered([a, b])] == [5]


def test_advantage_filter_percentile_over_all_responses_keeps_ties(task):
    p0 = task.sample(4, 1)[0]
    good = render.assistant_content(p0.reasoning, p0.answer)
    pos = [neg.parse_sample(task, p0, good, i) for i in range(4)]
    bad = [neg.parse_sample(task, p0, _response_wrong_at(p0, 2), 10 + i) for i in range(4)]
    # Monte-Carlo values with M = 4 tie: every positive has the same worst step (-0.25)
    tied = [neg.StepCredit(s, [0.5, 0.25, 0.5, 0.75, 1.0, 1.0]) for s in pos]
    negs = [neg.StepCredit(s, [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]) for s in bad]
    # the median over positives alone sits on the tie: the old filter kept nothing; over all responses it keeps all
    assert [s.index for s in neg.advantage_filtered(tied + negs)] == [0, 1, 2, 3]
    # a positive whose worst step is as bad as the negatives' critical steps falls below the bar
    dip = neg.StepCredit(neg.parse_sample(task, p0, good, 9), [0.75, 0.0, 0.5, 0.75, 1.0, 1.0])
    kept = neg.advantage_filtered(tied + negs + [dip], percentile=60)
    assert 9 not in [s.index for s in kept] and len(kept) == 4
    assert neg.advantage_filtered([]) == []


def test_step_splitting_modes(task):
    assert neg.split_steps(task, "a = 1\n\nb = 2", "line") == ["a = 1", "b = 2"]
    assert neg.split_steps(task, "First, x is 2. Then y is 3! Done", "sentence") == ["First, x is 2.", "Then y is 3!", "Done"]
    with pytest.raises(ValueError, match="step split"):
        neg.split_steps(task, "x", "paragraph")
    prob = task.sample(0, 1)[0]
    s = neg.parse_sample(task, prob, render.THINK + "One. Two.\nThree" + render.ANSWER_SEP + "Answer: 4", 0, "sentence")
    assert [s.prefix(i)[len(render.THINK):] for i in range(4)] == ["", "One. ", "One. Two.\n", "One. Two.\nThree"]


def test_held_out_pairs_split_by_problem_and_the_dpo_loss_of_the_reference_is_log_2(task, tiny_model_dir):
    import math
    from pathlib import Path

    import torch

    from revlib.modeling import models
    from revlib.modeling.preference import pair_loss, pair_losses
    from revlib.params.train import DPOParams
    from revlib.modeling.train import Checkpoint

    problems = task.sample(3, 10)
    policy = ScriptedArithPolicy(problems, p_success=0.8)
    samples = [neg.parse_sample(task, p, _response_wrong_at(p, 2 + i % 2), i) for p in problems for i in range(2)]
    credits = neg.estimate_values(policy, task, problems, samples, rollouts=5, seed=0, best_of=5)
    pairs = neg.per_step_pairs(credits, problems, "first_pit", rejected="step")
    train_pairs, held = neg.split_pairs(pairs, 0.3, seed=0)
    assert len({p.meta["problem"] for p in held}) == 3 and len(train_pairs) + len(held) == len(pairs)
    assert not {p.meta["problem"] for p in held} & {p.meta["problem"] for p in train_pairs}
    assert neg.split_pairs(pairs, 0.0, 0) == (pairs, [])
    ref = Checkpoint(Path(tiny_model_dir), 0.0, 0, str(tiny_model_dir), None)
    params = DPOParams(max_length=256, max_prompt_length=128, beta=0.5)
    assert pair_loss(ref, ref, held, params) == pytest.approx(math.log(2), abs=1e-5)
    # a policy that moved: the loss differs from log 2 (a random perturbation of the weights)
    moved = Path(tiny_model_dir).parent / "moved"
    m = models.load_model(tiny_model_dir)
    with torch.no_grad():
        for w in m.parameters():
            w.add_(torch.randn_like(w) * 0.05, alpha=1.0)
    m.save_pretrained(moved)
    models.load_tokenizer(tiny_model_dir).save_pretrained(moved)
    other = Checkpoint(moved, 1.0, 1, str(moved), None)
    assert abs(pair_loss(other, ref, held, params) - math.log(2)) > 1e-3
    # batched through the probe scorer, as the per-pair loss it replaced computed it
    for policy in (ref, other):
        assert pair_loss(policy, ref, held, params) == pytest.approx(_per_pair_loss(policy, ref, held, params), abs=1e-4)
    assert pair_losses([ref, other, ref], ref, pairs, params) == pytest.approx(
        [_per_pair_loss(c, ref, pairs, params) for c in (ref, other, ref)], abs=1e-4)


def _per_pair_loss(policy, reference, pairs, dpo_params) -> float:
    """The per-pair, unbatched DPO loss `negatives.dpo_pair_loss` computed before it moved to modeling.preference."""
    import torch

    from revlib.modeling import train, train_rows

    models_ = [train.load_model_for(c)[0] for c in (policy, reference)]
    rows = train_rows.dpo_rows(train.load_model_for(reference)[1], list(pairs), dpo_params.max_length,
                          dpo_params.max_prompt_length)[0]

    @torch.no_grad()
    def logp(model, prompt, response) -> float:
        ids = torch.tensor([prompt + response])
        out = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        pos = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
        return out[pos, torch.tensor(response)].sum().item()

    losses = []
    for r in rows:
        (pc, pr), (rc, rr) = [(logp(m, r["prompt_ids"], r["chosen_ids"]), logp(m, r["prompt_ids"], r["rejected_ids"]))
                              for m in models_]
        margin = dpo_params.beta * ((pc - rc) - (pr - rr))
        losses.append(-torch.nn.functional.logsigmoid(torch.tensor(margin)).item())
    return sum(losses) / len(losses)


def test_log_ratios_are_zero_for_the_reference_and_the_critical_step_is_the_rejected_tail(task, tiny_model_dir):
    from pathlib import Path

    import torch

    from revlib.modeling import models
    from revlib.modeling.train import Checkpoint
    from revlib.params.train import DPOParams
    from revlib.modeling import preference

    problems = task.sample(3, 6)
    policy = ScriptedArithPolicy(problems, p_success=0.8)
    samples = [neg.parse_sample(task, p, _response_wrong_at(p, 2), 0) for p in problems]
    credits = neg.estimate_values(policy, task, problems, samples, rollouts=10, seed=0, best_of=5,
                                  best_of_rule="plug_in")
    pairs = neg.per_step_pairs(credits, problems, "first_pit", rejected="step")
    assert pairs
    ref = Checkpoint(Path(tiny_model_dir), 0.0, 0, str(tiny_model_dir), None)
    params = DPOParams(max_length=256, max_prompt_length=128, beta=0.1)
    moved = Path(tiny_model_dir).parent / "moved_ratios"
    m = models.load_model(tiny_model_dir)
    with torch.no_grad():
        for w in m.parameters():
            w.add_(torch.randn_like(w) * 0.05)
    m.save_pretrained(moved)
    models.load_tokenizer(tiny_model_dir).save_pretrained(moved)
    other = Checkpoint(moved, 1.0, 1, str(moved), None)
    (c0, r0, k0), (c1, r1, k1) = preference.log_ratios([ref, other], ref, pairs, params)
    assert (c0, r0, k0) == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)
    assert abs(c1) > 1e-3 and abs(r1) > 1e-3 and abs(k1) > 1e-4


def test_plug_in_best_of_values_use_every_rollout(task):
    problems = task.sample(0, 4)
    policy = ScriptedArithPolicy(problems, p_success=0.5)
    samples = [neg.parse_sample(task, p, _response_wrong_at(p, 3), 0) for p in problems]
    credits = neg.estimate_values(policy, task, problems, samples, rollouts=10, seed=0, best_of=5,
                                  best_of_rule="plug_in")
    for cr in credits:
        for v, wins in zip(cr.values, cr.successes):
            assert v == pytest.approx(1 - (1 - len(wins) / 10) ** 5)
    with pytest.raises(ValueError, match="best_of_rule"):
        neg.estimate_values(policy, task, problems, samples, rollouts=10, seed=0, best_of=5, best_of_rule="mean")
