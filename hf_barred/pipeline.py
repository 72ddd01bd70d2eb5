"""BARRED as a plain, resumable sequence of stage calls.

:func:`run_barred` decomposes the task once (dimensions, then instantiations), then runs rounds of
plan -> generate -> debate -> (refine -> debate) x ``max_refinements`` until ``n`` samples are
accepted, a budget is spent, or ``max_rounds`` rounds have run. Each round plans as many rows as
the acceptance rate so far says are needed (the first round assumes ``initial_acceptance``), an
even number, so labels stay balanced.

Everything is saved under ``output_dir``, laid out like a Hub dataset repository::

    README.md                      dataset card, with YAML `configs` (default, decomposition)
    data/train-00000-of-00001.parquet      accepted samples
    data/rejected-00000-of-00001.parquet   rejected samples, with their dissent
    decomposition/train-00000-of-00001.parquet
    summary.json                   the run's statistics
    work/decomposition/{dimensions,instantiations}/      every intermediate dataset
    work/round_000/{plan,generate,debate_0,refine_1,debate_1,...}/

Resuming: a stage whose saved output has the fingerprint this run expects (input fingerprint +
stage + version + prompts + output-relevant config) is loaded instead of recomputed; a stage
that was interrupted is recomputed, and the response cache answers every call that had finished.
Budgets count *logical* requests and tokens from the rows' ``usage`` columns (cached or not), so a
resumed run stops exactly where an uninterrupted one would.

Example:
    >>> from hf_barred.pipeline import BarredConfig
    >>> from hf_barred.llm import EngineConfig
    >>> config = BarredConfig.for_engine(EngineConfig(engine="local"), judges=3, rounds=2, max_refinements=1)
    >>> len(config.debate.judges), config.debate.rounds, config.max_refinements
    (3, 2, 1)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from datasets import Dataset, concatenate_datasets, load_from_disk

from .llm.config import EngineConfig
from .schema import accepted_features, decomposition_features
from .stages.debate import DebateConfig, debate, debate_fingerprint
from .stages.decompose import (
    DecomposeConfig,
    InstantiateConfig,
    extract_dimensions,
    extract_dimensions_fingerprint,
    instantiate,
    instantiate_fingerprint,
    task_dataset,
)
from .stages.generate import GenerateConfig, generate, generate_fingerprint
from .stages.plan import PlanConfig, plan, plan_fingerprint
from .stages.refine import RefineConfig, refine, refine_fingerprint
from .task import GuardrailTask, TaskFileError

SERVED_MAX_TOKENS = {"sample": 512, "judge": 256, "advocate": 128}
"""Answer budgets of :meth:`BarredConfig.for_engine` on served engines (``openai``, ``vllm``)."""

DATA_FILES = {
    "train": "data/train-00000-of-00001.parquet",
    "rejected": "data/rejected-00000-of-00001.parquet",
    "decomposition": "decomposition/train-00000-of-00001.parquet",
}


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
      refinement, so a stage in flight finishes): ``max_calls``, ``max_total_tokens``.
    - Throughput: ``batch_size`` (rows per ``Dataset.map`` batch, i.e. per batched call),
      ``num_proc``.
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
    max_calls: Optional[int] = field(default=None, metadata={"help": "Budget of LLM requests (None: no limit)."})
    max_total_tokens: Optional[int] = field(default=None, metadata={"help": "Budget of tokens (None: no limit)."})
    batch_size: int = field(default=64, metadata={"help": "Rows per map batch (one batched call per role)."})
    num_proc: Optional[int] = field(default=None, metadata={"help": "Processes for Dataset.map."})

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
        for name in ("max_calls", "max_total_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"BarredConfig.{name}: expected None or >= 1, found {value}.")

    @classmethod
    def for_engine(
        cls,
        engine: EngineConfig,
        *,
        judges: Optional[int] = None,
        rounds: Optional[int] = None,
        sample_max_tokens: Optional[int] = None,
        judge_max_tokens: Optional[int] = None,
        **kwargs: Any,
    ) -> "BarredConfig":
        """Every LLM stage on ``engine``; ``judges`` (k) and ``rounds`` (T) set the debate.

        ``sample_max_tokens`` (generate, refine) and ``judge_max_tokens`` bound the answers, and so
        the lengths the stages' grammars allow. Defaults: the stage configs' small values on the
        ``local`` engine (sized for the embedded model on a CPU), :data:`SERVED_MAX_TOKENS` on served
        engines (``openai``, ``vllm``), where a strong model should have room for realistic inputs.

        >>> BarredConfig.for_engine(EngineConfig(engine="vllm", model="m")).generate.max_tokens
        512
        """
        served = engine.engine != "local"
        if sample_max_tokens is None:
            sample_max_tokens = SERVED_MAX_TOKENS["sample"] if served else GenerateConfig.max_tokens
        if judge_max_tokens is None:
            judge_max_tokens = SERVED_MAX_TOKENS["judge"] if served else DebateConfig.max_tokens
        debate_kwargs: dict[str, Any] = {"engine": engine, "max_tokens": judge_max_tokens}
        if served:
            debate_kwargs["advocate_max_tokens"] = SERVED_MAX_TOKENS["advocate"]
        if rounds is not None:
            debate_kwargs["rounds"] = rounds
        debate_config = DebateConfig.with_judges(judges, **debate_kwargs) if judges else DebateConfig(**debate_kwargs)
        return cls(
            decompose=DecomposeConfig(engine=engine), instantiate=InstantiateConfig(engine=engine),
            generate=GenerateConfig(engine=engine, max_tokens=sample_max_tokens), debate=debate_config,
            refine=RefineConfig(engine=engine, max_tokens=sample_max_tokens), **kwargs,
        )

    def engines(self) -> list[EngineConfig]:
        """The distinct engine configs of the stages."""
        found = [self.decompose.engine, self.instantiate.engine, self.generate.engine, self.debate.engine,
                 self.refine.engine]
        return list(dict.fromkeys(found))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BarredResult:
    """What a run produced: the accepted samples (``train``), the ``rejected`` ones, the
    ``decomposition`` and the run's ``stats``; ``output_dir`` holds all of it."""

    train: Dataset
    rejected: Dataset
    decomposition: Dataset
    stats: dict[str, Any]
    output_dir: Path


