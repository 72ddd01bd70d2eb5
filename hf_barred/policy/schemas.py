"""What each policy file holds: pydantic schemas of the task and taxonomy files.

The models describe the *files* (the runtime objects ``GuardrailTask`` and ``Taxonomy`` are built
from them by :mod:`.task` and :mod:`.taxonomy`); their errors are one line (see :mod:`.files`).

Example:
    >>> from hf_barred.policy.schemas import TaskFile, TaxonomyFile
    >>> TaskFile.parse({"criterion": "r", "labels": {"negative": "no", "positive": "yes"}}).labels
    ('no', 'yes')
    >>> TaxonomyFile.parse({"categories": [{"name": "Hate", "should_not": "Demean people."}]}).categories[0].should_not
    ('Demean people.',)
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, get_args

from pydantic import BeforeValidator, model_validator

from .files import FieldProblem, FileModel, file_field

__all__ = ["INPUT_TYPES", "CategoryFile", "SeedEntry", "TaskFile", "TaxonomyFile", "seed_parts"]

InputType = Literal["input_block", "task_and_response"]
INPUT_TYPES: tuple[str, ...] = get_args(InputType)


# --- field types ------------------------------------------------------------------------------------------
def _one_line_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip() or "\r" in value.strip():
        raise FieldProblem("a non-empty one-line string")
    return value.strip()


def _line_list(value: Any) -> Any:
    return [] if value is None else [value] if isinstance(value, str) else value


def _text(value: Any) -> Any:
    return "" if value is None else str(value) if isinstance(value, (int, float)) else value


def _rule_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        fix = "Write the rule, e.g. \"The agent's response contains health advice.\""
        raise FieldProblem("a non-empty rule text", fix=fix)
    return value


def _labels(value: Any) -> tuple[str, str]:
    if isinstance(value, dict):  # {negative: ..., positive: ...}
        if set(value) != {"negative", "positive"}:
            raise FieldProblem("a list [negative, positive] or {negative: ..., positive: ...}")
        value = [value["negative"], value["positive"]]
    if not isinstance(value, (list, tuple)):
        raise FieldProblem("a list of two label names [negative, positive]")
    labels = tuple(str(label) for label in value)  # YAML reads [no, yes] as booleans: their names are kept
    if len(labels) != 2 or len(set(labels)) != 2 or not all(labels):
        raise FieldProblem("two distinct names [rule does not hold, rule holds]", labels)
    return labels  # type: ignore[return-value]


def seed_parts(value: Any) -> tuple[str, Optional[str]]:
    """``(text, task)`` of one seed: a non-empty string, ``{task, response}`` or ``{text, task?}``.

    >>> seed_parts("User: hi"), seed_parts({"task": "plan a trip", "response": "go"})
    (('User: hi', None), ('go', 'plan a trip'))
    """
    if isinstance(value, str) and value.strip():
        return value, None
    if isinstance(value, dict) and {"task", "response"} <= set(value):
        return str(value["response"]), str(value["task"])
    if isinstance(value, dict) and "text" in value:
        return str(value["text"]), value.get("task")
    raise FieldProblem("non-empty strings, or objects with 'task' and 'response'", value)


def _seed_list(value: Any) -> list[dict[str, Any]]:
    """Seeds are checked as one field (errors say ``field 'seeds'``); the fix names the seed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldProblem("a list of examples")
    entries = []
    for i, item in enumerate(value):
        try:
            text, task = seed_parts(item)
        except FieldProblem as problem:
            raise FieldProblem(problem.expected, item, f"Fix or remove seed {i}.") from None
        entries.append({"text": text, "task": task})
    return entries


class SeedEntry(FileModel):
    """One seed as read from a file (``task`` is set for ``task_and_response`` inputs)."""

    text: str = file_field("the seed's text")
    task: Optional[str] = file_field("the task the response answers", None)


OneLine = Annotated[str, BeforeValidator(_one_line_text)]
GuidelineLines = Annotated[tuple[OneLine, ...], BeforeValidator(_line_list)]
Seeds = Annotated[tuple[SeedEntry, ...], BeforeValidator(_seed_list)]
Text = Annotated[str, BeforeValidator(_text)]
Labels = Annotated[tuple[str, str], BeforeValidator(_labels)]
RuleText = Annotated[str, BeforeValidator(_rule_text)]


# --- task file --------------------------------------------------------------------------------------------
class TaskFile(FileModel):
    """A task file: one rule, its label names, the kind of input and the seeds (see :mod:`.task`)."""

    shape: ClassVar[str] = "a mapping with criterion, labels, input_type, seeds"
    shape_fix: ClassVar[str] = "Write one 'field: value' line per field, starting with 'criterion: ...'."
    name: Optional[Text] = file_field("a string naming the task (default: the file name)", None)
    criterion: RuleText = file_field("a rule text")
    labels: Labels = file_field("two label names [rule does not hold, rule holds]", ("False", "True"))
    input_type: InputType = file_field(f"one of {', '.join(INPUT_TYPES)}", "input_block")
    description: Text = file_field("a string describing the inputs", "")
    seeds: Seeds = file_field("a list of examples", ())


# --- taxonomy file ----------------------------------------------------------------------------------------
def _category_name(value: Any) -> str:
    try:
        return _one_line_text(value)
    except FieldProblem:
        raise FieldProblem("a one-line category name") from None


class CategoryFile(FileModel):
    """One category of a taxonomy file; ``code`` is optional and must follow the order of the list."""

    shape: ClassVar[str] = "a mapping {name: ..., should_not: [...], can: [...]}"
    unknown_fix: ClassVar[str] = "Guidelines go under 'should_not' and 'can'."
    code: Optional[str] = file_field("the category code (S1, S2, ... in the order of the list)", None)
    name: Annotated[str, BeforeValidator(_category_name)] = file_field("a one-line category name")
    should_not: GuidelineLines = file_field("a list of guideline lines", ())
    can: GuidelineLines = file_field("a list of guideline lines", ())


class TaxonomyFile(FileModel):
    """A taxonomy file (see ``dataset_scripts/policy-xstest/taxonomy.yaml``)."""

    shape: ClassVar[str] = "a mapping with a 'categories' list"
    shape_fix: ClassVar[str] = "Write 'categories:' followed by one entry per category."
    unknown_fix: ClassVar[str] = "Remove or rename it."
    name: str = file_field("a string naming the policy", "")
    description: str = file_field("a string", "")
    categories: list[CategoryFile] = file_field(
        "a non-empty list of categories", min_length=1, fix="Each entry: {name: ..., should_not: [...], can: [...]}.")

    @model_validator(mode="after")
    def _codes_and_names(self) -> "TaxonomyFile":
        for i, category in enumerate(self.categories):
            if category.code is not None and category.code != f"S{i + 1}":
                raise FieldProblem(f"'S{i + 1}' (codes follow the order of the list)", category.code,
                                   "Fix the code or leave it out; it is derived from the position.",
                                   field=f"categories[{i}].code")
        names = [c.name.lower() for c in self.categories]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FieldProblem("distinct category names", duplicates[0], "Rename or merge them.", field="categories")
        return self
