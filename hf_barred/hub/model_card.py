"""Model cards for trained guardrails, from the Jinja templates in ``hf_barred/hub/templates/``.

:func:`model_card` builds ``ModelCardData`` (base model, datasets, license, tags, evaluation results
as model-index ``EvalResult`` entries) and calls ``ModelCard.from_template(card_data,
template_path=..., **variables)``; no card text is concatenated by hand. :func:`template_path`
finds the templates inside the package.

Example:
    >>> from hf_barred.hub.model_card import model_card
    >>> from hf_barred.guardrails.spec import GuardrailSpec
    >>> spec = GuardrailSpec(kind="classifier", prompt_format="binary", base_model="embedded",
    ...                      rule="The user asks for help with a crime.", label_names=["safe", "unsafe"])
    >>> evaluations = [{"dataset": "xstest", "split": "test", "metrics": {"accuracy": 0.9, "f1": 0.88}}]
    >>> card = model_card(spec, repo_id="me/crime-guard", evaluations=evaluations)
    >>> card.data.base_model, card.data.eval_results[0].metric_value
    ('sentence-transformers/all-MiniLM-L6-v2', 0.9)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .markdown import fenced, inline_code

TEMPLATES_ENV = "HF_BARRED_MODEL_CARDS"
TEMPLATES_DIR = "templates"
CARD_SETTINGS = (
    "model_kind",
    "base_model",
    "use_lora",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "max_length",
    "mixed_precision",
    "seed",
)
CARD_METRICS = ("accuracy", "precision", "recall", "f1", "category_f1")
EXAMPLE_TEXT = "Text to check"


def _template_dirs() -> list[Path]:
    """Where the templates may be, most specific first: ``$HF_BARRED_MODEL_CARDS``, then the package's own."""
    dirs = [Path(os.environ[TEMPLATES_ENV])] if os.environ.get(TEMPLATES_ENV) else []
    return dirs + [Path(str(resources.files(__package__) / TEMPLATES_DIR))]


def template_path(name: str = "model_card.md") -> Path:
    """The path of the card template ``name`` (``hf_barred/hub/templates/<name>``, read with
    ``importlib.resources``), or of ``$HF_BARRED_MODEL_CARDS/<name>`` when that folder holds one."""
    tried = []
    for folder in _template_dirs():
        path = folder / name
        if path.is_file():
            return path
        tried.append(str(folder))
    raise FileNotFoundError(
        f"Expected the card template {name!r} in one of {tried}, found none. Fix: reinstall hf_barred, or set "
        f"{TEMPLATES_ENV} to a folder holding the templates."
    )


