"""The configuration of a BARRED run, and what a run returns.

Example:
    >>> from hf_barred.recipes.barred.config import BarredConfig
    >>> from hf_barred.llm import EngineConfig
    >>> config = BarredConfig.for_engine(EngineConfig(engine="vllm", model="m"), judges=4)
    >>> config.debate.judges, config.generate.max_tokens
    (('recall', 'strict', 'literal', 'contextual'), 512)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from datasets import Dataset

from ...llm.config import EngineConfig
from ...stages.debate import DebateConfig
from ...stages.decompose import DecomposeConfig
from ...stages.generate import GenerateConfig
from ...stages.instantiate import InstantiateConfig
from ...stages.plan import PlanConfig
from ...stages.refine import RefineConfig

__all__ = ["EXECUTORS", "FOR_ENGINE_HELP", "SERVED_MAX_TOKENS", "SERVED_SIZES", "BarredConfig", "BarredResult"]

EXECUTORS = ("streaming", "stages", "ray")
"""How a run moves rows through the stages (:attr:`BarredConfig.executor`)."""

DECOMPOSITION_CALLS = 100
"""The default request budget's allowance for the decomposition (dimensions, instantiations, repairs)."""

SERVED_MAX_TOKENS = {"sample": 512, "judge": 256, "advocate": 128, "decompose": 1024, "instantiate": 1024}
"""Answer budgets of :meth:`BarredConfig.for_engine` on served engines (``openai``, ``vllm``)."""

SERVED_SIZES = {"max_dimensions": 6, "max_instantiations": 10}
"""Dimensions per prompt and instantiations per dimension asked of a served model (the paper asks
for all reasonable instantiations, typically 10-50; the embedded model gets 3 of each)."""

FOR_ENGINE_HELP = {
    "prompt_set": "Prompt templates of every stage: 'small' (few-shot, fitted to the embedded 135M model) or 'served' "
    "(zero-shot system/user prompts for strong models); by default small on the local engine, served "
    "on openai and vllm.",
    "judges": "Number of judges k, each with its own persona (the paper uses 2).",
    "sample_max_tokens": f"Most tokens of a written sample, in generate and refine (by default "
    f"{GenerateConfig.max_tokens} on the local engine, {SERVED_MAX_TOKENS['sample']} on served "
    "ones).",
    "judge_max_tokens": f"Most tokens of a judge's answer (by default {DebateConfig.max_tokens} on the local engine, "
    f"{SERVED_MAX_TOKENS['judge']} on served ones).",
}
"""Help of the parameters of :meth:`BarredConfig.for_engine` that no config field describes: the prompt
set and answer budgets of several stages, whose default depends on the engine, and a number of judges
(``DebateConfig.judges`` holds personas). ``barred generate`` shows it (its ``--rounds`` shows the help of
``DebateConfig.rounds``)."""


