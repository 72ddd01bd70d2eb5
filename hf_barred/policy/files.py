"""Policy files: reading and writing YAML/JSON, their pydantic schemas, and one-line errors.

A task file (:class:`TaskFile`) and a taxonomy file (:class:`TaxonomyFile`) are checked by pydantic
models that describe the *file*; the runtime objects (``GuardrailTask``, ``Taxonomy``) are built
from them by their own modules. A file that does not fit raises a one-line :class:`TaskFileError`
naming the file, the field, what was expected, what was found and, where there is one, the fix::

    task.yaml: field 'labels': expected two distinct names [rule does not hold, rule holds], found ('a',).

Each field's ``description`` is the "expected" text of pydantic's own errors (missing, wrong type);
validators raise :class:`FieldProblem` to say more (their own expected text, found value and fix).

Example:
    >>> from hf_barred.policy.files import TaskFile
    >>> TaskFile.parse({"criterion": "r", "labels": {"negative": "no", "positive": "yes"}}).labels
    ('no', 'yes')
    >>> TaskFile.parse({"criterion": "r", "lables": ["no", "yes"]}, source="t.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hf_barred.policy.files.TaskFileError: t.yaml: field 'lables': expected one of the fields [...], found 'lables'...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, TypeVar, Union, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

__all__ = ["TaskFileError", "field_error", "read_structured_file", "write_structured_file"]
__all__ += ["CategoryFile", "FieldProblem", "FileModel", "SeedEntry", "TaskFile", "TaxonomyFile", "seed_parts"]

InputType = Literal["input_block", "task_and_response"]
INPUT_TYPES: tuple[str, ...] = get_args(InputType)


class TaskFileError(ValueError):
    """A task or taxonomy file does not have the expected shape."""


def field_error(source: str, field_name: str, expected: str, found: Any, fix: str = "") -> TaskFileError:
    """The error for one field of a policy file: source, field, expected, found, fix.

    >>> str(field_error("task.yaml", "labels", "two names", ["a"]))
    "task.yaml: field 'labels': expected two names, found ['a']."
    """
    found_text = repr(found)
    if len(found_text) > 120:
        found_text = found_text[:117] + "..."
    message = f"{source}: field '{field_name}': expected {expected}, found {found_text}."
    return TaskFileError(message + (f" {fix}" if fix else ""))


# --- reading and writing -------------------------------------------------------------------------------
def read_structured_file(path: Union[str, Path]) -> Any:
    """Parse a YAML or JSON file with errors that name the file and the position."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: file not found. Expected a YAML or JSON file; check the path.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1]
        raise TaskFileError(
            f"{path}: expected a UTF-8 text file, found a byte that is not UTF-8 ({byte!r} at byte {err.start}). "
            "Save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None
    except OSError as err:
        reason = err.strerror or err
        raise TaskFileError(f"{path}: could not be read ({reason}). Check the path and its permissions.") from None
    is_json = path.suffix.lower() == ".json"
    try:
        return json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise TaskFileError(f"{path}: not valid {'JSON' if is_json else 'YAML'}: {err}") from None


def write_structured_file(path: Union[str, Path], data: Any) -> None:
    """Write ``data`` as JSON (``.json``) or YAML (any other suffix), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")


# --- validation errors as one line ------------------------------------------------------------------------
_INPUT = object()  # FieldProblem.found default: the value pydantic was validating


class FieldProblem(ValueError):
    """Raised by a file-model validator: what was expected, what was found, how to fix it.

    ``field`` names the field when the validator checks the whole file (a model validator has no location).
    """

    def __init__(self, expected: str, found: Any = _INPUT, fix: str = "", field: str = "") -> None:
        super().__init__(f"expected {expected}")
        self.expected, self.found, self.fix, self.field = expected, found, fix, field


def _field(expected: str, default: Any = ..., fix: str = "", **kwargs: Any) -> Any:
    """A file-model field whose errors say ``expected <expected>`` and end with ``fix``."""
    return Field(default, description=expected, json_schema_extra={"fix": fix} if fix else None, **kwargs)


class FileModel(BaseModel):
    """A mapping in a policy file; :meth:`parse` turns a pydantic ``ValidationError`` into a one-line error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: ClassVar[str] = "a mapping"
    """The expected text when the value is not a mapping, and its fix."""
    shape_fix: ClassVar[str] = ""
    unknown_fix: ClassVar[str] = "Remove or rename the field."

    @classmethod
    def parse(cls: type[_Model], data: Any, source: str = "file") -> _Model:
        """Validate plain data read from ``source``; raises :class:`TaskFileError`."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            # an unknown field first: it is often a typo, and its fix helps most
            errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
            raise _one_line(cls, errors[0], source) from None


_Model = TypeVar("_Model", bound=FileModel)


def _one_line(model: type[FileModel], error: Any, source: str) -> TaskFileError:
    loc = tuple(error["loc"])
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "(top level)"
    problem = error.get("ctx", {}).get("error")
    if isinstance(problem, FieldProblem):
        found = error["input"] if problem.found is _INPUT else problem.found
        return field_error(source, problem.field or where, problem.expected, found, problem.fix)
    holder, info = _schema_at(model, loc)
    if error["type"] == "extra_forbidden":
        expected = f"one of the fields {sorted(holder.model_fields)}"
        return field_error(source, where, expected, loc[-1], holder.unknown_fix)
    if info is None:  # the value itself is not a mapping
        return field_error(source, where, holder.shape, error["input"], holder.shape_fix)
    fix = str(info.json_schema_extra.get("fix", "")) if isinstance(info.json_schema_extra, dict) else ""
    if error["type"] == "missing":
        place = where.rpartition(".")[0] or "the file"
        return field_error(source, where, str(info.description), None, fix or f"Add '{loc[-1]}: ...' to {place}.")
    return field_error(source, where, str(info.description), error["input"], fix)


def _schema_at(model: type[FileModel], loc: tuple) -> tuple[type[FileModel], Optional[FieldInfo]]:
    """The file model at ``loc`` and the field ``loc`` names (None when ``loc`` is a mapping, or unknown)."""
    holder, info, inner = model, None, None
    for part in loc:
        if isinstance(part, int):  # an item of a list: a mapping when the list holds file models
            if inner is not None:
                holder, info, inner = inner, None, None
            continue
        info = holder.model_fields.get(part)
        if info is None:
            return holder, None
        inner = _inner_model(info.annotation)
    return holder, info


def _inner_model(annotation: Any) -> Optional[type[FileModel]]:
    if isinstance(annotation, type) and issubclass(annotation, FileModel):
        return annotation
    return next((m for m in map(_inner_model, get_args(annotation)) if m is not None), None)


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

    text: str = _field("the seed's text")
    task: Optional[str] = _field("the task the response answers", None)


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
    name: Optional[Text] = _field("a string naming the task (default: the file name)", None)
    criterion: RuleText = _field("a rule text")
    labels: Labels = _field("two label names [rule does not hold, rule holds]", ("False", "True"))
    input_type: InputType = _field(f"one of {', '.join(INPUT_TYPES)}", "input_block")
    description: Text = _field("a string describing the inputs", "")
    seeds: Seeds = _field("a list of examples", ())


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
    code: Optional[str] = _field("the category code (S1, S2, ... in the order of the list)", None)
    name: Annotated[str, BeforeValidator(_category_name)] = _field("a one-line category name")
    should_not: GuidelineLines = _field("a list of guideline lines", ())
    can: GuidelineLines = _field("a list of guideline lines", ())


class TaxonomyFile(FileModel):
    """A taxonomy file (see ``dataset_scripts/policy-xstest/taxonomy.yaml``)."""

    shape: ClassVar[str] = "a mapping with a 'categories' list"
    shape_fix: ClassVar[str] = "Write 'categories:' followed by one entry per category."
    unknown_fix: ClassVar[str] = "Remove or rename it."
    name: str = _field("a string naming the policy", "")
    description: str = _field("a string", "")
    categories: list[CategoryFile] = _field(
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
