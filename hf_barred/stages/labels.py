"""Reading a model's answers and checking its samples: label words, relevance words, forbidden mentions.

Example:
    >>> from hf_barred.stages.labels import forbidden_mention, normalize_label
    >>> normalize_label("Yes", ["no_advice", "advice"]), normalize_label("no_advice", ["no_advice", "advice"])
    ('advice', 'no_advice')
    >>> forbidden_mention("User: hi\\nAgent: This test case is labelled True.", ["False", "True"])
    "'test case'"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Optional

from ..policy.data import NO_WORDS, YES_WORDS, label_index

__all__ = ["clean_text", "forbidden_mention", "normalize_label", "normalize_relevance"]


def normalize_label(answer: Any, labels: Sequence[str]) -> Optional[str]:
    """The label name meant by a judge's answer: a label name, yes/no, true/false or 1/0
    (yes = the criterion holds = ``labels[1]``); None when it is none of these."""
    index = label_index(
        answer if isinstance(answer, (str, bool, int, float)) else str(answer), labels[:1], labels[1:], answer=True
    )
    return None if index is None else labels[index]


def normalize_relevance(answer: Any) -> Optional[str]:
    """positive | negative | both from yes/no/both, true/false, positive/negative; else None."""
    text = str(answer).strip().lower()
    if text in ("both", "either", "any"):
        return "both"
    if text in YES_WORDS:
        return "positive"
    if text in NO_WORDS:
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


def clean_text(value: Any) -> str:
    """A model's string field, with escaped newlines of weak models turned into real ones."""
    return str(value).replace("\\n", "\n").strip()
