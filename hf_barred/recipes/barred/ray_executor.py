"""``executor="ray"``: the rules of a run spread over the workers of a Ray cluster, as one Ray Data pipeline.

The pipeline is ``ray.data.from_items(rules) -> map_batches(run_rules)`` on a pool of ``ray_workers`` tasks
(``TaskPoolStrategy``): Ray Data places them (``ray_gpus_per_worker`` GPUs each, so a vLLM or transformers
engine built in a worker is one replica on its own GPU), applies backpressure, and retries the rule of a
worker that dies on another. Each task runs its rule with the streaming executor
(:mod:`.streaming`: every row to its next step as soon as its answers arrive), writing what it finishes
under ``OUTPUT/work/<rule>`` and every answer to the response cache. Nothing here schedules, queues or
talks to another process: Ray Data does.

When every rule is done, the driver runs the streaming executor once more over the same folders: every
finished row comes back from the work folder and every answer from the cache, so it makes no request,
and it writes the outputs, layout, cards and statistics of a local run from the same rows.

Why a rule, not a stage, is the unit of work: a rule's next round is planned from the acceptance of its
rows so far (:meth:`~.rule_run.RuleRun.rows_to_plan`), so its stages form a loop, not the fixed chain of
operators a Ray Data pipeline is; and ``ray.data.llm``'s processors start their engines for each dataset
they process, which a loop of dozens of small steps would pay again and again. A worker keeps its engine
for every rule it runs.

What must be shared: the output folder and the response cache (``EngineConfig.cache_dir``, else
``$HF_BARRED_CACHE``) must be on a path every node sees (NFS, a mounted bucket); the driver resolves the
cache folder and sends it to the workers. A rerun finds every finished row there (nothing is recomputed)
and every finished call in the cache (nothing is paid twice).

Example:
    >>> from hf_barred.recipes.barred.ray_executor import worker_count
    >>> from hf_barred.recipes.barred.config import BarredConfig
    >>> worker_count(BarredConfig(executor="ray"), rules=12, cluster_cpus=8.0)
    8
    >>> worker_count(BarredConfig(executor="ray", ray_workers=3), rules=12, cluster_cpus=8.0)
    3
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from ...llm.base import EngineError
from ...policy.task import GuardrailTask
from .budget import Budget, engine_usage, usage_delta, usage_total
from .config import BarredConfig
from .failures import AnswersUnusable, FailureGuard, RequestsFailed

__all__ = [
    "PROGRESS_FILE",
    "ProgressLines",
    "progress_file_view",
    "require_ray",
    "run_on_ray",
    "run_rule",
    "run_rules",
    "shared_cache_config",
    "worker_count",
]

_ERRORS: dict[str, type[Exception]] = {
    "RequestsFailed": RequestsFailed,
    "AnswersUnusable": AnswersUnusable,
    "EngineError": EngineError,
    "ValueError": ValueError,
}
"""The errors a worker hands back to the driver by name, raised there as on a local run (same exit codes)."""


def require_ray() -> None:
    """Raise a one-line ``ValueError`` unless Ray Data can be imported (``pip install 'hf_barred[ray]'``)."""
    try:
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ValueError(
            f"--executor ray: expected Ray Data to be installed, found {err}. Install it with "
            "pip install 'hf_barred[ray]', or pass --executor streaming."
        ) from None


def worker_count(config: BarredConfig, rules: int, cluster_cpus: float) -> int:
    """Workers of the pool: ``ray_workers``, else one per rule, at most one per CPU of the cluster."""
    if config.ray_workers:
        return min(config.ray_workers, rules)
    return max(1, min(rules, int(cluster_cpus)))


def shared_cache_config(config: BarredConfig) -> BarredConfig:
    """``config`` with every engine's response cache folder resolved here (``cache_dir``), so the workers of
    every node use the same folder, whatever their environment says. The folder is not part of any
    fingerprint."""
    return config.with_engines(
        lambda engine: (
            engine.replace(cache_dir=str(engine.resolved_cache_dir().resolve()))
            if engine.cache and not engine.cache_dir
            else engine
        )
    )


def run_rules(
    batch: dict[str, Any], *, tasks: list[GuardrailTask], n: int, config: BarredConfig, work: str, single: bool
) -> dict[str, list[Any]]:
    """A Ray Data task: run the batch's rules (indices into ``tasks``) to their ends with the streaming executor.

    The engines a task builds stay in its worker process (:func:`hf_barred.llm.get_engine`), so the next rule
    Ray gives that worker reuses them. A task that dies with its worker is retried on another (Ray Data's
    default); the rerun finds the rule's finished rows in its work folder and its answers in the cache."""
    out: dict[str, list[Any]] = {"rule": [], "accepted": [], "requests": [], "usage": [], "error": []}
    for index in batch["rule"]:
        task = tasks[int(index)]
        accepted, requests, usage, error = run_rule(task, n, config, Path(work) if single else Path(work) / task.name)
        out["rule"].append(task.name)
        out["accepted"].append(accepted)
        out["requests"].append(requests)
        out["usage"].append(json.dumps(usage))
        out["error"].append(json.dumps(error) if error else "")
    return out


