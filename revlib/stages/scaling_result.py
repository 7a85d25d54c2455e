"""What notebook 06 measures, typed: the problems, every step's intermediate, every method's run at every size, and
what it saves (`ScalingResult`, scaling.json, read by the findings page), with the rules it was run under in words
(stated once in `revlib.stages.scaling_report`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field

from revlib.core import io, stats
from revlib.core.records import Record
from revlib.data import negatives
from revlib.evaluation import trained
from revlib.evaluation.efficiency import EfficiencyRow, MultipleReading
from revlib.modeling.train import Checkpoint
from revlib.params.learning import LearningRules
from revlib.tasks.base import TaskFamily

DPO_METHODS = ("naive_dpo", "per_step_dpo", "per_step_dpo_under")  # trained by DPO from an SFT checkpoint
UNDER = "per_step_dpo_under"


class Skip(str, Enum):
    """Why a method has no point at a size (a row's `skip`; its `note` says it in words)."""

    NO_DATA = "no_data"                # nothing to train on
    TOO_FEW_PAIRS = "too_few_pairs"    # a DPO method under min_pairs: not trained
    NO_UNDER_START = "no_under_start"  # per_step_dpo_under without an under-trained SFT start


# ---------------------------------------------------------------- the runs


class PassRecord(BaseModel):
    """One pass of a method after SFT (0: its start): the step, the validation accuracy and, for DPO with held-out
    pairs, the mean log-ratios log pi/pi_ref of the held-out chosen and rejected responses and of the rejected
    response's critical-step tokens alone (those after the prefix it shares with the chosen one)."""

    index: int
    step: int
    validation: float
    chosen_log_ratio: float | None = None
    rejected_log_ratio: float | None = None
    critical_log_ratio: float | None = None


class Passes(BaseModel):
    """A method's passes at one size, the one kept, where it started, and its training loss (DPO)."""

    method: str
    size: int
    start: str  # "sft" (the size's SFT) or "under" (the earlier SFT checkpoint)
    start_step: int
    passes: list[PassRecord]
    kept: int
    held_out_pairs: int = 0
    train_loss_first: float | None = None
    train_loss_last: float | None = None

    def trained(self, rules: LearningRules) -> bool:
        """The optimiser did its job (`trained.dpo_trained`): the mean loss of the last pass is the final loss."""
        return trained.dpo_trained(self.train_loss_last, rules)


class SFTCurve(BaseModel):
    """One size's SFT read-outs: validation accuracy every sft_eval_every steps, the checkpoint chosen by it, the
    under-trained start, and the chosen (and under-trained) start's greedy accuracy on its own training problems."""

    size: int
    steps: list[int]
    validation: list[float]
    chosen_step: int
    under_step: int | None = None
    train_accuracy: float | None = None
    under_train_accuracy: float | None = None

    @property
    def chosen_validation(self) -> float:
        return self.validation[self.steps.index(self.chosen_step)]


@dataclass
class MethodRun:
    """One method at one size: its training examples, its checkpoint and its per-problem test outcomes."""

    method: str
    size: int
    examples: int
    correct: list[bool] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    train_correct: list[bool] = field(default_factory=list)  # greedy, on the size's first training problems
    steps: int | None = None  # optimizer steps it trained (beyond its start, for the methods after SFT)
    passes: Passes | None = None  # after SFT: every pass's validation accuracy, the pass kept
    note: str = ""  # why it was not trained, in words
    skip: Skip | None = None  # why it was not trained, as a code

    @property
    def error(self) -> float | None:
        return None if not self.correct else 1 - sum(self.correct) / len(self.correct)

    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the error."""
        lo, hi = stats.wilson(sum(self.correct), len(self.correct))
        return 1 - hi, 1 - lo


@dataclass
class SizeResult:
    size: int
    runs: dict[str, MethodRun]
    positives: int
    negatives: int
    credits: list[negatives.StepCredit] = field(default_factory=list)
    sft_curve: SFTCurve | None = None


@dataclass(frozen=True)
class Problems:
    """06's problems: the task family, the nested training pool (D_syn, the teacher's chains), the validation and the
    test problems."""

    task: TaskFamily
    train: list[Record]
    validation: list[Record]
    test: list[Record]

    def counts(self) -> dict[str, int]:
        return {"training pool (nested; D_syn)": len(self.train), "validation": len(self.validation),
                "test": len(self.test)}


# ---------------------------------------------------------------- the steps' intermediates


@dataclass
class SFTAtSize:
    """One size's SFT: its validation curve, the checkpoint chosen on it and the under-trained start, and SFT as a
    method (its test and training-problem outcomes)."""

    curve: SFTCurve
    chosen: Checkpoint
    under: Checkpoint | None
    run: MethodRun

    @property
    def size(self) -> int:
        return self.curve.size


@dataclass
class Drawn:
    """A policy's verified samples of the training problems and their Monte-Carlo step credits."""

    samples: list[negatives.Sample]
    credits: list[negatives.StepCredit]

    @property
    def positives(self) -> int:
        return sum(s.correct for s in self.samples)


