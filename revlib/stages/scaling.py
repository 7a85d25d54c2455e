"""Notebook 06: Setlur et al.'s scaling experiment, step by step, with the method pieces of `revlib.data.negatives`.

The steps, in the order the notebook runs them (each returns a typed intermediate the next one reads, and writes what
it made under the run directory, so a researcher can stop after any of them or re-run one method):
1. `draw_problems`: the nested training pool D_syn (a more capable teacher's chains, in its own forms), the
   validation problems and the test problems.
2. `sft_at_every_size`: SFT for a step budget at every data size n (nested draws), read out on the validation
   problems every `sft_eval_every` steps; the best checkpoint is the size's SFT, an earlier one the under-trained start.
3. `samples_and_values`: at the method sizes, the SFT policy's (and the under-trained start's) verified samples of the
   training problems and Monte-Carlo values of every step prefix.
4. `run_methods`: every other method from the size's SFT checkpoint (`run_method` runs one): RFT on D_syn plus the
   policy's own verified positives D+, RFT on D+ alone (Figures 2 and 9), naive DPO, per-step DPO at the critical step,
   advantage-filtered RFT (Figure 11), and per-step DPO from the under-trained start (Figure 8(b)'s contrast). Each
   makes a fixed number of passes over its own data, every pass read out on the validation problems, the best kept
   (pass 0, the start, a candidate); every kept model answers the same test problems greedily.
5. `read_out`: the table, the efficiency multiples (SFT's curve interpolated in log n), Figure 3's likelihoods and
   Figure 7's step values; scaling.json saved. The figures only draw what this step saved.

The rules (`budget_rule`, `pass_rule`) are stated once, in `revlib.stages.scaling_report`, and applied to every method
and size alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from revlib.core import io
from revlib.core.records import PreferencePair, Record
from revlib.data import negatives
from revlib.evaluation import efficiency
from revlib.modeling import preference, train
from revlib.modeling.train import Checkpoint, TrainResult
from revlib.params import Experiment
from revlib.params.negatives import NegativeParams
from revlib.stages import scaling_readout as readout
from revlib.stages.context import StageContext
from revlib.stages.scaling_report import ScalingRun, budget_rule, dpo_settings, pass_rule
from revlib.stages.scaling_result import (DPO_METHODS, UNDER, Drawn, Draws, MethodRun, Methods, PassRecord, Passes,
                                          Problems, Samples, ScalingResult, SFTAtSize, SFTCurve, SFTCurves, SizeResult,
                                          Skip)
from revlib.tasks import get_task
from revlib.tasks.base import TaskFamily

Log = Callable[[str], None]

# the problems are drawn at the experiment's seed plus this, apart from the draws other stages make at the seed
PROBLEM_SEED_OFFSET = 606


# ---------------------------------------------------------------- 1. problems


def draw_problems(exp: Experiment) -> Problems:
    """One draw, so every data size's training set extends the smaller ones and the pool, the validation and the test
    problems never share a problem; the training chains as the teacher writes them (D_syn)."""
    P = exp.negatives
    task = get_task(P.task, P.knobs)
    pool = task.sample(exp.seed + PROBLEM_SEED_OFFSET, max(P.data_sizes) + P.n_test + P.n_validation)
    train_pool = [negatives.teacher_chain(task, r, P.teacher_forms, exp.seed) for r in pool[P.n_test + P.n_validation:]]
    return Problems(task, train_pool, pool[P.n_test:P.n_test + P.n_validation], pool[:P.n_test])


def accuracy(ckpt: Checkpoint, P: NegativeParams, task: TaskFamily, problems: Sequence[Record], seed: int
             ) -> list[bool]:
    """Greedy outcomes of a checkpoint on problems."""
    return negatives.outcomes(negatives.policy_engine(ckpt, P, temperature=0.0), task, list(problems), seed)


def _mean(xs: Sequence[bool]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def best(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the earliest."""
    return max(range(len(scores)), key=lambda i: (round(scores[i], 9), -i))


def under_start(validation: Sequence[float], share: float) -> int | None:
    """Index of the under-trained start: the earliest read-out before the chosen (best) one whose validation accuracy
    reaches `share` of the chosen one's; None when the chosen one is the first to get there."""
    top = best(validation)
    return next((i for i in range(top) if validation[i] >= share * validation[top]), None)


