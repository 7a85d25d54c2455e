"""What notebook 07 measures, typed (`StarResult`, star.json, read by the findings page): counts of every checkpoint
read out, the starts chosen by state and per-step DPO from each; rates, errors and states derived from the counts.

The rules of the studied states are stated once here (`state_rule` and its constants); "trained" and "kept skill" are
`revlib.evaluation.trained`'s, under the run's `learning` params (saved as `rules`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, computed_field

from revlib.core import io
from revlib.evaluation import trained
from revlib.params.learning import LearningRules
from revlib.tasks.star_graph import StarKnobs


class PathCounts(BaseModel):
    """Greedy answers to the test problems: how many are valid paths, start on the goal's arm, are the goal's path."""

    n: int
    valid: int = 0
    first_node: int = 0
    correct: int = 0

    @computed_field
    @property
    def test_error(self) -> float:
        return 1 - self.correct / self.n

    @property
    def valid_path_rate(self) -> float:
        return self.valid / self.n

    @property
    def first_node_accuracy(self) -> float:
        return self.first_node / self.n


class StarCheckpoint(PathCounts):
    """One checkpoint read out. Its own counts are the test graphs' (greedy); `train` is the same on training graphs.
    The critical token's probability and Monte-Carlo Q are read on the probe problems of each. `epoch` is the SFT
    epoch; `step` the SFT step, or for a DPO checkpoint the DPO step counted from its start."""

    epoch: float
    step: int
    critical_token_prob: float
    critical_q_value: float
    start_value: float  # the value of the state before the critical token (rollouts from the think header)
    train: PathCounts | None = None
    critical_token_prob_train: float | None = None
    critical_q_value_train: float | None = None


class BaseLookup(BaseModel):
    """Held-out edge look-ups of the base (the same held-out set as stage 00's), and the knobs it was pretrained on."""

    k: int
    n: int
    accuracy: float
    chance: float
    pretrained_on: dict[str, int] | None = None  # the card's star-graph knobs; None without a card
    same_knobs: bool | None = None


class LossPoint(BaseModel):
    step: int | None = None
    epoch: float
    loss: float


class DrawnSamples(BaseModel):
    """The start policy's samples of the training problems, and what per-step credit made of them."""

    n: int
    correct: int
    critical_at_first_step: int  # per-step pairs whose critical step is the first node
    gold_chosen: int = 0         # pairs whose chosen answer is the gold continuation (no rollout verified)


VALID_TARGET = 0.7
FIRST_NODE_TOLERANCE = 0.1  # the first node right within this of 1/degree: the Clever-Hans state
MEMORISED_FIRST_NODE = 0.9  # an over-trained start has memorised its training graphs at this first-node accuracy


def state_rule() -> str:
    """The under-trained start's rule in words, from the constants the selection uses."""
    return (f"valid paths at least {VALID_TARGET:.0%} and the first node within {FIRST_NODE_TOLERANCE:g} of "
            "1/degree, both on the training graphs")


class PerStepDPO(BaseModel):
    """Per-step DPO from one SFT checkpoint: its pairs and its own checkpoints (the start is that SFT checkpoint;
    a DPO checkpoint's `step` counts DPO steps)."""

    start_epoch: float
    start_step: int
    pairs: int
    samples: DrawnSamples
    checkpoints: list[StarCheckpoint]
    loss: list[LossPoint]



class Start(BaseModel):
    """A per-step DPO start chosen from the SFT curve by its state (`choose_starts`), with that state."""

    name: str  # "under_1", "under_2", ... (Figure 8(b)) or "over" (Figure 8(c))
    step: int
    epoch: float
    valid_path_rate: float       # on the training graphs (the rule's)
    valid_path_rate_test: float
    first_node_train: float
    first_node_test: float

    @property
    def kind(self) -> str:
        return self.name.split("_")[0]


@dataclass(frozen=True)
class StudiedState:
    """Whether the run reached the states the paper studies, and the sentence that says so."""

    reached: bool
    under: int
    over: bool
    memorised: bool
    text: str


class StarResult(BaseModel):
    """What 07 measured (star.json): the knobs and model, the base's look-ups, every SFT checkpoint read out on test
    and training graphs, its loss, the starts chosen from that curve, and per-step DPO from each. Rates, errors and
    states are derived from the counts, never stored beside them (the file shows `test_error` and `reached`)."""

    FILE: ClassVar[str] = "star.json"

    knobs: StarKnobs
    model_layers: int
    train_graphs: int
    base_lookup: BaseLookup
    sft_checkpoints: list[StarCheckpoint]
    sft_loss: list[LossPoint]
    starts: list[Start]
    asked_under: int
    over_factor: float
    per_step_dpo: dict[str, PerStepDPO]  # by start name
    rules: LearningRules = Field(default_factory=LearningRules)  # what "trained" and "kept skill" demanded

    @classmethod
    def exists(cls, run_dir: Path) -> bool:
        return (Path(run_dir) / cls.FILE).exists()

    @classmethod
    def load(cls, run_dir: Path) -> StarResult:
        return cls.model_validate(io.read_json(Path(run_dir) / cls.FILE))

    def save(self, run_dir: Path) -> Path:
        return io.write_json(Path(run_dir) / self.FILE, self.model_dump(mode="json"))

    @property
    def degree(self) -> int:
        return self.knobs.degree

    @property
    def final_sft(self) -> StarCheckpoint:
        return self.sft_checkpoints[-1]

    @property
    def test_n(self) -> int:
        return self.final_sft.n

    def names(self, kind: str) -> list[str]:
        """The starts of one kind ("under" or "over") that per-step DPO ran from."""
        return [s.name for s in self.starts if s.kind == kind and s.name in self.per_step_dpo]

    def start(self, name: str) -> StarCheckpoint:
        """The SFT checkpoint per-step DPO from `name` started from."""
        run = self.per_step_dpo[name]
        return next(c for c in self.sft_checkpoints if c.step == run.start_step)

    def end(self, name: str) -> StarCheckpoint:
        """Per-step DPO's last checkpoint from `name`; its start when it trained none (no pairs)."""
        return (self.per_step_dpo[name].checkpoints or [self.start(name)])[-1]

    def final_loss(self, name: str) -> float | None:
        """Per-step DPO's final training loss from `name` (`trained.final_loss`); None without a logged loss."""
        return trained.final_loss([p.loss for p in self.per_step_dpo[name].loss], self.rules)

    def trained(self, name: str) -> bool:
        """Per-step DPO from `name` trained (`trained.dpo_trained`)."""
        return trained.dpo_trained(self.final_loss(name), self.rules)

    def kept_skill(self, name: str) -> trained.KeptSkill:
        """Per-step DPO from `name` kept edge-following (`trained.kept_skill` on the test graphs' valid-path rate)."""
        return trained.kept_skill(self.start(name).valid_path_rate, self.end(name).valid_path_rate, self.rules)

    def curve(self, name: str) -> list[tuple[int, StarCheckpoint]]:
        """(DPO step, checkpoint) of per-step DPO from `name`, its start (step 0) first."""
        return [(0, self.start(name))] + [(c.step, c) for c in self.per_step_dpo[name].checkpoints]

    @property
    def state(self) -> StudiedState:
        """Whether SFT reached the Clever-Hans state on its training graphs (an under-trained start exists), whether
        an over-trained start at least `over_factor` times as long exists, and whether it memorised."""
        under = [s for s in self.starts if s.kind == "under"]
        over = next((s for s in self.starts if s.kind == "over"), None)
        memorised = over is not None and over.first_node_train >= MEMORISED_FIRST_NODE and \
            abs(over.first_node_test - 1 / self.degree) <= FIRST_NODE_TOLERANCE
        parts = [f"{len(under)} of {self.asked_under} under-trained starts found ({state_rule()})"]
        for s in under:
            parts.append(f"{s.name} at step {s.step}: valid {s.valid_path_rate:.0%}, first node {s.first_node_train:.0%}"
                         f" on training graphs, {s.first_node_test:.0%} on test")
        if over is None:
            parts.append(f"no over-trained start: SFT ran under {self.over_factor:g}x the latest under-trained step")
        else:
            how = ("memorised: first node on the training graphs at least "
                   f"{MEMORISED_FIRST_NODE:.0%} while the test graphs' stays near 1/degree" if memorised else
                   f"not memorised (that needs {MEMORISED_FIRST_NODE:.0%} on the training graphs with the test "
                   "graphs near 1/degree): the most trained checkpoint, as far as the budget got")
            parts.append(f"over-trained start at step {over.step}: first node {over.first_node_train:.0%} on training "
                         f"graphs, {over.first_node_test:.0%} on test; {how}")
        reached = bool(under)
        text = ("Reached: " if reached else "Not reached: ") + "; ".join(parts) + "." + (
            "" if reached else " The per-step DPO numbers below do not test the paper's claim.")
        return StudiedState(reached, len(under), over is not None, memorised, text)

    @computed_field
    @property
    def reached(self) -> bool:
        return self.state.reached