@dataclass(frozen=True)
class BarredConfig:
    """Everything a BARRED run needs besides the task and ``n``.

    Parameters, by purpose:

    - Stages: ``decompose``, ``instantiate``, ``plan``, ``generate``, ``debate``, ``refine``
      (build them all on one engine with :meth:`for_engine`).
    - The loop: ``max_refinements`` (R_max), ``max_rounds`` (planning rounds),
      ``initial_acceptance`` and ``min_acceptance`` (to size each round's plan),
      ``max_rows_per_round``.
    - Budgets (logical requests and tokens, cached or not; checked before each round and each
      refinement, so a stage in flight finishes): ``max_calls`` (None: ``max_calls_per_sample`` times n,
      plus :data:`DECOMPOSITION_CALLS`: no run is unbounded), ``max_total_tokens``.
    - Throughput: ``executor`` (``streaming``, the default, or ``stages``: see
      :mod:`hf_barred.recipes.barred.streaming`), ``max_rows_in_flight`` (streaming), ``batch_size`` (rows per
      ``Dataset.map`` batch, i.e. per batched call), ``num_proc`` (stages).
    - Failures: ``max_failure_rate`` (a stage whose requests failed, or whose answers could not be used,
      more than this share stops the run, exit code 1; see :mod:`hf_barred.recipes.barred.failures`).
    """

    decompose: DecomposeConfig = field(default_factory=DecomposeConfig, metadata={"help": "Dimension extraction."})
    instantiate: InstantiateConfig = field(default_factory=InstantiateConfig, metadata={"help": "Instantiations."})
    plan: PlanConfig = field(default_factory=PlanConfig, metadata={"help": "Plan sampling."})
    generate: GenerateConfig = field(default_factory=GenerateConfig, metadata={"help": "Generation."})
    debate: DebateConfig = field(default_factory=DebateConfig, metadata={"help": "Debate validation."})
    refine: RefineConfig = field(default_factory=RefineConfig, metadata={"help": "Refinement."})
    max_refinements: int = field(default=2, metadata={"help": "R_max: refinements of a rejected sample."})
    max_rounds: int = field(default=4, metadata={"help": "Maximum planning rounds."})
    initial_acceptance: float = field(default=0.5, metadata={"help": "Acceptance rate assumed to size round 1."})
    min_acceptance: float = field(default=0.1, metadata={"help": "Lowest acceptance rate used to size a round."})
    max_rows_per_round: int = field(default=64, metadata={"help": "Most rows planned in one round."})
    max_calls: Optional[int] = field(
        default=None,
        metadata={
            "help": "Budget of LLM requests, cached ones included (None: --max-calls-per-sample times n, plus "
            "100 for the decomposition)."
        },
    )
    max_calls_per_sample: float = field(
        default=40.0,
        metadata={
            "help": "The default request budget per sample asked for: about 3-8 times what a run needs (a served "
            "model needs 5-15 requests per accepted sample with 2 judges, 2 rounds and 2 refinements)."
        },
    )
    max_total_tokens: Optional[int] = field(
        default=None, metadata={"help": "Budget of tokens, cached ones included (None: no limit)."}
    )
    executor: str = field(
        default="streaming",
        metadata={
            "help": "streaming: every row moves to its next step as soon as its answers arrive, all rules at once; "
            "stages: one Dataset.map per stage over a round's rows, rule after rule (the same accepted rows). "
            "An engine in provider batch mode (--batch) runs by stages: one batch job per stage and round, not one "
            "per handful of ready rows. ray: the rules spread over the workers of a Ray cluster (pip install "
            "'hf_barred[ray]'), each streaming its rows; the same outputs."
        },
    )
    ray_address: Optional[str] = field(
        default=None,
        metadata={
            "help": "The Ray cluster of --executor ray (ray.init(address=...)), e.g. auto or ray://HEAD:10001 "
            "(default: a local cluster on this machine's CPUs)."
        },
    )
    ray_workers: Optional[int] = field(
        default=None,
        metadata={"help": "Rules run at once by --executor ray (None: one per rule, as many as the cluster fits)."},
    )
    ray_gpus_per_worker: float = field(
        default=0.0,
        metadata={"help": "GPUs each Ray worker holds (--executor ray with --engine vllm or local on GPUs: 1)."},
    )
    max_rows_in_flight: Optional[int] = field(
        default=None,
        metadata={
            "help": "Rows the streaming executor keeps in their chains at once (None: 4 per request the openai "
            "engine keeps in flight, else 2 batches)."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "Rows per map batch (one batched call per role)."})
    num_proc: Optional[int] = field(default=None, metadata={"help": "Processes for Dataset.map."})
    max_failure_rate: float = field(
        default=0.5,
        metadata={
            "help": "Stop the run (exit code 1 on the command line) when more than this share of a stage's requests "
            "failed (HTTP errors after the retries, timeouts, refused connections), or of its answers could not be "
            "used (failed requests, answers that do not parse, answers the token budget cut off)."
        },
    )

    def __post_init__(self) -> None:
        if self.max_refinements < 0:
            raise ValueError(f"BarredConfig.max_refinements: expected >= 0, found {self.max_refinements}.")
        if self.max_rounds < 1 or self.max_rows_per_round < 2 or self.batch_size < 1:
            raise ValueError(
                "BarredConfig: expected max_rounds >= 1, max_rows_per_round >= 2 and batch_size >= 1, found "
                f"{self.max_rounds}, {self.max_rows_per_round}, {self.batch_size}."
            )
        for name in ("initial_acceptance", "min_acceptance"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"BarredConfig.{name}: expected a rate in (0, 1], found {value}.")
        if not 0 <= self.max_failure_rate <= 1:
            raise ValueError(
                f"BarredConfig.max_failure_rate: expected a share in [0, 1], found {self.max_failure_rate}."
            )
        if self.executor not in EXECUTORS:
            raise ValueError(f"BarredConfig.executor: expected one of {', '.join(EXECUTORS)}, found {self.executor!r}.")
        if self.ray_gpus_per_worker < 0:
            raise ValueError(f"BarredConfig.ray_gpus_per_worker: expected >= 0, found {self.ray_gpus_per_worker}.")
        for name in ("max_calls", "max_total_tokens", "max_rows_in_flight", "ray_workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"BarredConfig.{name}: expected None or >= 1, found {value}.")
        if not self.max_calls_per_sample > 0:
            raise ValueError(
                f"BarredConfig.max_calls_per_sample: expected > 0, found {self.max_calls_per_sample}. Pass e.g. "
                "--max-calls-per-sample 40."
            )

    def call_budget(self, n: int) -> int:
        """The most LLM requests a run for ``n`` samples may spend: ``max_calls``, else ``max_calls_per_sample``
        times ``n`` plus :data:`DECOMPOSITION_CALLS`.

        >>> BarredConfig().call_budget(20), BarredConfig(max_calls=50).call_budget(20)
        (900, 50)
        """
        if self.max_calls is not None:
            return self.max_calls
        return math.ceil(self.max_calls_per_sample * n) + DECOMPOSITION_CALLS

    @classmethod
    def for_engine(
        cls,
        engine: EngineConfig,
        *,
        judges: Optional[int] = None,
        rounds: Optional[int] = None,
        sample_max_tokens: Optional[int] = None,
        judge_max_tokens: Optional[int] = None,
        prompt_set: Optional[str] = None,
        **kwargs: Any,
    ) -> BarredConfig:
        """Every LLM stage on ``engine``; ``judges`` (k) and ``rounds`` (T) set the debate;
        ``prompt_set`` (``small`` or ``served``; None: the engine's default,
        :func:`~hf_barred.stages.prompting.default_prompt_set`) the prompts of every stage.

        ``sample_max_tokens`` (generate, refine) and ``judge_max_tokens`` bound the answers, and so
        the lengths the stages' grammars allow. Defaults: the stage configs' small values on the
        ``local`` engine (sized for the embedded model on a CPU), :data:`SERVED_MAX_TOKENS` on served
        engines (``openai``, ``vllm``), where a strong model should have room for realistic inputs
        (and :data:`SERVED_SIZES` for the decomposition).

        >>> served = BarredConfig.for_engine(EngineConfig(engine="vllm", model="m"))
        >>> served.generate.max_tokens, served.debate.prompt_set
        (512, 'served')
        >>> BarredConfig.for_engine(EngineConfig(engine="vllm", model="m"), prompt_set="small").refine.prompt_set
        'small'
        """
        served = engine.engine != "local"
        if sample_max_tokens is None:
            sample_max_tokens = SERVED_MAX_TOKENS["sample"] if served else GenerateConfig.max_tokens
        if judge_max_tokens is None:
            judge_max_tokens = SERVED_MAX_TOKENS["judge"] if served else DebateConfig.max_tokens
        common: dict[str, Any] = {"engine": engine, "prompt_set": prompt_set}
        debate_kwargs: dict[str, Any] = {**common, "max_tokens": judge_max_tokens}
        if served:
            debate_kwargs["advocate_max_tokens"] = SERVED_MAX_TOKENS["advocate"]
        if rounds is not None:
            debate_kwargs["rounds"] = rounds
        if judges is not None and judges < 1:
            raise ValueError(
                f"BarredConfig.for_engine: expected judges >= 1 (the paper uses 2), found {judges}. Pass --judges 2."
            )
        if rounds is not None and rounds < 1:
            raise ValueError(f"BarredConfig.for_engine: expected rounds >= 1 (the paper uses 2), found {rounds}.")
        debate_config = (
            DebateConfig.with_judges(judges, **debate_kwargs) if judges is not None else DebateConfig(**debate_kwargs)
        )
        decompose_kwargs: dict[str, Any] = dict(common)
        instantiate_kwargs: dict[str, Any] = dict(common)
        if served:
            decompose_kwargs.update(
                max_tokens=SERVED_MAX_TOKENS["decompose"], max_dimensions=SERVED_SIZES["max_dimensions"]
            )
            instantiate_kwargs.update(
                max_tokens=SERVED_MAX_TOKENS["instantiate"], max_instantiations=SERVED_SIZES["max_instantiations"]
            )
        return cls(
            decompose=DecomposeConfig(**decompose_kwargs),
            instantiate=InstantiateConfig(**instantiate_kwargs),
            generate=GenerateConfig(**common, max_tokens=sample_max_tokens),
            debate=debate_config,
            refine=RefineConfig(**common, max_tokens=sample_max_tokens),
            **kwargs,
        )

    @property
    def run_executor(self) -> str:
        """The executor a run uses: ``executor``, but ``stages`` when an engine is in provider batch mode (a Batch
        API job takes minutes to hours whatever its size, so streaming would only split it into many jobs)."""
        if any(engine.batch for engine in self.engines()):
            return "stages"
        return self.executor

    def engines(self) -> list[EngineConfig]:
        """The distinct engine configs of the stages."""
        found = [
            self.decompose.engine,
            self.instantiate.engine,
            self.generate.engine,
            self.debate.engine,
            self.refine.engine,
        ]
        return list(dict.fromkeys(found))

    def with_engines(self, change: Callable[[EngineConfig], EngineConfig]) -> BarredConfig:
        """This config with ``change(engine)`` as every stage's engine (the same config when nothing changes)."""
        changes = {}
        for name in ("decompose", "instantiate", "generate", "debate", "refine"):
            stage = getattr(self, name)
            engine = change(stage.engine)
            if engine != stage.engine:
                changes[name] = dataclasses.replace(stage, engine=engine)
        return dataclasses.replace(self, **changes) if changes else self

    def with_batch_dir(self, folder: Path) -> BarredConfig:
        """This config with ``folder`` as the batch-job folder of every stage engine in provider batch mode
        that names none (``barred generate --batch``: ``OUTPUT/work/batches``)."""
        return self.with_engines(
            lambda engine: engine.replace(batch_dir=str(folder)) if engine.batch and not engine.batch_dir else engine
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BarredResult:
    """What a run produced: exactly ``n`` accepted, label-balanced samples (``train``), the ``rejected``
    ones, the accepted samples beyond ``n`` (``extra``), the ``decomposition`` and the run's ``stats``;
    ``output_dir`` holds all of it."""

    train: Dataset
    rejected: Dataset
    decomposition: Dataset
    stats: dict[str, Any]
    output_dir: Path
    extra: Optional[Dataset] = None

    @property
    def reached(self) -> bool:
        """Whether the run accepted the ``n`` samples asked for (``stats["goal"]`` says why not, and what to change)."""
        return bool(self.stats.get("goal", {}).get("reached", len(self.train) >= self.stats.get("requested", 0)))
