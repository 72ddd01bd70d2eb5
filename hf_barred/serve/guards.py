"""What the server knows of one saved guardrail: the ONLY module of :mod:`hf_barred.serve` that reads
the folder format of ``barred train`` (``guardrail_config.json``, the adapter, the tokenizer).

A :class:`ServedGuard` reads texts with the :class:`~hf_barred.guardrails.scoring.Scorer` that
:class:`hf_barred.guardrails.guardrail.Guardrail` scores through in-process, and turns a score into the same
:class:`~hf_barred.guardrails.scoring.Verdict` (:func:`~hf_barred.guardrails.scoring.verdict`). If the saved
format changes, this module is the one to adapt.

Example:
    >>> import tempfile
    >>> from hf_barred.serve.guards import ServedGuard, parse_source
    >>> from hf_barred.guardrails.spec import GuardrailSpec
    >>> folder = tempfile.mkdtemp()
    >>> _ = GuardrailSpec(kind="classifier", prompt_format="binary", base_model="embedded", rule="r",
    ...                   label_names=["safe", "unsafe"]).save(folder)
    >>> guard = ServedGuard.load(folder, name="violence")
    >>> guard.name, guard.kind, guard.adapter
    ('violence', 'classifier', False)
    >>> guard.verdict(0.75).label
    'unsafe'
    >>> parse_source("crime=outputs/crime-guard")
    ('crime', 'outputs/crime-guard')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, cast

from ..guardrails.encoding import DecisionTokens
from ..guardrails.formats import count_categories
from ..guardrails.guardrail import Guardrail
from ..guardrails.loading import guardrail_folder, load_tokenizer, model_window, resolve_base_model, torch_dtype
from ..guardrails.scoring import Encoded, Scorer, Verdict, verdict
from ..guardrails.spec import GuardrailSpec

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADAPTER_CONFIG = "adapter_config.json"


def parse_source(source: str) -> tuple[Optional[str], str]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``; a bare ``PATH`` -> ``(None, PATH)``."""
    name, sep, path = source.partition("=")
    if sep and NAME_PATTERN.match(name):
        return name, path
    return None, source


def default_name(path: str) -> str:
    """A guardrail's name from its folder or Hub id: the last path part, cleaned."""
    tail = Path(str(path).rstrip("/")).name or "guardrail"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", tail).strip("-._") or "guardrail"
    return cleaned[:64]


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"Guardrail name {name!r}: expected letters, digits, '.', '_' or '-' (at most 64, starting "
            "with a letter or digit). Fix: serve it as NAME=PATH with such a name."
        )
    return name


