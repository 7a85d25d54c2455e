"""Training rows: records and preference pairs tokenized and cut to `max_length` in tokens, as SFT and DPO see them.

The render is `revlib.core.render`'s, so training, probes and evaluation see the same token sequences.
Each builder also counts what the cut cost (`Truncation`): rows cut, and rows that lost their answer, since a
trace cut before its `Answer:` line teaches the format without the answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from revlib.core import render
from revlib.core.records import PreferencePair, Record


@dataclass(frozen=True)
class Truncation:
    """What `max_length` cut from one training set (for DPO a pair counts once, by either response)."""

    rows: int
    cut: int  # rows with tokens dropped
    answer_lost: int  # cut rows whose kept response no longer holds the answer line

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def note(self, max_length: int) -> str | None:
        """One line for the run's output when anything was cut; None otherwise."""
        if not self.cut:
            return None
        return (f"max_length={max_length} cut {self.cut} of {self.rows} rows; {self.answer_lost} of them lost "
                f"their answer (raise max_length to keep them)")


def _lost_answer(tokenizer: Any, kept: list[int]) -> bool:
    """A response cut before the end of its answer line: the answer marker, or the text after it, is gone."""
    text = tokenizer.decode(kept)
    marker = text.rfind(render.ANSWER_MARK)
    return marker < 0 or render.ANSWER_PREFIX not in text[marker:]


def sft_rows(tokenizer: Any, records: list[Record], max_length: int) -> tuple[list[dict[str, list[int]]], Truncation]:
    """input_ids + completion_mask per record, the completion cut so the whole fits `max_length` tokens."""
    if not records:
        raise ValueError("no training records")
    rows, cut, lost = [], 0, 0
    for rec in records:
        prompt_ids, completion_ids = render.tokenize_example(tokenizer, rec.question, rec.reasoning, rec.answer)
        room = max_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"record {rec.id}: prompt is {len(prompt_ids)} tokens, no room for a response within "
                f"max_length={max_length}; raise sft.max_length"
            )
        if len(completion_ids) > room:
            cut += 1
            lost += _lost_answer(tokenizer, completion_ids[:room])
        completion_ids = completion_ids[:room]
        rows.append({"input_ids": prompt_ids + completion_ids,
                     "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)})
    return rows, Truncation(len(rows), cut, lost)


def tokenize_messages(tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]],
                      open_end: bool = False) -> tuple[list[int], list[int]]:
    """(prompt ids with the generation header, completion ids) by the same split as render.tokenize_example.

    open_end: the completion's last message is left open (no end-of-turn token after it), for a response
    cut mid-way such as a per-step DPO rejected that ends at its critical step.
    """
    prompt_ids = render._ids(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True))
    full_ids = render._ids(tokenizer.apply_chat_template(prompt + completion, tokenize=True,
                                                         **({"continue_final_message": True} if open_end else {})))
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("chat template does not extend the prompt with the assistant turn")
    return prompt_ids, full_ids[len(prompt_ids):]


def dpo_rows(tokenizer: Any, pairs: list[PreferencePair], max_length: int,
             max_prompt_length: int) -> tuple[list[dict[str, list[int]]], Truncation]:
    """prompt_ids / chosen_ids / rejected_ids per pair, truncated in tokens.

    The prompt is tokenized once and kept separate, so the trainer sees it once per sequence
    (the released paper code put it inside chosen and rejected as well). The prompt keeps its
    last `max_prompt_length` tokens (the generation header stays); responses are cut to the rest.
    A pair lost its answer when a response that had one (an open per-step rejected has none) lost it.
    """
    if not pairs:
        raise ValueError("no preference pairs")
    rows, cut, lost = [], 0, 0
    for pair in pairs:
        prompt_ids, chosen_ids = tokenize_messages(tokenizer, pair.prompt, pair.chosen)
        open_rejected = bool(pair.meta.get("open_rejected"))
        prompt_again, rejected_ids = tokenize_messages(tokenizer, pair.prompt, pair.rejected, open_end=open_rejected)
        assert prompt_again == prompt_ids
        prompt_ids = prompt_ids[-max_prompt_length:]
        room = max_length - len(prompt_ids)
        responses = [(chosen_ids, True), (rejected_ids, not open_rejected)]
        if any(len(ids) > room for ids, _ in responses):
            cut += 1
            lost += any(has_answer and len(ids) > room and _lost_answer(tokenizer, ids[:room])
                        for ids, has_answer in responses)
        rows.append({"prompt_ids": prompt_ids, "chosen_ids": chosen_ids[:room], "rejected_ids": rejected_ids[:room]})
    return rows, Truncation(len(rows), cut, lost)
