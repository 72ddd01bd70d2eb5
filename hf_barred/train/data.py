"""Training data: canonical columns, prompts as token ids, and collators for both model kinds.

A dataset from ``barred generate``, a CSV of human labels or a Hub dataset is first brought to the
canonical columns ``text, label, rule, task, taxonomy, categories`` (:func:`normalize_dataset`), then
tokenised for a classifier (:func:`tokenize_classifier`) or a generative judge
(:func:`tokenize_generative`). The generative prompt is the one of :mod:`hf_barred.formats`, so a
trained judge and a prompted LLM read the same text; only the answer tokens carry a loss.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.train.data import normalize_dataset
    >>> from hf_barred.train.config import GuardrailConfig
    >>> ds = Dataset.from_dict({"prompt": ["How do I kill a process?", "How do I kill a man?"],
    ...                         "label": ["safe", "unsafe"]})
    >>> norm, info = normalize_dataset(ds, GuardrailConfig(rule="The request is harmful."))
    >>> list(norm["label"]), info.label_names, norm["rule"][0]
    ([0, 1], ['safe', 'unsafe'], 'The request is harmful.')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..formats import binary_messages, policy_answer, policy_messages, sort_codes
from .config import GuardrailConfig

if TYPE_CHECKING:
    from datasets import Dataset

TEXT_COLUMNS = ("text", "input", "prompt", "transcript", "message", "sample", "content")
LABEL_COLUMNS = ("label", "labels", "predicate_label", "target_label", "unsafe", "is_unsafe")
RULE_COLUMNS = ("rule", "criterion", "predicate")
TASK_COLUMNS = ("task",)
TAXONOMY_COLUMNS = ("taxonomy", "policy")
CATEGORY_COLUMNS = ("categories", "violated_categories", "safety_categories")
CANONICAL = ("text", "label", "rule", "task", "taxonomy", "categories")

POSITIVE_VALUES = ("1", "true", "yes", "unsafe", "violation", "violating", "harmful", "flagged", "positive")
NEGATIVE_VALUES = ("0", "false", "no", "safe", "non-violation", "harmless", "unharmful", "benign", "negative")
IGNORE_INDEX = -100


def data_method(column_names: Sequence[str]) -> str:
    """How a training set was made, from its lineage columns: ``barred``, ``apt`` or ``labelled``.

    >>> data_method(["text", "label", "debate", "debate_path"]), data_method(["text", "label"])
    ('barred', 'labelled')
    """
    if "perturbation" in column_names:
        return "apt"
    if "debate" in column_names or "debate_path" in column_names:
        return "barred"
    return "labelled"


@dataclass
class DataInfo:
    """What :func:`normalize_dataset` found: label names ``[negative, positive]``, distinct rules."""

    label_names: list[str]
    rules: list[str] = field(default_factory=list)
    columns: dict[str, Optional[str]] = field(default_factory=dict)


def _pick(columns: Sequence[str], wanted: Optional[str], candidates: Sequence[str], what: str,
          required: bool) -> Optional[str]:
    if wanted:
        if wanted not in columns:
            raise ValueError(f"Expected the dataset to have the {what} column {wanted!r}, but only {list(columns)} "
                             f"were found. Fix: pass --{what}_column with one of them.")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise ValueError(f"Expected the dataset to have a {what} column (one of {list(candidates)}), but only "
                         f"{list(columns)} were found. Fix: pass --{what}_column NAME.")
    return None


def label_mapping(values: Sequence[Any], positive_label: Optional[str] = None) -> tuple[dict[str, int], list[str]]:
    """Map raw label values (as strings) to 0/1 and name the classes ``[negative, positive]``.

    Without ``positive_label`` the values must be recognisable (``1/0``, ``true/false``,
    ``unsafe/safe``, ``yes/no``, ...).

    >>> label_mapping(["safe", "unsafe", "safe"])
    ({'safe': 0, 'unsafe': 1}, ['safe', 'unsafe'])
    >>> label_mapping([True, False])
    ({'False': 0, 'True': 1}, ['False', 'True'])
    >>> sorted(label_mapping(["PASS", "FAIL"], positive_label="FAIL")[0].items())
    [('FAIL', 1), ('PASS', 0)]
    """
    raw = sorted({str(v) for v in values if v is not None})
    if len(raw) > 2:
        raise ValueError(f"Expected a binary label with two values, found {len(raw)}: {raw[:10]}. "
                         "Fix: pass --label_column with a binary column, or map the labels first.")
    if positive_label is not None:
        if raw and str(positive_label).lower() not in {v.lower() for v in raw}:
            raise ValueError(f"positive_label {positive_label!r} is not among the label values {raw}. "
                             "Fix: pass one of them as --positive_label.")
        mapping = {v: int(v.lower() == str(positive_label).lower()) for v in raw}
    else:
        mapping = {}
        for v in raw:
            low = v.lower().removesuffix(".0")
            if low not in POSITIVE_VALUES + NEGATIVE_VALUES:
                raise ValueError(
                    f"Cannot tell which label value means 'the rule applies': found {raw}, expected values such as "
                    f"{POSITIVE_VALUES[:4]} / {NEGATIVE_VALUES[:4]}. Fix: pass --positive_label with the positive value."
                )
            mapping[v] = int(low in POSITIVE_VALUES)
        if len(set(mapping.values())) < len(mapping):
            raise ValueError(f"The label values {raw} all mean the same class. Fix: pass --positive_label.")
    if all(v.removesuffix(".0") in ("0", "1") for v in raw):
        return mapping, ["0", "1"]
    names = {c: v for v, c in mapping.items()}
    if 0 not in names:
        names[0] = f"not {names[1]}"
    if 1 not in names:
        names[1] = str(positive_label) if positive_label else f"not {names[0]}"
    return mapping, [names[0], names[1]]


def _categories(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return sort_codes([part for part in value.replace(";", ",").split(",") if part.strip()])
    return sort_codes([str(v) for v in value])


def _normalize_rows(batch: dict[str, list], columns: dict[str, Optional[str]], mapping: dict[str, int],
                    class_names: Optional[list[str]], rule: Optional[str], taxonomy: Optional[str]) -> dict[str, list]:
    n = len(batch[columns["text"]])
    out: dict[str, list] = {"text": [str(t) for t in batch[columns["text"]]]}
    if columns["label"]:
        values = [class_names[v] if class_names and v is not None else v for v in batch[columns["label"]]]
        out["label"] = [mapping[str(v)] if v is not None else None for v in values]
    else:
        out["label"] = [None] * n
    out["rule"] = [str(r) for r in batch[columns["rule"]]] if columns["rule"] else [rule] * n
    out["task"] = [t if t else None for t in batch[columns["task"]]] if columns["task"] else [None] * n
    out["taxonomy"] = list(batch[columns["taxonomy"]]) if columns["taxonomy"] else [taxonomy] * n
    out["categories"] = [_categories(v) for v in batch[columns["categories"]]] if columns["categories"] else [[] for _ in range(n)]
    return out


def normalize_dataset(ds: "Dataset", config: GuardrailConfig, require_labels: bool = True,
                      label_names: Optional[list[str]] = None) -> tuple["Dataset", DataInfo]:
    """Bring ``ds`` to the columns ``text, label (0/1), rule, task, taxonomy, categories``.

    Columns are found by name (``text``/``prompt``/``transcript``..., ``label``/``predicate_label``...,
    ``criterion``/``rule``/``predicate``...) unless the config names them; the rule and taxonomy come
    from the config when the data has no such column. ``label_names`` (from a trained guardrail)
    fixes which raw value is positive.
    """
    from datasets import ClassLabel, Features, List, Value

    names = list(ds.column_names)
    columns = {
        "text": _pick(names, config.text_column, TEXT_COLUMNS, "text", required=True),
        "label": _pick(names, config.label_column, LABEL_COLUMNS, "label", required=require_labels),
        "rule": _pick(names, config.rule_column, RULE_COLUMNS, "rule", required=False),
        "task": _pick(names, config.task_column, TASK_COLUMNS, "task", required=False),
        "taxonomy": _pick(names, config.taxonomy_column, TAXONOMY_COLUMNS, "taxonomy", required=False),
        "categories": _pick(names, config.categories_column, CATEGORY_COLUMNS, "categories", required=False),
    }
    mapping: dict[str, int] = {}
    class_names: Optional[list[str]] = None
    found_names = list(config.label_names or label_names or [])
    if columns["label"]:
        values = ds.unique(columns["label"])
        feature = ds.features[columns["label"]]
        positive = config.positive_label
        if isinstance(feature, ClassLabel) and feature.num_classes == 2:  # schema order: [negative, positive]
            class_names = list(feature.names)
            values = [feature.int2str(v) if v is not None else None for v in values]
            positive = positive or class_names[1]
        elif positive is None and label_names and {str(v) for v in values if v is not None} <= set(label_names):
            positive = label_names[1]
        mapping, derived = label_mapping(values, positive)
        found_names = found_names or class_names or derived
        if require_labels and None in values:
            raise ValueError(f"The label column {columns['label']!r} has empty values. Fix: drop those rows first.")
    fmt = config.resolved_prompt_format(has_taxonomy_column=columns["taxonomy"] is not None)
    if fmt == "binary" and not columns["rule"] and not config.rule:
        raise ValueError(f"The binary format needs a rule: expected a rule column (one of {list(RULE_COLUMNS)}) or "
                         f"--rule, found neither in {names}. Fix: pass --rule \"...\".")
    if fmt == "policy" and not columns["taxonomy"] and not config.taxonomy:
        raise ValueError(f"The policy format needs a taxonomy: expected a taxonomy column or --taxonomy, found "
                         f"neither in {names}. Fix: pass --taxonomy FILE.")
    features = Features({
        "text": Value("string"), "label": Value("int64"), "rule": Value("string"), "task": Value("string"),
        "taxonomy": Value("string"), "categories": List(Value("string")),
    })
    out = ds.map(
        _normalize_rows, batched=True, remove_columns=names, features=features,
        fn_kwargs={"columns": columns, "mapping": mapping, "class_names": class_names, "rule": config.rule,
                   "taxonomy": config.taxonomy},
        desc="Normalising columns",
    )
    rules = sorted(set(out["rule"]) - {None})
    default_names = ["safe", "unsafe"] if fmt == "policy" else ["0", "1"]
    return out, DataInfo(label_names=found_names or default_names, rules=rules, columns=columns)


# -- generative prompts ---------------------------------------------------------------------------


def build_messages(fmt: str, text: str, rule: Optional[str] = None, task: Optional[str] = None,
                   taxonomy: Optional[str] = None) -> list[dict[str, str]]:
    """The classification prompt of :mod:`hf_barred.formats` for one input."""
    if fmt == "policy":
        if not taxonomy:
            raise ValueError("The policy format needs a taxonomy (S-coded text); found none.")
        return policy_messages(taxonomy, text)
    if not rule:
        raise ValueError("The binary format needs a rule; found none. Pass rule=... .")
    return binary_messages(rule, text, task)


def target_answer(fmt: str, label: int, categories: Sequence[str] = ()) -> str:
    """The answer a generative guardrail is trained to give: ``"1"``/``"0"`` or the policy JSON."""
    if fmt == "policy":
        return policy_answer(bool(label), list(categories))
    return "1" if label else "0"


@dataclass(frozen=True)
class DecisionTokens:
    """Where the verdict is read: after ``prefix`` (ids common to both answers), the probability of
    ``positive`` vs ``negative`` (``"1"``/``"0"``; for the policy JSON the first token of
    ``unsafe``/``safe``)."""

    prefix: tuple[int, ...]
    positive: int
    negative: int


class PromptEncoder:
    """Turns messages (+ an answer) into token ids, with the chat template when the tokenizer has one.

    The prompt and the completion are tokenised apart, exactly as inference sees them: the prompt is
    what ``apply_chat_template(..., add_generation_prompt=True)`` renders; the completion is what the
    template adds after it for the assistant's answer (e.g. ``"1<|im_end|>\\n"``). Without a template,
    the prompt ends with ``"\\nAnswer: "`` and the completion is the answer plus EOS. The input text
    (never the instructions or the answer) is cut to fit ``max_length``.
    """

    def __init__(self, tokenizer: Any, max_length: int = 1024):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_template = bool(getattr(tokenizer, "chat_template", None))
        self._completions: dict[str, list[int]] = {}

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        if self.use_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return messages[-1]["content"] + "\nAnswer: "

    def completion_text(self, messages: list[dict[str, str]], answer: str) -> str:
        eos = self.tokenizer.eos_token or ""
        if self.use_template:
            prompt = self.prompt_text(messages)
            full = self.tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": answer}], tokenize=False
            )
            if full.startswith(prompt):
                return full[len(prompt):]
        return answer + eos

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer(self.prompt_text(messages), add_special_tokens=not self.use_template)["input_ids"]

    def completion_ids(self, messages: list[dict[str, str]], answer: str) -> list[int]:
        return self.tokenizer(self.completion_text(messages, answer), add_special_tokens=False)["input_ids"]

    def fit(self, fmt: str, text: str, rule: Optional[str], task: Optional[str], taxonomy: Optional[str],
            reserve: int = 0) -> list[dict[str, str]]:
        """Messages whose prompt, plus ``reserve`` answer tokens, fits ``max_length`` (the text is cut)."""
        return self._fit(fmt, text, rule, task, taxonomy, reserve)[0]

    def fitted_prompt_ids(self, fmt: str, text: str, rule: Optional[str], task: Optional[str],
                          taxonomy: Optional[str], reserve: int = 0) -> list[int]:
        """The prompt ids of :meth:`fit`'s messages."""
        return self._fit(fmt, text, rule, task, taxonomy, reserve)[1]

    def _fit(self, fmt: str, text: str, rule: Optional[str], task: Optional[str], taxonomy: Optional[str],
             reserve: int) -> tuple[list[dict[str, str]], list[int]]:
        messages = build_messages(fmt, text, rule, task, taxonomy)
        ids = self.prompt_ids(messages)
        if len(ids) + reserve <= self.max_length:
            return messages, ids
        overhead = len(self.prompt_ids(build_messages(fmt, "", rule, task, taxonomy))) + reserve
        budget = self.max_length - overhead - 2
        if budget < 1:
            raise ValueError(f"max_length={self.max_length} leaves no room for the input: the prompt alone takes "
                             f"{overhead} tokens. Fix: raise --max_length.")
        cut = self.tokenizer(text, add_special_tokens=False)["input_ids"][:budget]
        messages = build_messages(fmt, self.tokenizer.decode(cut), rule, task, taxonomy)
        return messages, self.prompt_ids(messages)

    def example(self, fmt: str, text: str, label: int, rule: Optional[str] = None, task: Optional[str] = None,
                taxonomy: Optional[str] = None, categories: Sequence[str] = ()) -> dict[str, list[int]]:
        """``input_ids`` and ``labels`` (``-100`` on the prompt) for one training row."""
        answer = target_answer(fmt, label, categories)
        if answer not in self._completions:  # the completion does not depend on the input
            self._completions[answer] = self.completion_ids(build_messages(fmt, "", rule, task, taxonomy), answer)
        completion = self._completions[answer]
        prompt = self.fitted_prompt_ids(fmt, text, rule, task, taxonomy, reserve=len(completion))
        return {"input_ids": prompt + completion, "labels": [IGNORE_INDEX] * len(prompt) + completion}

    def decision_tokens(self, fmt: str) -> DecisionTokens:
        """The ids after which the positive and negative answers part (see :class:`DecisionTokens`)."""
        probe = build_messages(fmt, "x", "r", None, "S1: x")
        pos = self.completion_ids(probe, target_answer(fmt, 1, ["S1"]))
        neg = self.completion_ids(probe, target_answer(fmt, 0))
        k = 0
        while k < min(len(pos), len(neg)) and pos[k] == neg[k]:
            k += 1
        if k >= min(len(pos), len(neg)):
            raise ValueError("The tokenizer gives the positive and negative answers the same tokens; "
                             "it cannot be used for a generative guardrail.")
        return DecisionTokens(prefix=tuple(pos[:k]), positive=pos[k], negative=neg[k])


