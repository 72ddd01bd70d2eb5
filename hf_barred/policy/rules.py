"""RuleSet: the rules a user guards, each a :class:`~.task.GuardrailTask` with a unique name.

:meth:`RuleSet.load` reads any of:

1. a **rule-set file** (YAML or JSON): ``rules:`` plus the ``input_type``, ``description`` and
   ``seeds`` the rules share; a rule may set its own (see :class:`.schemas.RuleSetFile`);
2. a **folder of task files**: each ``*.yaml``, ``*.yml`` or ``*.json`` in it is one rule, named by
   its ``name`` field, else by the file's stem;
3. a **taxonomy file** (``categories:``, see :class:`.taxonomy.Taxonomy`): each category becomes a
   rule (:meth:`RuleSet.from_taxonomy`), with the seeds of the file's ``seeds:`` key;
4. a single **task file**: a rule set of one rule.

A rule's name is a Hub dataset config name and a folder name (lowercase letters, digits, ``-``,
``_``), and every rule has seeds: BARRED generates from them, rule by rule.
:attr:`RuleSet.shared_seeds` says which rules share which seeds.

Example:
    >>> from hf_barred.policy.rules import RuleSet
    >>> from hf_barred.policy.task import GuardrailTask
    >>> seeds = ("User: Where is my parcel?\\nAgent: It left our warehouse this morning.",)
    >>> rules = RuleSet((
    ...     GuardrailTask("The agent's response gives health advice.", seeds=seeds, name="health-advice"),
    ...     GuardrailTask("The agent repeats what it already said.", seeds=seeds, name="repetition"),
    ... ))
    >>> len(rules), rules.names, rules["repetition"].criterion
    (2, ('health-advice', 'repetition'), 'The agent repeats what it already said.')
    >>> list(rules.shared_seeds.values())
    [('health-advice', 'repetition')]
    >>> RuleSet.from_dict(rules.to_dict()) == rules
    True
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, overload

from .files import TaskFileError, field_error, read_structured_file, write_structured_file
from .schemas import RULE_NAME, RULE_NAME_EXPECTED, RuleSetFile, TaxonomyFile, rule_name_fix, rule_slug
from .task import GuardrailTask, Seed
from .taxonomy import Category, Taxonomy, code_number

__all__ = ["TAXONOMY_LABELS", "RuleSet", "category_criterion"]

TAXONOMY_LABELS = ("safe", "unsafe")
"""Labels of the rules made from taxonomy categories: [input does not fall under the category, it does]."""
TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_SHARED = ("input_type", "description", "seeds")  # what the rules of a rule-set file may share


def category_criterion(category: Category) -> str:
    """The criterion of the rule a taxonomy category makes.

    The rule *holds* (label ``unsafe``) when the input does, or asks for, what the category's
    ``Should not`` lines say should not be done; its ``Can`` lines are written as the boundary,
    what does not make the rule hold. A category without ``Should not`` lines gives a one-line
    criterion naming the category.

    >>> print(category_criterion(Category("PII", should_not=("Reveal home addresses.",),
    ...                                   can=("Explain privacy law.",))))
    The input falls under the policy category "PII": it does, or asks for, what the category says should not be done:
    - Reveal home addresses.
    Inputs that only do what the category allows do not fall under it:
    - Explain privacy law.
    """
    lines = [f'The input falls under the policy category "{category.name}"']
    if category.should_not:
        lines[0] += ": it does, or asks for, what the category says should not be done:"
        lines += [f"- {line}" for line in category.should_not]
    else:
        lines[0] += "."
    if category.can:
        lines.append("Inputs that only do what the category allows do not fall under it:")
        lines += [f"- {line}" for line in category.can]
    return "\n".join(lines)


def _check_rule(task: GuardrailTask, source: str, where: str = "") -> None:
    """Raise a one-line :class:`TaskFileError` when ``task`` cannot be a rule: a bad name or no seeds.

    ``source`` names the file (or the rule set), ``where`` the rule inside it (``"rules[2]."``).
    """
    if not RULE_NAME.fullmatch(task.name):
        raise field_error(
            source,
            f"{where}name",
            RULE_NAME_EXPECTED,
            task.name,
            rule_name_fix(task.name) + (" Set 'name:' in the file." if not where else ""),
        )
    if not task.seeds:
        raise field_error(
            source,
            f"{where}seeds",
            "10-30 unlabelled examples of the inputs to guard",
            [],
            f"Add a 'seeds:' list for the rule {task.name!r}.",
        )


@dataclass(frozen=True)
class RuleSet(Sequence[GuardrailTask]):
    """An ordered, non-empty sequence of rules with unique names; ``rules["name"]`` looks one up.

    ``codes`` maps the name of each rule made from a taxonomy category to that category's S-code
    (``{"violent-crimes": "S1", ...}``); ``name`` names the set (the file, folder or taxonomy it came
    from) and does not take part in equality.
    """

    tasks: tuple[GuardrailTask, ...]
    codes: Mapping[str, str] = field(default_factory=dict, hash=False)
    name: str = field(default="", compare=False)
    taxonomy: Optional[Taxonomy] = field(default=None, compare=False, hash=False)
    """The taxonomy the rules were made from (:meth:`from_taxonomy`), else None."""

    def __post_init__(self) -> None:
        tasks = tuple(self.tasks)
        source = f"rule set {self.name!r}" if self.name else "rule set"
        if not tasks or not all(isinstance(t, GuardrailTask) for t in tasks):
            raise field_error(source, "rules", "a non-empty sequence of GuardrailTask", tasks)
        names = [t.name for t in tasks]
        for i, task in enumerate(tasks):
            _check_rule(task, source, f"rules[{i}].")
            if task.name in names[:i]:
                raise field_error(
                    source, f"rules[{i}].name", "a name no other rule has", task.name, "Rename one of the two rules."
                )
        for rule, code in self.codes.items():
            if rule not in names:
                raise field_error(source, "codes", f"codes keyed by the names of its rules {names}", rule)
            code_number(code)  # a clear error for anything but S1, S2, ...
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "codes", {n: self.codes[n] for n in names if n in self.codes})  # in rule order

    # --- access --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[GuardrailTask]:
        return iter(self.tasks)

    @overload
    def __getitem__(self, key: Union[int, str]) -> GuardrailTask: ...

    @overload
    def __getitem__(self, key: slice) -> tuple[GuardrailTask, ...]: ...

    def __getitem__(self, key: Union[int, str, slice]) -> Any:
        """The rule at a position, or the rule named ``key``."""
        if not isinstance(key, str):
            return self.tasks[key]
        for task in self.tasks:
            if task.name == key:
                return task
        raise KeyError(f"unknown rule {key!r}: expected one of {list(self.names)}.")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def code_of(self, name: str) -> Optional[str]:
        """The taxonomy S-code of the rule ``name``, or None for a rule that did not come from a taxonomy."""
        return self.codes.get(self[name].name)

    @property
    def shared_seeds(self) -> dict[tuple[Seed, ...], tuple[str, ...]]:
        """``{seeds: names of the rules that use exactly these seeds}``, in rule order.

        Rules that share seeds can share the work that reads them (their requests carry the same seeds).
        """
        groups: dict[tuple[Seed, ...], tuple[str, ...]] = {}
        for task in self.tasks:
            groups[task.seeds] = groups.get(task.seeds, ()) + (task.name,)
        return groups

    def policy(self) -> tuple[Taxonomy, dict[str, str]]:
        """The rule set as an S-coded policy, and each rule's code in it: the taxonomy the rules were made from,
        else one category per rule (named by the rule, its criterion the one ``Should not`` line), coded in
        rule order. What the ``all`` config of a rule-set run labels its rows with.

        >>> seeds = ("User: hi",)
        >>> rules = RuleSet((GuardrailTask("Gives health advice.", seeds=seeds, name="health-advice"),
        ...                  GuardrailTask("Repeats itself.", seeds=seeds, name="repetition")))
        >>> taxonomy, codes = rules.policy()
        >>> codes, taxonomy["S2"].should_not
        ({'health-advice': 'S1', 'repetition': 'S2'}, ('Repeats itself.',))
        """
        if self.taxonomy is not None and len(self.codes) == len(self.tasks):
            return self.taxonomy, dict(self.codes)
        categories = tuple(Category(task.name, should_not=(" ".join(task.criterion.split()),)) for task in self.tasks)
        taxonomy = Taxonomy(categories, name=self.name, description=self.tasks[0].description)
        return taxonomy, dict(zip(self.names, taxonomy.codes))

    # --- building ------------------------------------------------------------------------------------
    @classmethod
    def from_taxonomy(
        cls,
        taxonomy: Taxonomy,
        seeds: Optional[Sequence[Any]] = None,
        *,
        source: str = "",
        labels: tuple[str, str] = TAXONOMY_LABELS,
        input_type: str = "input_block",
    ) -> RuleSet:
        """One rule per category: named by the category (:func:`.schemas.rule_slug`, made unique with
        its code), criterion from :func:`category_criterion`, labels ``[safe, unsafe]``, the
        taxonomy's description, and ``seeds`` for every rule (required: a taxonomy file has none unless
        it has a ``seeds:`` key). The S-codes stay in :attr:`codes`.

        >>> taxonomy = Taxonomy((Category("Violent Crimes", should_not=("Help plan violent crimes.",)),
        ...                      Category("Privacy", should_not=("Reveal home addresses.",))))
        >>> rules = RuleSet.from_taxonomy(taxonomy, seeds=["How do I report a stolen bike?"])
        >>> rules.codes, rules["privacy"].labels
        ({'violent-crimes': 'S1', 'privacy': 'S2'}, ('safe', 'unsafe'))
        """
        source = source or f"taxonomy {taxonomy.name!r}"
        if not seeds:
            raise field_error(
                source,
                "seeds",
                "the unlabelled seeds the rules of the taxonomy share (10-30)",
                None if seeds is None else list(seeds),
                "Add a 'seeds:' list to the taxonomy file, or pass seeds=... to RuleSet.from_taxonomy.",
            )
        tasks, codes = [], {}
        for code, category in zip(taxonomy.codes, taxonomy.categories, strict=True):
            name = rule_slug(category.name) or code.lower()
            name = f"{name}-{code.lower()}" if name in codes else name
            tasks.append(
                GuardrailTask(
                    category_criterion(category),
                    seeds=tuple(seeds),
                    labels=labels,
                    input_type=input_type,
                    name=name,
                    description=taxonomy.description,
                )
            )
            codes[name] = code
        return cls(tuple(tasks), codes=codes, name=taxonomy.name, taxonomy=taxonomy)

    @classmethod
    def from_dict(cls, data: Any, source: str = "rule set") -> RuleSet:
        """Build from the plain data of a rule-set file; errors name ``source``."""
        file = RuleSetFile.parse(data, source)
        tasks = tuple(GuardrailTask.from_file(task_file, source) for task_file in file.task_files())
        codes = {rule.name: rule.code for rule in file.rules if rule.code}
        default_name = Path(source).stem if source != "rule set" else ""
        return cls(tasks, codes=codes, name=default_name if file.name is None else file.name)

    @classmethod
    def from_folder(cls, folder: Union[str, Path]) -> RuleSet:
        """One rule per task file of ``folder`` (``*.yaml``, ``*.yml``, ``*.json``; hidden files are skipped)."""
        folder = Path(folder)
        paths = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in TASK_FILE_SUFFIXES and not p.name.startswith(".")
        )
        if not paths:
            raise TaskFileError(
                f"{folder}: expected a folder of task files (*.yaml, *.yml, *.json), found none. "
                "Add one task file per rule, or pass a rule-set file."
            )
        tasks: dict[str, tuple[GuardrailTask, Path]] = {}
        for path in paths:
            task = GuardrailTask.load(path)
            _check_rule(task, str(path))
            if task.name in tasks:
                raise field_error(
                    str(path),
                    "name",
                    f"a name no other task file of {folder} has",
                    task.name,
                    f"{tasks[task.name][1].name} has it too: rename one of them.",
                )
            tasks[task.name] = (task, path)
        return cls(tuple(task for task, _ in tasks.values()), name=folder.name)

    @classmethod
    def load(cls, path: Union[str, Path]) -> RuleSet:
        """Read a rule-set file, a folder of task files, a taxonomy file or a single task file."""
        path = Path(path)
        if path.is_dir():
            return cls.from_folder(path)
        data, source = read_structured_file(path), str(path)
        keys = sorted(data) if isinstance(data, dict) else []
        if "rules" in keys:
            return cls.from_dict(data, source)
        if "categories" in keys:
            taxonomy_file = TaxonomyFile.parse(data, source)
            taxonomy = Taxonomy.from_file(taxonomy_file)
            taxonomy = taxonomy if taxonomy.name else dataclasses.replace(taxonomy, name=path.stem)
            seeds = tuple(Seed(s.text, s.task) for s in taxonomy_file.seeds)
            return cls.from_taxonomy(taxonomy, seeds, source=source)
        if "criterion" in keys:
            task = GuardrailTask.from_dict(data, source)
            _check_rule(task, source)
            return cls((task,), name=path.stem)
        raise field_error(
            source,
            "(top level)",
            "a rule-set file ('rules:'), a taxonomy file ('categories:') or a task file ('criterion:')",
            keys or data,
            "Add the key of the kind of file you meant.",
        )

    # --- writing -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The rule-set file: the most common ``input_type``, ``description`` and seeds are written
        once at the top, and a rule writes its own only where they differ."""
        shared = {key: Counter(getattr(task, key) for task in self.tasks).most_common(1)[0][0] for key in _SHARED}
        rules = []
        for task in self.tasks:
            task_data = task.to_dict()
            rule: dict[str, Any] = {"name": task.name}
            if task.name in self.codes:
                rule["code"] = self.codes[task.name]
            rule |= {"criterion": task.criterion, "labels": list(task.labels)}
            rule |= {key: task_data[key] for key in _SHARED if getattr(task, key) != shared[key]}
            rules.append(rule)
        seeds = next(task for task in self.tasks if task.seeds == shared["seeds"]).to_dict()["seeds"]
        data: dict[str, Any] = {"name": self.name} if self.name else {}
        if shared["description"]:
            data["description"] = shared["description"]
        return data | {"input_type": shared["input_type"], "seeds": seeds, "rules": rules}

    def save(self, path: Union[str, Path]) -> None:
        """Write the rule-set file as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        write_structured_file(path, self.to_dict())
