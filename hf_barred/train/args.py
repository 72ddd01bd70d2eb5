"""GuardrailTrainingArguments: trl's ``SFTConfig`` (so every ``TrainingArguments`` flag works) plus the
guardrail's own fields.

Each field is ``field(default=..., metadata={"help": ...})``, so ``HfArgumentParser``/``TrlParser``
turn it into a flag (``--lora_r 8`` or ``--lora-r 8``) and a key of the ``--config`` YAML file. The
classifier trains on ``transformers.Trainer``, the generative guardrail on ``trl.SFTTrainer``; both
read these arguments. Defaults that differ from ``SFTConfig``'s suit small guardrails on small data:
LoRA-sized learning rate, no gradient checkpointing, bf16 only on a GPU that has it, no checkpoints
unless asked for (``--save_strategy steps|epoch``), no trackers (``--report_to``).

Example:
    >>> from hf_barred.train import GuardrailTrainingArguments
    >>> args = GuardrailTrainingArguments(rule="The user asks for help with a crime.", num_train_epochs=2)
    >>> args.model_kind, args.lora_r, args.resolved_prompt_format(), args.save_strategy.value
    ('classifier', 16, 'a4', 'no')
    >>> GuardrailTrainingArguments(model_kind="regex")
    Traceback (most recent call last):
    ...
    ValueError: GuardrailTrainingArguments.model_kind: expected one of classifier, generative, found 'regex'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from trl import SFTConfig

from ..guardrails.columns import ColumnMapping
from ..guardrails.loading import EMBEDDED

MODEL_KINDS = ("classifier", "generative")
PROMPT_FORMATS = ("auto", "a4", "binary", "policy")
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")
THRESHOLD_FOR = ("f1", "fpr", "fixed")
LONG_INPUTS = ("chunk", "truncate")
MIN_VALIDATION_PER_CLASS = 20


@dataclass
class GuardrailTrainingArguments(SFTConfig):
    """How to train a guardrail: a classifier (``Trainer``) or a generative judge (``SFTTrainer``), with LoRA.

    The guardrail's own parameters, by purpose (every other one is ``SFTConfig``/``TrainingArguments``'s):

    - **Model**: ``model_kind`` (``classifier``: a sequence-classification head; ``generative``: a causal
      LM answering the classification prompt of :mod:`hf_barred.guardrails.formats`), ``base_model``
      (``"embedded"`` = all-MiniLM-L6-v2 for a classifier, SmolLM2-135M-Instruct for a generative
      model), ``model_dtype``.
    - **Task**: ``prompt_format`` (a format name of :mod:`hf_barred.guardrails.formats`: ``a4``, the paper's
      classification prompt for a rule, the default; ``binary``, the earlier rule prompt; ``policy``
      taxonomy; ``auto`` picks ``policy`` when a taxonomy is given, else ``a4``), ``rule``, ``taxonomy``,
      ``pair_rule`` (classifier: the rule as ``text_pair``), ``class_names``, ``positive_label``.
    - **Columns** (``None`` = detected): ``text_column``, ``label_column``, ``rule_column``,
      ``task_column``, ``taxonomy_column``, ``categories_column``; ``validation_size``.
    - **LoRA** (peft): ``use_lora``, ``lora_r`` (paper: 16 for models up to 7B, 8 for 14B),
      ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``, ``merge_adapter``, ``keep_adapter``.
    - **Decision**: ``threshold``, ``threshold_for`` (``f1``/``fpr``: calibrated on the validation
      split; ``fixed``), ``target_fpr``; ``long_inputs`` (``chunk``/``truncate``), ``chunk_stride``.
    """

    # Model
    model_kind: str = field(
        default="classifier", metadata={"help": "classifier or generative.", "choices": list(MODEL_KINDS)}
    )
    base_model: str = field(
        default=EMBEDDED,
        metadata={
            "help": "Base model id or folder; 'embedded' = all-MiniLM-L6-v2 (classifier) or "
            "SmolLM2-135M-Instruct (generative), both shipped in Python packages."
        },
    )
    model_dtype: str = field(
        default="float32", metadata={"help": "dtype of the base weights.", "choices": list(MODEL_DTYPES)}
    )

    # Task
    prompt_format: str = field(
        default="auto",
        metadata={
            "help": "Prompt format name: a4 (the paper's rule prompt -> 1/0), binary (the "
            "earlier rule prompt), policy (taxonomy -> JSON) or auto (policy when a "
            "taxonomy is given, else a4)."
        },
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
    class_names: Optional[list[str]] = field(
        default=None, metadata={"help": "Names of [negative, positive], e.g. safe unsafe (default: from the data)."}
    )
    positive_label: Optional[str] = field(
        default=None,
        metadata={"help": "The label value meaning 'the rule applies / unsafe' (default: 1, true, unsafe, yes, ...)."},
    )

    # Columns
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
    validation_size: float = field(
        default=0.1,
        metadata={
            "help": "Fraction held out for validation when no eval set is given, only when that leaves "
            f"{MIN_VALIDATION_PER_CLASS}+ rows of each class (0: never)."
        },
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
        metadata={
            "help": "Generative: save merged weights instead of the adapter. Classifiers are merged unless "
            "--keep_adapter."
        },
    )
    keep_adapter: bool = field(
        default=False,
        metadata={
            "help": "Classifier: save the LoRA adapter and its head instead of merged weights, so that "
            "`barred serve` runs many such guardrails on one shared base (the folder then loads "
            "with Guardrail.from_pretrained or peft, not transformers.pipeline)."
        },
    )

    # Decision
    threshold: float = field(
        default=0.5,
        metadata={
            "help": "Flag when the violation score is >= this (the starting point when calibration has no data)."
        },
    )
    threshold_for: str = field(
        default="f1",
        metadata={
            "help": "Choose the threshold on the validation split: f1 (maximum F1), fpr (the "
            "lowest threshold whose false-positive rate is <= --target_fpr) or fixed.",
            "choices": list(THRESHOLD_FOR),
        },
    )
    target_fpr: float = field(default=0.05, metadata={"help": "Target false-positive rate for --threshold_for fpr."})
    long_inputs: str = field(
        default="chunk",
        metadata={
            "help": "Inputs longer than max_length: chunk (score each window, keep the "
            "maximum) or truncate (counted in reports).",
            "choices": list(LONG_INPUTS),
        },
    )
    chunk_stride: int = field(default=32, metadata={"help": "Tokens shared by consecutive windows of a long input."})

    # SFTConfig / TrainingArguments fields with guardrail defaults
    output_dir: str = field(
        default="outputs/guardrail", metadata={"help": "Where the guardrail is saved.", "aliases": ["--output"]}
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW); 2e-4 suits LoRA."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training data."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training batch per device."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Evaluation batch per device."})
    max_length: Optional[int] = field(default=512, metadata={"help": "Tokens per window (prompt + answer)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    # None: decided in __post_init__. trl's own config declares this bool | None over TrainingArguments' bool
    bf16: Optional[bool] = field(  # type: ignore[assignment]
        default=None, metadata={"help": "bf16 mixed precision (default: on a GPU that has it)."}
    )
    save_strategy: str = field(
        default="no", metadata={"help": "Checkpoints: no (only the final model is written), steps or epoch."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "Evaluate the validation split: no, steps or epoch."})
    report_to: Optional[str] = field(default="none", metadata={"help": "Trackers: none, tensorboard, wandb, ..."})
    logging_steps: float = field(default=10, metadata={"help": "Log the loss every N optimizer steps."})

    def __post_init__(self) -> None:
        _choice("model_kind", self.model_kind, MODEL_KINDS)
        _choice("prompt_format", self.prompt_format, PROMPT_FORMATS)
        _choice("model_dtype", self.model_dtype, MODEL_DTYPES)
        _choice("threshold_for", self.threshold_for, THRESHOLD_FOR)
        _choice("long_inputs", self.long_inputs, LONG_INPUTS)
        for name in ("lora_r", "lora_alpha", "max_length"):
            if getattr(self, name) is None or getattr(self, name) < 1:
                raise ValueError(
                    f"GuardrailTrainingArguments.{name}: expected an integer >= 1, found {getattr(self, name)}."
                )
        for name, value in (("threshold", self.threshold), ("target_fpr", self.target_fpr)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"GuardrailTrainingArguments.{name}: expected a probability in [0, 1], found {value}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"GuardrailTrainingArguments.lora_dropout: expected [0, 1), found {self.lora_dropout}.")
        if not 0.0 <= self.validation_size < 1.0:
            raise ValueError(
                f"GuardrailTrainingArguments.validation_size: expected [0, 1), found {self.validation_size}."
            )
        if self.class_names is not None and (len(self.class_names) != 2 or len(set(self.class_names)) != 2):
            raise ValueError(
                f"GuardrailTrainingArguments.class_names: expected two distinct names [negative, positive], found "
                f"{self.class_names}. Example: --class_names safe unsafe"
            )
        if self.taxonomy and "\n" not in self.taxonomy and len(self.taxonomy) < 1024 and Path(self.taxonomy).is_file():
            self.taxonomy = Path(self.taxonomy).read_text(encoding="utf-8")
        import torch

        if not torch.accelerator.is_available():  # pinned memory is for copies to an accelerator
            self.dataloader_pin_memory = False
        if self.bf16 is None:  # SFTConfig would turn bf16 on everywhere, CPUs included
            self.bf16 = bool(not self.fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # `accelerate launch --multi_gpu` / `torchrun` on a machine without GPUs: DDP over gloo on CPUs
            self.use_cpu = True
        super().__post_init__()

    def resolved_prompt_format(self, has_taxonomy_column: bool = False) -> str:
        """The format name: ``auto`` means ``policy`` when a taxonomy is given, else ``binary``."""
        return self.columns().resolved_prompt_format(has_taxonomy_column)

    def columns(self) -> ColumnMapping:
        """The column and label mapping to read the training data with."""
        return ColumnMapping(**{f.name: getattr(self, f.name) for f in fields(ColumnMapping)})

    def guardrail_dict(self) -> dict[str, Any]:
        """The guardrail's own fields plus the optimisation settings a card shows."""
        own = {f.name for f in fields(GuardrailTrainingArguments)} - {f.name for f in fields(SFTConfig)}
        shown = (
            "learning_rate",
            "num_train_epochs",
            "max_steps",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "lr_scheduler_type",
            "warmup_steps",
            "weight_decay",
            "max_length",
            "seed",
            "bf16",
            "fp16",
        )
        return {name: _plain(getattr(self, name)) for name in sorted(own) + list(shown)}


GuardrailConfig = GuardrailTrainingArguments  # the name of earlier releases


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"GuardrailTrainingArguments.{name}: expected one of {', '.join(allowed)}, found {value!r}.")


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)
