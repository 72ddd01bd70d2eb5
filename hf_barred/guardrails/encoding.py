"""Inputs as token ids, the same at training and inference: the classification prompt of
:mod:`hf_barred.guardrails.formats` for generative guardrails, ``(rule, text)`` pairs for classifiers, and the
windows that long inputs are split into.

The prompt and the completion are tokenised apart, exactly as inference sees them: the prompt is what
``apply_chat_template(..., add_generation_prompt=True)`` renders; the completion is what the template
adds after it for the assistant's answer (e.g. ``"1<|im_end|>\\n"``). Without a template, the prompt
ends with ``"\\nAnswer: "`` and the completion is the answer plus EOS. Only the input text is ever
cut or split, never the instructions or the answer.

Example:
    >>> from hf_barred.guardrails.encoding import build_messages, target_answer, windows
    >>> build_messages("binary", "hi", rule="The user greets.")[0]["role"], target_answer("binary", 1)
    ('user', '1')
    >>> windows(list(range(10)), size=4, stride=1)
    [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .formats import format_task, policy_answer, policy_messages

IGNORE_INDEX = -100
LONG_INPUTS = ("chunk", "truncate")


def build_messages(
    fmt: str, text: str, rule: Optional[str] = None, task: Optional[str] = None, taxonomy: Optional[str] = None
) -> list[dict[str, str]]:
    """The classification prompt of the format named ``fmt`` for one input."""
    if format_task(fmt) == "policy":
        if not taxonomy:
            raise ValueError("The policy format needs a taxonomy (S-coded text); found none.")
        return policy_messages(taxonomy, text)
    if not rule:
        raise ValueError("The binary format needs a rule; found none. Pass rule=... .")
    from .formats import classification_messages

    return classification_messages(rule, text, task, format=fmt)


def target_answer(fmt: str, label: int, categories: Sequence[str] = ()) -> str:
    """The answer a generative guardrail is trained to give: ``"1"``/``"0"`` or the policy JSON."""
    if format_task(fmt) == "policy":
        return policy_answer(bool(label), list(categories))
    return "1" if label else "0"


def windows(ids: Sequence[int], size: int, stride: int) -> list[list[int]]:
    """``ids`` cut into windows of ``size`` that overlap by ``stride`` (one window when it fits)."""
    ids = list(ids)
    if len(ids) <= size:
        return [ids]
    step = max(1, size - stride)
    out = []
    for start in range(0, len(ids), step):
        out.append(ids[start : start + size])
        if start + size >= len(ids):
            break
    return out


@dataclass(frozen=True)
class DecisionTokens:
    """Where the verdict is read: after ``prefix`` (ids common to both answers), the probability of
    ``positive`` vs ``negative`` (``"1"``/``"0"``; for the policy JSON the first token of
    ``unsafe``/``safe``)."""

    prefix: tuple[int, ...]
    positive: int
    negative: int


class PromptEncoder:
    """Turns messages (+ an answer) into token ids, with the chat template when the tokenizer has one
    (see the module docstring). ``max_length`` bounds prompt plus answer."""

    def __init__(self, tokenizer: Any, max_length: int = 1024):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_template = bool(getattr(tokenizer, "chat_template", None))
        self._completions: dict[str, list[int]] = {}

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        if self.use_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return messages[-1]["content"] + "\nAnswer: "

    def completion_text(self, messages: list[dict[str, str]], answer: str) -> str:
        eos = self.tokenizer.eos_token or ""
        if self.use_template:
            prompt = self.prompt_text(messages)
            full = self.tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": answer}], tokenize=False
            )
            if full.startswith(prompt):
                return full[len(prompt) :]
        return answer + eos

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer(self.prompt_text(messages), add_special_tokens=not self.use_template)["input_ids"]

    def completion_ids(self, messages: list[dict[str, str]], answer: str) -> list[int]:
        return self.tokenizer(self.completion_text(messages, answer), add_special_tokens=False)["input_ids"]

    def text_budget(
        self, fmt: str, rule: Optional[str], task: Optional[str], taxonomy: Optional[str], reserve: int = 0
    ) -> int:
        """Input-text tokens that fit beside the instructions and ``reserve`` answer tokens."""
        overhead = len(self.prompt_ids(build_messages(fmt, "", rule, task, taxonomy))) + reserve
        budget = self.max_length - overhead - 2
        if budget < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for the input: the prompt alone takes "
                f"{overhead} tokens. Fix: raise --max_length."
            )
        return budget

    def fit(
        self, fmt: str, text: str, rule: Optional[str], task: Optional[str], taxonomy: Optional[str], reserve: int = 0
    ) -> list[dict[str, str]]:
        """Messages whose prompt, plus ``reserve`` answer tokens, fits ``max_length`` (the text is cut)."""
        return self.fitted_windows(fmt, text, rule, task, taxonomy, reserve, chunk=False)[0]

    def fitted_windows(
        self,
        fmt: str,
        text: str,
        rule: Optional[str],
        task: Optional[str],
        taxonomy: Optional[str],
        reserve: int = 0,
        chunk: bool = True,
        stride: int = 32,
    ) -> list[list[dict[str, str]]]:
        """The messages of each window of ``text`` (one when it fits; with ``chunk=False`` only the first)."""
        messages = build_messages(fmt, text, rule, task, taxonomy)
        if len(self.prompt_ids(messages)) + reserve <= self.max_length:
            return [messages]
        budget = self.text_budget(fmt, rule, task, taxonomy, reserve)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        parts = windows(ids, budget, min(stride, budget // 2)) if chunk else [ids[:budget]]
        return [build_messages(fmt, self.tokenizer.decode(part), rule, task, taxonomy) for part in parts]

    def completion_for(
        self,
        fmt: str,
        label: int,
        categories: Sequence[str] = (),
        rule: Optional[str] = None,
        task: Optional[str] = None,
        taxonomy: Optional[str] = None,
    ) -> list[int]:
        """The answer's token ids (cached: the completion does not depend on the input)."""
        answer = target_answer(fmt, label, categories)
        if answer not in self._completions:
            self._completions[answer] = self.completion_ids(build_messages(fmt, "", rule, task, taxonomy), answer)
        return self._completions[answer]

    def decision_tokens(self, fmt: str) -> DecisionTokens:
        """The ids after which the positive and negative answers part (see :class:`DecisionTokens`)."""
        probe = build_messages(fmt, "x", "r", None, "S1: x")
        pos = self.completion_ids(probe, target_answer(fmt, 1, ["S1"]))
        neg = self.completion_ids(probe, target_answer(fmt, 0))
        k = 0
        while k < min(len(pos), len(neg)) and pos[k] == neg[k]:
            k += 1
        if k >= min(len(pos), len(neg)):
            raise ValueError(
                "The tokenizer gives the positive and negative answers the same tokens; "
                "it cannot be used for a generative guardrail."
            )
        return DecisionTokens(prefix=tuple(pos[:k]), positive=pos[k], negative=neg[k])


def classifier_inputs(
    tokenizer: Any,
    texts: Sequence[str],
    rules: Optional[Sequence[Optional[str]]],
    max_length: int,
    chunk: bool = False,
    stride: int = 32,
    **kwargs: Any,
) -> Any:
    """Tokenise for a sequence classifier; with ``rules`` the rule is the first segment, the text the
    second (only the text is cut). ``chunk=True`` returns every window of a long text (fast tokenizers:
    ``overflow_to_sample_mapping`` maps windows to texts)."""
    extra = {"return_overflowing_tokens": True, "stride": stride} if chunk else {}
    if rules is not None:
        return tokenizer(
            [r or "" for r in rules], list(texts), truncation="only_second", max_length=max_length, **extra, **kwargs
        )
    return tokenizer(list(texts), truncation=True, max_length=max_length, **extra, **kwargs)