@dataclass
class Draws:
    """At one method size: the SFT policy's samples (and values where a method needs them), and the under-trained
    start's, when per_step_dpo_under runs and that start exists."""

    size: int
    sft: Drawn
    under: Drawn | None = None


@dataclass
class SFTCurves:
    """Step 2: the problems and SFT at every size."""

    problems: Problems
    sizes: list[SFTAtSize]


@dataclass
class Samples:
    """Step 3: step 2's SFT and, at every method size, what its policy (and the under-trained start) drew."""

    sft: SFTCurves
    draws: dict[int, Draws]


@dataclass
class Methods:
    """Step 4: step 3's samples and every method's run at every size."""

    samples: Samples
    sizes: list[SizeResult]


# ---------------------------------------------------------------- what 06 saves


class TableRow(BaseModel):
    """One (size, method) of 06's table: error with its 95% Wilson interval, training examples (pairs for DPO),
    optimizer steps, McNemar p against SFT, the kept-skill check, and why a method was not trained (`note`)."""

    size: int
    method: str
    examples: int
    steps: int | None = None
    error: float | None = None
    n_test: int = 0
    error_lo: float | None = None
    error_hi: float | None = None
    p_vs_sft: float | None = None
    train_accuracy: float | None = None
    kept_skill: bool | None = None
    start: str | None = None          # after SFT: "sft" (the size's SFT) or "under" (the earlier checkpoint)
    start_step: int | None = None     # the SFT step it started from (SFT: the step chosen on validation)
    pass_kept: int | None = None      # after SFT: the pass kept by validation accuracy (0: the start itself)
    validation: float | None = None   # the kept model's validation accuracy
    held_out_pairs: int | None = None
    note: str = ""
    skip: Skip | None = None          # why it has no point, as a code (the `note` says it in words)


def per_step_pairs_by_size(rows: Sequence[TableRow]) -> dict[str, int]:
    """Per-step DPO pairs built at each size (trained or not)."""
    return {str(r.size): r.examples for r in rows if r.method == "per_step_dpo"}


@dataclass(frozen=True)
class NLLRow:
    """The mean per-token negative log-likelihood of one response of one set under one model (Figure 3)."""

    set: str
    id: str
    nll: float


@dataclass(frozen=True)
class ValueRow:
    """A method's average Monte-Carlo value after `step` steps of its own samples (Figure 7)."""

    method: str
    step: int
    value: float
    count: int


@dataclass(frozen=True)
class AdvantageRow:
    """The advantage of one step of one positive or negative trace (Figure 10)."""

    trace: str
    step: int
    advantage: float


