"""A debate's Advocate: it always argues for the target label, with the generator's reasoning,
against the judges' objections, and never changes position.

The advocate speaks before every round after the first, only for the rows that need that round
(:mod:`hf_barred.stages.debate`); its argument is free text, shown to every judge.

Example:
    >>> from hf_barred.llm.base import Completion
    >>> from hf_barred.stages.advocate import read_advocate
    >>> read_advocate(Completion(text="<think>hmm</think> The agent tells the user to rest."))
    ('The agent tells the user to rest.', '')
    >>> read_advocate(Completion(text=""))
    ('', "the advocate's answer is empty")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..llm.base import Completion, Conversation, cut_off
from ..llm.structured import answer_text
from .judge import describe, sample_variables
from .labels import clean_text
from .prompting import Prompt

__all__ = ["advocate_messages", "read_advocate"]


def advocate_messages(
    prompt: Prompt, row: dict[str, Any], names: Sequence[str], last: list[dict[str, Any]]
) -> Conversation:
    """The advocate's conversation for a sample row: the criterion, the sample, the target, the
    generator's reasoning and the objections of the judges who did not give the target in ``last``."""
    labels = row["labels"]
    objections = " ".join(describe(n, a, labels) for n, a in zip(names, last) if a["label"] != labels[row["target"]])
    return prompt.messages(
        criterion=row["criterion"],
        applies=row["target"] == 1,
        reasoning=row["reasoning"],
        objections=objections,
        **sample_variables(row),
    )


def read_advocate(completion: Completion) -> tuple[str, str]:
    """``(argument, error)``: the argument without any thinking, and "" or why there is none."""
    text = clean_text(answer_text(completion.text)) if completion.ok else ""
    error = completion.error if not completion.ok else ("" if text else "the advocate's answer is empty")
    if error and completion.ok and completion.finish_reason == "length":
        error = cut_off(f"{error}: the token budget went before any argument ({completion.completion_tokens} tokens)")
    return text, error or ""