# ---------------------------------------------------------------- 2. SFT curves


def sft_at_size(ctx: StageContext, probs: Problems, size: int, log: Log = print) -> SFTAtSize:
    """SFT at one size under the step budget, read out on the validation problems, the chosen checkpoint answering the
    test problems and the size's first `kept_skill_problems` training problems."""
    exp, P = ctx.exp, ctx.exp.negatives
    params = exp.sft.model_copy(update={"max_steps": P.sft_max_steps, "save_every_epochs": 10**6,
                                        "save_every_steps": P.sft_eval_every})
    res = train.sft(ctx.base_path(), probs.train[:size], Path(ctx.dir) / f"n{size}" / "sft", params, seed=exp.seed,
                    epochs=10**6, save_every_epochs=10**6)
    ckpts = res.checkpoints
    val = [_mean(accuracy(c, P, probs.task, probs.validation, exp.seed + 1)) for c in ckpts]
    chosen = ckpts[best(val)]
    early = under_start(val, P.under_validation_share)
    under = ckpts[early] if early is not None else None
    log(f"n={size}: SFT validation accuracy by step {', '.join(f'{c.step}: {v:.2f}' for c, v in zip(ckpts, val))}; "
        f"kept step {chosen.step}" + (f", under-trained start step {under.step}" if under else ""))
    curve = SFTCurve(size=size, steps=[c.step for c in ckpts], validation=val, chosen_step=chosen.step,
                     under_step=under.step if under else None)
    run = MethodRun("sft", size, size, checkpoint=chosen, steps=chosen.step)
    answer_test(ctx, probs, run, log)
    curve.train_accuracy = _mean(run.train_correct)
    return SFTAtSize(curve, chosen, under, run)


def sft_at_every_size(ctx: StageContext, probs: Problems, log: Log = print) -> SFTCurves:
    """Step 2: `sft_at_size` at every data size, smallest first, each under <run dir>/n<size>."""
    return SFTCurves(probs, [sft_at_size(ctx, probs, n, log) for n in sorted(ctx.exp.negatives.data_sizes)])


def answer_test(ctx: StageContext, probs: Problems, run: MethodRun, log: Log = print) -> None:
    """A trained method's greedy outcomes on the test problems and on its size's first training problems."""
    P, seed = ctx.exp.negatives, ctx.exp.seed
    engine = negatives.policy_engine(run.checkpoint, P, temperature=0.0)
    run.correct = negatives.outcomes(engine, probs.task, probs.test, seed + 1)
    check = probs.train[:run.size][: P.kept_skill_problems]
    run.train_correct = negatives.outcomes(engine, probs.task, check, seed + 1)
    lo, hi = run.interval()
    log(f"n={run.size}: {run.method} ({run.examples} examples, {run.steps} steps) test error {run.error:.3f} "
        f"[{lo:.3f}, {hi:.3f}]; training problems {sum(run.train_correct)}/{len(run.train_correct)}")


# ---------------------------------------------------------------- 3. samples and values


def draw(ctx: StageContext, ckpt: Checkpoint, task: TaskFamily, problems: list[Record], out_dir: Path, values: bool,
         log: Log = print, label: str = "SFT", samples_per_problem: int | None = None) -> Drawn:
    """The policy's samples on its training problems (negatives capped) and, with `values`, every step's value;
    `samples_per_problem` empty: the params'."""
    P, seed = ctx.exp.negatives, ctx.exp.seed
    policy = negatives.policy_engine(ckpt, P, cache_dir=out_dir / "rollout_cache")
    drawn = negatives.sample_policy(policy, task, problems, samples_per_problem or P.samples_per_problem, seed,
                                    P.step_split)
    samples = negatives.cap_negatives(drawn, P.max_negatives)
    negatives.write_samples(out_dir / "samples.jsonl", samples)
    pos = sum(s.correct for s in samples)
    log(f"n={len(problems)}: the {label} policy's {len(drawn)} samples hold {pos} positives and {len(drawn) - pos} "
        f"negatives, {len(samples) - pos} kept (at most {P.max_negatives or 'all'} per problem)")
    credits: list[negatives.StepCredit] = []
    if values:
        credits = negatives.estimate_values(policy, task, problems, samples, P.rollouts, seed, P.best_of,
                                            P.best_of_rule)
        io.write_jsonl(out_dir / "step_values.jsonl",
                       ({"sample": c.sample.id, "correct": c.sample.correct, "values": c.values,
                         "successes": [len(w) for w in c.successes], "advantages": c.advantages} for c in credits))
    return Drawn(samples, credits)


