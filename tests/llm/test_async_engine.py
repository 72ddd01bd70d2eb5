"""The awaitable engine's dispatch: an HTTP engine's slots go to the highest priority first, and none is lost."""

from __future__ import annotations

import asyncio
import threading

from hf_barred.llm.async_engine import AsyncEngine, request_priority
from hf_barred.llm.base import Completion, SamplingParams


class OneAtATime:
    """A concurrent engine with one slot: records the order it is asked in, and how many it ever had at once."""

    model_name, supports_json_schema, concurrent_calls, max_concurrency = "one", False, True, 1

    def __init__(self) -> None:
        self.order: list[str] = []
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()

    def chat(self, conversations, params, on_result=None, stage=""):
        answers = []
        for i, conversation in enumerate(conversations):
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.order.append(conversation[-1]["content"])
            answer = Completion(text=conversation[-1]["content"])
            with self.lock:
                self.now -= 1
            if on_result is not None:
                on_result(i, answer)
            answers.append(answer)
        return answers


def test_queued_requests_go_out_by_priority_then_arrival_and_never_past_the_engine_limit():
    backend = OneAtATime()
    engine = AsyncEngine(backend)
    assert engine.concurrent and engine.max_in_flight == 1

    async def ask(text: str, priority: int) -> str:
        request_priority.set(priority)
        [answer] = await engine.chat([[{"role": "user", "content": text}]], SamplingParams())
        return answer.text

    async def main() -> list[str]:
        return list(await asyncio.gather(ask("a0", 0), ask("b0", 0), ask("c2", 2), ask("d1", 1), ask("e2", 2)))

    assert asyncio.run(main()) == ["a0", "b0", "c2", "d1", "e2"]  # every waiter gets its own answer
    assert backend.order == ["c2", "e2", "d1", "a0", "b0"]
    assert backend.most == 1


def test_an_engine_error_frees_the_slots_of_the_requests_it_never_answered():
    class Failing(OneAtATime):
        def chat(self, conversations, params, on_result=None, stage=""):
            if conversations[0][-1]["content"] == "boom":
                raise ConnectionError("unreachable")
            return super().chat(conversations, params, on_result, stage)

    engine = AsyncEngine(Failing())

    async def main() -> tuple[bool, str]:
        failed = False
        try:
            await engine.chat([[{"role": "user", "content": "boom"}]], SamplingParams())
        except ConnectionError:
            failed = True
        [answer] = await engine.chat([[{"role": "user", "content": "after"}]], SamplingParams())
        return failed, answer.text

    assert asyncio.run(asyncio.wait_for(main(), 10)) == (True, "after")
    assert engine._in_flight == 0