class ScalingResult(BaseModel):
    """What 06 measured (scaling.json, read by the findings page): the budget rule, the table's rows, the efficiency
    readings, the pair floor, every method's per-test-problem outcomes by size, and the mean NLL per set."""

    FILE: ClassVar[str] = "scaling.json"

    budget_rule: str
    min_pairs: int
    rows: list[TableRow]
    efficiency: dict[str, list[EfficiencyRow]]
    outcomes: dict[int, dict[str, list[bool]]]  # size -> method -> correct per test problem (empty: not trained)
    nll: dict[str, float]
    nll_size: int | None = None                 # the method size Figure 3 reads at
    sft_curves: list[SFTCurve] = []             # each size's SFT read-outs on the validation problems
    passes: list[Passes] = []                   # every method after SFT: each pass's validation accuracy, the kept one
    method_sizes: list[int] = []
    n_validation: int | None = None
    teacher_forms: list[str] = []
    rollouts: int | None = None
    best_of: int | None = None
    best_of_rule: str = ""
    value_spread: dict[str, float] = {}         # the step values' spread (`value_spread`)
    multiples: dict[str, MultipleReading] = {}  # method -> its efficiency multiple (the 2x and 8x rows)
    pass_rule: str = ""
    dpo_settings: list[str] = []
    values: list[ValueRow] = []                 # Figure 7: each method's value per step at the largest method size
    rules: LearningRules = Field(default_factory=LearningRules)  # what "trained" and "kept skill" demanded

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / cls.FILE).exists()

    @classmethod
    def load(cls, run_dir: Path) -> ScalingResult:
        return cls.model_validate(io.read_json(Path(run_dir) / cls.FILE))

    def save(self, run_dir: Path) -> Path:
        # python-mode dump: an unbounded multiple interval (inf) stays Infinity, as json writes it
        return io.write_json(Path(run_dir) / self.FILE, self.model_dump())

    def rows_of(self, method: str) -> list[TableRow]:
        return [r for r in self.rows if r.method == method]

    @property
    def per_step_pairs_by_size(self) -> dict[str, int]:
        return per_step_pairs_by_size(self.rows)

    def sft_error_by_size(self) -> dict[str, float | None]:
        return {str(r.size): r.error for r in self.rows_of("sft")}

    @property
    def sft_sizes(self) -> list[int]:
        return sorted(r.size for r in self.rows_of("sft"))

    def sft_train_accuracy_by_size(self) -> dict[str, float | None]:
        return {str(r.size): r.train_accuracy for r in self.rows_of("sft")}

    def validation_by_pass(self) -> dict[str, dict[str, list[float]]]:
        """method -> size -> the validation accuracy of every pass, pass 0 (the start) first."""
        out: dict[str, dict[str, list[float]]] = {}
        for ps in self.passes:
            out.setdefault(ps.method, {})[str(ps.size)] = [round(p.validation, 4) for p in ps.passes]
        return out

    def passes_of(self, method: str) -> list[Passes]:
        return [p for p in self.passes if p.method == method]

    def untrained(self, method: str) -> list[Passes]:
        """The runs of `method` whose DPO did not train (`Passes.trained` under this run's rules)."""
        return [p for p in self.passes_of(method) if p.train_loss_last is not None and not p.trained(self.rules)]

    @property
    def nll_gap(self) -> float | None:
        """Mean per-token NLL of D_syn minus that of D+ under the base (Figure 3); None without both."""
        return self.nll["D_syn"] - self.nll["D+"] if {"D_syn", "D+"} <= set(self.nll) else None

    def pooled(self, a: str, b: str) -> tuple[list[bool], list[bool]]:
        """Outcomes of methods a and b over every size at which both answered the test problems, paired per problem.

        Sizes are pooled in the order scaling.json lists them (its keys are text, sorted: "128" before "64"), the
        order the findings page has always pooled in: the interval's variance sums in that order, to the last digit.
        """
        xs: list[bool] = []
        ys: list[bool] = []
        for size in sorted(self.outcomes, key=str):
            by_method = self.outcomes[size]
            if by_method.get(a) and by_method.get(b):
                xs += by_method[a]
                ys += by_method[b]
        return xs, ys
