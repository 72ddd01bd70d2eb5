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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .data import label_index
from .files import FieldProblem, TaskFileError, field_error, read_structured_file, write_structured_file
from .schemas import INPUT_TYPES, TaskFile, seed_parts

__all__ = ["INPUT_TYPES", "MAX_SEED_CHARS", "RECOMMENDED_SEEDS", "GuardrailTask", "Seed", "TaskFileError"]

MAX_SEED_CHARS = 32_000
"""Default longest seed (characters, task and response together): every request of a run carries seeds."""
RECOMMENDED_SEEDS = (10, 30)
"""How many seeds the method asks for."""


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
            raise field_error(
                source,
                "criterion",
                "a non-empty rule text",
                self.criterion,
                'Write the rule, e.g. "The agent\'s response contains health advice."',
            )
        if self.input_type not in INPUT_TYPES:
            raise field_error(source, "input_type", f"one of {', '.join(INPUT_TYPES)}", self.input_type)
        labels = tuple(self.labels)
        if len(labels) != 2 or len(set(labels)) != 2 or not all(isinstance(x, str) and x for x in labels):
            raise field_error(source, "labels", "two distinct names [rule does not hold, rule holds]", self.labels)
        object.__setattr__(self, "labels", labels)
        seeds = tuple(s if isinstance(s, Seed) else _seed_from(s, source) for s in self.seeds)
        object.__setattr__(self, "seeds", seeds)
        if self.input_type == "task_and_response" and any(s.task is None for s in seeds):
            raise field_error(
                source,
                "seeds",
                "objects with 'task' and 'response' for input_type task_and_response",
                next(s.text for s in seeds if s.task is None),
            )

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
            raise field_error(
                f"task {self.name!r}",
                "seeds",
                "10-30 unlabelled examples of the inputs to guard",
                [],
                "Add a 'seeds:' list to the task file.",
            )

    def check_seed_sizes(self, max_chars: int = MAX_SEED_CHARS) -> None:
        """Raise a :class:`TaskFileError` naming the first seed longer than ``max_chars`` characters.

        >>> task = GuardrailTask("Mentions a price.", seeds=("short", "x" * 50))
        >>> task.check_seed_sizes(max_chars=20)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hf_barred.policy.files.TaskFileError: task 'task': seed 1 has 50 characters, expected at most 20 ...
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
            return (
                f"task {self.name!r} has {len(self.seeds)} seed(s); BARRED asks for {low}-{high} unlabelled "
                "examples, and with fewer the samples copy the seeds' domain and style more narrowly. "
                "Add seeds to the task file."
            )
        return None

    # --- I/O -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        seeds: list[Any] = [{"task": s.task, "response": s.text} if s.task is not None else s.text for s in self.seeds]
        return {
            "name": self.name,
            "criterion": self.criterion,
            "labels": list(self.labels),
            "input_type": self.input_type,
            "description": self.description,
            "seeds": seeds,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "task") -> GuardrailTask:
        """Build from plain data (a parsed task file); errors name ``source`` (see :class:`.schemas.TaskFile`)."""
        return cls.from_file(TaskFile.parse(data, source), source)

    @classmethod
    def from_file(cls, file: TaskFile, source: str = "task") -> GuardrailTask:
        """Build from a validated task file; the name defaults to the file's stem."""
        try:
            return cls(
                criterion=file.criterion,
                seeds=tuple(Seed(text=s.text, task=s.task) for s in file.seeds),
                labels=file.labels,
                input_type=file.input_type,
                name=file.name if file.name is not None else Path(source).stem if source != "task" else "task",
                description=file.description,
            )
        except TaskFileError as err:
            raise TaskFileError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: Union[str, Path]) -> GuardrailTask:
        """Read a YAML or JSON task file."""
        return cls.from_dict(read_structured_file(path), source=str(path))

    def save(self, path: Union[str, Path]) -> None:
        """Write a YAML (``.yaml``/``.yml``) or JSON file."""
        write_structured_file(path, self.to_dict())


def _seed_from(value: Any, source: str) -> Seed:
    if isinstance(value, Seed):
        return value
    try:
        return Seed(*seed_parts(value))
    except FieldProblem as problem:
        raise field_error(source, "seeds", problem.expected, value) from None
