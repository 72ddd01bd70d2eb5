"""A debate's judges: their personas, how a judge reads a sample, the request of one judge in one
round, and how its answer is read.

A panel of ``k`` judges (default two personas: ``recall``, recall-first, and ``strict``,
precision-first) classifies a generated input with reasoning, confidence and a label (yes: the
criterion holds). In a later round a judge sees its own previous answer, the other judges' answers
and the advocate's argument (:mod:`hf_barred.stages.advocate`); the rounds and the verdict are
:mod:`hf_barred.stages.debate`'s.

Example:
    >>> from hf_barred.stages.judge import judge_names, persona_prompt
    >>> judge_names(["recall", "strict", "strict", "Be terse."])
    ['recall', 'strict', 'strict#2', 'judge4']
    >>> persona_prompt("strict").id, persona_prompt("You are terse.").text
    ('small/judge_persona/strict', 'You are terse.')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional, cast

from ..llm.base import Conversation
from ..llm.structured import StructuredResult, answer_text
from .answers import JudgeAnswer, string_budget
from .labels import clean_text, normalize_label
from .prompting import Prompt, load_prompt

__all__ = [
    "JUDGE_PERSONAS",
    "PERSONA_NAMES",
    "answer_variables",
    "describe",
    "input_text",
    "judge_grammar",
    "judge_messages",
    "judge_names",
    "persona_name",
    "persona_prompt",
    "persona_text",
    "read_judge",
    "sample_variables",
]

JUDGE_PERSONAS = ("recall", "strict", "literal", "contextual", "skeptic")
"""Built-in judge personas, one template each (``hf_barred/stages/prompts/<set>/judge_persona/<name>.jinja``); a
judge given as any other string uses that string as its persona."""

PERSONA_NAMES = {
    "recall": "recall-focused",
    "strict": "strict",
    "literal": "literal-minded",
    "contextual": "context-minded",
    "skeptic": "skeptical",
}
"""How a prompt names a built-in persona ("You are a strict evaluation agent")."""


def judge_grammar(max_tokens: int) -> dict[str, Any]:
    """The strict schema a constrained engine judges with (:class:`~hf_barred.stages.answers.JudgeAnswer`):
    short reasoning first, a confidence in [0, 1], then ``yes`` or ``no``."""
    return JudgeAnswer.grammar(max_length={"reasoning": string_budget(max_tokens, 1, 24)})


def persona_prompt(judge: str, prompt_set: str = "small") -> Prompt:
    """The persona of ``judge`` in ``prompt_set``: its built-in template, or the judge's own text
    (never rendered as a template)."""
    if judge in JUDGE_PERSONAS:
        return load_prompt("judge_persona", judge, prompt_set)
    return Prompt("judge_persona", "custom", judge, prompt_set)


def persona_text(judge: str, prompt_set: str = "small") -> str:
    """The persona sentence of ``judge`` (see :func:`persona_prompt`)."""
    return persona_prompt(judge, prompt_set).text.strip()


def persona_name(judge: str) -> str:
    """The adjective a prompt calls a judge by (``independent`` for a persona given as text)."""
    return PERSONA_NAMES.get(judge, "independent")


def judge_names(judges: Sequence[str]) -> list[str]:
    """Short unique names of the judges (``recall``, ``strict``, ``strict#2``, ``judge3``)."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for k, judge in enumerate(judges):
        base = judge if judge in JUDGE_PERSONAS else f"judge{k + 1}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


# --- how a judge reads a sample, and is read ---------------------------------------------------------------
def input_text(record: dict[str, Any]) -> str:
    """The text a judge reads for a sample row: the input, or the task and the response."""
    if record["input_type"] == "task_and_response":
        return f"Task: {record['task']}\nResponse: {record['text']}"
    return record["text"]


def sample_variables(record: dict[str, Any]) -> dict[str, Any]:
    """The template variables that show a sample row: ``input_type``, ``input_text`` (as the judges
    read it, :func:`input_text`), and its ``task`` and ``response`` parts."""
    task = record["task"] if record["input_type"] == "task_and_response" else ""
    return {
        "input_type": record["input_type"],
        "input_text": input_text(record),
        "task": task,
        "response": record["text"],
    }


def _yes_no(label: Optional[str], labels: Sequence[str]) -> str:
    if label is None:
        return "no readable answer"
    return "yes" if label == labels[1] else "no"


def _confidence(value: Any) -> float:
    try:
        c = float(value)
    except (TypeError, ValueError):
        return math.nan
    if 1 < c <= 100:
        c /= 100
    return min(max(c, 0.0), 1.0)


def answer_variables(name: str, answer: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """A judge's answer as template variables: ``name``, ``label`` (yes / no / "" when unreadable),
    ``confidence`` (two decimals, or "unknown") and ``reasoning``."""
    confidence = answer["confidence"]
    return {
        "name": name,
        "label": "" if answer["label"] is None else _yes_no(answer["label"], labels),
        "confidence": "unknown" if confidence is None or math.isnan(confidence) else f"{confidence:.2f}",
        "reasoning": answer["reasoning"],
    }


def describe(name: str, answer: dict[str, Any], labels: Sequence[str]) -> str:
    """A judge's answer in one line (what the advocate answers and refinement reads).

    >>> describe("strict", {"label": "no_advice", "reasoning": "no advice", "error": None}, ["no_advice", "advice"])
    'strict: no (no advice)'
    """
    if answer["error"]:
        return f"{name}: (no readable answer)"
    return f"{name}: {_yes_no(answer['label'], labels)} ({answer['reasoning']})"


def judge_messages(
    prompt: Prompt,
    persona: Prompt,
    judge: str,
    row: dict[str, Any],
    round: int,
    names: Sequence[str],
    j: int,
    last: Optional[list[dict[str, Any]]],
    conversation: Optional[Conversation],
    advocate: str,
) -> Conversation:
    """Judge ``j``'s conversation in ``round``: the sample in round 1; later, its own previous answer,
    the other judges' answers (``last``) and the advocate's argument. Messages that start with the
    judge's own previous answer continue its ``conversation`` (small set); otherwise they are a whole new
    conversation holding that answer (served set)."""
    variables = {
        "round": round,
        "persona": persona.text.strip(),
        "persona_name": persona_name(judge),
        "criterion": row["criterion"],
        **sample_variables(row),
    }
    if round == 1 or last is None:
        return prompt.messages(**variables)
    labels = row["labels"]
    own = last[j]
    others = [(n, a) for k, (n, a) in enumerate(zip(names, last)) if k != j]
    messages = prompt.messages(
        **variables,
        previous=answer_variables(names[j], own, labels),
        previous_answer=answer_text(own["raw"]),  # the judge's own answer, without its thinking
        other_answers=[answer_variables(n, a, labels) for n, a in others],
        others="; ".join(describe(n, a, labels) for n, a in others),
        advocate=advocate or "(no argument)",
        disagreed=any(a["label"] != own["label"] for _, a in others) or own["label"] != labels[row["target"]],
    )
    continues = messages[0]["role"] == "assistant"
    return (list(conversation or []) + messages) if continues else messages


def read_judge(name: str, result: StructuredResult, labels: Sequence[str]) -> dict[str, Any]:
    """One judge's answer as a debate record: its label (a label name; None when unreadable), confidence,
    reasoning, raw answer and parse error.

    >>> read_judge("strict", StructuredResult({"label": "maybe"}, "{}", None, 1), ["no", "yes"])["error"]
    "label: expected yes or no (or one of ['no', 'yes']), found 'maybe'"
    """
    label, error = None, result.error
    if result.ok:
        answer = cast(dict[str, Any], result.data)  # ok: the answer parsed
        label = normalize_label(answer["label"], labels)
        if label is None:
            error = f"label: expected yes or no (or one of {list(labels)}), found {answer['label']!r}"
    data = result.data or {}
    return {
        "judge": name,
        "label": label,
        "reasoning": clean_text(data.get("reasoning", "")),
        "confidence": _confidence(data.get("confidence")),
        "raw": result.raw,
        "error": error,
    }
