"""A scripted engine for unit tests of parsing and control flow (not for testing LLM stages).

Example:
    >>> backend = ScriptedBackend(lambda conversation: "ok")
    >>> backend.chat([[{"role": "user", "content": "hi"}]], SamplingParams())[0].text
    'ok'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

from hf_barred.llm.base import Completion, Conversation, ResultCallback, SamplingParams


class ScriptedBackend:
    """Answers each conversation with ``reply(conversation)``; records every conversation sent."""

    supports_json_schema = False

    def __init__(
        self, reply: Callable[[Conversation], str], model_name: str = "scripted", fail_after: Optional[int] = None
    ):
        self.reply = reply
        self.model_name = model_name
        self.fail_after = fail_after
        self.sent: list[Conversation] = []

    def chat(
        self, conversations: Sequence[Conversation], params: SamplingParams, on_result: Optional[ResultCallback] = None
    ) -> list[Completion]:
        out = []
        for i, conversation in enumerate(conversations):
            if self.fail_after is not None and len(self.sent) >= self.fail_after:
                raise KeyboardInterrupt("scripted interruption")
            self.sent.append(conversation)
            text = self.reply(conversation)
            completion = Completion(
                text=text,
                prompt_tokens=len(str(conversation)) // 4,
                completion_tokens=len(text) // 4 + 1,
                model=self.model_name,
            )
            if on_result is not None:
                on_result(i, completion)
            out.append(completion)
        return out
