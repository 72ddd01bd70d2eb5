"""``guardrail_config.json``: what inference needs to know to run a saved guardrail.

Written next to the weights by the trainer, read by :class:`hf_barred.guardrails.guardrail.Guardrail`.

Example:
    >>> import tempfile
    >>> from hf_barred.guardrails.spec import GuardrailSpec
    >>> spec = GuardrailSpec(kind="classifier", prompt_format="binary", base_model="embedded",
    ...                      rule="The user asks for help with a crime.", label_names=["safe", "unsafe"])
    >>> folder = tempfile.mkdtemp()
    >>> spec.save(folder).name
    'guardrail_config.json'
    >>> GuardrailSpec.load(folder).rule
    'The user asks for help with a crime.'
    >>> GuardrailSpec(kind="classifier", prompt_format="binary", base_model="embedded",
    ...               training={"config": {"chunk_stride": 16}}).chunk_stride  # a config written before the field
    16
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .formats import format_version

SPEC_FILE = "guardrail_config.json"
SPEC_VERSION = 1
DEFAULT_CHUNK_STRIDE = 32


@dataclass
class GuardrailSpec:
    """How a saved guardrail runs.

    - ``kind``: ``classifier`` or ``generative``; ``adapter``: the folder holds a peft adapter (its
      base is ``base_model``) rather than full weights.
    - ``prompt_format`` / ``format_version``: the classification prompt of :mod:`hf_barred.guardrails.formats`.
    - ``rule`` / ``taxonomy``: the default policy (a call may pass its own); ``pair_rule``: a
      classifier reads the rule as ``text_pair``.
    - ``label_names``: ``[negative, positive]``; ``threshold``: flag when the violation score >= it;
      ``threshold_source``: how it was chosen (``fixed``, or calibrated on validation rows).
    - ``max_length`` / ``long_inputs``: the window, and whether longer inputs are scored in chunks
      (``chunk``: the maximum score over windows) or cut (``truncate``); ``chunk_stride``: the tokens
      that consecutive windows share (a config written without it: the training flag, else 32).
    - ``training``: the :class:`~hf_barred.train.GuardrailTrainingArguments` and data facts (for the card).
    """

    kind: str
    prompt_format: str
    base_model: str
    rule: Optional[str] = None
    taxonomy: Optional[str] = None
    label_names: list[str] = field(default_factory=lambda: ["0", "1"])
    threshold: float = 0.5
    threshold_source: str = "fixed"
    pair_rule: bool = False
    max_length: int = 512
    long_inputs: str = "chunk"
    chunk_stride: Optional[int] = None
    adapter: bool = False
    format_version: str = ""
    spec_version: int = SPEC_VERSION
    library: str = "hf_barred"
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.format_version:
            self.format_version = format_version(self.prompt_format)
        if self.chunk_stride is None:  # guardrail_config.json written before the field
            self.chunk_stride = int(self.training.get("config", {}).get("chunk_stride", DEFAULT_CHUNK_STRIDE))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SPEC_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> GuardrailSpec:
        path = Path(folder) / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"Expected {SPEC_FILE} in {folder} (written by `barred train`), found none. Fix: pass a folder made by "
                "`barred train`, or a Hub repo pushed with --push-to-hub."
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("spec_version", 1) > SPEC_VERSION:
            raise ValueError(
                f"{path} has spec_version {data['spec_version']}, newer than this hf_barred "
                f"understands ({SPEC_VERSION}). Fix: pip install -U hf_barred."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def spec_from_card(card: dict[str, Any]) -> GuardrailSpec:
    """The :class:`GuardrailSpec` of a ``barred serve`` ``/v1/models`` entry (the spec's fields, and others).

    >>> spec_from_card({"id": "crime", "kind": "classifier", "prompt_format": "binary", "base_model": "embedded"}).kind
    'classifier'
    """
    known = {f.name for f in dataclasses.fields(GuardrailSpec)} - {"training"}
    return GuardrailSpec(**{k: v for k, v in card.items() if k in known})
