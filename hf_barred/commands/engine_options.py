"""The one set of engine flags of the ``barred`` commands that call an LLM, and the config they give.

Example:
    >>> import argparse
    >>> from hf_barred.commands.engine_options import add_engine_arguments, engine_config
    >>> parser = argparse.ArgumentParser()
    >>> add_engine_arguments(parser)
    >>> args = parser.parse_args(["--engine", "openai", "--base-url", "http://127.0.0.1:8000/v1", "--model", "m"])
    >>> config = engine_config(args)
    >>> config.engine, config.model, config.max_concurrency
    ('openai', 'm', 32)
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

__all__ = ["ENGINES", "add_engine_arguments", "engine_config"]

ENGINES = ("local", "openai", "vllm")


def add_engine_arguments(parser: Any, *, default_engine: Optional[str] = "local",
                         title: str = "engine") -> None:
    """Add the engine flags to ``parser`` (in a group named ``title``).

    ``default_engine=None`` makes ``--engine`` optional with no default (a command where the engine
    is one choice among others, such as ``barred evaluate``); ``--model`` then defaults to None too.
    """
    group = parser.add_argument_group(title) if hasattr(parser, "add_argument_group") else parser
    group.add_argument("--engine", choices=ENGINES, default=default_engine,
                       help=f"LLM engine (default: {default_engine})." if default_engine else "LLM engine.")
    group.add_argument("--model", default="embedded" if default_engine else None,
                       help="Model ('embedded': the bundled SmolLM2-135M-Instruct on the local engine).")
    group.add_argument("--base-url", default=None, help="OpenAI-compatible base URL (openai engine).")
    group.add_argument("--api-key-env", default=None, metavar="VAR",
                       help="Name of the env var holding the API key (openai engine).")
    group.add_argument("--max-concurrency", type=int, default=32, help="Requests in flight (openai engine).")
    group.add_argument("--engine-batch-size", type=int, default=8,
                       help="Conversations per forward batch (local engine).")
    group.add_argument("--cache-dir", default=None, help="Response cache folder (default: ~/.cache/hf_barred).")


def engine_config(args: argparse.Namespace, **changes: Any) -> Any:
    """The :class:`~hf_barred.llm.EngineConfig` of the flags of :func:`add_engine_arguments`."""
    from ..llm import EngineConfig

    values = dict(
        engine=args.engine, model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
        max_concurrency=args.max_concurrency, batch_size=args.engine_batch_size, cache_dir=args.cache_dir,
    )
    values.update(changes)
    return EngineConfig(**{k: v for k, v in values.items() if v is not None or k in ("base_url", "api_key_env",
                                                                                     "cache_dir")})
