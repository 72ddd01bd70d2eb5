"""Helpers shared by the BARRED stages: stage configs, chat templates, labels, usage.

Prompt templates may hold a whole short conversation (a worked example helps small models answer
in JSON): lines ``<<system>>``, ``<<user>>`` and ``<<assistant>>`` start a message.

Example:
    >>> from hf_barred.stages._barred import split_chat, normalize_label, forbidden_mention
    >>> [m["role"] for m in split_chat("<<user>>\\nhi\\n<<assistant>>\\n{}\\n<<user>>\\nnow you")]
    ['user', 'assistant', 'user']
    >>> normalize_label("Yes", ["no_advice", "advice"]), normalize_label("no_advice", ["no_advice", "advice"])
    ('advice', 'no_advice')
    >>> forbidden_mention("User: hi\\nAgent: This test case is labelled True.", ["False", "True"])
    "'test case'"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..llm.base import Conversation, SamplingParams
from ..llm.config import EngineConfig
from ..llm.structured import StructuredResult

_ROLE_LINE = re.compile(r"^<<(system|user|assistant)>>[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class LLMStageConfig:
    """What every LLM stage of BARRED shares.

    Parameters, by purpose:

    - Who answers: ``engine`` (only its engine and model reach fingerprints).
    - Prompt: ``prompt_version`` (``hf_barred/prompts/<stage>/<version>.jinja``).
    - Sampling: ``max_tokens``, ``temperature``, ``seed`` (the engine's sampling seed).
    - Parsing: ``max_repairs`` (bounded repair rounds for answers that are not valid JSON).
    """

    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "Engine and model that answer."})
    prompt_version: str = field(default="v1", metadata={"help": "Version of the stage's prompt template."})
    max_tokens: int = field(default=128, metadata={"help": "Maximum tokens of one answer."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    seed: int = field(default=0, metadata={"help": "Sampling seed of the engine."})
    max_repairs: int = field(default=1, metadata={"help": "Repair rounds for an answer that is not valid JSON."})

    def __post_init__(self) -> None:
        if not isinstance(self.engine, EngineConfig):
            raise TypeError(f"{type(self).__name__}.engine: expected an EngineConfig, found {type(self.engine).__name__}.")
        if self.max_tokens < 1:
            raise ValueError(f"{type(self).__name__}.max_tokens: expected >= 1, found {self.max_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"{type(self).__name__}.temperature: expected >= 0, found {self.temperature}.")
        if self.max_repairs < 0:
            raise ValueError(f"{type(self).__name__}.max_repairs: expected >= 0, found {self.max_repairs}.")

    def sampling(self, **changes: Any) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed).replace(**changes)


def string_budget(max_tokens: int, fields: int = 1, overhead_tokens: int = 0) -> int:
    """The ``maxLength`` of each of ``fields`` JSON strings that, with ``overhead_tokens`` of keys
    and punctuation, lets a constrained answer close within ``max_tokens`` (at a conservative 3
    characters per token; English runs at about 4).

    >>> string_budget(128, fields=2, overhead_tokens=10)
    177
    """
    return max(8, (max_tokens - overhead_tokens) * 3 // fields)


def engine_for(config: EngineConfig) -> Any:
    """The cached engine of ``config``, looked up inside the worker process (never a live client
    in ``fn_kwargs``). Goes through :func:`hf_barred.llm.get_engine` at call time, so tests can
    swap the backend with ``monkeypatch.setattr(hf_barred.llm, "build_backend", ...)``."""
    from .. import llm

    return llm.get_engine(config)


def split_chat(text: str) -> Conversation:
    """A rendered template as chat messages (see the module doc); no marker: one user message."""
    marks = list(_ROLE_LINE.finditer(text))
    if not marks:
        return [{"role": "user", "content": text.strip()}]
    messages = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        messages.append({"role": mark.group(1), "content": text[mark.end() : end].strip()})
    return messages


_YES = {"yes", "true", "1", "applies", "positive", "holds", "y"}
_NO = {"no", "false", "0", "not applies", "does not apply", "negative", "n"}


def normalize_label(answer: Any, labels: Sequence[str]) -> Optional[str]:
    """The label name meant by a judge's answer: a label name, yes/no, true/false or 1/0
    (yes = the criterion holds = ``labels[1]``); None when it is none of these."""
    if isinstance(answer, bool):
        return labels[int(answer)]
    text = str(answer).strip().strip(".\"'").lower()
    for i, name in enumerate(labels):
        if text == name.lower():
            return labels[i]
    if text in _YES:
        return labels[1]
    if text in _NO:
        return labels[0]
    return None


def normalize_relevance(answer: Any) -> Optional[str]:
    """positive | negative | both from yes/no/both, true/false, positive/negative; else None."""
    text = str(answer).strip().lower()
    if text in ("both", "either", "any"):
        return "both"
    if text in _YES:
        return "positive"
    if text in _NO:
        return "negative"
    return None


_FORBIDDEN = re.compile(
    r"\b(test[ -]?case|test example|training (?:data|example|sample)|dimension|instantiation|"
    r"labell?ed|the label|label:|classifier|guardrail|language model|this (?:example|sample)|"
    r"boundary case|edge case|borderline case)\b",
    re.IGNORECASE,
)


def forbidden_mention(text: str, labels: Sequence[str] = ()) -> Optional[str]:
    """What a generated input must not mention (tests, models, dimensions, labels), quoted; else None.

    Label names count when they are not plain words (``health_advice``, ``PASS``), since a
    conversation may well say "true" or "false".
    """
    match = _FORBIDDEN.search(text)
    if match:
        return repr(match.group(0))
    for name in labels:
        if ("_" in name or name.isupper()) and len(name) > 1 and re.search(rf"\b{re.escape(name)}\b", text):
            return repr(name)
    return None


def zero_usage() -> dict[str, int]:
    return {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}


def add_usage(usage: dict[str, int], result: StructuredResult | Any, calls: Optional[int] = None) -> dict[str, int]:
    """``usage`` plus one structured result (its attempts are its calls) or one completion."""
    attempts = calls if calls is not None else getattr(result, "attempts", 1)
    return {
        "calls": usage["calls"] + attempts,
        "prompt_tokens": usage["prompt_tokens"] + result.prompt_tokens,
        "completion_tokens": usage["completion_tokens"] + result.completion_tokens,
    }


def clean_text(value: Any) -> str:
    """A model's string field, with escaped newlines of weak models turned into real ones."""
    return str(value).replace("\\n", "\n").strip()
