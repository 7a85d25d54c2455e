"""The one place that renders an example for the model.

Training, DPO pairs, probes, rollouts and evaluation all call these functions, so the
model is always scored on exactly the token sequence it was trained on.
The assistant turn follows s1: ``<|im_start|>think\\n{reasoning}\\n<|im_start|>answer\\nAnswer: {answer}``.
"""

from __future__ import annotations

from typing import Any

THINK = "<|im_start|>think\n"
ANSWER_SEP = "\n<|im_start|>answer\n"
# where a sampled think body ends: the answer header, with or without the newline after it
ANSWER_MARK = ANSWER_SEP.rstrip("\n")
ANSWER_PREFIX = "Answer: "
DEFAULT_SYSTEM = "Reason step by step, then give the final answer."


def assistant_content(reasoning: str, answer: str) -> str:
    return f"{THINK}{reasoning}{ANSWER_SEP}{ANSWER_PREFIX}{answer}"


def prompt_messages(question: str, system: str | None = DEFAULT_SYSTEM) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return messages


def assistant_message(reasoning: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": assistant_content(reasoning, answer)}]


def prompt_text(tokenizer: Any, question: str, system: str | None = DEFAULT_SYSTEM) -> str:
    """The prompt string up to and including the assistant header, ready for generation."""
    return tokenizer.apply_chat_template(
        prompt_messages(question, system), tokenize=False, add_generation_prompt=True
    )


def tokenize_example(
    tokenizer: Any,
    question: str,
    reasoning: str,
    answer: str,
    system: str | None = DEFAULT_SYSTEM,
    max_completion_tokens: int | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the assistant completion (which ends with <|im_end|>).

    The completion is the difference between the full conversation and the prompt with its
    generation header, the same split trl makes for prompt-completion data.
    Truncation, when asked, is in tokens and applies to the completion only.
    """
    prompt = prompt_messages(question, system)
    prompt_ids = _ids(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True))
    full_ids = _ids(
        tokenizer.apply_chat_template(prompt + assistant_message(reasoning, answer), tokenize=True)
    )
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("chat template does not extend the prompt with the assistant turn")
    completion_ids = full_ids[len(prompt_ids):]
    if max_completion_tokens is not None:
        completion_ids = completion_ids[:max_completion_tokens]
    return prompt_ids, completion_ids


def split_answer(text: str) -> tuple[str, str]:
    """Split generated assistant text into (reasoning, answer) at the s1 answer separator."""
    body = text[len(THINK):] if text.startswith(THINK) else text
    for sep in (ANSWER_SEP, "<|im_start|>answer\n", "<|im_start|>answer"):
        if sep in body:
            reasoning, answer = body.rsplit(sep, 1)
            break
    else:
        reasoning, answer = body, ""
        if ANSWER_PREFIX.strip() in body:
            reasoning, answer = body.rsplit(ANSWER_PREFIX.strip(), 1)
            return reasoning.strip(), answer.strip().split("<|im_end|>")[0].strip()
    answer = answer.split("<|im_end|>")[0].strip()
    if answer.startswith(ANSWER_PREFIX.strip()):
        answer = answer[len(ANSWER_PREFIX.strip()):].strip()
    return reasoning.strip(), answer


def _ids(out: Any) -> list[int]:
    # transformers 5 may return a BatchEncoding-like mapping from apply_chat_template
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)