def _tokenize_generative_rows(batch: dict[str, list], encoder: PromptEncoder, fmt: str) -> dict[str, list]:
    out: dict[str, list] = {"input_ids": [], "labels": []}
    for i, text in enumerate(batch["text"]):
        row = encoder.example(fmt, text, batch["label"][i], batch["rule"][i], batch["task"][i],
                              batch["taxonomy"][i], batch["categories"][i])
        out["input_ids"].append(row["input_ids"])
        out["labels"].append(row["labels"])
    return out


def tokenize_generative(ds: "Dataset", tokenizer: Any, fmt: str, max_length: int, **map_kwargs: Any) -> "Dataset":
    """Token ids and answer-only labels for a causal LM, from a normalised dataset."""
    return ds.map(_tokenize_generative_rows, batched=True, remove_columns=ds.column_names,
                  fn_kwargs={"encoder": PromptEncoder(tokenizer, max_length), "fmt": fmt},
                  desc="Tokenising prompts", **map_kwargs)


# -- classifier -----------------------------------------------------------------------------------


def classifier_inputs(tokenizer: Any, texts: Sequence[str], rules: Optional[Sequence[Optional[str]]],
                      max_length: int, **kwargs: Any) -> Any:
    """Tokenise for a sequence classifier; with ``rules`` the rule is the first segment, the text the
    second (only the text is cut)."""
    if rules is not None:
        return tokenizer([r or "" for r in rules], list(texts), truncation="only_second",
                         max_length=max_length, **kwargs)
    return tokenizer(list(texts), truncation=True, max_length=max_length, **kwargs)


def _tokenize_classifier_rows(batch: dict[str, list], tokenizer: Any, pair_rule: bool, max_length: int) -> dict:
    enc = classifier_inputs(tokenizer, batch["text"], batch["rule"] if pair_rule else None, max_length)
    return dict(enc) | {"labels": batch["label"]}


def tokenize_classifier(ds: "Dataset", tokenizer: Any, pair_rule: bool, max_length: int,
                        **map_kwargs: Any) -> "Dataset":
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) plus ``labels`` for a classifier."""
    return ds.map(_tokenize_classifier_rows, batched=True, remove_columns=ds.column_names,
                  fn_kwargs={"tokenizer": tokenizer, "pair_rule": pair_rule, "max_length": max_length},
                  desc="Tokenising", **map_kwargs)


# -- collators ------------------------------------------------------------------------------------


@dataclass
class CausalCollator:
    """Right-pads ``input_ids`` (pad id), ``labels`` (-100) and builds the attention mask."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def classifier_collator(tokenizer: Any) -> Any:
    """Dynamic padding for classifier batches."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
