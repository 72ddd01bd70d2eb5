"""What every stage shares: versioned prompt templates and a fingerprinted ``Dataset.map``.

A stage is ``stage(ds, config, **map_kwargs) -> Dataset`` over a private batched row function.
:func:`map_stage` runs that function with ``ds.map(batched=True)`` and a fingerprint computed from
exactly what changes the output: the input dataset's fingerprint, the stage name and version, the
prompt texts, and the config with its engine reduced to :meth:`EngineConfig.identity` (so
concurrency, timeouts and rate limits never invalidate a cached dataset).

Example:
    >>> from hf_barred.stages._common import load_prompt
    >>> prompt = load_prompt("generate", "v1")
    >>> prompt.version, "criterion" in prompt.text
    ('v1', True)
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Optional

import jinja2
from datasets import Dataset, Features
from datasets.fingerprint import Hasher

from ..llm.config import EngineConfig

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class Prompt:
    """One prompt template file: ``hf_barred/prompts/<name>/<version>.jinja``."""

    name: str
    version: str
    text: str

    @functools.cached_property
    def template(self) -> jinja2.Template:
        return _JINJA.from_string(self.text)

    def render(self, **variables: Any) -> str:
        return self.template.render(**variables).strip()

    def messages(self, **variables: Any) -> list[dict[str, str]]:
        """The rendered template as a one-message conversation."""
        return [{"role": "user", "content": self.render(**variables)}]

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"


@functools.lru_cache(maxsize=None)
def load_prompt(name: str, version: str) -> Prompt:
    """Load a packaged prompt template; a clear error names the versions that exist."""
    folder = resources.files("hf_barred") / "prompts" / name
    path = folder / f"{version}.jinja"
    if not path.is_file():
        available = sorted(p.name.removesuffix(".jinja") for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(
            f"no prompt template {name}/{version}.jinja: expected one of the versions {available} "
            f"in hf_barred/prompts/{name}/. Pick an existing prompt_version or add the file."
        )
    return Prompt(name=name, version=version, text=path.read_text(encoding="utf-8"))


def config_identity(value: Any) -> Any:
    """A config as plain data, with every EngineConfig reduced to its identity (engine, model)."""
    if isinstance(value, EngineConfig):
        return value.identity()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: config_identity(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [config_identity(v) for v in value]
    if isinstance(value, dict):
        return {k: config_identity(v) for k, v in value.items()}
    return value


def stage_fingerprint(ds: Dataset, stage: str, version: str, prompts: tuple[Prompt, ...], config: Any) -> str:
    """The fingerprint of a stage's output dataset."""
    return Hasher.hash(
        {
            "input": ds._fingerprint,
            "stage": stage,
            "version": version,
            "prompts": [(p.id, p.text) for p in prompts],
            "config": config_identity(config),
        }
    )


def map_stage(
    ds: Dataset,
    function: Callable[..., dict[str, list]],
    *,
    stage: str,
    version: str,
    config: Any,
    prompts: tuple[Prompt, ...] = (),
    features: Optional[Features] = None,
    remove_columns: Optional[list[str]] = None,
    map_kwargs: Optional[dict[str, Any]] = None,
) -> Dataset:
    """``ds.map(function, batched=True)`` with the stage's fingerprint and sensible defaults.

    ``function(batch, config, prompts, version)`` gets the prompt texts and version through
    ``fn_kwargs``; ``map_kwargs`` (``num_proc``, ``batch_size``, ``desc``, ...) pass through.
    """
    kwargs: dict[str, Any] = {"batch_size": 64, "desc": stage}
    kwargs.update(map_kwargs or {})
    kwargs.setdefault("new_fingerprint", stage_fingerprint(ds, stage, version, prompts, config))
    return ds.map(
        function,
        batched=True,
        fn_kwargs={"config": config, "prompts": prompts, "version": version},
        features=features,
        remove_columns=ds.column_names if remove_columns is None else remove_columns,
        **kwargs,
    )


def rows(batch: dict[str, list]) -> list[dict[str, Any]]:
    """A columnar batch as a list of row dicts."""
    if not batch:
        return []
    n = len(next(iter(batch.values())))
    return [{key: values[i] for key, values in batch.items()} for i in range(n)]


def columns(records: list[dict[str, Any]], names: list[str]) -> dict[str, list]:
    """Row dicts back to a columnar batch with exactly ``names``."""
    return {name: [record[name] for record in records] for name in names}