@dataclass
class ServedGuard:
    """One guardrail folder, as the server runs it (see the module docstring)."""

    name: str
    folder: Path
    spec: GuardrailSpec
    source: str = ""

    @classmethod
    def load(
        cls, source: str, name: Optional[str] = None, revision: Optional[str] = None, token: Optional[str] = None
    ) -> ServedGuard:
        """A local folder made by ``barred train``, or a Hub repo id (downloaded once)."""
        folder = guardrail_folder(source, revision=revision, token=token)
        spec = GuardrailSpec.load(folder)
        guard = cls(name=check_name(name or default_name(source)), folder=folder, spec=spec, source=str(source))
        if spec.prompt_format == "binary" and not spec.rule and (spec.kind == "generative" or spec.pair_rule):
            raise ValueError(
                f"Guardrail {guard.name} ({source}) reads a rule with each text and has no saved rule; "
                "the server has no rule to give it. Fix: train it with --rule, or serve another one."
            )
        return guard

    # -- facts ------------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def adapter(self) -> bool:
        """The folder holds a peft LoRA adapter on ``base_path`` (else full weights)."""
        return (self.folder / ADAPTER_CONFIG).is_file()

    @cached_property
    def base_path(self) -> str:
        """What the base model loads from (the embedded folder for ``"embedded"``)."""
        return resolve_base_model(self.spec.base_model, self.kind)

    @cached_property
    def lora_rank(self) -> int:
        """The adapter's LoRA rank (0 for full weights)."""
        if not self.adapter:
            return 0
        config = json.loads((self.folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        ranks = [int(config.get("r") or 0), *map(int, (config.get("rank_pattern") or {}).values())]
        return max(ranks)

    @property
    def policy(self) -> bool:
        return self.spec.prompt_format == "policy"

    @cached_property
    def category_codes(self) -> list[str]:
        """``S1..Sn`` of a policy guardrail's taxonomy (empty otherwise)."""
        n = count_categories(self.spec.taxonomy) if self.policy else None
        return [f"S{i}" for i in range(1, (n or 0) + 1)]

    def describe(self) -> dict[str, Any]:
        """The ``/v1/models`` entry (everything a client needs to rebuild the spec)."""
        spec = self.spec
        return {
            "id": self.name,
            "object": "model",
            "owned_by": "hf_barred",
            "kind": spec.kind,
            "base_model": spec.base_model,
            "prompt_format": spec.prompt_format,
            "rule": spec.rule,
            "taxonomy": spec.taxonomy,
            "categories": self.category_codes,
            "label_names": list(spec.label_names),
            "threshold": spec.threshold,
            "pair_rule": spec.pair_rule,
            "max_length": spec.max_length,
            "long_inputs": spec.long_inputs,
            "chunk_stride": spec.chunk_stride,
            "format_version": spec.format_version,
            "adapter": self.adapter,
        }

    # -- inputs -----------------------------------------------------------------------------------

    @cached_property
    def tokenizer(self) -> Any:
        """The folder's tokenizer; guardrails whose tokenizer files are identical share one object."""
        return _shared_tokenizer(_tokenizer_fingerprint(self.folder), str(self.folder), self.kind)

    @cached_property
    def window(self) -> int:
        """Tokens the model reads at once, as ``Guardrail`` reads them (``max_length``, capped by the position
        embeddings of what the model loads from)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.base_path if self.adapter else str(self.folder))
        return model_window(config, self.spec.max_length)

    @cached_property
    def scorer(self) -> Scorer:
        """The model inputs of this guardrail (its windows, the decision tokens), as ``Guardrail`` builds them."""
        return Scorer(self.tokenizer, self.spec, self.window)

    @property
    def decision(self) -> DecisionTokens:
        """After which ids, and between which two tokens, the verdict is read (generative guardrails)."""
        return cast(DecisionTokens, self.scorer.decision)  # the Scorer of a generative guardrail sets it

    def inputs(self, texts: list[str]) -> list[Encoded]:
        """Each text's windows, read with the guardrail's own rule and taxonomy."""
        n = len(texts)
        return self.scorer.encode(texts, [self.spec.rule] * n, [self.spec.taxonomy] * n, [None] * n)

    def prompt_ids(self, text: str) -> list[int]:
        """The classification prompt's ids (what the policy JSON is decoded after)."""
        return self.scorer.prompt_ids(text, self.spec.rule, self.spec.taxonomy)

    # -- outputs ----------------------------------------------------------------------------------

    def verdict(self, score: float, raw: Optional[str] = None, windows: int = 1) -> Verdict:
        """The :class:`Verdict` of ``score`` (and, for a policy guardrail, of its decoded JSON)."""
        return verdict(self.spec, score, windows=windows, raw=raw)

    def load_model(self, dtype: Optional[str] = None) -> Guardrail:
        """The whole guardrail in-process (for full-weight folders that cannot share a base)."""
        return Guardrail.from_pretrained(self.folder, device="cpu", dtype=dtype)


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "chat_template.jinja",
)


def _tokenizer_fingerprint(folder: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = folder / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()


_TOKENIZERS: dict[tuple[str, str], Any] = {}


def _shared_tokenizer(fingerprint: str, folder: str, kind: str) -> Any:
    if (fingerprint, kind) not in _TOKENIZERS:
        _TOKENIZERS[(fingerprint, kind)] = load_tokenizer(folder, kind)
    return _TOKENIZERS[(fingerprint, kind)]


def auto_model_class(kind: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM


def load_base(guard: ServedGuard, dtype: Optional[str] = None) -> Any:
    """The base model of an adapter guardrail, loaded as ``Guardrail.from_pretrained`` loads it."""
    kwargs = {"dtype": torch_dtype(dtype)} if dtype else {}
    return auto_model_class(guard.kind).from_pretrained(guard.base_path, **kwargs)