def samples_and_values(ctx: StageContext, sft: SFTCurves, log: Log = print) -> Samples:
    """Step 3, at every method size (none when SFT is the only method): the SFT policy's samples, valued where per-step
    DPO or advantage-filtered RFT needs them, and the under-trained start's for per_step_dpo_under."""
    P, probs = ctx.exp.negatives, sft.problems
    out: dict[int, Draws] = {}
    for s in sft.sizes:
        if s.size not in P.sizes_for_methods or not set(P.methods) - {"sft"}:
            continue
        problems, where = probs.train[:s.size], Path(ctx.dir) / f"n{s.size}"
        wants_values = bool({"per_step_dpo", "adv_rft"} & set(P.methods))
        out[s.size] = Draws(s.size, draw(ctx, s.chosen, probs.task, problems, where, wants_values, log))
        if UNDER in P.methods and s.under is not None:
            out[s.size].under = draw(ctx, s.under, probs.task, problems, where / "under", True, log,
                                     "under-trained SFT", P.under_samples_per_problem)
            s.curve.under_train_accuracy = _mean(accuracy(s.under, P, probs.task, problems[: P.kept_skill_problems],
                                                          ctx.exp.seed + 1))
    return Samples(sft, out)


# ---------------------------------------------------------------- 4. the methods after SFT


def method_data(P: NegativeParams, problems: list[Record], draws: Draws, seed: int) -> dict[str, list]:
    """Each method's training data at one size, in the order the methods run: records for the RFT-type methods, pairs
    for the DPO ones."""
    samples, credits = draws.sft.samples, draws.sft.credits
    d_plus = negatives.rft_records(samples, problems, P.rft_k)
    data: dict[str, list] = {}
    if "rft" in P.methods:
        data["rft"] = problems + d_plus
    if "rft_self" in P.methods:
        data["rft_self"] = d_plus
    if "adv_rft" in P.methods:
        kept = negatives.advantage_filtered(credits, P.adv_percentile)
        data["adv_rft"] = problems + negatives.rft_records(kept, problems, P.rft_k)
    if "naive_dpo" in P.methods:
        data["naive_dpo"] = negatives.naive_pairs(samples, problems, seed)
    if "per_step_dpo" in P.methods:
        data["per_step_dpo"] = negatives.per_step_pairs(credits, problems, P.critical_step, P.advantage_threshold,
                                                        seed, P.rejected)
    if draws.under is not None:
        data[UNDER] = negatives.per_step_pairs(draws.under.credits, problems, P.critical_step, P.advantage_threshold,
                                               seed, P.rejected)
    return data


def _losses(res: TrainResult) -> tuple[float | None, float | None]:
    """The first logged training loss and the mean loss of the last pass (the last epoch's log entries)."""
    pts = [(e.get("epoch", 0.0), e["loss"]) for e in train.curves_rows(res.log_history)]
    if not pts:
        return None, None
    last_epoch = math.ceil(max(e for e, _ in pts) - 1e-9)
    last = [v for e, v in pts if e > last_epoch - 1 + 1e-9] or [pts[-1][1]]
    return float(pts[0][1]), float(np.mean(last))


