"""GuardrailConfig: everything that decides how a guardrail model is trained.

Every field is ``field(default=..., metadata={"help": ...})``, so the same dataclass is filled by
``transformers.HfArgumentParser`` (command-line flags), by ``HfArgumentParser.parse_yaml_file`` (a YAML
config), by ``barred train`` (YAML + flags, flags win) and by plain Python.

Example:
    >>> from hf_barred.train import GuardrailConfig
    >>> cfg = GuardrailConfig(rule="The user asks for help with a crime.", num_train_epochs=2)
    >>> cfg.model_kind, cfg.lora_r, cfg.resolved_prompt_format()
    ('classifier', 16, 'binary')
    >>> GuardrailConfig(model_kind="regex")
    Traceback (most recent call last):
    ...
    ValueError: GuardrailConfig.model_kind: expected one of classifier, generative, found 'regex'.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

MODEL_KINDS = ("classifier", "generative")
PROMPT_FORMATS = ("auto", "binary", "policy")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")
EMBEDDED = "embedded"

# Fields that change the trained weights: a checkpoint made under other values is not the same run.
RUN_FIELDS = (
    "model_kind", "base_model", "prompt_format", "use_lora", "lora_r", "lora_alpha", "lora_dropout",
    "lora_target_modules", "learning_rate", "weight_decay", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio",
    "max_grad_norm", "seed", "max_length", "pair_rule",
)


@dataclass
class GuardrailConfig:
    """How to train a guardrail: a classifier or a generative judge, with LoRA, on Accelerate.

    Parameters, by purpose:

    - **Model**: ``model_kind`` (``classifier``: a sequence-classification head; ``generative``: a causal
      LM that answers the classification prompt of :mod:`hf_barred.formats`), ``base_model``
      (``"embedded"`` = all-MiniLM-L6-v2 for a classifier, SmolLM2-135M-Instruct for a generative
      model), ``model_dtype``, ``gradient_checkpointing``.
    - **Task**: ``prompt_format`` (``binary`` rule or ``policy`` taxonomy; ``auto`` picks ``policy``
      when a taxonomy is given), ``rule``, ``taxonomy``, ``pair_rule`` (classifier: feed the rule as
      ``text_pair``), ``label_names``, ``threshold``.
    - **Data columns** (``None`` = detected): ``text_column``, ``label_column``, ``rule_column``,
      ``task_column``, ``taxonomy_column``, ``categories_column``, ``positive_label``; ``max_length``,
      ``validation_size``.
    - **LoRA** (peft): ``use_lora``, ``lora_r`` (paper: 16 for models up to 7B, 8 for 14B),
      ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``, ``merge_adapter``.
    - **Optimisation**: ``learning_rate``, ``weight_decay``, ``num_train_epochs``, ``max_steps``,
      ``per_device_train_batch_size``, ``per_device_eval_batch_size``, ``gradient_accumulation_steps``,
      ``lr_scheduler_type``, ``warmup_ratio``, ``max_grad_norm``, ``mixed_precision``.
    - **Run**: ``output_dir``, ``logging_steps``, ``eval_steps``, ``save_steps``, ``save_total_limit``,
      ``resume_from_checkpoint``, ``seed``, ``report_to``, ``push_to_hub``, ``hub_private_repo``.
    """

    # Model
    model_kind: str = field(default="classifier", metadata={"help": "classifier or generative."})
    base_model: str = field(
        default=EMBEDDED,
        metadata={"help": "Base model id or folder; 'embedded' = all-MiniLM-L6-v2 (classifier) or "
                          "SmolLM2-135M-Instruct (generative), both shipped in Python packages."},
    )
    model_dtype: str = field(
        default="float32", metadata={"help": "dtype of the base weights: float32, bfloat16, float16 or auto."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})

    # Task
    prompt_format: str = field(
        default="auto", metadata={"help": "binary (rule -> 1/0), policy (taxonomy -> JSON) or auto."}
    )
    rule: Optional[str] = field(
        default=None, metadata={"help": "The rule (BARRED criterion); used when the data has no rule column."}
    )
    taxonomy: Optional[str] = field(
        default=None, metadata={"help": "S-coded taxonomy text, or a path to a file holding it (APT)."}
    )
    pair_rule: Optional[bool] = field(
        default=None,
        metadata={"help": "Classifier: feed the rule as text_pair (default: when the data has several rules)."},
    )
    label_names: Optional[list[str]] = field(
        default=None, metadata={"help": "Names of [negative, positive], e.g. safe unsafe (default: from the data)."}
    )
    threshold: float = field(default=0.5, metadata={"help": "Flag when the violation score is >= this."})

    # Data
    text_column: Optional[str] = field(default=None, metadata={"help": "Input text column (detected if unset)."})
    label_column: Optional[str] = field(default=None, metadata={"help": "Label column (detected if unset)."})
    rule_column: Optional[str] = field(default=None, metadata={"help": "Per-row rule column (detected if unset)."})
    task_column: Optional[str] = field(
        default=None, metadata={"help": "Per-row task column, for task_and_response inputs (detected if unset)."}
    )
    taxonomy_column: Optional[str] = field(default=None, metadata={"help": "Per-row taxonomy column (APT)."})
    categories_column: Optional[str] = field(
        default=None, metadata={"help": "Violated category codes per row, e.g. ['S1','S5'] or 'S1,S5' (APT)."}
    )
    positive_label: Optional[str] = field(
        default=None,
        metadata={"help": "The label value meaning 'the rule applies / unsafe' (default: 1, true, unsafe, yes, ...)."},
    )
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per example; the input text is cut."})
    validation_size: float = field(
        default=0.1,
        metadata={"help": "Fraction of the training data held out for evaluation when no eval set is given; 0: none."},
    )

    # LoRA
    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter (else: full fine-tuning)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (paper: 16 for models up to 7B, 8 for 14B)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: Optional[list[str]] = field(
        default=None, metadata={"help": "Modules to adapt (default: all linear layers but the head)."}
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "Generative: save merged weights instead of the adapter. Classifiers are always merged."},
    )

    # Optimisation
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the training data."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs decide)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training batch per device."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Evaluation batch per device."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of steps for linear warm-up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0: none)."})
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16/fp16 only where the GPU has it, or what `accelerate launch` set), no, fp16, bf16."},
    )

    # Run
    output_dir: str = field(default="outputs/guardrail", metadata={"help": "Where the guardrail is saved."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N optimizer steps."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every N optimizer steps (0: each epoch end)."})
    save_steps: int = field(
        default=0, metadata={"help": "Checkpoint every N optimizer steps (0: each epoch end; -1: never)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (older ones removed; 0: all)."})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "Checkpoint folder, or 'latest' for the newest one in output_dir."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, shuffling and dropout."})
    report_to: str = field(default="none", metadata={"help": "Accelerate tracker: none, tensorboard, wandb, ..."})
    push_to_hub: Optional[str] = field(default=None, metadata={"help": "Hub repo id to publish the guardrail to."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self) -> None:
        _choice("model_kind", self.model_kind, MODEL_KINDS)
        _choice("prompt_format", self.prompt_format, PROMPT_FORMATS)
        _choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _choice("model_dtype", self.model_dtype, MODEL_DTYPES)
        for name in ("lora_r", "lora_alpha", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "max_length", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"GuardrailConfig.{name}: expected an integer >= 1, found {getattr(self, name)}.")
        if self.save_steps < -1:
            raise ValueError(f"GuardrailConfig.save_steps: expected -1, 0 or a positive integer, found {self.save_steps}.")
        for name in ("eval_steps", "save_total_limit", "num_train_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"GuardrailConfig.{name}: expected an integer >= 0, found {getattr(self, name)}.")
        if self.num_train_epochs == 0 and self.max_steps <= 0:
            raise ValueError("GuardrailConfig: num_train_epochs is 0 and max_steps is unset: nothing to train. "
                             "Set num_train_epochs >= 1 or max_steps >= 1.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"GuardrailConfig.threshold: expected a probability in [0, 1], found {self.threshold}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"GuardrailConfig.lora_dropout: expected [0, 1), found {self.lora_dropout}.")
        if not 0.0 <= self.validation_size < 1.0:
            raise ValueError(f"GuardrailConfig.validation_size: expected [0, 1), found {self.validation_size}.")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"GuardrailConfig.warmup_ratio: expected [0, 1], found {self.warmup_ratio}.")
        if self.learning_rate <= 0:
            raise ValueError(f"GuardrailConfig.learning_rate: expected > 0, found {self.learning_rate}.")
        if self.label_names is not None and (len(self.label_names) != 2 or len(set(self.label_names)) != 2):
            raise ValueError(
                f"GuardrailConfig.label_names: expected two distinct names [negative, positive], found {self.label_names}. "
                "Example: --label_names safe unsafe"
            )
        if self.taxonomy and "\n" not in self.taxonomy and len(self.taxonomy) < 1024 and Path(self.taxonomy).is_file():
            self.taxonomy = Path(self.taxonomy).read_text(encoding="utf-8")

    def resolved_prompt_format(self, has_taxonomy_column: bool = False) -> str:
        """``binary`` or ``policy``: ``auto`` means policy when a taxonomy is given."""
        if self.prompt_format != "auto":
            return self.prompt_format
        return "policy" if (self.taxonomy or has_taxonomy_column or self.taxonomy_column) else "binary"

    def resolved_mixed_precision(self) -> Optional[str]:
        """What to pass to ``Accelerator(mixed_precision=...)``.

        ``auto``: ``None`` (Accelerate reads ``accelerate launch``'s setting) when launched by
        Accelerate, else bf16 on a GPU that has it, fp16 on other GPUs, and ``no`` on a CPU.
        """
        if self.mixed_precision != "auto":
            return self.mixed_precision
        if os.environ.get("ACCELERATE_MIXED_PRECISION"):
            return None
        import torch

        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"

    def run_fingerprint(self) -> dict[str, Any]:
        """The fields that change the trained weights (checked when resuming)."""
        return {name: getattr(self, name) for name in RUN_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"GuardrailConfig.{name}: expected one of {', '.join(allowed)}, found {value!r}.")


# -- command line, without importing transformers (``barred --help`` stays fast) -------------------


def add_config_arguments(parser: argparse.ArgumentParser, dataclass_type: type = GuardrailConfig,
                         skip: tuple[str, ...] = ()) -> None:
    """Add one ``--flag`` per dataclass field, as ``HfArgumentParser`` names them.

    Defaults are ``argparse.SUPPRESS``, so the namespace holds only the flags the user gave: they can
    be laid over a YAML config (see :func:`config_from_sources`).
    """
    group = parser.add_argument_group(f"{dataclass_type.__name__} (also settable in --config YAML)")
    hints = typing.get_type_hints(dataclass_type)
    for f in dataclasses.fields(dataclass_type):
        if f.name in skip:
            continue
        kind, optional = _unwrap(hints[f.name])
        flag = f"--{f.name}"
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if kind is bool:
            group.add_argument(flag, type=_str2bool, nargs="?", const=True, default=argparse.SUPPRESS,
                               metavar="BOOL", help=help_text)
        elif typing.get_origin(kind) is list:
            group.add_argument(flag, nargs="+", default=argparse.SUPPRESS, help=help_text)
        else:
            convert = kind if kind in (int, float) else str
            group.add_argument(flag, type=convert, default=argparse.SUPPRESS, help=help_text)


def config_from_sources(yaml_path: Optional[str], overrides: dict[str, Any],
                        dataclass_type: type = GuardrailConfig) -> Any:
    """Defaults, then the YAML file, then ``overrides`` (command-line flags) win.

    Unknown YAML keys are an error (expected / found / fix), as in ``HfArgumentParser.parse_dict``.
    """
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(dataclass_type)}
    if yaml_path:
        import yaml

        loaded = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path}: expected a mapping of {dataclass_type.__name__} fields, "
                             f"found a {type(loaded).__name__}.")
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise ValueError(
                f"{yaml_path}: unknown {dataclass_type.__name__} keys {unknown}. "
                f"Expected keys among: {', '.join(sorted(names))}. Fix the spelling or remove them."
            )
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if k in names})
    return dataclass_type(**values)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; ``X`` -> ``(X, False)``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _str2bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), found {value!r}")
