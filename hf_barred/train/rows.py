"""Training rows from a normalised dataset: token ids for a classifier, prompt/completion rows for
trl's ``SFTTrainer``.

The generative rows hold the classification prompt of :mod:`hf_barred.guardrails.formats` as chat messages (or
as text when the tokenizer has no chat template) and the answer as the completion, so SFTTrainer
puts the loss on the answer only (``completion_only_loss``). The input text is cut beforehand so that
prompt plus answer fit ``max_length``: SFTTrainer's own truncation, which would cut the answer, never
applies. How many rows were cut is returned.

Example:
    >>> from datasets import Dataset
    >>> from hf_barred.train.rows import truncated_count
    >>> truncated_count(Dataset.from_dict({"input_ids": [[1, 2, 3], [1]]}), 3)
    1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..guardrails.encoding import PromptEncoder, build_messages, classifier_inputs, target_answer
from ..guardrails.formats import classifier_text
from .args import MIN_VALIDATION_PER_CLASS

if TYPE_CHECKING:
    from datasets import Dataset


def _tokenize_classifier_rows(batch: dict[str, list], tokenizer: Any, pair_rule: bool, max_length: int) -> dict:
    texts = [classifier_text(text, task) for text, task in zip(batch["text"], batch["task"])]  # the task too
    enc = classifier_inputs(tokenizer, texts, batch["rule"] if pair_rule else None, max_length)
    return dict(enc) | {"labels": batch["label"]}


def classifier_rows(ds: Dataset, tokenizer: Any, pair_rule: bool, max_length: int, **map_kwargs: Any) -> Dataset:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) plus ``labels``; long texts are cut."""
    return ds.map(
        _tokenize_classifier_rows,
        batched=True,
        remove_columns=ds.column_names,
        fn_kwargs={"tokenizer": tokenizer, "pair_rule": pair_rule, "max_length": max_length},
        desc="Tokenising",
        **map_kwargs,
    )


def truncated_count(rows: Dataset, max_length: int) -> int:
    """Rows whose ids fill the window (their text was cut)."""
    return sum(len(ids) >= max_length for ids in rows["input_ids"])


def _prompt_completion_rows(batch: dict[str, list], encoder: PromptEncoder, fmt: str) -> dict[str, list]:
    out: dict[str, list] = {"prompt": [], "completion": [], "truncated": []}
    for i, text in enumerate(batch["text"]):
        rule, task, taxonomy = batch["rule"][i], batch["task"][i], batch["taxonomy"][i]
        reserve = len(encoder.completion_for(fmt, batch["label"][i], batch["categories"][i], rule, task, taxonomy))
        messages = encoder.fit(fmt, text, rule, task, taxonomy, reserve=reserve)
        answer = target_answer(fmt, batch["label"][i], batch["categories"][i])
        out["truncated"].append(messages != build_messages(fmt, text, rule, task, taxonomy))
        if encoder.use_template:
            out["prompt"].append(messages)
            out["completion"].append([{"role": "assistant", "content": answer}])
        else:
            out["prompt"].append(encoder.prompt_text(messages))
            out["completion"].append(answer)
    return out


def prompt_completion_rows(ds: Dataset, tokenizer: Any, fmt: str, max_length: int, **map_kwargs: Any) -> Dataset:
    """``prompt``/``completion`` rows (conversational with a chat template) and a ``truncated`` flag."""
    return ds.map(
        _prompt_completion_rows,
        batched=True,
        remove_columns=ds.column_names,
        fn_kwargs={"encoder": PromptEncoder(tokenizer, max_length), "fmt": fmt},
        desc="Building prompt/completion rows",
        **map_kwargs,
    )


def split_validation(
    ds: Dataset, validation_size: float, seed: int, min_per_class: int = MIN_VALIDATION_PER_CLASS
) -> tuple[Dataset, Optional[Dataset], str]:
    """A stratified validation split, only when it gets ``min_per_class`` rows of each class.

    Returns ``(train, validation or None, why)``; ``why`` says what was decided, for the logs and card.

    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"text": ["t"] * 400, "label": [0, 1] * 200})
    >>> train, val, why = split_validation(ds, 0.1, seed=0)
    >>> len(train), len(val), sorted(set(val["label"]))
    (360, 40, [0, 1])
    >>> split_validation(ds.select(range(24)), 0.1, seed=0)[1] is None
    True
    """
    from collections import Counter

    from datasets import ClassLabel

    if validation_size <= 0:
        return ds, None, "no validation split (validation_size is 0)"
    counts = Counter(ds["label"])
    held = {label: int(validation_size * n) for label, n in counts.items()}
    if len(counts) < 2 or min(held.values()) < min_per_class:
        return (
            ds,
            None,
            (
                f"no validation split: {validation_size:g} of the classes {dict(sorted(counts.items()))} "
                f"leaves fewer than {min_per_class} rows of a class"
            ),
        )
    features = ds.features.copy()
    features["label"] = ClassLabel(names=["0", "1"])
    parts = ds.cast(features).train_test_split(test_size=sum(held.values()), seed=seed, stratify_by_column="label")
    plain = ds.features["label"]
    train, val = (parts[k].cast_column("label", plain) for k in ("train", "test"))
    return train, val, f"{len(val)} rows held out for validation (stratified)"