def after_sft(ctx: StageContext, method: str, start: Checkpoint, start_name: str, start_validation: float,
              data: list, probs: Problems, size: int, out_dir: Path, log: Log = print) -> tuple[Checkpoint, Passes]:
    """A method after SFT under the budget rule: fixed passes over its own data from `start`, every pass read out on
    the validation problems, the best kept (pass 0, the start, a candidate); DPO logs its held-out log-ratios."""
    exp, P = ctx.exp, ctx.exp.negatives
    held: list[PreferencePair] = []
    first = last = None
    if method in DPO_METHODS:
        items, held = negatives.split_pairs(data, P.log_ratio_pairs, exp.seed)
        params = exp.dpo.model_copy(update={"max_steps": -1, "save_every_epochs": 1, "save_every_steps": None})
        res = preference.dpo_from(start, items, out_dir, params, exp.seed, epochs=P.dpo_passes, save_every_epochs=1)
        first, last = _losses(res)
    else:
        params = exp.sft.model_copy(update={"max_steps": -1, "save_every_epochs": 1, "save_every_steps": None})
        # a LoRA start is merged into its base first, and the passes train a fresh adapter on the merge
        init = (train.merge_adapter(start.base, start.adapter, Path(out_dir) / train.MERGED_SFT) if start.adapter
                else str(start.path))
        res = train.sft(init, data, out_dir, params, seed=exp.seed, epochs=P.rft_passes, save_every_epochs=1)
    ckpts = [start] + list(res.checkpoints)
    val = [start_validation] + [_mean(accuracy(c, P, probs.task, probs.validation, exp.seed + 1))
                                for c in res.checkpoints]
    ratios: list[tuple[float | None, ...]] = [(None, None, None)] * len(ckpts)
    if held:
        ratios = [(0.0, 0.0, 0.0)] + preference.log_ratios(res.checkpoints, start, held, exp.dpo)
    # a pass's step counts the method's own run from its start (0 at pass 0)
    records = [PassRecord(index=i, step=c.step if i else 0, validation=v, chosen_log_ratio=r[0],
                          rejected_log_ratio=r[1], critical_log_ratio=r[2])
               for i, (c, v, r) in enumerate(zip(ckpts, val, ratios))]
    kept = best(val)
    log(f"n={size}: {method} validation accuracy by pass {', '.join(f'{i}: {v:.2f}' for i, v in enumerate(val))}; "
        f"kept pass {kept}" + (f"; training loss {first:.3f} -> {last:.3f}" if first is not None else ""))
    return ckpts[kept], Passes(method=method, size=size, start=start_name, start_step=start.step, passes=records,
                               kept=kept, held_out_pairs=len(held), train_loss_first=first, train_loss_last=last)


def run_method(ctx: StageContext, probs: Problems, sft: SFTAtSize, method: str, items: list, log: Log = print
               ) -> MethodRun:
    """One method at one size from its start (the size's SFT, or the under-trained one), on its own data: trained
    under the budget rule and answering the test problems, or not trained and saying why (`skip`)."""
    P, size, where = ctx.exp.negatives, sft.size, Path(ctx.dir) / f"n{sft.size}"
    io.write_jsonl(where / f"{method}.jsonl", (x.model_dump(mode="json") for x in items))
    run = MethodRun(method, size, len(items))
    if not items:
        run.note, run.skip = "no training data", Skip.NO_DATA
        log(f"n={size}: {method} has no training data; its point is left out")
        return run
    if method in DPO_METHODS and len(items) < P.min_pairs:
        run.note, run.skip = f"not trained: {len(items)} pairs, fewer than {P.min_pairs}", Skip.TOO_FEW_PAIRS
        log(f"n={size}: {method} has {len(items)} pairs, fewer than {P.min_pairs}; its point is left out")
        return run
    curve = sft.curve
    if method == UNDER:
        start, name, val = sft.under, "under", curve.validation[curve.steps.index(curve.under_step)]
    else:
        start, name, val = sft.chosen, "sft", curve.chosen_validation
    run.checkpoint, run.passes = after_sft(ctx, method, start, name, val, items, probs, size, where / method, log)
    # a kept pass > 0 is a checkpoint of the method's own run, which counts its steps from 0
    run.steps = 0 if run.checkpoint.path == start.path else run.checkpoint.step
    answer_test(ctx, probs, run, log)
    return run


