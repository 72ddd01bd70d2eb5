"""Taxonomy / Category: an ordered, S-coded safety policy, its text form, and its perturbations.

A taxonomy is an ordered list of categories; the code of a category is its position (``S1`` is the
first). Each category has a name and two lists of guideline lines: what the model *should not*
help with, and what it *can* do. The text form, used in prompts and stored in dataset rows (see
the example below), is one header line ``S<i>: <name>.`` per category, then an optional
``Should not`` section and an optional ``Can`` section, each a list of ``- `` lines; one blank
line between categories. A section with no lines is left out. :meth:`Taxonomy.render` writes
exactly this text and :meth:`Taxonomy.parse` reads it back (``Taxonomy.parse(t.render()) == t``,
and ``Taxonomy.parse(text).render() == text`` for rendered text), so a row's policy text is the
taxonomy itself. Files (YAML/JSON) are read and checked by :class:`.schemas.TaxonomyFile`.

Perturbations return a new taxonomy plus a code map ``{old code: new code}`` for the categories
that remain, so label codes can be remapped (:func:`remap_codes`).

Example:
    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
    >>> taxonomy = Taxonomy((
    ...     Category("Violent Crimes", should_not=("Help plan violent crimes.",),
    ...              can=("Discuss violence in fiction.",)),
    ...     Category("Privacy", should_not=("Reveal private addresses.",)),
    ...     Category("Hate", should_not=("Demean people for protected traits.",)),
    ... ))
    >>> print(taxonomy.render())
    S1: Violent Crimes.
    Should not
    - Help plan violent crimes.
    Can
    - Discuss violence in fiction.
    <BLANKLINE>
    S2: Privacy.
    Should not
    - Reveal private addresses.
    <BLANKLINE>
    S3: Hate.
    Should not
    - Demean people for protected traits.
    >>> Taxonomy.parse(taxonomy.render()) == taxonomy
    True
    >>> smaller, code_map = taxonomy.delete(["S2"])
    >>> smaller.names, code_map
    (('Violent Crimes', 'Hate'), {'S1': 'S1', 'S3': 'S2'})
    >>> remap_codes(["S3"], code_map)
    ['S2']
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .files import read_structured_file, write_structured_file
from .schemas import TaxonomyFile

__all__ = ["Category", "Taxonomy", "TaxonomyTextError"]
__all__ += ["code_number", "find_codes", "make_code", "remap_codes", "sort_codes"]  # the S-code helpers

SHOULD_NOT = "Should not"
CAN = "Can"
_HEADER = re.compile(r"S(\d+): (.+)\.")
_CODE = re.compile(r"S([1-9]\d*)")
_WRITTEN_CODE = re.compile(r"\bS\s*(\d+)\b", re.IGNORECASE)


class TaxonomyTextError(ValueError):
    """S-coded taxonomy text that does not follow the format of :meth:`Taxonomy.render`."""


def make_code(position: int) -> str:
    """The code of the category at 0-based ``position``: ``make_code(0) == "S1"``."""
    return f"S{position + 1}"


@functools.lru_cache(maxsize=4096)  # called for every code of every row by the stages
def code_number(code: str) -> int:
    """The number of an S-code: ``code_number("S12") == 12``; a clear error for anything else."""
    match = _CODE.fullmatch(code.strip()) if isinstance(code, str) else None
    if match is None:
        raise ValueError(f"expected a category code S1, S2, ..., found {code!r}.")
    return int(match.group(1))


def find_codes(text: str) -> list[str]:
    """The S-codes written in free text (a model's answer, a dataset cell), normalised, in order.

    The one lenient S-code parser: ``s 3``, ``S03`` and ``"S3: Fraud"`` all give ``S3``. Codes
    are not checked against a taxonomy (``S0`` is returned too): callers check the range.

    >>> find_codes('{"Safety Categories": "s1, S 10,S03"}'), find_codes("none")
    (['S1', 'S10', 'S3'], [])
    """
    return [f"S{int(number)}" for number in _WRITTEN_CODE.findall(str(text))]


def sort_codes(codes: Iterable[str]) -> list[str]:
    """Unique S-codes in numeric order, from items that each hold a code (see :func:`find_codes`).

    >>> sort_codes(["S10", "S2", "s2", "x"])
    ['S2', 'S10']
    """
    numbers = sorted({int(found[0][1:]) for found in map(find_codes, codes) if found})
    return [f"S{n}" for n in numbers]


def remap_codes(codes: Iterable[str], code_map: dict[str, str]) -> list[str]:
    """Codes after a perturbation, in numeric order; codes without an entry (deleted) are dropped.

    >>> remap_codes(["S5", "S1", "S4"], {"S1": "S2", "S5": "S1"})
    ['S1', 'S2']
    """
    return sorted({code_map[c] for c in codes if c in code_map}, key=code_number)


def _clean_line(value: Any, what: str) -> str:
    """A guideline line or a name: a non-empty, stripped, one-line string."""
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string, found {type(value).__name__} {value!r}.")
    if value != value.strip() or not value or "\n" in value or "\r" in value:
        raise ValueError(f"{what}: expected a non-empty single line without surrounding spaces, found {value!r}.")
    return value


@dataclass(frozen=True)
class Category:
    """One category of a taxonomy: a name and its guideline lines.

    Parameters:
        name: Short name, one line (e.g. ``"Violent Crimes"``); rendered as ``S<i>: <name>.``.
        should_not: What the assistant should not help with (the violations), one line each.
        can: What stays allowed (the boundary), one line each.

    >>> Category("Hate", should_not=("Demean people for protected traits.",)).guidelines
    ('Should not: Demean people for protected traits.',)
    """

    name: str
    should_not: tuple[str, ...] = ()
    can: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _clean_line(self.name, "Category.name")
        for attr in ("should_not", "can"):
            value = getattr(self, attr)
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise ValueError(f"Category.{attr} of {self.name!r}: expected a list of lines, found {value!r}.")
            lines = tuple(_clean_line(line, f"Category.{attr} of {self.name!r}") for line in value)
            object.__setattr__(self, attr, lines)

    @property
    def guidelines(self) -> tuple[str, ...]:
        """All guideline lines, prefixed with their section."""
        return tuple(f"{SHOULD_NOT}: {g}" for g in self.should_not) + tuple(f"{CAN}: {g}" for g in self.can)

    def render(self, code: str) -> str:
        """The text block of this category under ``code``."""
        lines = [f"{code}: {self.name}."]
        if self.should_not:
            lines.append(SHOULD_NOT)
            lines.extend(f"- {g}" for g in self.should_not)
        if self.can:
            lines.append(CAN)
            lines.extend(f"- {g}" for g in self.can)
        return "\n".join(lines)

    def replace(self, **changes: Any) -> Category:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "should_not": list(self.should_not), "can": list(self.can)}


@dataclass(frozen=True)
class Taxonomy:
    """An ordered tuple of categories; category ``i`` (0-based) has the code ``S{i+1}``.

    ``name`` and ``description`` describe the file the taxonomy came from; they are not part of
    the S-coded text and do not take part in equality.

    Perturbations (:meth:`select`, :meth:`delete`, :meth:`shuffle`, :meth:`add`) return a new
    taxonomy; those that move codes also return ``{old code: new code}``.
    """

    categories: tuple[Category, ...]
    name: str = field(default="", compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        categories = tuple(self.categories)
        if not categories:
            raise ValueError("Taxonomy: expected at least one category, found none.")
        bad = [c for c in categories if not isinstance(c, Category)]
        if bad:
            raise ValueError(f"Taxonomy: expected Category objects, found {bad[0]!r}.")
        object.__setattr__(self, "categories", categories)

    # --- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.categories)

    def __iter__(self):
        return iter(self.categories)

    @property
    def codes(self) -> tuple[str, ...]:
        """``("S1", ..., "Sn")``."""
        return tuple(make_code(i) for i in range(len(self.categories)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def __getitem__(self, code: str) -> Category:
        """The category with code ``code`` (``taxonomy["S2"]``)."""
        return self.categories[self.index(code)]

    def index(self, code: str) -> int:
        """0-based position of ``code``; a clear error for a code outside S1..Sn."""
        number = code_number(code)
        if not 1 <= number <= len(self.categories):
            raise KeyError(f"unknown category code {code!r}: expected one of S1..S{len(self.categories)}.")
        return number - 1

    def code_of(self, name: str) -> str:
        """The code of the category named ``name`` (case-insensitive)."""
        lowered = name.strip().lower()
        for i, category in enumerate(self.categories):
            if category.name.lower() == lowered:
                return make_code(i)
        raise KeyError(f"unknown category name {name!r}: expected one of {list(self.names)}.")

    # --- text form -----------------------------------------------------------------------------
    def render(self) -> str:
        """The S-coded text used in prompts and rows (see the module docstring for the format)."""
        return "\n\n".join(c.render(make_code(i)) for i, c in enumerate(self.categories))

    @classmethod
    def parse(cls, text: str) -> Taxonomy:
        """Read S-coded text written by :meth:`render`. Results are cached by text (stages parse
        the same few policy texts over and over), which is safe because taxonomies are immutable.

        Tolerates ``\\r\\n`` line ends, trailing spaces and extra blank lines; anything else off the
        format raises :class:`TaxonomyTextError` naming the line, what was expected and found.
        """
        return _parse_cached(text)

    # --- perturbations ---------------------------------------------------------------------------
    def select(self, codes: Sequence[str]) -> tuple[Taxonomy, dict[str, str]]:
        """Keep the categories ``codes``, in that order, re-indexed S1..Sm; returns the new
        taxonomy and ``{old code: new code}``. The primitive behind delete, shuffle and reindex.

        >>> t = Taxonomy((Category("A"), Category("B"), Category("C")))
        >>> t2, code_map = t.select(["S3", "S1"])
        >>> t2.names, code_map
        (('C', 'A'), {'S3': 'S1', 'S1': 'S2'})
        """
        positions = [self.index(code) for code in codes]
        if len(set(positions)) != len(positions):
            raise ValueError(f"Taxonomy.select: expected distinct codes, found {list(codes)}.")
        new = Taxonomy(tuple(self.categories[p] for p in positions), name=self.name, description=self.description)
        return new, {make_code(p): make_code(i) for i, p in enumerate(positions)}

    def delete(self, codes: Iterable[str]) -> tuple[Taxonomy, dict[str, str]]:
        """Remove the categories ``codes`` and re-index the rest S1..Sm (order kept)."""
        doomed = {self.index(code) for code in codes}
        if len(doomed) >= len(self.categories):
            raise ValueError(f"Taxonomy.delete: at least one of the {len(self)} categories must remain.")
        return self.select([make_code(i) for i in range(len(self.categories)) if i not in doomed])

    def shuffle(self, rng: Any) -> tuple[Taxonomy, dict[str, str]]:
        """Permute the categories with ``rng`` (anything with a ``shuffle(list)`` method, such as
        ``random.Random`` or a ``numpy.random.Generator``) and re-index."""
        order = list(self.codes)
        rng.shuffle(order)
        return self.select(order)

    def reindex(self, order: Sequence[str]) -> tuple[Taxonomy, dict[str, str]]:
        """Put the categories in ``order`` (every code exactly once)."""
        if sorted(order, key=code_number) != list(self.codes):
            raise ValueError(f"Taxonomy.reindex: expected a permutation of {list(self.codes)}, found {list(order)}.")
        return self.select(order)

    def add(self, category: Category) -> tuple[Taxonomy, str]:
        """Append ``category`` as ``S(n+1)``; returns the new taxonomy and the new code."""
        new = Taxonomy(self.categories + (category,), name=self.name, description=self.description)
        return new, make_code(len(self.categories))

    def replace_category(self, code: str, category: Category) -> Taxonomy:
        """The taxonomy with the category ``code`` replaced (codes unchanged)."""
        position = self.index(code)
        categories = self.categories[:position] + (category,) + self.categories[position + 1 :]
        return Taxonomy(categories, name=self.name, description=self.description)

    # --- files -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/JSON; each category carries its code for readers of the file."""
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        if self.description:
            data["description"] = self.description
        data["categories"] = [{"code": make_code(i)} | c.to_dict() for i, c in enumerate(self.categories)]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "taxonomy") -> Taxonomy:
        """Build from plain data; errors name ``source``, the field, expected and found (:mod:`.schemas`)."""
        return cls.from_file(TaxonomyFile.parse(data, source))

    @classmethod
    def from_file(cls, file: TaxonomyFile) -> Taxonomy:
        """Build from a validated taxonomy file."""
        categories = tuple(Category(c.name, should_not=c.should_not, can=c.can) for c in file.categories)
        return cls(categories, name=file.name, description=file.description)

    @classmethod
    def load(cls, path: Union[str, Path]) -> Taxonomy:
        """Read a YAML or JSON taxonomy file (see ``dataset_scripts/policy-xstest/taxonomy.yaml``)."""
        data = read_structured_file(path)
        taxonomy = cls.from_dict(data, source=str(path))
        if not taxonomy.name:
            taxonomy = dataclasses.replace(taxonomy, name=Path(path).stem)
        return taxonomy

    def save(self, path: Union[str, Path]) -> None:
        """Write YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        write_structured_file(path, self.to_dict())


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Taxonomy:
    return _parse(text)


def _parse(text: str) -> Taxonomy:
    if not isinstance(text, str):
        raise TaxonomyTextError(f"expected S-coded taxonomy text, found {type(text).__name__}.")
    blocks: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.rstrip()
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
            continue
        current.append((number, line))
    if current:
        blocks.append(current)
    if not blocks:
        raise TaxonomyTextError("expected S-coded taxonomy text ('S1: <name>.' ...), found empty text.")
    categories = [_parse_block(block, make_code(i)) for i, block in enumerate(blocks)]
    return Taxonomy(tuple(categories))


def _parse_block(block: list[tuple[int, str]], code: str) -> Category:
    (number, header), rest = block[0], block[1:]
    match = _HEADER.fullmatch(header)
    if match is None or f"S{match.group(1)}" != code:
        raise TaxonomyTextError(
            f"line {number}: expected the header '{code}: <name>.' (categories are numbered S1, S2, ... in order "
            f"and separated by one blank line), found {header!r}."
        )
    sections: dict[str, list[str]] = {SHOULD_NOT: [], CAN: []}
    section: Optional[str] = None
    seen: list[str] = []
    for number, line in rest:
        if line in (SHOULD_NOT, CAN):
            if line in seen or (line == SHOULD_NOT and CAN in seen):
                raise TaxonomyTextError(
                    f"line {number}: expected at most one 'Should not' then one 'Can' section in {code}, "
                    f"found {line!r} again."
                )
            section = line
            seen.append(line)
        elif line.startswith("- ") and section is not None and line[2:].strip():
            sections[section].append(line[2:].strip())
        else:
            raise TaxonomyTextError(
                f"line {number}: expected 'Should not', 'Can' or a guideline line '- ...' after a section title in "
                f"{code}, found {line!r}."
            )
    try:
        return Category(match.group(2).strip(), should_not=tuple(sections[SHOULD_NOT]), can=tuple(sections[CAN]))
    except ValueError as err:
        raise TaxonomyTextError(f"{code}: {err}") from None
