"""A scripted BARRED engine: answers each stage's prompt by recognising it.

``BarredScript`` decides the judges' verdicts with ``verdict(text, round, judge_index)``, which
returns ``"yes"``, ``"no"`` or ``"garbage"`` (an unparseable answer), and the generator's text
with ``write(sample_id, refinement)``. Every chat call is logged in ``calls`` as (kind, count).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Optional

from hf_barred.llm.base import SamplingParams
from tests.utils.scripted_backend import ScriptedBackend


def _kind(conversation) -> str:
    last = conversation[-1]["content"]
    if "could not be used" in last:
        return "repair"
    if "aspects in which" in last:
        return "decompose"
    if "List all reasonable values" in last:
        return "instantiate"
    if "Rewrite it so" in last:
        return "refine"
    if "Write a new, tricky" in last:
        return "generate"
    if last.startswith("You defend a fixed verdict"):
        return "advocate"
    if "Does the rule apply?" in last or "Look again" in last:
        return "judge"
    return "unknown"


def _judge_index(conversation) -> int:
    first = conversation[0]["content"]
    return 0 if first.startswith("You are a careful reviewer") else 1


class BarredScript(ScriptedBackend):
    def __init__(
        self,
        verdict: Optional[Callable[[str, int, int], str]] = None,
        write: Optional[Callable[[str, int], str]] = None,
        dimensions: tuple[str, ...] = ("topic of the question", "how explicit the answer is"),
        model_name: str = "scripted",
    ):
        super().__init__(self._reply, model_name=model_name)
        self.verdict = verdict or (lambda text, round_, judge: "yes")
        self.write = write or (lambda sample_id, refinement: f"User: question {sample_id}\nAgent: answer {refinement}")
        self.dimensions = dimensions
        self.calls: list[tuple[str, int]] = []
        self.sent_with_params: list[tuple[list, SamplingParams]] = []

    def chat(self, conversations, params: SamplingParams, on_result=None):
        kinds = sorted({_kind(c) for c in conversations})
        self.calls.append(("+".join(kinds), len(conversations)))
        self.sent_with_params.extend((list(c), params) for c in conversations)
        return super().chat(conversations, params, on_result)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def _reply(self, conversation) -> str:
        kind = _kind(conversation)
        last = conversation[-1]["content"]
        if kind == "decompose":
            return json.dumps({"dimensions": list(self.dimensions)})
        if kind == "instantiate":
            return json.dumps(
                {
                    "values": [
                        {"value": "pain relief", "applies": "yes", "probability": 0.5},
                        {"value": "delivery times", "applies": "no", "probability": 0.3},
                        {"value": "food labels", "applies": "both", "probability": 0.2},
                    ]
                }
            )
        if kind in ("generate", "refine"):
            sample_id = re.search(r"\(sample (\d+)\)", last).group(1)
            text = self.write(sample_id, 1 if kind == "refine" else 0)
            if text == "garbage":
                return "I cannot write JSON today."
            return json.dumps({"text": text, "reasoning": f"reasoning for {sample_id}"})
        if kind == "advocate":
            return "The verdict holds because the agent tells the user what to do about their health."
        if kind == "judge":
            round_ = 1 if "Look again" not in last else int(re.search(r"Round (\d+)", last).group(1))
            text = next(m["content"] for m in reversed(conversation) if "Input:" in m["content"])
            text = text.split("Input:\n", 1)[1].rsplit("\nDoes the rule apply?", 1)[0]
            answer = self.verdict(text, round_, _judge_index(conversation))
            if answer == "garbage":
                return "hmm"
            return json.dumps({"reasoning": f"judge says {answer}", "confidence": 0.8, "label": answer})
        return "hmm"


class TargetAwareScript(BarredScript):
    """Writes the target label into each sample (`` [yes]`` / `` [no]``); with ``verdict=target_verdict`` the
    judges agree with it, so both labels get accepted."""

    def _reply(self, conversation):
        last = conversation[-1]["content"]
        answer = super()._reply(conversation)
        if "Write a new, tricky" in last or "Rewrite it so" in last:
            wanted = "no" if "does not apply" in last else "yes"
            row = json.loads(answer)
            return json.dumps(row | {"text": row["text"] + f" [{wanted}]"})
        return answer


def target_verdict(text: str, round_: int, judge: int) -> str:
    """The judges' answer for a :class:`TargetAwareScript` sample: the label written into it."""
    return "no" if "[no]" in text else "yes"
