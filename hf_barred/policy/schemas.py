"""What each policy file holds: pydantic schemas of the task, taxonomy and rule-set files.

The models describe the *files* (the runtime objects ``GuardrailTask``, ``Taxonomy`` and ``RuleSet``
are built from them by :mod:`.task`, :mod:`.taxonomy` and :mod:`.rules`); their errors are one line
(see :mod:`.files`). A rule-set file:

.. code-block:: yaml

    name: support-agent                  # optional, default: the file name
    description: Chats of the support agent of an online store.
    input_type: input_block              # shared; a rule may set its own
    seeds:                               # shared; a rule may set its own (used instead)
      - "User: Where is my parcel?\\nAgent: It left our warehouse this morning."
    rules:
      - name: health-advice              # lowercase letters, digits, '-', '_'
        criterion: The agent's response gives health advice.
        labels: [no_health_advice, health_advice]   # [rule does not hold, rule holds]
      - name: violent-crimes
        code: S1                         # optional: the taxonomy category the rule comes from
        criterion: The input asks for help with a violent crime.
        labels: [safe, unsafe]

Example:
    >>> from hf_barred.policy.schemas import RuleSetFile, TaskFile
    >>> TaskFile.parse({"criterion": "r", "labels": {"negative": "no", "positive": "yes"}}).labels
    ('no', 'yes')
    >>> rules = RuleSetFile.parse({"seeds": ["User: hi"], "rules": [{"name": "a", "criterion": "r", "labels": [0, 1]}]})
    >>> [(task.name, task.labels, len(task.seeds)) for task in rules.task_files()]
    [('a', ('0', '1'), 1)]
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, ClassVar, Literal, Optional, get_args

from pydantic import BeforeValidator, model_validator

from .files import FieldProblem, FileModel, file_field

__all__ = ["CategoryFile", "RuleFile", "RuleSetFile", "SeedEntry", "TaskFile", "TaxonomyFile"]
__all__ += ["INPUT_TYPES", "RULE_NAME", "rule_name_fix", "rule_slug", "seed_parts"]

InputType = Literal["input_block", "task_and_response"]
INPUT_TYPES: tuple[str, ...] = get_args(InputType)
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
"""A rule's name: usable as a Hub dataset config name and as a folder name."""
RULE_NAME_EXPECTED = "a name of lowercase letters, digits, '-' and '_' (a Hub config name and a folder name)"


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
        fix = 'Write the rule, e.g. "The agent\'s response contains health advice."'
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
    return labels


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
    """A taxonomy file (see ``dataset_scripts/policy-xstest/taxonomy.yaml``); ``seeds`` serve its rule set."""

    shape: ClassVar[str] = "a mapping with a 'categories' list"
    shape_fix: ClassVar[str] = "Write 'categories:' followed by one entry per category."
    unknown_fix: ClassVar[str] = "Remove or rename it."
    name: str = file_field("a string naming the policy", "")
    description: str = file_field("a string", "")
    categories: list[CategoryFile] = file_field(
        "a non-empty list of categories", min_length=1, fix="Each entry: {name: ..., should_not: [...], can: [...]}."
    )
    seeds: Seeds = file_field("a list of examples shared by the rules of the taxonomy", ())

    @model_validator(mode="after")
    def _codes_and_names(self) -> TaxonomyFile:
        for i, category in enumerate(self.categories):
            if category.code is not None and category.code != f"S{i + 1}":
                raise FieldProblem(
                    f"'S{i + 1}' (codes follow the order of the list)",
                    category.code,
                    "Fix the code or leave it out; it is derived from the position.",
                    field=f"categories[{i}].code",
                )
        names = [c.name.lower() for c in self.categories]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FieldProblem("distinct category names", duplicates[0], "Rename or merge them.", field="categories")
        return self


# --- rule-set file ----------------------------------------------------------------------------------------
def rule_slug(text: str) -> str:
    """A rule name made from free text: lowercase ASCII letters and digits joined by ``-`` ("" if none).

    >>> rule_slug("Sex-Related Crimes"), rule_slug("Suicide & Self-Harm"), rule_slug("Café_Policy")
    ('sex-related-crimes', 'suicide-self-harm', 'cafe-policy')
    """
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def rule_name_fix(name: str) -> str:
    """The fix for a name that is not a :data:`RULE_NAME`, with a usable name to copy."""
    return f"Rename it, e.g. {rule_slug(name) or 'rule-1'!r}."


def _rule_name(value: Any) -> str:
    if not isinstance(value, str) or not RULE_NAME.fullmatch(value):
        raise FieldProblem(RULE_NAME_EXPECTED, fix=rule_name_fix(str(value)))
    return value


def _s_code(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"S[1-9]\d*", value):
        raise FieldProblem("a taxonomy category code S1, S2, ...", fix="Fix the code or leave it out.")
    return value


class RuleFile(FileModel):
    """One rule of a rule-set file; the fields it leaves out come from the top of the file."""

    shape: ClassVar[str] = "a mapping {name: ..., criterion: ..., labels: [...]}"
    name: Annotated[str, BeforeValidator(_rule_name)] = file_field(RULE_NAME_EXPECTED)
    code: Optional[Annotated[str, BeforeValidator(_s_code)]] = file_field("the rule's taxonomy code S1, S2, ...", None)
    criterion: RuleText = file_field("a rule text")
    labels: Labels = file_field("two label names [rule does not hold, rule holds]")
    input_type: Optional[InputType] = file_field(f"one of {', '.join(INPUT_TYPES)} (default: the shared one)", None)
    description: Optional[Text] = file_field("a string describing the inputs (default: the shared one)", None)
    seeds: Optional[Seeds] = file_field("a list of examples (used instead of the shared seeds)", None)


class RuleSetFile(FileModel):
    """A rule-set file: ``rules:`` and the ``input_type``, ``description`` and ``seeds`` they share."""

    shape: ClassVar[str] = "a mapping with a 'rules' list (and the input_type, description, seeds they share)"
    shape_fix: ClassVar[str] = "Write 'rules:' followed by one entry per rule."
    name: Optional[Text] = file_field("a string naming the rule set (default: the file name)", None)
    description: Text = file_field("a string describing the inputs", "")
    input_type: InputType = file_field(f"one of {', '.join(INPUT_TYPES)}", "input_block")
    seeds: Seeds = file_field("a list of examples shared by the rules", ())
    rules: list[RuleFile] = file_field(
        "a non-empty list of rules", min_length=1, fix="Each entry: {name: ..., criterion: ..., labels: [...]}."
    )

    @model_validator(mode="after")
    def _names_and_seeds(self) -> RuleSetFile:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise FieldProblem(
                    "a name no other rule has", rule.name, "Rename one of the two rules.", field=f"rules[{i}].name"
                )
            seen.add(rule.name)
            if not (self.seeds if rule.seeds is None else rule.seeds):
                raise FieldProblem(
                    "10-30 unlabelled examples of the inputs to guard",
                    [],
                    "Add a shared 'seeds:' list at the top of the file, or one under this rule.",
                    field=f"rules[{i}].seeds",
                )
        return self

    def task_files(self) -> list[TaskFile]:
        """Each rule as a task file: its own fields, else the shared ones."""
        return [
            TaskFile.model_construct(
                name=rule.name,
                criterion=rule.criterion,
                labels=rule.labels,
                input_type=rule.input_type or self.input_type,
                description=self.description if rule.description is None else rule.description,
                seeds=self.seeds if rule.seeds is None else rule.seeds,
            )
            for rule in self.rules
        ]