def run_methods(ctx: StageContext, samples: Samples, log: Log = print) -> Methods:
    """Step 4: at every method size, every method the experiment asks for (`run_method`); every size's runs and
    outcomes (outcomes.json under n<size>)."""
    P, probs = ctx.exp.negatives, samples.sft.problems
    out = []
    for s in samples.sft.sizes:
        runs: dict[str, MethodRun] = {"sft": s.run}
        d = samples.draws.get(s.size)
        if d is not None:
            if UNDER in P.methods and s.under is None:
                runs[UNDER] = MethodRun(UNDER, s.size, 0, skip=Skip.NO_UNDER_START, note=(
                    f"no under-trained start: no SFT read-out before the chosen one reaches "
                    f"{P.under_validation_share:.0%} of its validation accuracy"))
            for method, items in method_data(P, probs.train[:s.size], d, ctx.exp.seed).items():
                runs[method] = run_method(ctx, probs, s, method, items, log)
        io.write_json(Path(ctx.dir) / f"n{s.size}" / "outcomes.json", {
            m: {"examples": r.examples, "steps": r.steps, "note": r.note, "skip": r.skip,
                "passes": r.passes.model_dump() if r.passes else {}, "correct": r.correct,
                "train_correct": r.train_correct} for m, r in runs.items()})
        out.append(SizeResult(s.size, runs, d.sft.positives if d else 0,
                              len(d.sft.samples) - d.sft.positives if d else 0, d.sft.credits if d else [], s.curve))
    return Methods(samples, out)


def rerun_method(ctx: StageContext, methods: Methods, size: int, method: str, log: Log = print) -> MethodRun:
    """Run one method at one method size again (after a change to its code or its params) and put it in `methods`."""
    probs = methods.samples.sft.problems
    at = next(s for s in methods.samples.sft.sizes if s.size == size)
    items = method_data(ctx.exp.negatives, probs.train[:size], methods.samples.draws[size], ctx.exp.seed)[method]
    run = run_method(ctx, probs, at, method, items, log)
    next(r for r in methods.sizes if r.size == size).runs[method] = run
    return run


# ---------------------------------------------------------------- 5. read-outs


def read_out(ctx: StageContext, methods: Methods) -> ScalingRun:
    """Step 5: the table, SFT's learning checks, the efficiency readings, Figure 3's likelihoods under the base and
    Figure 7's step values of every method at the largest method size; scaling.json saved."""
    exp, P = ctx.exp, ctx.exp.negatives
    probs, sizes = methods.samples.sft.problems, methods.sizes
    rows = readout.table(sizes, exp.learning)
    checks = readout.sft_checks(sizes, probs.test)
    eff = readout.efficiencies(rows, sizes, P.methods)
    outcomes = readout.outcomes_by_size(sizes)
    method_sizes = P.sizes_for_methods
    nll_size = max(method_sizes)
    nll = readout.likelihoods(ctx.base_path(), probs.train, nll_size, ctx.dir)
    credits = [c for r in sizes if r.size in method_sizes for c in r.credits]
    values = readout.method_values(exp, probs.task, next(r for r in sizes if r.size == nll_size), probs.test)
    result = ScalingResult(budget_rule=budget_rule(P, exp.learning), min_pairs=P.min_pairs, rows=rows, efficiency=eff,
                           outcomes=outcomes, nll=readout.nll_means(nll), nll_size=nll_size,
                           sft_curves=[r.sft_curve for r in sizes if r.sft_curve is not None],
                           passes=[run.passes for r in sizes for run in r.runs.values() if run.passes is not None],
                           method_sizes=method_sizes, n_validation=P.n_validation, teacher_forms=list(P.teacher_forms),
                           rollouts=P.rollouts, best_of=P.best_of, best_of_rule=P.best_of_rule,
                           value_spread=efficiency.value_spread(credits, P.rollouts, P.best_of, P.best_of_rule),
                           multiples=readout.multiples(outcomes, P.methods), pass_rule=pass_rule(),
                           dpo_settings=dpo_settings(exp), values=values, rules=exp.learning)
    result.save(ctx.dir)
    return ScalingRun(exp, sizes, result, checks, nll)


def run(ctx: StageContext, log: Log = print) -> ScalingRun:
    """06 for the cell's base, every step in order (the notebook runs them one by one)."""
    sft = sft_at_every_size(ctx, draw_problems(ctx.exp), log)
    return read_out(ctx, run_methods(ctx, samples_and_values(ctx, sft, log), log))
