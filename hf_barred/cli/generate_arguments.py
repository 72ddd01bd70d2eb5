"""``barred generate``'s method and budget flags: flat arguments dataclasses, parsed by HfArgumentParser.

HfArgumentParser turns a dataclass's fields into flags (type, default, help), but not
:class:`~hf_barred.recipes.barred.config.BarredConfig`'s: it nests one config per stage, and a flag may
set several fields (``--seed`` the plan's and every LLM stage's, ``--max-repairs`` every LLM stage's) or
a value of another kind (``--judges K`` picks K personas). So each flag is a field of a flat dataclass,
one per help group (:class:`MethodArguments`, :class:`BudgetArguments`), made by
:func:`~hf_barred.cli.flags.from_config` from the config field it sets: its default and help are read
from that field when this module is imported, so they are written once, in the config dataclasses
(``for_engine``'s own parameters in :data:`~hf_barred.recipes.barred.config.FOR_ENGINE_HELP`).
:func:`barred_config` maps the parsed flags onto the nested config, through
:meth:`BarredConfig.for_engine`. The engine flags are :mod:`~hf_barred.cli.engine_options`' (shared
with the other commands that call an LLM).

This module imports transformers and the stages (so datasets): :mod:`hf_barred.cli.generate` imports it
only once ``barred generate`` is being parsed, never for ``barred --help``.

Example:
    >>> from hf_barred.cli.generate_arguments import FlagParser, MethodArguments, BudgetArguments
    >>> parser = FlagParser((MethodArguments, BudgetArguments), prog="barred generate")
    >>> args = parser.parse_args(["--judges", "3", "--max-rounds", "2"])
    >>> args.judges, args.rounds, args.max_rounds
    (3, 2, 2)
    >>> barred_config(args, EngineConfig()).debate.judges
    ('recall', 'strict', 'literal')
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, overload

from transformers import HfArgumentParser

from ..llm.config import EngineConfig
from ..recipes.barred.config import EXECUTORS, FOR_ENGINE_HELP, BarredConfig
from ..stages.base import LLMStageConfig
from ..stages.debate import DebateConfig
from ..stages.generate import GenerateConfig
from ..stages.plan import PlanConfig
from ..stages.prompting import PROMPT_SETS
from .engine_options import positive_int, share
from .flags import OneLineParser, from_config, kebab_case_argv

__all__ = ["LLM_STAGES", "BudgetArguments", "FlagParser", "MethodArguments", "barred_config"]

_N = TypeVar("_N")

LLM_STAGES = ("decompose", "instantiate", "generate", "debate", "refine")
"""The fields of ``BarredConfig`` that hold an LLM stage's config (``--seed`` and ``--max-repairs`` set them all)."""


@dataclass
class MethodArguments:
    """How samples are written and judged (the help group ``method``)."""

    _argument_group_name = "method"

    prompt_set: Optional[str] = from_config(
        LLMStageConfig, "prompt_set", help_text=FOR_ENGINE_HELP["prompt_set"], choices=tuple(PROMPT_SETS)
    )
    judges: int = from_config(
        DebateConfig,
        "judges",
        default=len(DebateConfig.judges),
        help_text=FOR_ENGINE_HELP["judges"],
        type=positive_int,
        metavar="K",
    )
    rounds: int = from_config(DebateConfig, "rounds", type=positive_int, metavar="T")
    max_refinements: int = from_config(BarredConfig, "max_refinements", metavar="R")
    seed: int = from_config(PlanConfig, "seed", (LLMStageConfig, "seed"))
    sample_max_tokens: Optional[int] = from_config(
        GenerateConfig, "max_tokens", default=None, help_text=FOR_ENGINE_HELP["sample_max_tokens"], metavar="N"
    )
    judge_max_tokens: Optional[int] = from_config(
        DebateConfig, "max_tokens", default=None, help_text=FOR_ENGINE_HELP["judge_max_tokens"], metavar="N"
    )
    max_repairs: int = from_config(LLMStageConfig, "max_repairs")


@dataclass
class BudgetArguments:
    """How much a run may do (the help group ``budget``): each flag sets the ``BarredConfig`` field of its name."""

    _argument_group_name = "budget"

    max_calls: Optional[int] = from_config(BarredConfig, "max_calls")
    max_calls_per_sample: float = from_config(BarredConfig, "max_calls_per_sample", type=float, metavar="N")
    max_total_tokens: Optional[int] = from_config(BarredConfig, "max_total_tokens")
    max_rounds: int = from_config(BarredConfig, "max_rounds")
    max_rows_per_round: int = from_config(BarredConfig, "max_rows_per_round")
    executor: str = from_config(BarredConfig, "executor", choices=EXECUTORS)
    ray_address: Optional[str] = from_config(BarredConfig, "ray_address", metavar="ADDRESS")
    ray_workers: Optional[int] = from_config(BarredConfig, "ray_workers", type=positive_int, metavar="N")
    ray_gpus_per_worker: float = from_config(BarredConfig, "ray_gpus_per_worker", type=float, metavar="GPUS")
    max_rows_in_flight: Optional[int] = from_config(BarredConfig, "max_rows_in_flight", metavar="N")
    batch_size: int = from_config(BarredConfig, "batch_size")
    max_failure_rate: float = from_config(BarredConfig, "max_failure_rate", type=share, metavar="SHARE")


class FlagParser(OneLineParser, HfArgumentParser):
    """HfArgumentParser with one-line errors, the examples of the help laid out as written, the argparse
    ``type`` a field's metadata names (``positive_int``, ``share``: HfArgumentParser takes the annotation's,
    whose errors would not say what is expected), and flags accepted in snake_case as well as kebab-case
    (call :func:`~hf_barred.cli.flags.kebab_case_flags` once every argument is added, to show only the latter)."""

    def __init__(self, dataclass_types: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(dataclass_types, **kwargs)
        types = {
            f.name: f.metadata["type"]
            for dtype in self.dataclass_types
            for f in dataclasses.fields(dtype)
            if "type" in f.metadata
        }
        for action in self._actions:
            if action.dest in types:
                action.type = types[action.dest]

    # argparse's overloads: the namespace given (or a new Namespace) is what comes back
    @overload
    def parse_known_args(
        self, args: Optional[Iterable[str]] = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @overload
    def parse_known_args(self, args: Optional[Iterable[str]], namespace: _N) -> tuple[_N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...

    def parse_known_args(self, args: Optional[Iterable[str]] = None, namespace: Any = None) -> tuple[Any, list[str]]:
        return super().parse_known_args(kebab_case_argv(sys.argv[1:] if args is None else args), namespace)


def barred_config(args: argparse.Namespace, engine: EngineConfig) -> BarredConfig:
    """The :class:`BarredConfig` of the parsed method and budget flags, every stage on ``engine``."""
    config = BarredConfig.for_engine(
        engine,
        judges=args.judges,
        rounds=args.rounds,
        sample_max_tokens=args.sample_max_tokens,
        judge_max_tokens=args.judge_max_tokens,
        prompt_set=args.prompt_set,
        max_refinements=args.max_refinements,
        plan=PlanConfig(seed=args.seed),
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(BudgetArguments)},
    )
    stage_changes = {"seed": args.seed, "max_repairs": args.max_repairs}
    return dataclasses.replace(
        config, **{name: dataclasses.replace(getattr(config, name), **stage_changes) for name in LLM_STAGES}
    )
