"""BARRED step 5: asymmetric debate validation.

A panel of ``k`` judges (:mod:`hf_barred.stages.judge`; default two personas: ``recall``,
recall-first, and ``strict``, precision-first) classifies each generated input independently in
round 1, with reasoning, confidence and a label. While the judges are not unanimous and rounds remain
(up to ``rounds``, T), a further round runs: first an **Advocate** (:mod:`hf_barred.stages.advocate`)
argues for the target label ``y`` using the generator's reasoning and the judges' objections (it never
changes position, and it is called only for rows that need the round), then each judge sees its own
previous answer, the other judges' answers and the advocate's argument, and answers again.

**A sample is accepted iff all judges give y at some round t <= T.** Calls: one batched call
per role per round: all rows x judges in one judge call, all rows needing a round in one
advocate call.

Debate paths (``debate_path``):

- ``agreement``: all judges give ``y`` in round 1 (accepted);
- ``persuasion``: the judges were split (or against ``y``) in round 1 and all give ``y`` in a
  later round (accepted);
- ``consensus_breaking``: the judges end unanimous *against* ``y`` (rejected) — at round 1
  (the generator missed the target) or after a debate;
- ``disagreement``: the judges are still split at the last round (rejected). A judge whose answer
  cannot be parsed counts as not agreeing, so the row is split.

Rows that arrive with an ``error`` (a generation that could not be parsed) are not debated:
``debate`` is empty, ``accepted`` False, ``debate_path`` empty.

Each round is recorded in ``debate``: every judge's label, confidence, reasoning, raw answer and
parse error, and the advocate's argument (empty in round 1). ``dissent`` aggregates the reasoning
of the judges who did not give ``y`` in the last round: what refinement must answer.

Example:
    >>> from hf_barred.stages.debate import debate_outcome
    >>> debate_outcome([["yes", "yes"]], "yes", rounds=2)
    (True, 'agreement')
    >>> debate_outcome([["yes", "no"], ["yes", "yes"]], "yes", rounds=2)
    (True, 'persuasion')
    >>> debate_outcome([["no", "no"]], "yes", rounds=2)
    (False, 'consensus_breaking')
    >>> debate_outcome([["yes", None], ["yes", "no"]], "yes", rounds=2)
    (False, 'disagreement')
    >>> debate_outcome([["yes", "no"]], "yes", rounds=2)  # undecided: another round is needed
    (None, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from datasets import Dataset, Features

from ..llm.base import Completion
from ..llm.structured import StructuredResult
from .advocate import advocate_messages, read_advocate
from .answers import JudgeAnswer
from .base import LLMStageConfig, Request, Result, Stage, Steps
from .features import debated_features
from .judge import JUDGE_PERSONAS, describe, judge_grammar, judge_messages, judge_names, persona_prompt, read_judge
from .prompting import Prompt, load_prompt

__all__ = ["DebateConfig", "DebateStage", "debate", "debate_outcome"]

STAGE_VERSION = "4"  # 2: reasoning optional; 3: strict schema for constrained decoding; 4: prompt sets


@dataclass(frozen=True)
class DebateConfig(LLMStageConfig):
    """Debate validation.

    Parameters, by purpose:

    - Panel: ``judges`` (persona names from :data:`JUDGE_PERSONAS`, or persona texts), ``rounds`` (T).
    - Judges' sampling: the shared ``max_tokens``, ``temperature``, ``seed``, ``max_repairs``.
    - Advocate: ``advocate_max_tokens``, ``advocate_temperature``.
    - Prompts: ``prompt_version`` (judge) and ``advocate_prompt_version``.
    """

    judges: tuple[str, ...] = field(default=("recall", "strict"), metadata={"help": "Judge personas (k judges)."})
    rounds: int = field(default=2, metadata={"help": "Maximum debate rounds T (the paper uses 2)."})
    prompt_version: Optional[str] = field(
        default=None, metadata={"help": "Version of the judge prompt (None: the set's default; small: v2)."}
    )
    max_tokens: int = field(default=64, metadata={"help": "Maximum tokens of one judge answer."})
    temperature: float = field(default=0.0, metadata={"help": "Judges' sampling temperature (0: greedy)."})
    advocate_max_tokens: int = field(default=40, metadata={"help": "Maximum tokens of the advocate's argument."})
    advocate_temperature: float = field(default=0.3, metadata={"help": "Advocate's sampling temperature."})
    advocate_prompt_version: Optional[str] = field(
        default=None, metadata={"help": "Version of the advocate prompt (None: the set's default)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.judges, (list, str)):
            object.__setattr__(self, "judges", (self.judges,) if isinstance(self.judges, str) else tuple(self.judges))
        if len(self.judges) < 1 or not all(isinstance(j, str) and j.strip() for j in self.judges):
            raise ValueError(
                f"DebateConfig.judges: expected at least one persona ({', '.join(JUDGE_PERSONAS)} or a persona text), "
                f"found {self.judges!r}."
            )
        if self.rounds < 1:
            raise ValueError(f"DebateConfig.rounds: expected T >= 1, found {self.rounds}.")
        if self.advocate_max_tokens < 1:
            raise ValueError(f"DebateConfig.advocate_max_tokens: expected >= 1, found {self.advocate_max_tokens}.")

    @classmethod
    def with_judges(cls, k: int, **kwargs: Any) -> DebateConfig:
        """A panel of ``k`` judges with distinct built-in personas, in the order of
        :data:`JUDGE_PERSONAS` (recall, strict, literal, contextual, skeptic; then again, numbered)."""
        names = list(JUDGE_PERSONAS)
        return cls(judges=tuple(names[i % len(names)] for i in range(k)), **kwargs)


def debate_outcome(
    labels_by_round: Sequence[Sequence[Optional[str]]], target: str, rounds: int
) -> tuple[Optional[bool], Optional[str]]:
    """``(accepted, path)`` after the rounds so far, or ``(None, None)`` when another round is needed.

    ``labels_by_round[t][j]`` is judge ``j``'s label at round ``t + 1`` (None: unparseable).
    """
    t = len(labels_by_round)
    last = list(labels_by_round[-1])
    if all(label == target for label in last):
        return True, "agreement" if t == 1 else "persuasion"
    if all(label is not None and label != target for label in last):
        return False, "consensus_breaking"
    if t >= rounds:
        return False, "disagreement"
    return None, None


class DebateStage(Stage[DebateConfig, Result]):
    """BARRED step 5 (see the module docstring): the rounds of one sample's debate, and its verdict."""

    name = "debate"
    version = STAGE_VERSION

    def prompts(self) -> tuple[Prompt, ...]:
        """The judge and advocate templates, then each judge's persona (so persona texts reach the fingerprint)."""
        config = self.config
        return (
            load_prompt("judge", config.prompt_version, config.prompt_set),
            load_prompt("advocate", config.advocate_prompt_version, config.prompt_set),
            # LLMStageConfig.__post_init__ resolves a prompt_set of None
            *(persona_prompt(judge, cast(str, config.prompt_set)) for judge in config.judges),
        )

    def features(self, input_features: Features) -> Features:
        return debated_features(input_features["target"].names)

    def steps(self, row: dict[str, Any]) -> Steps:
        config = self.config
        row.update(debate=[], accepted=False, debate_path="", dissent="")
        if row["error"]:  # a generation that could not be parsed is not debated
            return row
        judge_prompt, advocate_prompt, *personas = self.prompts()
        names = judge_names(config.judges)
        target = row["labels"][row["target"]]
        conversations: list[Optional[list]] = [None] * len(config.judges)
        last: Optional[list[dict[str, Any]]] = None
        labels_by_round: list[list[Optional[str]]] = []
        for t in range(1, config.rounds + 1):
            advocate = ("", "")
            if t > 1 and last is not None:  # only rows that need this round reach here
                [completion] = yield [
                    Request(
                        role="debate/advocate",
                        messages=advocate_messages(advocate_prompt, row, names, last),
                        params=config.sampling(
                            max_tokens=config.advocate_max_tokens, temperature=config.advocate_temperature
                        ),
                    )
                ]
                advocate = read_advocate(cast(Completion, completion))  # a free-text request: a Completion
            requests = []
            for j, judge in enumerate(config.judges):
                conversation = judge_messages(
                    judge_prompt, personas[j], judge, row, t, names, j, last, conversations[j], advocate[0]
                )
                conversations[j] = conversation
                requests.append(
                    Request(
                        role="debate/judge",
                        messages=conversation,
                        params=config.sampling(),
                        answer=JudgeAnswer,
                        constrained=judge_grammar(config.max_tokens),
                        max_repairs=config.max_repairs,
                    )
                )
            results = cast(list[StructuredResult], (yield requests))  # every request names an answer model
            last = [read_judge(names[j], result, row["labels"]) for j, result in enumerate(results)]
            row["debate"].append({"round": t, "judges": last, "advocate": advocate[0], "advocate_error": advocate[1]})
            labels_by_round.append([answer["label"] for answer in last])
            accepted, path = debate_outcome(labels_by_round, target, config.rounds)
            if accepted is not None:
                row["accepted"], row["debate_path"] = accepted, path
                row["dissent"] = " ".join(
                    describe(n, a, row["labels"]) for n, a in zip(names, last) if a["label"] != target
                )
                break
        for debate_round in row["debate"]:  # the stored label is the label name, "" for an unreadable answer
            for answer in debate_round["judges"]:
                answer["label"] = answer["label"] or ""
        return row


def debate(ds: Dataset, config: Optional[DebateConfig] = None, **map_kwargs: Any) -> Dataset:
    """Generated rows -> debated rows (:func:`~hf_barred.stages.features.debated_features`): ``debate``,
    ``accepted``, ``debate_path``, ``dissent``.

    Example:
        >>> from hf_barred.stages.debate import DebateConfig, debate
        >>> judged = debate(samples, DebateConfig(judges=("recall", "strict"), rounds=2))  # doctest: +SKIP
        >>> judged[0]["debate_path"]  # doctest: +SKIP
        'agreement'
    """
    return DebateStage(config or DebateConfig())(ds, **map_kwargs)
