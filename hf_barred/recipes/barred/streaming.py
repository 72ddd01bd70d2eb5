"""The streaming executor: every row moves to its next step the moment its answers arrive, for every rule at once.

A planned row's chain is generate -> debate (its rounds, the advocate between them) -> refine -> debate ...
(:meth:`~hf_barred.stages.base.Stage.arun` of each stage), run as one asyncio task. All rows of all rules
share one :class:`~hf_barred.llm.async_engine.AsyncEngine` per engine, so one response cache, one
concurrency budget (``max_concurrency`` of an HTTP engine; the local engine batches whatever rows are
ready, from any stage) and one spending budget (the rules' :class:`~.budget.Budget` pool). No step waits for
another row's slowest call.

It plans exactly the rows the stage-by-stage executor (:mod:`.stages_executor`) plans, and so accepts the same
rows from the same answers: a rule's rounds are sized by :meth:`.rule_run.RuleRun.rows_to_plan` from the
finished rounds. On an HTTP engine, while a round is in flight, the rows the next round will probably plan
start *speculatively* (row ``i`` of a plan is the same whatever round plans it): when the round ends, the
speculative rows the next round plans are kept, and the others are cancelled and dropped from the outputs
(what they spent is counted, under ``speculative``). So a rule has no barrier between its rounds either. (An
in-process engine does not speculate: it is busy with the round, and a wrong guess would cost its time.)

It stays Datasets-native and resumable: stage inputs and outputs are rows of the stages' declared
``Features`` (each row goes through Arrow, as in ``Dataset.map``); the decomposition is saved as the
stage-by-stage executor saves it (the same fingerprints: either executor reuses the other's); every finished
row is written, with each of its debates, to a parquet shard in ``work/stream/<key>/`` within seconds, so a
``kill -9`` then a rerun reads the finished rows back and asks the response cache for the rest: 0 repeated
calls, the same outputs.

Example:
    >>> from hf_barred.recipes.barred.streaming import rows_in_flight
    >>> from hf_barred.recipes.barred.config import BarredConfig
    >>> from hf_barred.llm import EngineConfig
    >>> engine = EngineConfig(engine="openai", model="m", base_url="http://127.0.0.1:8000/v1", max_concurrency=32)
    >>> rows_in_flight(BarredConfig.for_engine(engine))
    128
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Optional, cast

import numpy as np
from datasets import Dataset, Features, LargeList, List, Value
from datasets.fingerprint import Hasher

from ...llm.async_engine import AsyncEngine, request_priority
from ...stages.base import Stage, engine_for
from ...stages.batches import rows_dataset
from ...stages.debate import DebateStage
from ...stages.decompose import DecomposeStage, task_dataset
from ...stages.features import plan_features
from ...stages.generate import GenerateStage
from ...stages.instantiate import InstantiateStage
from ...stages.plan import plan, plan_fingerprint
from ...stages.refine import RefineStage
from .budget import dataset_usage
from .config import BarredConfig
from .context import RunContext
from .failures import StreamGuard, answer_counts
from .rule_run import ACCEPTED, REFINE, RuleRun, disposition, require_usable_decomposition
from .shards import UNFINISHED, Shards, Step, Trajectory, shard_features
from .store import reuse_saved, save_output

__all__ = ["StreamingExecutor", "rows_in_flight", "run_streaming"]

STEP_PRIORITY = 10
"""Priority between two steps of a row's chain (generate 0, its first debate 10, refine 20, ...): room for the
steps inside a stage (a debate's rounds and advocate), which :meth:`Stage.arun` counts up by one."""


def rows_in_flight(config: BarredConfig) -> int:
    """How many rows may be in their chains at once: four per request an HTTP engine keeps in flight (a row has
    one to k requests out at a time), two batches of the local engine; ``max_rows_in_flight`` when set."""
    if config.max_rows_in_flight:
        return config.max_rows_in_flight
    engine = config.generate.engine
    if engine.engine == "openai":
        return 4 * engine.total_concurrency
    return 2 * config.batch_size


def run_streaming(rules: list[RuleRun], ctx: RunContext) -> None:
    """Run every rule to its end, streaming (see the module doc)."""
    asyncio.run(StreamingExecutor(rules, ctx).run())


class StreamingExecutor:
    """Runs ``rules`` concurrently on shared engines (see the module doc)."""

    def __init__(self, rules: list[RuleRun], ctx: RunContext):
        self.rules = rules
        self.ctx = ctx
        self.config = ctx.config
        self.guard = StreamGuard(ctx.guard)
        self._engines: dict[int, AsyncEngine] = {}
        self._slots: Optional[asyncio.Semaphore] = None

    async def run(self) -> None:
        self._slots = asyncio.Semaphore(rows_in_flight(self.config))
        tasks = [asyncio.create_task(RuleStream(rule, self).run()) for rule in self.rules]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # one rule stopped the run: the others stop too (their finished rows are saved)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.guard.final()

    def engine(self, stage: Stage) -> AsyncEngine:
        """The awaitable engine of a stage: one per engine, whatever stages and rules share it."""
        engine = engine_for(stage.config.engine)
        if id(engine) not in self._engines:
            self._engines[id(engine)] = AsyncEngine(engine)
        return self._engines[id(engine)]

    @property
    def slots(self) -> asyncio.Semaphore:
        assert self._slots is not None, "slots are made in run()"
        return self._slots


class RuleStream:
    """One rule's rounds, its rows as tasks, its speculation and its shards."""

    def __init__(self, rule: RuleRun, executor: StreamingExecutor):
        self.rule = rule
        self.executor = executor
        self.config = config = rule.config
        self.generate = GenerateStage(config.generate)
        self.debate = DebateStage(config.debate)
        self.refine = RefineStage(config.refine)
        labels = rule.task.labels
        self.plan_features = plan_features(labels)
        self.generated_features = self.generate.features(self.plan_features)
        self.debated_features = self.debate.features(self.generated_features)
        self.refined_features = self.refine.features(self.debated_features)
        self.tasks: dict[int, asyncio.Task[Trajectory]] = {}
        self.plans: dict[int, dict[str, Any]] = {}
        self.shards: Optional[Shards] = None
        self.speculative: set[int] = set()
        self.finished: dict[int, Trajectory] = {}
        self.kept: dict[int, Trajectory] = {}

    @property
    def view(self) -> Any:
        return self.executor.ctx.view

    def _label(self, what: str) -> str:
        return f"{self.rule.name}: {what}" if self.view.rules > 1 else what

    async def run(self) -> None:
        try:
            await self._decompose()
            assert self.rule.inst is not None
            self.shards = Shards(self.rule.work / "stream" / self._key(), shard_features(self.debated_features))
            self.finished = self.shards.load()
            if self.finished:
                self.executor.ctx.reused.append(f"{self.shards.folder} ({len(self.finished)} finished rows)")
            await self._rounds()
        finally:
            for task in self.tasks.values():
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            if self.shards is not None:
                self.shards.flush()

    # --- decomposition --------------------------------------------------------------------------------------
    async def _decompose(self) -> None:
        rule, config = self.rule, self.config
        tasks = task_dataset(rule.task)
        self.view.stage(self._label("decompose"), rows=len(tasks))
        rule.dims = await self._stage_output("dimensions", DecomposeStage(config.decompose), tasks, "decompose")
        self.view.stage(self._label("instantiate"), rows=len(rule.dims), expected_requests=len(rule.dims))
        rule.inst = await self._stage_output(
            "instantiations", InstantiateStage(config.instantiate), rule.dims, "instantiate"
        )
        rule.budget.add(rule.inst, stage="decomposition")
        require_usable_decomposition(rule.inst, config, rule.name if self.view.rules > 1 else "")

    async def _stage_output(self, name: str, stage: Stage, ds: Dataset, what: str) -> Dataset:
        """What ``stage(ds)`` gives, row by row, saved where (and with the fingerprint) the stage-by-stage executor
        saves it."""
        folder = self.rule.work / "decomposition" / name
        fingerprint = stage.fingerprint(ds)
        saved = reuse_saved(folder, fingerprint, self.executor.ctx.reused)
        if saved is not None:
            return saved
        guard = self.executor.ctx.guard
        before = guard.usage(what)
        engine = self.executor.engine(stage)
        outputs = await asyncio.gather(*(stage.arun(row, engine) for row in ds))
        features = stage.features(ds.features)
        rows = [row for out in outputs for row in out]
        out = rows_dataset(rows, features, fingerprint)
        guard.check_requests(what, before, usage=guard.usage(what))
        guard.check_answers(what, answer_counts(what, out, self.config.decompose.num_subsets))
        return save_output(folder, out)

    def _key(self) -> str:
        """What the finished rows depend on besides their ``row_id``: the decomposition, the plan and the stages."""
        rule, config = self.rule, self.config
        assert rule.inst is not None
        return Hasher.hash(
            [
                plan_fingerprint(rule.inst, rule.task, 0, config.plan, 0),
                self.generate.fingerprint(rule.inst),
                self.debate.fingerprint(rule.inst),
                self.refine.fingerprint(rule.inst),
                config.max_refinements,
            ]
        )[:16]

    # --- rounds ---------------------------------------------------------------------------------------------
    async def _rounds(self) -> None:
        rule = self.rule
        while (k := rule.rows_to_plan()) is not None:
            start, accepted_before = rule.planned, len(rule.accepted_rows)
            where = self._label(f"round {rule.rounds_run + 1}")
            self.view.stage(f"generate, debate, refine ({where})", rows=k)
            ids = range(start, start + k)
            self._ensure_plans(start, k)
            for i in ids:
                self.speculative.discard(i)
                self._start(i)
            while not all(self.tasks[i].done() for i in ids):
                running = [i for i in ids] + [i for i in self.speculative if i in self.tasks]
                watched = {self.tasks[i] for i in running if not self.tasks[i].done()}
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done:  # a row that stopped the run (failure guard, engine error) stops it now
                    if not task.cancelled() and task.exception() is not None:
                        raise cast(BaseException, task.exception())
                self._speculate(ids)
                assert self.shards is not None
                self.shards.flush_if_due()
            trajectories = [self.tasks.pop(i).result() for i in ids]
            for level in range(self.config.max_refinements + 1):
                steps = [t[level] for t in trajectories if len(t) > level]
                rule.fold([step.judged for step in steps], [step.outcome for step in steps])
            rule.end_round(k, accepted_before)
            self.view.accepted(rule.accepted_count, rule.name)
            assert self.shards is not None
            self.shards.flush()
            self._drop_speculation(rule.planned + (rule.rows_to_plan() or 0))

    def _speculate(self, ids: range) -> None:
        """Start the rows the next round will probably plan: those the rows still in flight are not expected
        to cover, at the acceptance rate seen so far. Only on an HTTP engine, whose free slots they fill: an
        in-process engine is already busy with the round, and a guess it got wrong would cost its time."""
        rule, config = self.rule, self.config
        if not self.executor.engine(self.generate).concurrent:
            return
        done = [self.tasks[i].result() for i in ids if self.tasks[i].done() and not self.tasks[i].cancelled()]
        in_flight = len(ids) - len(done)
        accepted = len(rule.accepted_rows) + sum(1 for t in done if t and t[-1].outcome == ACCEPTED)
        planned = rule.planned + len(done)
        rate = config.initial_acceptance if planned == 0 else max(accepted / planned, config.min_acceptance)
        missing = sum(q for q in rule.quota) - accepted - in_flight * rate
        if accepted == 0 or missing <= 0 or rule.rounds_run + 1 >= config.max_rounds or rule.budget.spent:
            return  # no accepted row yet: a next round is no more likely than an end (see RuleRun.rows_to_plan)
        k = math.ceil(missing / rate)
        k = min(k + k % 2, config.max_rows_per_round - config.max_rows_per_round % 2)
        start = ids.stop
        self._ensure_plans(start, k)
        for i in range(start, start + k):
            if i not in self.tasks:
                self.speculative.add(i)
                self.rule.speculated.add(i)
                self._start(i)

    def _drop_speculation(self, keep_below: int) -> None:
        """Cancel the speculative rows the next round does not plan; count what they spent."""
        for i in sorted(self.speculative):
            if i < keep_below:
                continue
            task = self.tasks.pop(i, None)
            self.speculative.discard(i)
            if task is None:
                continue
            if task.done() and not task.cancelled() and task.exception() is None:
                self.kept[i] = task.result()  # finished: a later round may plan it
            else:
                task.cancel()

    def _ensure_plans(self, start: int, k: int) -> None:
        missing = [i for i in range(start, start + k) if i not in self.plans]
        if not missing:
            return
        rule = self.rule
        assert rule.inst is not None
        first, count = missing[0], missing[-1] - missing[0] + 1
        rows = plan(rule.inst, rule.task, count, self.config.plan, start=first)
        for row in rows:
            self.plans[row["row_id"]] = row

    def _start(self, i: int) -> None:
        if i in self.tasks:
            return
        loop = asyncio.get_running_loop()
        if i in self.kept:  # a speculative row that finished before a round planned it: counted already
            self.tasks[i] = loop.create_task(_ready(self.kept.pop(i)))
        elif i in self.finished:  # read back from a shard: what it spent still counts
            stored = self.finished.pop(i)
            for step in stored:
                self._count(step)
            self.tasks[i] = loop.create_task(_ready(stored))
        else:
            self.tasks[i] = loop.create_task(self._chain(self.plans[i]))

    def _count(self, step: Step) -> None:
        budget = self.rule.budget
        first = step.judged["refinements"] == 0
        for usage, stage in ((step.step_usage, "generate" if first else "refine"), (step.debate_usage, "debate")):
            budget.count(usage["calls"], usage["prompt_tokens"] + usage["completion_tokens"], stage)

    # --- one row --------------------------------------------------------------------------------------------
    async def _chain(self, row: dict[str, Any]) -> Trajectory:
        """generate -> debate -> (refine -> debate)*: the row's debates and what each made of it.

        Each step's requests go out with the row's progress as their priority (:data:`request_priority`): a
        row near the end of its chain goes first, so the rows of a round finish together and the run's tail is
        short."""
        config = self.config
        async with self.executor.slots:
            trajectory: Trajectory = []
            request_priority.set(0)
            current = await self._step(self.generate, row, "generate", self.generated_features)
            step_usage = usage_between(current, row)
            for level in range(config.max_refinements + 1):
                request_priority.set(STEP_PRIORITY * (2 * level + 1))
                judged = await self._step(self.debate, current, "debate", self.debated_features)
                outcome = disposition(judged, level, config.max_refinements)
                if outcome == REFINE and self.rule.budget.spent:
                    outcome = "budget"
                trajectory.append(Step(judged, outcome, step_usage, usage_between(judged, current)))
                if outcome != REFINE:
                    break
                request_priority.set(STEP_PRIORITY * (2 * level + 2))
                refined = await self._step(self.refine, judged, "refine", self.refined_features)
                step_usage = usage_between(refined, judged)
                current = refined
        if trajectory[-1].outcome not in UNFINISHED:
            assert self.shards is not None
            self.shards.add(trajectory)
        return trajectory

    async def _step(self, stage: Stage, row: dict[str, Any], what: str, features: Features) -> dict[str, Any]:
        [out] = await stage.arun(row, self.executor.engine(stage))
        out = through_arrow(out, features)
        self.executor.guard.observe(what, [out])
        self.rule.budget.add([out], [row], stage=what)
        return out


async def _ready(trajectory: Trajectory) -> Trajectory:
    return trajectory


def usage_between(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """The usage a step added to a row (its ``usage`` column is cumulative)."""
    a, b = dataset_usage([after]), dataset_usage([before])
    return {key: a[key] - b[key] for key in a}


def through_arrow(row: dict[str, Any], features: Features) -> dict[str, Any]:
    """``row`` as a Dataset of ``features`` gives it back, as ``Dataset.map`` hands it on: the declared columns only,
    missing struct fields as None, every value cast to its column's type (``Features.encode_example``), and
    float32 and float16 values rounded as Arrow stores them. The same row as a one-row Arrow table would give, in
    Python (the table costs ~2 ms a debated row; a Dataset ~50 ms, for its fingerprint).

    >>> import pyarrow as pa
    >>> from datasets import Features, List, Value
    >>> features = Features({"p": Value("float32"), "turns": List({"n": Value("int32"), "s": Value("string")})})
    >>> row = {"p": 0.1, "turns": [{"n": 2.0, "s": 3, "extra": 1}], "dropped": 1}
    >>> through_arrow(row, features)
    {'p': 0.10000000149011612, 'turns': [{'n': 2, 's': '3'}]}
    >>> through_arrow(row, features) == features.decode_example(
    ...     pa.Table.from_pylist([features.encode_example(row)], schema=features.arrow_schema).to_pylist()[0])
    True
    """
    encoded = features.encode_example({name: row[name] for name in features})
    return features.decode_example({name: _as_stored(encoded[name], feature) for name, feature in features.items()})


def _as_stored(value: Any, feature: Any) -> Any:
    """An encoded value with its low-precision floats rounded as Arrow stores them."""
    if value is None:
        return None
    if isinstance(feature, dict):
        return {key: _as_stored(value.get(key), sub) for key, sub in feature.items()}
    if isinstance(feature, (List, LargeList)):
        return [_as_stored(item, feature.feature) for item in value]
    if isinstance(feature, Value) and feature.dtype in ("float32", "float16"):
        return float(np.float32(value) if feature.dtype == "float32" else np.float16(value))
    return value
