"""Policy files: reading and writing YAML/JSON, and the one-line error of a file that does not fit.

The schemas of the task, taxonomy and rule-set files (:mod:`.schemas`) are pydantic models built on
:class:`FileModel`, whose :meth:`FileModel.parse` turns a pydantic ``ValidationError`` into a
one-line :class:`TaskFileError` naming the file, the field, what was expected, what was found and,
where there is one, the fix::

    task.yaml: field 'labels': expected two distinct names [rule does not hold, rule holds], found ('a',).

Each field's ``description`` (:func:`file_field`) is the "expected" text of pydantic's own errors
(missing, wrong type); validators raise :class:`FieldProblem` to say more (their own expected text,
found value and fix). Nested fields are named like ``categories[0].can[1]``, and an unknown field
(often a typo) is reported before the other errors.

Example:
    >>> from hf_barred.policy.files import FileModel, file_field
    >>> class Point(FileModel):
    ...     x: int = file_field("an integer x")
    >>> Point.parse({"x": 1}).x
    1
    >>> Point.parse({"x": "one"}, source="p.yaml")
    Traceback (most recent call last):
    ...
    hf_barred.policy.files.TaskFileError: p.yaml: field 'x': expected an integer x, found 'one'.
    >>> Point.parse({"y": 1}, source="p.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hf_barred.policy.files.TaskFileError: p.yaml: field 'y': expected one of the fields ['x'], found 'y'. Remove or ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

__all__ = ["FieldProblem", "FileModel", "TaskFileError", "field_error", "file_field", "read_structured_file"]
__all__ += ["write_structured_file"]


class TaskFileError(ValueError):
    """A task, taxonomy or rule-set file does not have the expected shape."""


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


def file_field(expected: str, default: Any = ..., fix: str = "", **kwargs: Any) -> Any:
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
