"""The Stage: what an LLM stage declares, and the one base that runs it, batched or row by row.

A stage declares, for one row (as curator's ``prompt``/``parse`` and distilabel's
``format_input``/``format_output`` do):

- :meth:`Stage.messages`: the conversation, rendered role by role from its prompt templates
  (:meth:`Stage.prompts`, part of the fingerprint);
- :meth:`Stage.answer`: the answer model (:mod:`hf_barred.stages.answers`: validation, and the
  grammar a constrained engine decodes with, :meth:`Stage.grammar`);
- :meth:`Stage.parse`: how one valid answer (its ``data``, and its ``raw`` text) becomes columns
  (raise :class:`Rejected` for an answer that follows the schema but cannot be used);
- ``name``, ``version`` and :meth:`Stage.features` (the output's declared ``datasets.Features``).

A stage with several requests per row (the debate's rounds, decomposition's seed subsets, coverage's
dimensions) writes :meth:`Stage.steps` instead: a generator that yields the :class:`Request` objects it
needs next, is sent their answers, and returns the row's output.

The base owns the rest: the engine (looked up from the config in the worker process, never a live
client in ``fn_kwargs``), the calls, the fingerprint (:func:`~hf_barred.stages.fingerprint.stage_fingerprint`),
the usage column and the failure rows (a row whose answer cannot be parsed keeps ``raw`` and ``error``).
It runs a stage two ways, with the same requests and so the same cached answers:

- calling the stage, ``stage(ds)``: ``Dataset.map(batched=True)``; every row advances one step at a time and the
  requests of a step go to the engine as one batched ``chat`` call per role (vLLM and the local engine
  see the whole batch; an HTTP engine keeps them all in flight);
- :meth:`Stage.arun`: one row, awaited (:class:`~hf_barred.llm.async_engine.AsyncEngine`), so an
  executor can move each row to its next stage as soon as its answers arrive.

Non-LLM stages (plan, category deletion and shuffling) are plain batched functions run by
:func:`~hf_barred.stages.batches.map_stage`, the same fingerprinted ``Dataset.map``.

Example:
    >>> from hf_barred.stages.base import LLMStageConfig
    >>> LLMStageConfig().sampling(max_tokens=8).max_tokens
    8
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Optional, TypeVar, Union, cast

from datasets import Dataset, Features

from ..llm.async_engine import request_priority
from ..llm.base import Completion, Conversation, SamplingParams
from ..llm.config import EngineConfig
from ..llm.structured import Schema, StructuredResult, astructured_chat, structured_chat
from .batches import add_usage, map_policy_stage, map_stage, rows, zero_usage
from .fingerprint import resolved_precision, stage_fingerprint
from .prompting import Prompt, check_prompt_set, default_prompt_set

__all__ = [
    "LLMStageConfig",
    "Rejected",
    "Request",
    "Stage",
    "Steps",
    "add_usage",
    "engine_for",
    "map_policy_stage",
    "map_stage",
    "rows",
    "zero_usage",
]


@dataclass(frozen=True)
class LLMStageConfig:
    """What every LLM stage of BARRED shares.

    Parameters, by purpose:

    - Who answers: ``engine`` (only its engine and model reach fingerprints).
    - Prompt: ``prompt_set`` (``small`` or ``served``; None: the engine's default,
      :func:`~hf_barred.stages.prompting.default_prompt_set`) and ``prompt_version``
      (``hf_barred/stages/prompts/<set>/<stage>/<version>.jinja``; None: the set's default).
    - Sampling: ``max_tokens``, ``temperature``, ``seed`` (the engine's sampling seed).
    - Parsing: ``max_repairs`` (bounded repair rounds for answers that are not valid JSON).
    """

    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "Engine and model that answer."})
    prompt_set: Optional[str] = field(
        default=None,
        metadata={"help": "Prompt set: small (embedded model) or served (strong models); None: by engine."},
    )
    prompt_version: Optional[str] = field(
        default=None, metadata={"help": "Version of the stage's prompt template (None: the set's default)."}
    )
    max_tokens: int = field(default=128, metadata={"help": "Maximum tokens of one answer."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    seed: int = field(default=0, metadata={"help": "Sampling seed of the engine."})
    max_repairs: int = field(default=1, metadata={"help": "Repair rounds for an answer that is not valid JSON."})

    def __post_init__(self) -> None:
        if not isinstance(self.engine, EngineConfig):
            raise TypeError(
                f"{type(self).__name__}.engine: expected an EngineConfig, found {type(self.engine).__name__}."
            )
        prompt_set = self.prompt_set
        if prompt_set is None:
            prompt_set = default_prompt_set(self.engine.engine)
            object.__setattr__(self, "prompt_set", prompt_set)
        check_prompt_set(prompt_set)
        if self.max_tokens < 1:
            raise ValueError(f"{type(self).__name__}.max_tokens: expected >= 1, found {self.max_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"{type(self).__name__}.temperature: expected >= 0, found {self.temperature}.")
        if self.max_repairs < 0:
            raise ValueError(f"{type(self).__name__}.max_repairs: expected >= 0, found {self.max_repairs}.")

    def sampling(self, **changes: Any) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed).replace(
            **changes
        )


def engine_for(config: EngineConfig) -> Any:
    """The cached engine of ``config``, looked up inside the worker process (never a live client
    in ``fn_kwargs``). Goes through :func:`hf_barred.llm.get_engine` at call time, so tests can
    swap the backend with ``monkeypatch.setattr(hf_barred.llm, "build_backend", ...)``."""
    from .. import llm

    return llm.get_engine(config)


# --- requests and answers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One conversation a stage needs answered.

    ``role`` tags the engine's usage (``"generate"``, ``"debate/judge"``); ``answer`` is the answer
    model or JSON schema (None: a free-text answer, a :class:`~hf_barred.llm.base.Completion`; else a
    :class:`~hf_barred.llm.structured.StructuredResult`), ``constrained`` the stricter schema a
    constrained engine decodes with, ``max_repairs`` the repair rounds of an answer that fails it.
    """

    role: str
    messages: Conversation
    params: SamplingParams
    answer: Optional[Schema] = None
    constrained: Optional[dict[str, Any]] = None
    max_repairs: int = 0

    def group(self) -> str:
        """Requests of one group go to the engine in one batched call (same role, sampling and schema)."""
        # an answer model is a class (hf_barred.stages.answers), which the AnswerSchema protocol cannot say
        schema = self.answer if isinstance(self.answer, (dict, type(None))) else cast(type, self.answer).__qualname__
        return json.dumps(
            [self.role, self.params.cache_fields(), schema, self.constrained, self.max_repairs],
            sort_keys=True,
            default=str,
        )


Result = Union[StructuredResult, Completion]
Steps = Generator[list[Request], list[Result], Union[dict[str, Any], list[dict[str, Any]]]]
"""A row's requests, step by step: yields the requests of a step, is sent their answers in order, and
returns the output row (or rows)."""


class Rejected(ValueError):
    """An answer that follows the schema but cannot be used (``parse`` raises it; the row fails with its message)."""


def answer_batch(engine: Any, requests: Sequence[Request]) -> list[Result]:
    """The answers to ``requests``, in order: one batched call per :meth:`Request.group`."""
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.group(), []).append(i)
    answers: list[Optional[Result]] = [None] * len(requests)
    for indexes in groups.values():
        first = requests[indexes[0]]
        conversations = [requests[i].messages for i in indexes]
        results: Sequence[Result]
        if first.answer is None:
            results = engine.chat(conversations, first.params, stage=first.role)
        else:
            results = structured_chat(
                engine,
                conversations,
                first.answer,
                first.params,
                stage=first.role,
                max_repairs=first.max_repairs,
                constrained_schema=first.constrained,
            )
        for i, result in zip(indexes, results):
            answers[i] = result
    return answers  # type: ignore[return-value]


async def answer_one(engine: Any, request: Request) -> Result:
    """The answer to one request, awaited (``engine``: :class:`~hf_barred.llm.async_engine.AsyncEngine`)."""
    if request.answer is None:
        [completion] = await engine.chat([request.messages], request.params, stage=request.role)
        return completion
    [result] = await astructured_chat(
        engine,
        [request.messages],
        request.answer,
        request.params,
        stage=request.role,
        max_repairs=request.max_repairs,
        constrained_schema=request.constrained,
    )
    return result


# --- the stage ---------------------------------------------------------------------------------------
ConfigT = TypeVar("ConfigT")
ResultT = TypeVar("ResultT", bound=Result)
"""The answer :meth:`Stage.parse` reads: a ``StructuredResult`` when :meth:`Stage.answer` names an answer
model or schema, a ``Completion`` for free text (:data:`Result` for a stage that writes its own ``steps``)."""


class Stage(Generic[ConfigT, ResultT]):
    """An LLM stage over ``config`` whose single request is answered by a ``ResultT`` (see the module
    docstring for what a subclass declares)."""

    name: ClassVar[str]
    version: ClassVar[str]
    usage_column: ClassVar[Optional[str]] = "usage"
    """The row's cumulative usage column the base adds every answer to (None: the stage keeps its own books)."""

    def __init__(self, config: ConfigT):
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # --- what a stage declares ---------------------------------------------------------------------------
    def prompts(self) -> tuple[Prompt, ...]:
        """Every template the stage renders (their texts reach the fingerprint)."""
        raise NotImplementedError

    def features(self, input_features: Features) -> Features:
        """The output rows' features, given the input's."""
        raise NotImplementedError

    def messages(self, row: dict[str, Any]) -> Conversation:
        """The conversation for one row (single-request stages)."""
        raise NotImplementedError

    def answer(self, row: dict[str, Any]) -> Optional[Schema]:
        """The answer model (None: free text)."""
        raise NotImplementedError

    def grammar(self, row: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The strict schema a constrained engine decodes with (None: the answer model's own grammar)."""
        return None

    def parse(self, row: dict[str, Any], result: ResultT) -> dict[str, Any]:
        """The output row for a valid answer (``result.data``, or ``result.text`` of a free-text answer);
        raise :class:`Rejected` for an unusable one."""
        raise NotImplementedError

    def failed(self, row: dict[str, Any], result: ResultT, error: str) -> dict[str, Any]:
        """The output row of a failed request or an unusable answer: the raw answer and the error kept."""
        return row | {"raw": getattr(result, "raw", getattr(result, "text", "")), "error": error}

    def skip(self, row: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The output of a row that needs no call (passed through), else None."""
        return None

    def request(self, row: dict[str, Any]) -> Request:
        """The one request of a single-request stage."""
        config: Any = self.config
        return Request(
            role=self.name,
            messages=self.messages(row),
            params=config.sampling(),
            answer=self.answer(row),
            constrained=self.grammar(row),
            max_repairs=config.max_repairs,
        )

    def steps(self, row: dict[str, Any]) -> Steps:
        """One request per row, parsed (the default); multi-request stages override this."""
        skipped = self.skip(row)
        if skipped is not None:
            return skipped
        [result] = yield [self.request(row)]
        return self.read(row, cast(ResultT, result))  # the answer to self.answer(row): see ResultT

    def read(self, row: dict[str, Any], result: ResultT) -> dict[str, Any]:
        """The output row of one answer: :meth:`parse` of a valid one, :meth:`failed` of a failed request
        or an answer the parser rejected."""
        if not result.ok:
            return self.failed(row, result, result.error or "no answer")
        try:
            return self.parse(row, result)
        except Rejected as rejected:
            return self.failed(row, result, str(rejected))

    # --- what the base owns ------------------------------------------------------------------------------
    @property
    def engine(self) -> Any:
        """The engine of the stage's config, in this process."""
        return engine_for(self.config.engine)  # type: ignore[attr-defined]

    def fingerprint(self, ds: Dataset) -> str:
        """The fingerprint ``stage(ds)`` gives its output (see :mod:`hf_barred.stages.fingerprint`)."""
        engine = getattr(self.config, "engine", None)
        precision = resolved_precision(engine) if isinstance(engine, EngineConfig) else None
        return stage_fingerprint(ds, self.name, self.version, self.prompts(), self.config, type(self), precision)

    def __call__(self, ds: Dataset, **map_kwargs: Any) -> Dataset:
        """``ds.map(batched=True)`` of :meth:`run_batch`, fingerprinted; ``map_kwargs`` (``batch_size`` (64),
        ``num_proc``, ``desc``, ...) pass through."""
        features = self.features(ds.features)
        kwargs: dict[str, Any] = {"batch_size": 64, "desc": self.name}
        kwargs.update(map_kwargs)
        kwargs.setdefault("new_fingerprint", self.fingerprint(ds))
        return ds.map(
            self.run_batch,
            batched=True,
            fn_kwargs={"columns": list(features)},
            features=features,
            remove_columns=ds.column_names,
            **kwargs,
        )

    def run_batch(self, batch: dict[str, list], columns: Sequence[str]) -> dict[str, list]:
        """A columnar batch -> the output ``columns``: the rows advance step by step together, and the
        requests of each step are answered in one batched call per role (:func:`answer_batch`)."""
        records = rows(batch)
        outputs: list[list[dict[str, Any]]] = [[] for _ in records]
        waiting: dict[int, tuple[Steps, list[Request]]] = {}
        for i, record in enumerate(records):
            self._advance(i, record, self.steps(record), None, outputs, waiting)
        while waiting:
            order = sorted(waiting)
            requests = [request for i in order for request in waiting[i][1]]
            answers = answer_batch(self.engine, requests)
            start = 0
            for i in order:
                steps, asked = waiting.pop(i)
                self._advance(i, records[i], steps, answers[start : start + len(asked)], outputs, waiting)
                start += len(asked)
        return {name: [row[name] for out in outputs for row in out] for name in columns}

    async def arun(self, row: dict[str, Any], engine: Any) -> list[dict[str, Any]]:
        """The output row(s) of one row, its requests awaited on ``engine`` (an
        :class:`~hf_barred.llm.async_engine.AsyncEngine`); the requests of one step run concurrently."""
        record = dict(row)
        steps = self.steps(record)
        base = request_priority.get()  # each step's requests one higher than the last: a row in its stage goes on
        try:
            requests = next(steps)
            while True:
                answers = list(await asyncio.gather(*(answer_one(engine, request) for request in requests)))
                self._count_usage(record, answers)
                requests = steps.send(answers)
                request_priority.set(request_priority.get() + 1)
        except StopIteration as done:
            return self._rows(done.value)
        finally:
            request_priority.set(base)

    def _advance(
        self,
        i: int,
        record: dict[str, Any],
        steps: Steps,
        answers: Optional[list[Result]],
        outputs: list[list[dict[str, Any]]],
        waiting: dict[int, tuple[Steps, list[Request]]],
    ) -> None:
        try:
            if answers is None:
                requests = next(steps)
            else:
                self._count_usage(record, answers)
                requests = steps.send(answers)
            waiting[i] = (steps, requests)
        except StopIteration as done:
            outputs[i] = self._rows(done.value)

    def _count_usage(self, record: dict[str, Any], answers: Sequence[Result]) -> None:
        if self.usage_column is not None:
            for answer in answers:
                record[self.usage_column] = add_usage(record.get(self.usage_column) or zero_usage(), answer)

    @staticmethod
    def _rows(value: Union[dict[str, Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return value if isinstance(value, list) else [value]