# --- saved stage outputs -----------------------------------------------------------------------------
def _saved_fingerprint(path: Path) -> Optional[str]:
    try:
        return json.loads((path / "state.json").read_text(encoding="utf-8")).get("_fingerprint")
    except (OSError, ValueError):
        return None


def _load(path: Path) -> Dataset:
    """``load_from_disk`` keeping the stage's fingerprint (``load_from_disk`` derives a new one from
    the files' modification times), so the fingerprints of later stages do not depend on when a
    folder was written."""
    ds = load_from_disk(str(path))
    fingerprint = _saved_fingerprint(path)
    if fingerprint:
        ds._fingerprint = fingerprint
    return ds


def _saved_or_run(path: Path, fingerprint: str, compute: Callable[[], Dataset], reused: list[str]) -> Dataset:
    """The dataset saved at ``path`` when its fingerprint is ``fingerprint``, else ``compute()``
    saved there (written to a temporary folder and renamed, so a killed run leaves no half folder)."""
    if _saved_fingerprint(path) == fingerprint:
        try:
            saved = _load(path)
            reused.append(str(path))
            return saved
        except (OSError, ValueError):
            pass
    ds = compute()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return _load(path)


def _usage(ds: Dataset) -> dict[str, int]:
    total = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
    if len(ds) and "usage" in ds.column_names:
        for usage in ds["usage"]:
            for key in total:
                total[key] += usage[key]
    return total


