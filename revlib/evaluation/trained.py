"""What "trained" and "kept skill" mean, defined once for every stage (02, 03, 06, 07) and every claim resting on them.

Trained: the optimiser did its job on the data it trained on. SFT's loss closed a share of the gap between its first
value and its floor; DPO's final loss fell a share below log 2, the sigmoid DPO loss of every pair at the start (the
policy is its own reference there, so the start needs no logging). Kept skill: after DPO or RFT, the skill its start
had fell at most a fixed distance. The thresholds are `learning` params (`revlib.params.learning.LearningRules`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from revlib.evaluation.learning import Check, loss
from revlib.params.learning import LearningRules

DPO_START_LOSS = math.log(2)


def sft_trained(what: str, first: float, last: float, rules: LearningRules, real_text: bool = False) -> Check:
    """SFT trained: its loss closed `sft_loss_fall` of the gap to its floor 0 (on real text `sft_loss_fall_real_text`
    of its first value, `last` then being the mean of the last quarter of steps)."""
    return loss(what, first, last, fraction=rules.sft_loss_fall_real_text if real_text else rules.sft_loss_fall)


def dpo_trained_bar(rules: LearningRules) -> float:
    """The highest final DPO training loss that counts as trained."""
    return (1 - rules.dpo_loss_fall) * DPO_START_LOSS


def dpo_trained(final_loss: float | None, rules: LearningRules) -> bool:
    """DPO trained: its final training loss is at most `dpo_trained_bar`; a run with no logged loss did not train."""
    return final_loss is not None and final_loss <= dpo_trained_bar(rules)


def dpo_trained_rule(rules: LearningRules) -> str:
    """The DPO rule in words, from the params it reads."""
    return (f"the final training DPO loss at most {1 - rules.dpo_loss_fall:g} x log 2 = {dpo_trained_bar(rules):.3f} "
            f"(a fall of {rules.dpo_loss_fall:.0%} from log 2, every pair's loss at the start)")


def final_loss(losses: Sequence[float], rules: LearningRules) -> float | None:
    """A step-budget DPO run's final training loss: the mean over its last `dpo_final_steps` logged steps."""
    tail = list(losses)[-rules.dpo_final_steps:]
    return sum(tail) / len(tail) if tail else None


@dataclass(frozen=True)
class KeptSkill:
    """A skill's rate at the start and after training, and whether it was kept."""

    before: float
    after: float
    kept: bool
    max_drop: float

    @property
    def verdict(self) -> str:
        return "kept" if self.kept else "broke the policy"


def kept_skill(before: float, after: float, rules: LearningRules) -> KeptSkill:
    """Kept skill: the rate after training is at most `kept_skill_drop` below the rate at its start."""
    return KeptSkill(before, after, after >= before - rules.kept_skill_drop, rules.kept_skill_drop)
