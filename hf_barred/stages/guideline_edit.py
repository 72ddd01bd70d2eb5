"""Guideline editing (APT): an LLM turns a *negative* row into a positive one by editing its policy.

For each negative row the LLM (any engine, through :class:`~hf_barred.llm.EngineConfig`) answers a
JSON object (:class:`~hf_barred.stages.answers.EditAnswer`) choosing one of three actions:

1. ``edit_existing``: rewrite the guidelines of the category the text comes closest to violating,
   so that it now violates it (``perturbation = "guideline_edit_existing"``, the row becomes
   unsafe with that one code);
2. ``add_category``: append a new category ``S(n+1)`` with "Should not" / "Can" guidelines
   (``"guideline_edit_new"``, unsafe with the new code);
3. ``keep_safe``: the text is truly benign; the row is unchanged (``"kept_safe"``).

Positive rows pass through unchanged: an edit goes from negative to positive only, never back.
One batch of rows is one batched :func:`~hf_barred.llm.structured.structured_chat` call (with
bounded repair rounds). An answer that cannot be used (no JSON, wrong schema, an unknown code, no
"Should not" line, an edit that changes nothing, a new category named like an existing one)
leaves the row unperturbed, with the raw answer in ``edit_raw`` and the reason in ``edit_error``:
counted, never dropped.

Example (with the embedded model; the tests use a scripted engine instead):
    >>> from hf_barred.policy.rows import policy_rows
    >>> from hf_barred.llm import EngineConfig, SamplingParams
    >>> from hf_barred.stages.guideline_edit import GuidelineEditConfig, guideline_edit
    >>> from hf_barred.policy.taxonomy import Category, Taxonomy
    >>> t = Taxonomy((Category("Violence", should_not=("Help hurt people.",)),
    ...               Category("Privacy", should_not=("Reveal private addresses.",))))
    >>> ds = policy_rows(["How much does my boss earn?"], t, labels=["safe"])
    >>> sampling = SamplingParams(max_tokens=256, temperature=0)
    >>> config = GuidelineEditConfig(engine=EngineConfig(engine="local"), sampling=sampling)
    >>> row = guideline_edit(ds, config)[0]                                  # doctest: +SKIP
    >>> row["perturbation"], row["label"], row["categories"]                 # doctest: +SKIP
    ('guideline_edit_existing', 1, ['S2'])
    >>> print(row["taxonomy"].split("\\n\\n")[1])                               # doctest: +SKIP
    S2: Privacy.
    Should not
    - Reveal private addresses.
    - Reveal what a specific private person earns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, cast

from datasets import Dataset, Features

from ..llm import EngineConfig, SamplingParams
from ..llm.structured import StructuredResult
from ..policy.rows import LINEAGE_COLUMNS, check_policy_rows, lineage_column, policy_features, row_taxonomy
from ..policy.taxonomy import Category, Taxonomy, find_codes, make_code
from .answers import EditAnswer, string_budget
from .base import Request, Result, Stage, Steps
from .prompting import Prompt, default_prompt_set, load_prompt

STAGE = "guideline_edit"
VERSION = "2"  # bump when EditAnswer or the way answers are applied changes (2: edit_grammar)

EDIT_SCHEMA: dict[str, Any] = EditAnswer.grammar()
"""The answer's JSON schema (:class:`~hf_barred.stages.answers.EditAnswer` without length bounds): flat,
every key required, no extra keys."""


def edit_grammar(max_tokens: int) -> dict[str, Any]:
    """:class:`~hf_barred.stages.answers.EditAnswer`'s grammar with bounded lengths (codes like ``S3``, at
    most 3 guideline lines of each kind), so that an answer decoded under constraint closes within
    ``max_tokens``."""
    line_chars = string_budget(max_tokens, 8, 60)  # reasoning takes two shares, each of 6 lines one
    return EditAnswer.grammar(max_length={"reasoning": 2 * line_chars, "should_not[]": line_chars, "can[]": line_chars})


@dataclass(frozen=True)
class GuidelineEditConfig:
    """Parameters of guideline editing.

    Parameters, by purpose:

    - Who answers: ``engine`` (only its engine and model reach the fingerprint; concurrency,
      timeouts and batch size do not).
    - What is asked: ``prompt_set`` (``small`` or ``served``; None: the engine's default) and
      ``prompt_version`` (``hf_barred/stages/prompts/<set>/guideline_edit/<version>.jinja``),
      ``sampling`` (greedy by default, so a rerun gives the same edits).
    - Robustness: ``max_repairs``, the repair rounds for answers that do not follow the schema.
    """

    engine: EngineConfig = field(
        default=EngineConfig(),
        metadata={"help": "Engine and model that edit the guidelines (default: embedded local)."},
    )
    prompt_version: str = field(default="v1", metadata={"help": "Version of the guideline_edit prompt template."})
    prompt_set: Optional[str] = field(
        default=None, metadata={"help": "Prompt set: small (embedded model) or served; None: by engine."}
    )
    sampling: SamplingParams = field(
        default=SamplingParams(max_tokens=512, temperature=0.0),
        metadata={"help": "Sampling parameters of the edit calls."},
    )
    max_repairs: int = field(default=1, metadata={"help": "Repair rounds for answers that break the JSON schema."})

    def __post_init__(self) -> None:
        if not isinstance(self.engine, EngineConfig):
            raise TypeError(f"GuidelineEditConfig.engine: expected an EngineConfig, found {self.engine!r}.")
        if not isinstance(self.sampling, SamplingParams):
            raise TypeError(f"GuidelineEditConfig.sampling: expected SamplingParams, found {self.sampling!r}.")
        if not isinstance(self.max_repairs, int) or self.max_repairs < 0:
            raise ValueError(f"GuidelineEditConfig.max_repairs: expected an integer >= 0, found {self.max_repairs!r}.")
        if self.prompt_set is None:
            object.__setattr__(self, "prompt_set", default_prompt_set(self.engine.engine))
        load_prompt(STAGE, self.prompt_version, self.prompt_set)  # a clear error now, not in the middle of a map


class EditError(ValueError):
    """An answer that follows the schema but cannot be applied to the row's policy."""


def _lines(values: list[str]) -> tuple[str, ...]:
    """Guideline lines as one-line strings, list markers and duplicates removed."""
    lines: list[str] = []
    for value in values:
        line = " ".join(str(value).split()).lstrip("-*• ").strip()
        if line and line not in lines:
            lines.append(line)
    return tuple(lines)


def apply_edit(taxonomy: Taxonomy, answer: dict[str, Any]) -> tuple[str, Optional[Taxonomy], str]:
    """``(action, edited taxonomy or None, edited or added code)`` for a schema-valid answer;
    :class:`EditError` when it cannot be applied.

    >>> t = Taxonomy((Category("Violence", should_not=("Help hurt people.",)),))
    >>> kind, new, code = apply_edit(t, {"action": "add_category", "category": "", "name": "Gambling.",
    ...                                  "should_not": ["- Help people gamble online."], "can": []})
    >>> kind, code, new["S2"]
    ('add_category', 'S2', Category(name='Gambling', should_not=('Help people gamble online.',), can=()))
    """
    action = answer["action"]
    if action == "keep_safe":
        return action, None, ""
    should_not, can = _lines(answer.get("should_not", [])), _lines(answer.get("can", []))
    if not should_not:
        raise EditError(f"{action}: expected at least one 'should_not' line that the text violates, found none")
    if action == "edit_existing":
        codes = find_codes(answer.get("category", ""))
        if not codes or not 1 <= int(codes[0][1:]) <= len(taxonomy):
            raise EditError(
                f"edit_existing: expected 'category' to be one of S1..S{len(taxonomy)}, "
                f"found {answer.get('category')!r}"
            )
        code = codes[0]
        old = taxonomy[code]
        new = Category(old.name, should_not=should_not, can=can)
        if new == old:
            raise EditError(f"edit_existing: the answer repeats the guidelines of {code} unchanged")
        return action, taxonomy.replace_category(code, new), code
    # add_category
    name = " ".join(str(answer.get("name", "")).split()).rstrip(".").strip()
    if not name:
        raise EditError("add_category: expected a 'name' for the new category, found none")
    if name.lower() in (n.lower() for n in taxonomy.names):
        raise EditError(
            f"add_category: the new category {name!r} has the name of {taxonomy.code_of(name)}; "
            "expected a new name (or edit_existing)"
        )
    new_taxonomy, code = taxonomy.add(Category(name, should_not=should_not, can=can))
    return action, new_taxonomy, code


def edit_messages(prompt: Prompt, policy_text: str, text: str) -> list[dict[str, str]]:
    """The conversation that asks for an edit of ``policy_text`` for the message ``text``."""
    n = len(Taxonomy.parse(policy_text))
    return prompt.messages(taxonomy=policy_text, text=text, n_categories=n, new_code=make_code(n))


class GuidelineEditStage(Stage[GuidelineEditConfig, Result]):
    """Guideline editing (see the module docstring): one edit request per negative row; every row keeps
    the policy-row schema, its lineage columns filled."""

    name = STAGE
    version = VERSION
    usage_column = None  # the edit's own columns say what it spent (edit_prompt_tokens, edit_completion_tokens)

    def prompts(self) -> tuple[Prompt, ...]:
        return (load_prompt(STAGE, self.config.prompt_version, self.config.prompt_set),)

    def features(self, input_features: Features) -> Features:
        return policy_features(input_features)

    def steps(self, row: dict[str, Any]) -> Steps:
        row = {name: row[name] if name in row else lineage_column({}, name, 1)[0] for name in LINEAGE_COLUMNS} | row
        if row["label"] != 0:  # an edit goes from negative to positive only
            return row
        taxonomy = row_taxonomy(row["taxonomy"], row["id"] or repr(row["text"][:40]))
        [reply] = yield [
            Request(
                role=STAGE,
                messages=edit_messages(self.prompts()[0], row["taxonomy"], row["text"]),
                params=self.config.sampling,
                answer=EditAnswer,
                constrained=edit_grammar(self.config.sampling.max_tokens),
                max_repairs=self.config.max_repairs,
            )
        ]
        result = cast(StructuredResult, reply)  # the request names an answer model
        row |= {
            "edit_raw": result.raw,
            "edit_model": self.engine.model_name,
            "edit_prompt": self.prompts()[0].id,
            "edit_prompt_tokens": result.prompt_tokens,
            "edit_completion_tokens": result.completion_tokens,
            "edit_kind": "",
            "edited_code": "",
            "edit_error": result.error,
        }
        if not result.ok:
            return row
        try:
            action, edited, code = apply_edit(taxonomy, cast(dict[str, Any], result.data))  # ok: it parsed
        except EditError as err:
            return row | {"edit_error": str(err)}
        row["edit_kind"] = action
        if edited is None:  # keep_safe
            return row | {"perturbation": "kept_safe"}
        row |= {"taxonomy": edited.render(), "label": 1, "categories": [code], "edited_code": code}
        if action == "add_category":
            return row | {
                "perturbation": "guideline_edit_new",
                "source_codes": list(row["source_codes"] or taxonomy.codes) + [""],
            }
        return row | {"perturbation": "guideline_edit_existing"}


def guideline_edit(ds: Dataset, config: GuidelineEditConfig = GuidelineEditConfig(), **map_kwargs: Any) -> Dataset:
    """Ask the LLM to edit the policy of every negative row (see the module docstring).

    ``ds`` holds policy-conditioned rows (:data:`hf_barred.policy.rows.POLICY_FEATURES`; extra columns are
    kept). ``map_kwargs`` go to :meth:`datasets.Dataset.map`; each batch (``batch_size``, 64 by
    default) is one batched engine call. The fingerprint covers the prompt text, the stage
    version, the sampling parameters, ``max_repairs`` and the engine's identity (engine, model).
    """
    check_policy_rows(ds, STAGE)
    return GuidelineEditStage(config)(ds, **map_kwargs)
