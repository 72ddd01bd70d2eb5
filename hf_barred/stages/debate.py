"""BARRED step 5: asymmetric debate validation.

A panel of ``k`` judges (default two personas: ``recall``, recall-first, and ``strict``,
precision-first) classifies each generated input independently in round 1, with reasoning,
confidence and a label. While the judges are not unanimous and rounds remain (up to ``rounds``,
T), a further round runs: first an **Advocate** argues for the target label ``y`` using the
generator's reasoning and the judges' objections (it never changes position, and it is called
only for rows that need the round), then each judge sees its own previous answer, the other
judges' answers and the advocate's argument, and answers again.

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

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from datasets import Dataset

from ..llm.structured import answer_text, structured_chat
from .features import debated_features
from .answers import JudgeAnswer, string_budget
from .prompting import Prompt, load_prompt
from .base import LLMStageConfig, add_usage, engine_for, map_stage, rows, stage_fingerprint
from .labels import clean_text, normalize_label

STAGE_VERSION = "4"  # 2: reasoning optional; 3: strict schema for constrained decoding; 4: prompt sets

JUDGE_PERSONAS = ("recall", "strict", "literal", "contextual", "skeptic")
"""Built-in judge personas, one template each (``hf_barred/stages/prompts/<set>/judge_persona/<name>.jinja``); a
judge given as any other string uses that string as its persona."""

def judge_grammar(max_tokens: int) -> dict[str, Any]:
    """The strict schema a constrained engine judges with (:class:`~hf_barred.stages.answers.JudgeAnswer`):
    short reasoning first, a confidence in [0, 1], then ``yes`` or ``no``."""
    return JudgeAnswer.grammar(max_length={"reasoning": string_budget(max_tokens, 1, 24)})


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
    def with_judges(cls, k: int, **kwargs: Any) -> "DebateConfig":
        """A panel of ``k`` judges with distinct built-in personas, in the order of
        :data:`JUDGE_PERSONAS` (recall, strict, literal, contextual, skeptic; then again, numbered)."""
        names = list(JUDGE_PERSONAS)
        return cls(judges=tuple(names[i % len(names)] for i in range(k)), **kwargs)


PERSONA_NAMES = {"recall": "recall-focused", "strict": "strict", "literal": "literal-minded",
                 "contextual": "context-minded", "skeptic": "skeptical"}
"""How a prompt names a built-in persona ("You are a strict evaluation agent")."""


def persona_prompt(judge: str, prompt_set: str = "small") -> Prompt:
    """The persona of ``judge`` in ``prompt_set``: its built-in template, or the judge's own text
    (never rendered as a template).

    >>> persona_prompt("strict").id, persona_prompt("You are terse.").text
    ('small/judge_persona/strict', 'You are terse.')
    """
    if judge in JUDGE_PERSONAS:
        return load_prompt("judge_persona", judge, prompt_set)
    return Prompt("judge_persona", "custom", judge, prompt_set)


def persona_text(judge: str, prompt_set: str = "small") -> str:
    """The persona sentence of ``judge`` (see :func:`persona_prompt`)."""
    return persona_prompt(judge, prompt_set).text.strip()


def persona_name(judge: str) -> str:
    """The adjective a prompt calls a judge by (``independent`` for a persona given as text)."""
    return PERSONA_NAMES.get(judge, "independent")


def judge_names(judges: Sequence[str]) -> list[str]:
    """Short unique names of the judges (``recall``, ``strict``, ``strict#2``, ``judge3``)."""
    names, seen = [], {}
    for k, judge in enumerate(judges):
        base = judge if judge in JUDGE_PERSONAS else f"judge{k + 1}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def debate_outcome(labels_by_round: Sequence[Sequence[Optional[str]]], target: str, rounds: int) -> tuple[Optional[bool], Optional[str]]:
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


def _confidence(value: Any) -> float:
    try:
        c = float(value)
    except (TypeError, ValueError):
        return math.nan
    if 1 < c <= 100:
        c /= 100
    return min(max(c, 0.0), 1.0)


def input_text(record: dict[str, Any]) -> str:
    """The text a judge reads for a sample row: the input, or the task and the response."""
    if record["input_type"] == "task_and_response":
        return f"Task: {record['task']}\nResponse: {record['text']}"
    return record["text"]


def _yes_no(label: Optional[str], labels: Sequence[str]) -> str:
    if label is None:
        return "no readable answer"
    return "yes" if label == labels[1] else "no"


def sample_variables(record: dict[str, Any]) -> dict[str, Any]:
    """The template variables that show a sample row: ``input_type``, ``input_text`` (as the judges
    read it, :func:`input_text`), and its ``task`` and ``response`` parts."""
    task = record["task"] if record["input_type"] == "task_and_response" else ""
    return {"input_type": record["input_type"], "input_text": input_text(record), "task": task,
            "response": record["text"]}


def answer_variables(name: str, answer: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """A judge's answer as template variables: ``name``, ``label`` (yes / no / "" when unreadable),
    ``confidence`` (two decimals, or "unknown") and ``reasoning``."""
    confidence = answer["confidence"]
    return {
        "name": name, "label": "" if answer["label"] is None else _yes_no(answer["label"], labels),
        "confidence": "unknown" if confidence is None or math.isnan(confidence) else f"{confidence:.2f}",
        "reasoning": answer["reasoning"],
    }


def _describe(name: str, answer: dict[str, Any], labels: Sequence[str]) -> str:
    if answer["error"]:
        return f"{name}: (no readable answer)"
    return f"{name}: {_yes_no(answer['label'], labels)} ({answer['reasoning']})"


def _debate_batch(batch: dict[str, list], config: DebateConfig, prompts: tuple, version: str) -> dict[str, list]:
    judge_prompt, advocate_prompt, *personas = prompts
    engine = engine_for(config.engine)
    records = rows(batch)
    names = judge_names(config.judges)
    for record in records:
        record.update(debate=[], accepted=False, debate_path="", dissent="")
    pending = [i for i, r in enumerate(records) if not r["error"]]
    conversations: dict[tuple[int, int], list] = {}
    last: dict[int, list[dict[str, Any]]] = {}
    labels_by_round: dict[int, list[list[Optional[str]]]] = {i: [] for i in pending}
    for t in range(1, config.rounds + 1):
        if not pending:
            break
        advocate = {i: ("", "") for i in pending}
        if t > 1:  # only rows that need this round reach here: one advocate call for all of them
            advocate_conversations = []
            for i in pending:
                r = records[i]
                objections = " ".join(
                    _describe(n, a, r["labels"]) for n, a in zip(names, last[i]) if a["label"] != r["labels"][r["target"]]
                )
                advocate_conversations.append(advocate_prompt.messages(
                    criterion=r["criterion"], applies=r["target"] == 1, reasoning=r["reasoning"],
                    objections=objections, **sample_variables(r),
                ))
            completions = engine.chat(
                advocate_conversations,
                config.sampling(max_tokens=config.advocate_max_tokens, temperature=config.advocate_temperature),
                stage="debate/advocate",
            )
            for i, completion in zip(pending, completions):
                records[i]["usage"] = add_usage(records[i]["usage"], completion, calls=1)
                text = clean_text(answer_text(completion.text)) if completion.ok else ""
                error = completion.error if not completion.ok else ("" if text else "the advocate's answer is empty")
                advocate[i] = (text, error or "")
        keys = [(i, j) for i in pending for j in range(len(config.judges))]
        for i, j in keys:
            r = records[i]
            variables = {"round": t, "persona": personas[j].text.strip(), "persona_name": persona_name(config.judges[j]),
                         "criterion": r["criterion"], **sample_variables(r)}
            if t == 1:
                conversations[i, j] = judge_prompt.messages(**variables)
                continue
            own = last[i][j]
            others = [(n, a) for k, (n, a) in enumerate(zip(names, last[i])) if k != j]
            messages = judge_prompt.messages(
                **variables,
                previous=answer_variables(names[j], own, r["labels"]),
                previous_answer=answer_text(own["raw"]),  # the judge's own answer, without its thinking
                other_answers=[answer_variables(n, a, r["labels"]) for n, a in others],
                others="; ".join(_describe(n, a, r["labels"]) for n, a in others),
                advocate=advocate[i][0] or "(no argument)",
                disagreed=any(a["label"] != own["label"] for _, a in others) or own["label"] != r["labels"][r["target"]],
            )
            # Messages that start with the judge's own previous answer continue its conversation (small
            # set); otherwise they are a whole new conversation holding that answer (served set).
            continues = messages[0]["role"] == "assistant"
            conversations[i, j] = conversations[i, j] + messages if continues else messages
        results = structured_chat(
            engine, [conversations[key] for key in keys], JudgeAnswer, config.sampling(),
            stage="debate/judge", max_repairs=config.max_repairs, constrained_schema=judge_grammar(config.max_tokens),
        )
        answers: dict[int, list[dict[str, Any]]] = {i: [] for i in pending}
        for (i, j), result in zip(keys, results):
            r = records[i]
            r["usage"] = add_usage(r["usage"], result)
            label, error = None, result.error
            if result.ok:
                label = normalize_label(result.data["label"], r["labels"])
                if label is None:
                    error = f"label: expected yes or no (or one of {list(r['labels'])}), found {result.data['label']!r}"
            data = result.data or {}
            answers[i].append({
                "judge": names[j], "label": label, "reasoning": clean_text(data.get("reasoning", "")),
                "confidence": _confidence(data.get("confidence")), "raw": result.raw, "error": error,
            })
        still = []
        for i in pending:
            r = records[i]
            last[i] = answers[i]
            r["debate"].append({"round": t, "judges": answers[i], "advocate": advocate[i][0],
                                "advocate_error": advocate[i][1]})
            labels_by_round[i].append([a["label"] for a in answers[i]])
            target = r["labels"][r["target"]]
            accepted, path = debate_outcome(labels_by_round[i], target, config.rounds)
            if accepted is None:
                still.append(i)
                continue
            r["accepted"], r["debate_path"] = accepted, path
            r["dissent"] = " ".join(
                _describe(n, a, r["labels"]) for n, a in zip(names, answers[i]) if a["label"] != target
            )
        pending = still
    for record in records:  # the stored label is the label name, "" for an unreadable answer
        for debate_round in record["debate"]:
            for answer in debate_round["judges"]:
                answer["label"] = answer["label"] or ""
    names_out = list(debated_features(["0", "1"]))
    return {name: [record[name] for record in records] for name in names_out}


def _prompts(config: DebateConfig) -> tuple:
    """The judge and advocate templates, then each judge's persona (so persona texts reach the fingerprint)."""
    return (load_prompt("judge", config.prompt_version, config.prompt_set),
            load_prompt("advocate", config.advocate_prompt_version, config.prompt_set),
            *(persona_prompt(judge, config.prompt_set) for judge in config.judges))


def debate_fingerprint(ds: Dataset, config: DebateConfig) -> str:
    return stage_fingerprint(ds, "debate", STAGE_VERSION, _prompts(config), config, _debate_batch)


def debate(ds: Dataset, config: Optional[DebateConfig] = None, **map_kwargs: Any) -> Dataset:
    """Generated rows -> debated rows (:func:`~hf_barred.stages.features.debated_features`): ``debate``,
    ``accepted``, ``debate_path``, ``dissent``.

    Example:
        >>> from hf_barred.stages.debate import DebateConfig, debate
        >>> judged = debate(samples, DebateConfig(judges=("recall", "strict"), rounds=2))  # doctest: +SKIP
        >>> judged[0]["debate_path"]  # doctest: +SKIP
        'agreement'
    """
    config = config or DebateConfig()
    labels = ds.features["target"].names
    return map_stage(
        ds, _debate_batch, stage="debate", version=STAGE_VERSION, config=config, prompts=_prompts(config),
        features=debated_features(labels), map_kwargs=map_kwargs,
    )
