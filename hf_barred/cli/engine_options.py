"""The one set of engine flags of the ``barred`` commands that call an LLM, and the config they give.

Example:
    >>> import argparse
    >>> from hf_barred.cli.engine_options import add_engine_arguments, engine_config
    >>> parser = argparse.ArgumentParser()
    >>> add_engine_arguments(parser)
    >>> args = parser.parse_args(["--engine", "openai", "--base-url", "http://127.0.0.1:8000/v1", "--model", "m"])
    >>> config = engine_config(args)
    >>> config.engine, config.model, config.max_concurrency
    ('openai', 'm', 32)
    >>> add_prompt_set_argument(parser)
    >>> parser.parse_args(["--prompt-set", "small"]).prompt_set
    'small'
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Optional

__all__ = ["ENGINES", "PROMPT_SET_NAMES", "add_engine_arguments", "add_prompt_set_argument", "check_cache_dir",
           "engine_config", "positive_int", "share"]

ENGINES = ("local", "openai", "vllm")
DTYPES = ("auto", "float32", "bfloat16")  # hf_barred.llm.config.DTYPES, likewise
PROMPT_SET_NAMES = ("small", "served")  # hf_barred.stages.prompting.PROMPT_SETS, without importing it at parse time


def add_prompt_set_argument(parser: Any) -> None:
    """Add ``--prompt-set`` (default None: ``small`` on the local engine, ``served`` on the others)."""
    parser.add_argument(
        "--prompt-set", choices=PROMPT_SET_NAMES, default=None,
        help="Prompt templates: 'small' (few-shot, fitted to the embedded 135M model) or 'served' (zero-shot "
        "system/user prompts for strong models). Default: small on the local engine, served on openai and vllm.",
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1.

    >>> positive_int("3")
    3
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected an integer >= 1, found '0'
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}")
    return value


def share(text: str) -> float:
    """An argparse type: a share in [0, 1].

    >>> share("0.25")
    0.25
    """
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1 (e.g. 0.5), found {text!r}")
    return value


def check_cache_dir(path: Path) -> None:
    """Raise a one-line ``ValueError`` unless the response cache folder ``path`` can be created and written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(
            f"--cache-dir {path}: expected a folder the response cache can write, but {err.strerror or err} "
            f"({err.filename or path}). Pass a writable --cache-dir, or set HF_BARRED_CACHE."
        ) from None


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
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads of the local engine (default: $OMP_NUM_THREADS, else the physical cores; "
                            "give each of two runs on one machine half).")
    group.add_argument("--dtype", choices=DTYPES, default=None,
                       help="Precision of the local engine (default auto: bfloat16 on CPUs with AMX, else float32; "
                            "float32 reproduces float32 answers anywhere).")
    group.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help="Seconds a request may take before it is retried (openai engine; default 120).")
    group.add_argument("--max-retries", type=int, default=None, metavar="N",
                       help="Retries of a failed request, with backoff (openai engine; default 6; a timed-out "
                            "request is retried at most twice, a refused connection at most twice).")
    group.add_argument("--cache-dir", default=None, help="Response cache folder (default: ~/.cache/hf_barred).")


def engine_config(args: argparse.Namespace, **changes: Any) -> Any:
    """The :class:`~hf_barred.llm.EngineConfig` of the flags of :func:`add_engine_arguments`; its cache
    folder is checked (:func:`check_cache_dir`), so an unwritable one fails before the run."""
    from ..llm import EngineConfig

    values = dict(
        engine=args.engine, model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
        max_concurrency=args.max_concurrency, batch_size=args.engine_batch_size, cache_dir=args.cache_dir,
        timeout=getattr(args, "timeout", None), max_retries=getattr(args, "max_retries", None),
        threads=getattr(args, "threads", None), dtype=getattr(args, "dtype", None),
    )
    values.update(changes)
    config = EngineConfig(**{k: v for k, v in values.items() if v is not None or k in ("base_url", "api_key_env",
                                                                                       "cache_dir")})
    if config.cache:
        check_cache_dir(config.resolved_cache_dir())
    return config
