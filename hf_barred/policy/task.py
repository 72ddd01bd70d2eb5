"""GuardrailTask: the rule, its label names, the kind of input, and unlabelled seed examples.

A task file is YAML or JSON:

.. code-block:: yaml

    name: health-advice
    criterion: The agent's response contains health advice.
    labels: [no_health_advice, health_advice]   # [rule does not hold, rule holds]
    input_type: input_block                      # or task_and_response
    description: Customer-support agent of an online pharmacy.
    seeds:
      - "User: What are your opening hours?\\nAgent: We are open 9am-5pm."

Example:
    >>> from hf_barred.policy.task import GuardrailTask
    >>> task = GuardrailTask(criterion="The user repeats the same message 3 times",
    ...                      seeds=["User: hi\\nAgent: hello"])
    >>> task.labels, task.positive_label
    (('False', 'True'), 'True')
    >>> GuardrailTask.from_dict(task.to_dict()) == task
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .data import label_index

INPUT_TYPES = ("input_block", "task_and_response")
MAX_SEED_CHARS = 32_000
"""Default longest seed (characters, task and response together): every request of a run carries seeds."""
RECOMMENDED_SEEDS = (10, 30)
"""How many seeds the method asks for."""


class TaskFileError(ValueError):
    """A task or taxonomy file does not have the expected shape."""


def field_error(source: str, field_name: str, expected: str, found: Any, fix: str = "") -> TaskFileError:
    """The error for one field of a task or taxonomy file: source, field, expected, found, fix.

    >>> str(field_error("task.yaml", "labels", "two names", ["a"]))
    "task.yaml: field 'labels': expected two names, found ['a']."
    """
    found_text = repr(found)
    if len(found_text) > 120:
        found_text = found_text[:117] + "..."
    message = f"{source}: field '{field_name}': expected {expected}, found {found_text}."
    return TaskFileError(message + (f" {fix}" if fix else ""))


@dataclass(frozen=True)
class Seed:
    """One unlabelled seed example; ``task`` is set for ``task_and_response`` inputs."""

    text: str
    task: Optional[str] = None


@dataclass(frozen=True)
class GuardrailTask:
    """A binary rule to build a guardrail for.

    ``labels[0]`` names the class where the criterion does *not* hold, ``labels[1]`` the class
    where it holds (the violation, the positive class of the metrics).
    """

    criterion: str
    seeds: tuple[Seed, ...] = ()
    labels: tuple[str, str] = ("False", "True")
    input_type: str = "input_block"
    name: str = "task"
    description: str = ""

    def __post_init__(self) -> None:
        source = f"task {self.name!r}"
        if not isinstance(self.criterion, str) or not self.criterion.strip():
            raise field_error(source, "criterion", "a non-empty rule text", self.criterion,
                        "Write the rule, e.g. \"The agent's response contains health advice.\"")
        if self.input_type not in INPUT_TYPES:
            raise field_error(source, "input_type", f"one of {', '.join(INPUT_TYPES)}", self.input_type)
        labels = tuple(self.labels)
        if len(labels) != 2 or len(set(labels)) != 2 or not all(isinstance(x, str) and x for x in labels):
            raise field_error(source, "labels", "two distinct names [rule does not hold, rule holds]", self.labels)
        object.__setattr__(self, "labels", labels)
        seeds = tuple(s if isinstance(s, Seed) else _seed_from(s, source) for s in self.seeds)
        object.__setattr__(self, "seeds", seeds)
        if self.input_type == "task_and_response" and any(s.task is None for s in seeds):
            raise field_error(source, "seeds", "objects with 'task' and 'response' for input_type task_and_response",
                        next(s.text for s in seeds if s.task is None))

    @property
    def positive_label(self) -> str:
        return self.labels[1]

    @property
    def negative_label(self) -> str:
        return self.labels[0]

    def label_id(self, name: Union[str, bool, int]) -> int:
        """0/1 for a label name (or a bool / 0 / 1); a clear error for an unknown label."""
        index = label_index(name, self.labels[:1], self.labels[1:])
        if index is not None:
            return index
        raise ValueError(f"unknown label {name!r}: expected one of {list(self.labels)} (or 0/1, True/False).")

    def require_seeds(self) -> None:
        """Raise a clear error when the task has no seeds (BARRED needs 10-30)."""
        if not self.seeds:
            raise field_error(f"task {self.name!r}", "seeds", "10-30 unlabelled examples of the inputs to guard", [],
                        "Add a 'seeds:' list to the task file.")

    def check_seed_sizes(self, max_chars: int = MAX_SEED_CHARS) -> None:
        """Raise a :class:`TaskFileError` naming the first seed longer than ``max_chars`` characters.

        >>> task = GuardrailTask("Mentions a price.", seeds=("short", "x" * 50))
        >>> task.check_seed_sizes(max_chars=20)
        Traceback (most recent call last):
        ...
        hf_barred.policy.task.TaskFileError: task 'task': seed 1 has 50 characters, expected at most 20 (--max-seed-chars). Shorten it, drop it, or raise --max-seed-chars.
        """
        for i, seed in enumerate(self.seeds):
            size = len(seed.text) + len(seed.task or "")
            if size > max_chars:
                raise TaskFileError(
                    f"task {self.name!r}: seed {i} has {size} characters, expected at most {max_chars} "
                    "(--max-seed-chars). Shorten it, drop it, or raise --max-seed-chars."
                )

    def seed_warning(self) -> Optional[str]:
        """A warning when the task has fewer seeds than the method asks for, else None.

        >>> GuardrailTask("Mentions a price.", seeds=("a", "b")).seed_warning()[:40]
        "task 'task' has 2 seed(s); BARRED asks f"
        """
        low, high = RECOMMENDED_SEEDS
        if len(self.seeds) < low:
            return (f"task {self.name!r} has {len(self.seeds)} seed(s); BARRED asks for {low}-{high} unlabelled "
                    "examples, and with fewer the samples copy the seeds' domain and style more narrowly. "
                    "Add seeds to the task file.")
        return None

    # --- I/O -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        seeds: list[Any] = [
            {"task": s.task, "response": s.text} if s.task is not None else s.text for s in self.seeds
        ]
        return {
            "name": self.name,
            "criterion": self.criterion,
            "labels": list(self.labels),
            "input_type": self.input_type,
            "description": self.description,
            "seeds": seeds,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "task") -> "GuardrailTask":
        if not isinstance(data, dict):
            raise field_error(source, "(top level)", "a mapping with criterion, labels, input_type, seeds", data)
        known = {"name", "criterion", "labels", "input_type", "description", "seeds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise field_error(source, unknown[0], f"one of the fields {sorted(known)}", unknown[0],
                        "Remove or rename the field.")
        if "criterion" not in data:
            raise field_error(source, "criterion", "a rule text", None, "Add 'criterion: ...' to the file.")
        seeds = data.get("seeds") or []
        if not isinstance(seeds, list):
            raise field_error(source, "seeds", "a list of examples", seeds)
        labels = data.get("labels", ["False", "True"])
        if isinstance(labels, dict):  # {negative: ..., positive: ...}
            if set(labels) != {"negative", "positive"}:
                raise field_error(source, "labels", "a list [negative, positive] or {negative: ..., positive: ...}", labels)
            labels = [labels["negative"], labels["positive"]]
        if not isinstance(labels, (list, tuple)):
            raise field_error(source, "labels", "a list of two label names [negative, positive]", labels)
        try:
            return cls(
                criterion=data["criterion"],
                seeds=tuple(_seed_from(s, source) for s in seeds),
                labels=tuple(str(label) for label in labels),
                input_type=data.get("input_type", "input_block"),
                name=str(data.get("name", Path(source).stem if source != "task" else "task")),
                description=str(data.get("description") or ""),
            )
        except TaskFileError as err:
            raise TaskFileError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: Union[str, Path]) -> "GuardrailTask":
        """Read a YAML or JSON task file."""
        return cls.from_dict(read_structured_file(path), source=str(path))

    def save(self, path: Union[str, Path]) -> None:
        """Write a YAML (``.yaml``/``.yml``) or JSON file."""
        write_structured_file(path, self.to_dict())


def _seed_from(value: Any, source: str) -> Seed:
    if isinstance(value, Seed):
        return value
    if isinstance(value, str) and value.strip():
        return Seed(text=value)
    if isinstance(value, dict) and {"task", "response"} <= set(value):
        return Seed(text=str(value["response"]), task=str(value["task"]))
    if isinstance(value, dict) and "text" in value:
        return Seed(text=str(value["text"]), task=value.get("task"))
    raise field_error(source, "seeds", "non-empty strings, or objects with 'task' and 'response'", value)


def read_structured_file(path: Union[str, Path]) -> Any:
    """Parse a YAML or JSON file with errors that name the file and the position."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: file not found. Expected a YAML or JSON file; check the path.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TaskFileError(
            f"{path}: expected a UTF-8 text file, found a byte that is not UTF-8 ({err.object[err.start:err.start + 1]!r} "
            f"at byte {err.start}). Save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None
    except OSError as err:
        raise TaskFileError(f"{path}: could not be read ({err.strerror or err}). Check the path and its permissions.") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise TaskFileError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {err}") from None


def write_structured_file(path: Union[str, Path], data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