class _Budget:
    """Logical requests and tokens spent, from the rows' usage columns."""

    def __init__(self, config: BarredConfig):
        self.config = config
        self.calls = 0
        self.tokens = 0

    def add(self, after: Dataset, before: Optional[Dataset] = None) -> None:
        out, inp = _usage(after), _usage(before) if before is not None else {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.calls += out["calls"] - inp["calls"]
        self.tokens += (out["prompt_tokens"] + out["completion_tokens"]) - (inp["prompt_tokens"] + inp["completion_tokens"])

    @property
    def spent(self) -> bool:
        c = self.config
        return (c.max_calls is not None and self.calls >= c.max_calls) or (
            c.max_total_tokens is not None and self.tokens >= c.max_total_tokens
        )


def rows_to_plan(needed: int, planned: int, accepted: int, config: BarredConfig) -> int:
    """An even number of rows expected to yield ``needed`` accepted samples.

    >>> rows_to_plan(8, 0, 0, BarredConfig())   # nothing planned yet: initial_acceptance 0.5
    16
    >>> rows_to_plan(3, 20, 5, BarredConfig())  # 25% so far
    12
    """
    rate = config.initial_acceptance if planned == 0 else max(accepted / planned, config.min_acceptance)
    k = math.ceil(needed / rate)
    k += k % 2
    return max(2, min(k, config.max_rows_per_round - config.max_rows_per_round % 2))


def _publish(rows: list[dict[str, Any]], task: GuardrailTask, config: BarredConfig) -> Dataset:
    features = accepted_features(task.labels, task.input_type)
    version = f"judge/{config.debate.prompt_version}+advocate/{config.debate.advocate_prompt_version}"
    out = []
    for r in rows:
        record = {name: r.get(name) for name in features}
        record["label"] = r["target"]
        record["debate"] = r.get("debate") or []
        record["debate_path"] = r.get("debate_path") or ""
        record["dissent"] = r.get("dissent") or ""
        record["rejection_reason"] = r.get("rejection_reason") or ""
        record["prompt_version"] = f"{r['prompt_version'] or 'generate/' + config.generate.prompt_version}+{version}"
        out.append(record)
    return Dataset.from_list(out, features=features) if out else Dataset.from_dict(
        {name: [] for name in features}, features=features
    )


def _decomposition_export(ds: Dataset) -> Dataset:
    features = decomposition_features()
    return Dataset.from_list([{name: row[name] for name in features} for row in ds], features=features) if len(ds) \
        else Dataset.from_dict({name: [] for name in features}, features=features)


def _engine_usage(config: BarredConfig) -> dict[str, Any]:
    """This process's usage of the engines built for ``config`` (real calls, cache hits, tokens)."""
    from . import llm

    total = {"calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": 0, "cost": 0.0}
    for engine_config in config.engines():
        engine = llm._ENGINES.get(engine_config)
        if engine is None:
            continue
        u = engine.usage
        total["calls"] += u.calls
        total["cache_hits"] += u.cache_hits
        total["prompt_tokens"] += u.prompt_tokens
        total["completion_tokens"] += u.completion_tokens
        total["errors"] += u.errors
        total["cost"] += engine_config.cost(u.prompt_tokens, u.completion_tokens)
    return total


# --- the loop ---------------------------------------------------------------------------------------
def run_barred(
    task: GuardrailTask,
    n: int,
    config: Optional[BarredConfig] = None,
    output_dir: str | os.PathLike = "outputs/barred",
    progress: bool = True,
) -> BarredResult:
    """Generate ``n`` verified, label-balanced boundary samples for ``task`` (see the module doc).

    Example:
        >>> from hf_barred.pipeline import BarredConfig, run_barred
        >>> from hf_barred.task import GuardrailTask
        >>> task = GuardrailTask.load("dataset_scripts/health-advice/task.yaml")  # doctest: +SKIP
        >>> result = run_barred(task, n=8, config=BarredConfig(), output_dir="outputs/health-advice")  # doctest: +SKIP
        >>> result.train.features["label"].names  # doctest: +SKIP
        ['no_health_advice', 'health_advice']
    """
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"run_barred: expected n >= 1 samples, found {n}.")
    task.require_seeds()
    config = config or BarredConfig()
    out = Path(output_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    bars_were_on = is_progress_bar_enabled()
    if not progress:
        disable_progress_bar()
    usage_before = _engine_usage(config)
    map_kwargs: dict[str, Any] = {"batch_size": config.batch_size}
    if config.num_proc:
        map_kwargs["num_proc"] = config.num_proc
    reused: list[str] = []
    budget = _Budget(config)
    try:
        # 1-2: decomposition, once
        tasks = task_dataset(task)
        dims = _saved_or_run(
            work / "decomposition" / "dimensions", extract_dimensions_fingerprint(tasks, config.decompose),
            lambda: extract_dimensions(tasks, config.decompose, **map_kwargs), reused,
        )
        inst = _saved_or_run(
            work / "decomposition" / "instantiations", instantiate_fingerprint(dims, config.instantiate),
            lambda: instantiate(dims, config.instantiate, **map_kwargs), reused,
        )
        budget.add(inst)

        accepted_rows: list[dict[str, Any]] = []
        rejected_rows: list[dict[str, Any]] = []
        debated_parts: list[Dataset] = []
        planned = 0
        rounds_run = 0
        bar = tqdm(total=n, desc="accepted", unit="sample", disable=not progress)
        while len(accepted_rows) < n and rounds_run < config.max_rounds and not budget.spent:
            round_dir = work / f"round_{rounds_run:03d}"
            k = rows_to_plan(n - len(accepted_rows), planned, len(accepted_rows), config)
            start = planned
            plan_rows = _saved_or_run(
                round_dir / "plan", plan_fingerprint(inst, task, k, config.plan, start),
                lambda: plan(inst, task, k, config.plan, start=start, **map_kwargs), reused,
            )
            current = _saved_or_run(
                round_dir / "generate", generate_fingerprint(plan_rows, config.generate),
                lambda: generate(plan_rows, config.generate, **map_kwargs), reused,
            )
            budget.add(current, plan_rows)
            for level in range(config.max_refinements + 1):
                source = current
                judged = _saved_or_run(
                    round_dir / f"debate_{level}", debate_fingerprint(source, config.debate),
                    lambda: debate(source, config.debate, **map_kwargs), reused,
                )
                budget.add(judged, source)
                debated_parts.append(judged)
                to_refine: list[int] = []
                for i, row in enumerate(judged):
                    if row["accepted"]:
                        accepted_rows.append(row)
                        bar.update(1)
                    elif row["error"]:
                        rejected_rows.append(row | {"rejection_reason": "parse_failure"})
                    elif level == config.max_refinements:
                        rejected_rows.append(row | {"rejection_reason": "debate"})
                    else:
                        to_refine.append(i)
                if not to_refine:
                    break
                if budget.spent:
                    rejected_rows.extend(judged[i] | {"rejection_reason": "budget"} for i in to_refine)
                    break
                failing = judged.select(to_refine)
                current = _saved_or_run(
                    round_dir / f"refine_{level + 1}", refine_fingerprint(failing, config.refine),
                    lambda: refine(failing, config.refine, **map_kwargs), reused,
                )
                budget.add(current, failing)
            planned += k
            rounds_run += 1
        bar.close()

        train = _publish(sorted(accepted_rows, key=lambda r: r["row_id"]), task, config)
        rejected = _publish(sorted(rejected_rows, key=lambda r: (r["row_id"], r["refinements"])), task, config)
        decomposition = _decomposition_export(inst)
        all_debates = concatenate_datasets(debated_parts) if debated_parts else None
        stats = run_statistics(
            task, n, config, dims, inst, all_debates, train, rejected, planned, rounds_run, budget,
            _usage_delta(usage_before, _engine_usage(config)), reused,
        )
        _write_outputs(out, task, config, train, rejected, decomposition, stats)
        return BarredResult(train, rejected, decomposition, stats, out)
    finally:
        if bars_were_on:
            enable_progress_bar()


def _usage_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {key: after[key] - before[key] for key in after}


def run_statistics(
    task: GuardrailTask,
    n: int,
    config: BarredConfig,
    dims: Dataset,
    inst: Dataset,
    debates: Optional[Dataset],
    train: Dataset,
    rejected: Dataset,
    planned: int,
    rounds_run: int,
    budget: _Budget,
    engine_usage: dict[str, Any],
    reused: list[str],
) -> dict[str, Any]:
    """The run's statistics: what the dataset card and the CLI summary report."""
    labels = list(task.labels)
    debate_paths: Counter = Counter()
    by_level: dict[int, dict[str, int]] = {}
    judge_failures = advocate_failures = judge_answers = 0
    generation_failures: Counter = Counter()
    if debates is not None:
        for row in debates:
            level = by_level.setdefault(row["refinements"], {"debated": 0, "accepted": 0})
            if row["error"]:
                generation_failures[row["error_stage"] or "generate"] += 1
                continue
            level["debated"] += 1
            level["accepted"] += int(row["accepted"])
            debate_paths[row["debate_path"]] += 1
            for debate_round in row["debate"]:
                advocate_failures += int(bool(debate_round["advocate_error"]))
                for answer in debate_round["judges"]:
                    judge_answers += 1
                    judge_failures += int(bool(answer["error"]))
    acceptance_by_refinement = {
        str(level): {**counts, "rate": round(counts["accepted"] / counts["debated"], 4) if counts["debated"] else None}
        for level, counts in sorted(by_level.items())
    }
    final_paths = Counter(train["debate_path"]) + Counter(p for p in rejected["debate_path"] if p)
    instantiations = sum(len(v) for v in inst["instantiations"]) if len(inst) else 0
    return {
        "task": task.name,
        "criterion": task.criterion,
        "labels": labels,
        "requested": n,
        "accepted": len(train),
        "rejected": len(rejected),
        "accepted_by_label": {labels[i]: int(sum(1 for x in train["label"] if x == i)) for i in range(2)},
        "rejection_reasons": dict(Counter(rejected["rejection_reason"])),
        "planned_rows": planned,
        "rounds": rounds_run,
        "acceptance_rate": round(len(train) / planned, 4) if planned else 0.0,
        "acceptance_by_refinement": acceptance_by_refinement,
        "debate_paths": dict(debate_paths),
        "final_debate_paths": dict(final_paths),
        "dimensions": int(sum(1 for row in inst if row["dimension"] and not row["error"])),
        "decomposition_rows": len(inst),
        "engine_model": next((m for m in list(train["model"]) + list(rejected["model"]) if m), ""),
        "instantiations": instantiations,
        "parse_failures": {
            "decompose": int(sum(1 for e in dims["error"] if e)),
            "instantiate": int(sum(1 for row in inst if row["error"] and row["dimension"])),
            "generate": generation_failures.get("generate", 0),
            "refine": generation_failures.get("refine", 0),
            "judge_answers": judge_failures,
            "advocate": advocate_failures,
        },
        "judge_answers": judge_answers,
        "requests": budget.calls,
        "request_tokens": budget.tokens,
        "engine": engine_usage,
        "stage_outputs_reused": len(reused),
        "budget_spent": budget.spent,
        "model": config.generate.engine.identity(),
        "prompt_versions": {
            "decompose": config.decompose.prompt_version, "instantiate": config.instantiate.prompt_version,
            "generate": config.generate.prompt_version, "judge": config.debate.prompt_version,
            "advocate": config.debate.advocate_prompt_version, "refine": config.refine.prompt_version,
        },
        "judges": list(config.debate.judges),
        "rounds_per_debate": config.debate.rounds,
        "max_refinements": config.max_refinements,
    }


def _write_outputs(
    out: Path, task: GuardrailTask, config: BarredConfig, train: Dataset, rejected: Dataset,
    decomposition: Dataset, stats: dict[str, Any],
) -> None:
    from .dataset_card import add_dataset_info, make_dataset_card

    written: dict[str, dict[str, str]] = {}
    for split, ds in (("train", train), ("rejected", rejected), ("decomposition", decomposition)):
        path = out / DATA_FILES[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        if len(ds) or split == "train" and not len(rejected):  # an empty split is left out of the card's configs
            ds.to_parquet(str(path))
            config_name, split_name = ("decomposition", "train") if split == "decomposition" else ("default", split)
            written.setdefault(config_name, {})[split_name] = DATA_FILES[split]
        elif path.exists():
            path.unlink()
    (out / "summary.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    card = make_dataset_card(task, config, stats)
    add_dataset_info(card, out, written)
    card.save(str(out / "README.md"))
    _save_task(task, out / "task.yaml")  # `barred train DIR` reads the rule and label names from it


def _save_task(task: GuardrailTask, path: Path) -> None:
    """Write ``task`` to ``path`` unless the file there already holds it (which may be the user's own
    task file, with comments and layout worth keeping, when ``--output`` is its folder)."""
    if path.is_file():
        try:
            if GuardrailTask.load(path).to_dict() == task.to_dict():
                return
        except TaskFileError:
            pass
    task.save(path)
