"""The one set of engine flags of the ``barred`` commands that call an LLM, and the config they give.

Each engine flag sets one :class:`~hf_barred.llm.EngineConfig` field (:data:`ENGINE_FLAGS`) and takes
that field's default and help (:func:`~hf_barred.cli.flags.argument_options`), so both are written once,
in ``EngineConfig``. They are plain argparse flags, not HfArgumentParser's: ``barred augment``,
``coverage`` and ``evaluate`` declare them when ``barred`` starts, and ``EngineConfig`` imports nothing
heavy, while ``transformers`` would.

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
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Optional

from ..llm.config import DTYPES, ENGINES, EngineConfig
from ..llm.providers import PROVIDERS, REASONING_EFFORTS
from .flags import argument_options

__all__ = [
    "ENGINES",
    "ENGINE_FLAGS",
    "PROMPT_SET_NAMES",
    "add_engine_arguments",
    "add_prompt_set_argument",
    "base_urls_from_file",
    "check_cache_dir",
    "engine_config",
    "positive_int",
    "share",
    "yes_no",
]

PROMPT_SET_NAMES = ("small", "served")  # hf_barred.stages.prompting.PROMPT_SETS, without importing it at parse time


def add_prompt_set_argument(parser: Any) -> None:
    """Add ``--prompt-set`` (default None: ``small`` on the local engine, ``served`` on the others)."""
    parser.add_argument(
        "--prompt-set",
        choices=PROMPT_SET_NAMES,
        default=None,
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


def yes_no(text: str) -> bool:
    """An argparse type: yes/no (true/false, 1/0).

    >>> yes_no("yes"), yes_no("0")
    (True, False)
    """
    value = text.strip().lower()
    if value in ("yes", "true", "1"):
        return True
    if value in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, found {text!r}")


ENGINE_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--engine", "engine", {"choices": ENGINES}),
    ("--model", "model", {}),
    ("--provider", "provider", {"choices": tuple(PROVIDERS)}),
    ("--base-url", "base_url", {"action": "append", "metavar": "URL"}),
    ("--api-key-env", "api_key_env", {"metavar": "VAR"}),
    ("--api-version", "api_version", {"metavar": "VERSION"}),
    ("--reasoning-model", "reasoning_model", {"type": yes_no, "metavar": "yes|no"}),
    ("--reasoning-effort", "reasoning_effort", {"choices": REASONING_EFFORTS}),
    ("--reasoning-tokens", "reasoning_tokens", {"type": positive_int, "metavar": "N"}),
    ("--batch", "batch", {"action": "store_true"}),
    ("--batch-price-factor", "batch_price_factor", {"type": float, "metavar": "F"}),
    ("--batch-poll-interval", "batch_poll_interval", {"type": float, "metavar": "SECONDS"}),
    ("--batch-max-retries", "batch_max_retries", {"type": int, "metavar": "N"}),
    ("--price-input", "price_per_million_input_tokens", {"type": float, "metavar": "USD"}),
    ("--price-output", "price_per_million_output_tokens", {"type": float, "metavar": "USD"}),
    ("--max-concurrency", "max_concurrency", {"type": int}),
    ("--engine-batch-size", "batch_size", {"type": int}),
    ("--threads", "threads", {"type": int, "metavar": "N"}),
    ("--dtype", "dtype", {"choices": DTYPES}),
    ("--timeout", "timeout", {"type": float, "metavar": "SECONDS"}),
    ("--max-retries", "max_retries", {"type": int, "metavar": "N"}),
    ("--cache-dir", "cache_dir", {}),
)
"""The engine flags: (flag, the ``EngineConfig`` field it sets, argparse options besides default and help)."""


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


def add_engine_arguments(parser: Any, *, default_engine: Optional[str] = "local", title: str = "engine") -> None:
    """Add the engine flags (:data:`ENGINE_FLAGS`) to ``parser``, in a group named ``title``.

    ``default_engine=None`` makes ``--engine`` optional with no default (a command where the engine
    is one choice among others, such as ``barred evaluate``); ``--model`` then defaults to None too.
    """
    group = parser.add_argument_group(title) if hasattr(parser, "add_argument_group") else parser
    defaults = {"engine": None, "model": None} if default_engine is None else {"engine": default_engine}
    for flag, name, options in ENGINE_FLAGS:
        group.add_argument(flag, **options, **argument_options(EngineConfig, name, default=defaults.get(name, MISSING)))
    group.add_argument(
        "--servers-file",
        metavar="FILE",
        default=None,
        help="A file of base URLs of servers of the same model, one per line (# starts a comment); with --base-url, "
        "both count.",
    )


def base_urls_from_file(path: str) -> list[str]:
    """The base URLs listed in ``path``, one per line; blank lines and ``#`` comments are skipped.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("# replicas\\nhttp://10.0.0.1:8000/v1\\n\\nhttp://10.0.0.2:8000/v1  # second\\n")
    >>> base_urls_from_file(f.name)
    ['http://10.0.0.1:8000/v1', 'http://10.0.0.2:8000/v1']
    >>> os.remove(f.name)
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(
            f"--servers-file {path}: expected a readable text file of base URLs, one per line, but "
            f"{getattr(err, 'strerror', None) or err}. Fix the path, or pass --base-url URL (repeatable)."
        ) from None
    urls = [line.split("#", 1)[0].strip() for line in lines]
    urls = [url for url in urls if url]
    bad = next((url for url in urls if not url.startswith(("http://", "https://")) or " " in url), None)
    if bad is not None or not urls:
        found = f"the line {bad!r}" if bad is not None else "no URL"
        raise ValueError(
            f"--servers-file {path}: expected one http(s) base URL per line (e.g. http://10.0.0.1:8000/v1), found "
            f"{found}. Fix the file."
        )
    return urls


def engine_config(args: argparse.Namespace, **changes: Any) -> EngineConfig:
    """The :class:`~hf_barred.llm.EngineConfig` of the flags of :func:`add_engine_arguments`; its cache
    folder is checked (:func:`check_cache_dir`), so an unwritable one fails before the run."""
    values: dict[str, Any] = {name: getattr(args, flag[2:].replace("-", "_"), None) for flag, name, _ in ENGINE_FLAGS}
    given = values.pop("base_url") or []
    urls = [given] if isinstance(given, str) else list(given)
    if getattr(args, "servers_file", None):
        urls += base_urls_from_file(args.servers_file)
    urls = list(dict.fromkeys(urls))  # a server named twice is one server
    values["base_url"] = urls[0] if urls else None
    if len(urls) > 1:
        values["extra_base_urls"] = tuple(urls[1:])
    values.update(changes)
    config = EngineConfig(
        **{k: v for k, v in values.items() if v is not None or k in ("base_url", "api_key_env", "cache_dir")}
    )
    if config.cache:
        check_cache_dir(config.resolved_cache_dir())
    return config