def run_rule(
    task: GuardrailTask, n: int, config: BarredConfig, folder: Path
) -> tuple[int, int, dict[str, Any], Optional[list[str]]]:
    """Run one rule to its end in this process: its rows go to ``folder``, its answers to the cache. Returns the
    accepted samples (at most ``n``), its requests, this process's engine usage for it, and its error, if any."""
    from ...progress import quiet_libraries
    from .context import RunContext
    from .rule_run import RuleRun, unusable_fix
    from .streaming import run_streaming

    rule = RuleRun(task, n, config, folder, Budget(config, n))
    before = engine_usage(config)
    error: Optional[list[str]] = None
    with quiet_libraries(False), progress_file_view(n, folder / PROGRESS_FILE) as view:
        guard = FailureGuard(config.engines(), config.max_failure_rate, fix=unusable_fix(config))
        try:
            run_streaming([rule], RunContext(config, guard, view))
        except tuple(_ERRORS.values()) as err:  # the driver raises it, as a local run would
            error = [type(err).__name__ if type(err).__name__ in _ERRORS else "ValueError", str(err)]
    return min(len(rule.accepted_rows), n), rule.budget.calls, usage_delta(before, engine_usage(config)), error


PROGRESS_FILE = "progress.json"
"""A worker's report of its rule's accepted samples so far, in the rule's work folder (read by the driver)."""


def progress_file_view(n: int, path: Path) -> Any:
    """A silent :class:`~hf_barred.progress.RunView` that writes the accepted count to ``path`` at each round's
    end (to a temporary name, then renamed), for the driver's progress lines."""
    from ...progress import RunView

    class ProgressFileView(RunView):
        def accepted(self, count: int, rule: str = "") -> None:
            super().accepted(count, rule)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps({"accepted": min(count, n)}))
            partial.replace(path)

    return ProgressFileView(n, enabled=False)


class ProgressLines:
    """The driver's progress while the workers run: a line when a rule's accepted count moves (read from the
    workers' progress files every ``interval`` seconds, in a daemon thread)."""

    def __init__(self, folders: dict[str, Path], n: int, interval: float = 5.0):
        self.folders, self.n, self.interval = folders, n, interval
        self.shown: dict[str, int] = {}
        self.done: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hf_barred-ray-progress", daemon=True)

    def __enter__(self) -> ProgressLines:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=self.interval + 1)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            for name, folder in self.folders.items():
                if name in self.done:
                    continue
                try:
                    accepted = int(json.loads((folder / PROGRESS_FILE).read_text())["accepted"])
                except (OSError, ValueError, KeyError):
                    continue
                if self.shown.get(name) != accepted:
                    self.shown[name] = accepted
                    print(f"[ray] rule {name}: {accepted} of {self.n} accepted so far", file=sys.stderr, flush=True)


def run_on_ray(
    tasks: list[GuardrailTask], n: int, config: BarredConfig, work: Path, single: bool, progress: bool, verbose: bool
) -> dict[str, Any]:
    """Run every rule on the Ray cluster of ``config.ray_address`` (a local one by default); returns the
    workers' engine usage, added up. Raises the first rule's error, as a local run would, once every rule
    has ended (the finished rows of all are saved)."""
    require_ray()
    import ray
    import ray.data

    quiet = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in quiet]
    started = _connect(ray, config.ray_address, verbose)
    try:
        if not verbose:  # Ray Data's own lines (execution started and finished, progress bars off) stay out
            for logger in quiet:
                logger.setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = verbose
        context.print_on_execution_start = verbose
        workers = worker_count(config, len(tasks), float(ray.cluster_resources().get("CPU", 1)))
        shipped = shared_cache_config(config)
        dataset = ray.data.from_items([{"rule": i} for i in range(len(tasks))], override_num_blocks=len(tasks))
        udf: Any = run_rules  # Ray's annotation wants numpy batches; ours are the dicts of lists it also takes
        results = dataset.map_batches(
            udf,
            fn_kwargs={"tasks": tasks, "n": n, "config": shipped, "work": str(work), "single": single},
            batch_size=1,
            compute=ray.data.TaskPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=config.ray_gpus_per_worker or None,
        )
        usage: dict[str, Any] = {}
        errors: list[list[str]] = []
        folders = {task.name: work if single else work / task.name for task in tasks}
        lines = ProgressLines(folders, n) if progress else contextlib.nullcontext()
        with lines:
            for row in results.iter_rows():  # in the order the rules end
                usage = usage_total(usage, json.loads(row["usage"]))
                if row["error"]:
                    errors.append(json.loads(row["error"]))
                if progress:
                    state = f"stopped: {json.loads(row['error'])[1]}" if row["error"] else "done"
                    if isinstance(lines, ProgressLines):
                        lines.done.add(row["rule"])
                    line = f"[ray] rule {row['rule']}: {row['accepted']} of {n} accepted, {row['requests']} requests"
                    print(f"{line} ({state})", file=sys.stderr, flush=True)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        if started:
            ray.shutdown()
    if errors:
        name, message = errors[0]
        raise _ERRORS.get(name, ValueError)(message)
    return usage


def _connect(ray: Any, address: Optional[str], verbose: bool) -> bool:
    """``ray.init`` on ``address`` (None: a local cluster), Ray's logs kept out of the terminal unless
    ``verbose``; returns whether this call started it (then the run shuts it down)."""
    if ray.is_initialized():
        return False
    ray.init(
        address=address,
        logging_level=logging.INFO if verbose else logging.ERROR,
        log_to_driver=verbose,
        include_dashboard=False,
    )
    return True