def library_version() -> str:
    """The installed hf_barred version, for cards ("(development version)" from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hf_barred")
    except PackageNotFoundError:
        return "(development version)"


def _looks_like_hub_id(name: Optional[str]) -> bool:
    return bool(name and name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/", "~")))


def _slug(name: str) -> str:
    """A model-index dataset type for a name that is not a Hub id: ``"data/test set.csv" -> "data-test-set.csv"``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "custom"


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def model_card_inputs(
    spec: Any,
    *,
    model_name: Optional[str] = None,
    repo_id: Optional[str] = None,
    datasets: Sequence[str] = (),
    evaluations: Sequence[Mapping[str, Any]] = (),
    license: Optional[str] = None,
    language: Optional[str] = "en",
) -> tuple[Any, dict[str, Any]]:
    """``(ModelCardData, template variables)`` for a guardrail's :class:`~hf_barred.guardrails.spec.GuardrailSpec`.

    ``evaluations``: ``{"dataset", "split", "metrics", optional "dataset_id"}`` mappings, e.g. from
    the ``report.json`` of ``barred evaluate``; they become model-index results and the card's table.
    """
    from huggingface_hub import EvalResult, ModelCardData

    from ..guardrails.loading import canonical_base_model

    base = canonical_base_model(spec.base_model, spec.kind)
    name = model_name or (repo_id.split("/")[-1] if repo_id else "guardrail")
    settings = dict(spec.training.get("config", {}))
    hub_datasets = [d for d in datasets if _looks_like_hub_id(d)]
    eval_results, rows = [], []
    for ev in evaluations:
        metrics = ev.get("metrics", {})
        dataset_id = ev.get("dataset_id") or (ev["dataset"] if _looks_like_hub_id(ev["dataset"]) else None)
        for metric in CARD_METRICS:
            if metric in metrics:
                eval_results.append(
                    EvalResult(
                        task_type="text-classification",
                        task_name="Guardrail classification",
                        dataset_type=dataset_id or _slug(ev["dataset"]),
                        dataset_name=ev["dataset"],
                        dataset_split=ev.get("split"),
                        metric_type=metric,
                        metric_value=_round(metrics[metric]),
                    )
                )
        rows.append(
            {"dataset": ev["dataset"], "split": ev.get("split") or "-", "n": metrics.get("n", "-")}
            | {m: _round(metrics.get(m, "-")) for m in CARD_METRICS}
        )
    embedded = spec.base_model == "embedded"
    card_data = ModelCardData(
        model_name=name,
        base_model=base if _looks_like_hub_id(base) else None,
        datasets=hub_datasets or None,
        license=license or ("apache-2.0" if embedded else None),
        language=language,
        library_name="peft" if spec.adapter else "transformers",
        pipeline_tag="text-classification" if spec.kind == "classifier" else "text-generation",
        tags=["hf-barred", "guardrail", "safety", "apt" if spec.prompt_format == "policy" else "barred"]
        + (["lora"] if settings.get("use_lora", True) else []),
        eval_results=eval_results or None,
    )
    variables = {
        "model_name": name,
        "repo_id": repo_id or "path/to/guardrail",
        "kind": spec.kind,
        "kind_description": (
            "sequence classifier" if spec.kind == "classifier" else "generative judge (causal language model)"
        ),
        "prompt_format": spec.prompt_format,
        "format_version": spec.format_version,
        "base_model": base,
        "base_model_markdown": f"[{base}](https://huggingface.co/{base})" if _looks_like_hub_id(base) else f"`{base}`",
        "use_lora": bool(settings.get("use_lora", True)),
        "adapter": spec.adapter,
        "pair_rule": spec.pair_rule,
        "rule": spec.rule,
        "taxonomy": spec.taxonomy,
        "label_names": list(spec.label_names),
        "threshold": spec.threshold,
        "threshold_source": spec.threshold_source,
        # user text goes into the body inert (hf_barred.hub.markdown): fenced blocks, code spans
        "rule_block": fenced(spec.rule) if spec.rule else "",
        "taxonomy_block": fenced(spec.taxonomy) if spec.taxonomy else "",
        "label_code": [inline_code(str(name)) for name in spec.label_names],
        "example_text": EXAMPLE_TEXT,
        "eval_rows": rows,
        "has_category_metrics": any(isinstance(r["category_f1"], float) for r in rows),
        "training_data": ", ".join(inline_code(str(d)) for d in datasets) or "not recorded",
        "train_rows": spec.training.get("train_rows", "not recorded"),
        "validation_rows": spec.training.get("eval_rows", 0),
        "global_step": spec.training.get("global_step", "not recorded"),
        "training_settings": [(k, inline_code(str(settings[k]))) for k in CARD_SETTINGS if k in settings],
        "data_method": spec.training.get("data_method", "labelled"),
        "library_version": library_version(),
    }
    return card_data, variables


def model_card(spec: Any, *, template: Optional[str | Path] = None, **kwargs: Any) -> Any:
    """A ``huggingface_hub.ModelCard`` for a guardrail (arguments: :func:`model_card_inputs`)."""
    from huggingface_hub import ModelCard

    card_data, variables = model_card_inputs(spec, **kwargs)
    return ModelCard.from_template(card_data, template_path=str(template or template_path()), **variables)


def write_model_card(folder: str | Path, **kwargs: Any) -> Path:
    """Write ``README.md`` into a guardrail folder from its ``guardrail_config.json``."""
    from ..guardrails.spec import GuardrailSpec

    path = Path(folder) / "README.md"
    model_card(GuardrailSpec.load(folder), **kwargs).save(path)
    return path
