"""What "trained" and "kept skill" demand: the thresholds of the one definition of each (`revlib.evaluation.trained`),
read by every stage that trains (02, 03, 06, 07) and by every claim that rests on them."""

from __future__ import annotations

from pydantic import Field

from revlib.params.common import Strict


class LearningRules(Strict):
    """The `learning` section: how far a training loss must fall to count as trained, and how far a skill may fall
    after DPO or RFT and still count as kept."""

    sft_loss_fall: float = Field(0.5, gt=0, le=1, description="SFT trained: its loss closed at least this share of "
                                 "the gap between its first value and its floor (0 on the task world)")
    sft_loss_fall_real_text: float = Field(0.05, gt=0, le=1, description="the same on real text, where no floor "
                                           "is known and single batches vary: the mean of the last quarter of steps "
                                           "must fall this share below the first (held-out ALP in 04 is the real test)")
    dpo_loss_fall: float = Field(0.1, gt=0, le=1, description="DPO trained: its final training loss fell at least "
                                 "this share below log 2, the sigmoid DPO loss of every pair at the start (the policy "
                                 "is its own reference). A precondition that the optimiser moved at all, not a target: "
                                 "how far the loss falls (Figure 8(a)'s sharp fall) is an outcome")
    dpo_final_steps: int = Field(25, ge=1, description="a DPO run of a step budget (07): its final training loss is "
                                 "the mean over this many last logged steps; a run of passes (06): over its last pass")
    kept_skill_drop: float = Field(0.15, ge=0, le=1, description="kept skill: after DPO or RFT, the skill its start "
                                   "had (greedy accuracy in distribution in 03, on the size's training problems in 06, "
                                   "valid paths in 07) may fall at most this far (absolute); else it broke the policy")
