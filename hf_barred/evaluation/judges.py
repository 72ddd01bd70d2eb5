"""An LLM-as-judge baseline scored like the paper's: ``P("1") / (P("1") + P("0"))`` for each row.

:func:`score_with_judge` asks an engine the classification conversation (:mod:`hf_barred.guardrails.formats`)
and reads the probability of the first answer token, wherever the engine can give it:

- ``local`` (transformers): the next-token logits after the prompt, over the whole vocabulary (every
  token that reads ``1`` or ``0``, with or without a leading space, counts), from the very model the
  local engine loaded;
- ``vllm``: one generated token with ``logprobs``;
- ``openai``: ``max_tokens=1`` with ``logprobs`` / ``top_logprobs``;
- a server that gives no logprobs (or a row whose top tokens hold neither digit): generation, parsed with
  :func:`hf_barred.guardrails.formats.parse_binary_answer`; rows it cannot parse are counted as ``unparseable``
  (prediction ``-1``) and shown with their raw answer.

The result names the mode that ran (``logprob``, ``generation`` or ``logprob+generation``) and counts
the rows of each. Scores are cached by content in the engine's response cache (a rerun costs no call).

Example:
    >>> from hf_barred.evaluation.judges import digit_score
    >>> round(digit_score({"1": -0.1, " 0": -2.5, "The": -4.0}), 3)
    0.917
    >>> digit_score({"The": -0.1}) is None
    True
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ..llm.base import Completion, Conversation, SamplingParams
from ..llm.cache import ResponseCache
from ..llm.config import EngineConfig
from ..llm.first_token import local_digit_logprobs, openai_top_logprobs, vllm_top_logprobs

__all__ = ["JudgeScores", "digit_logprobs", "digit_score", "judge_dataset", "score_with_judge"]

SCORING_VERSION = "digit-logprobs-v1"
MODES = ("auto", "logprob", "generation")


@dataclass
class JudgeScores:
    """Per-row judge outputs, shaped like :class:`hf_barred.evaluation.evaluate.Predictions`.

    ``predictions``: 1, 0, or -1 (unparseable); ``scores``: ``P("1") / (P("1") + P("0"))`` (None where
    the row was generated, not scored); ``modes``: ``"logprob"`` or ``"generation"`` per row; ``mode``:
    what ran overall; ``raw``: the two log-probabilities as JSON, or the generated answer.
    """

    predictions: list[int] = field(default_factory=list)
    scores: list[Optional[float]] = field(default_factory=list)
    raw: list[Optional[str]] = field(default_factory=list)
    errors: list[Optional[str]] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        ran = [m for m in ("logprob", "generation") if m in self.modes]
        return "+".join(ran) if ran else "none"

    def summary(self) -> dict[str, Any]:
        """The mode and row counts for a report's ``extra`` section."""
        return {
            "scoring_mode": self.mode,
            "rows_logprob": self.modes.count("logprob"),
            "rows_generation": self.modes.count("generation"),
            "unparseable": sum(p == -1 for p in self.predictions),
            "rows_scored_above_half": sum(s is not None and s > 0.5 for s in self.scores),
        }


def digit_logprobs(top: dict[str, float]) -> tuple[Optional[float], Optional[float]]:
    """``(log P("1"), log P("0"))`` from ``{token text: log-probability}``; every token whose text is the
    digit once stripped counts (``"1"``, ``" 1"``); None for a digit among none of them.

    >>> digit_logprobs({"1": math.log(0.2), " 1": math.log(0.2), "x": -1.0})[0] == math.log(0.4)
    True
    """
    found: dict[str, list[float]] = {"1": [], "0": []}
    for token, logprob in top.items():
        digit = token.strip()
        if digit in found and logprob is not None and logprob > -math.inf:
            found[digit].append(float(logprob))
    return tuple(_logsumexp(found[d]) if found[d] else None for d in ("1", "0"))  # type: ignore[return-value]


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def digit_score(top: dict[str, float]) -> Optional[float]:
    """``P("1") / (P("1") + P("0"))`` from top log-probabilities; None when neither digit is among them."""
    one, zero = digit_logprobs(top)
    if one is None and zero is None:
        return None
    if zero is None:
        return 1.0
    if one is None:
        return 0.0
    return 1.0 / (1.0 + math.exp(zero - one))


def _cache_key(config: EngineConfig, model_name: str, conversation: Conversation, top_logprobs: int) -> str:
    name = f"{config.engine}:{model_name}::{SCORING_VERSION}/top{top_logprobs}"
    return ResponseCache.key(name, conversation, SamplingParams(max_tokens=1, temperature=0.0, seed=0))


def _cached_logprobs(
    config: EngineConfig, conversations: list[Conversation], top_logprobs: int
) -> list[Optional[dict[str, Optional[float]]]]:
    """The digits' log-probabilities per conversation (None: none given; a digit's None: not among the top
    tokens), from the cache or the engine."""
    cache = ResponseCache(config.resolved_cache_dir() / "responses.sqlite") if config.cache else None
    name = _model_name(config)
    keys = [_cache_key(config, name, conv, top_logprobs) for conv in conversations]
    found = cache.get_many(keys) if cache is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    result: list[Optional[dict[str, Optional[float]]]] = [
        json.loads(found[k].text) if k in found else None for k in keys
    ]
    if todo:
        batch = [conversations[i] for i in todo]
        if config.engine == "local":
            tops: list[Optional[dict[str, float]]] = list(local_digit_logprobs(config, batch))
        elif config.engine == "vllm":
            tops = vllm_top_logprobs(config, batch, top_logprobs)
        else:
            tops = openai_top_logprobs(config, batch, top_logprobs)
        for i, top in zip(todo, tops):
            digits = None if top is None else dict(zip(("1", "0"), digit_logprobs(top)))
            result[i] = digits
            if cache is not None and digits is not None:
                cache.put(keys[i], name, Completion(text=json.dumps(digits), completion_tokens=1))
    return result


def _model_name(config: EngineConfig) -> str:
    if config.model == "embedded":
        from ..llm.embedded import EMBEDDED_MODEL_ID

        return EMBEDDED_MODEL_ID
    return config.model


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


def score_with_judge(
    config: EngineConfig,
    conversations: Sequence[Conversation],
    *,
    mode: str = "auto",
    top_logprobs: int = 20,
    generation_max_tokens: int = 16,
    threshold: float = 0.5,
) -> JudgeScores:
    """Score every classification conversation with the judge of ``config`` (see the module docstring).

    ``mode``: ``auto`` (logprobs where given, generation for the other rows), ``logprob`` (no generation:
    a row without logprobs is unparseable) or ``generation``. A scored row predicts 1 when its score is
    ``>= threshold``.
    """
    if mode not in MODES:
        raise ValueError(f"score_with_judge: mode must be one of {', '.join(MODES)}, found {mode!r}.")
    from ..guardrails.formats import parse_binary_answer
    from ..llm import get_engine

    conversations = [list(conv) for conv in conversations]
    started = time.perf_counter()
    out = JudgeScores()
    digits = (
        _cached_logprobs(config, conversations, top_logprobs) if mode != "generation" else [None] * len(conversations)
    )
    to_generate = [i for i, d in enumerate(digits) if d is None or digit_score(_as_top(d)) is None]
    generated: dict[int, Completion] = {}
    if to_generate and mode != "logprob":
        params = SamplingParams(max_tokens=generation_max_tokens, temperature=0.0, seed=0)
        engine = get_engine(config)
        answers = engine.chat([conversations[i] for i in to_generate], params, stage="evaluate")
        generated = dict(zip(to_generate, answers))
        usage = engine.usage
        out.usage = {
            "calls": usage.calls,
            "cache_hits": usage.cache_hits,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "errors": usage.errors,
        }
    for i, d in enumerate(digits):
        out.categories.append([])
        score = digit_score(_as_top(d)) if d is not None else None
        if score is not None:
            out.predictions.append(int(score >= threshold))
            out.scores.append(score)
            out.raw.append(json.dumps(d))
            out.errors.append(None)
            out.modes.append("logprob")
            continue
        out.scores.append(None)
        completion = generated.get(i)
        if completion is None:  # mode="logprob" and the engine gave none for this row
            out.predictions.append(-1)
            out.raw.append(None)
            out.errors.append("no log-probability of 1 or 0 for this row (mode='logprob')")
            out.modes.append("logprob")
            continue
        out.modes.append("generation")
        out.raw.append(completion.text)
        answer = parse_binary_answer(_THINK.sub("", completion.text)) if completion.ok else None
        out.predictions.append(-1 if answer is None else answer)
        out.errors.append(
            None
            if answer is not None
            else f"engine error: {completion.error}"
            if not completion.ok
            else f"no 0/1 answer in {completion.text[:80]!r}"
        )
    out.seconds = time.perf_counter() - started
    return out


def _as_top(digits: Optional[dict[str, Optional[float]]]) -> dict[str, float]:
    return {k: v for k, v in (digits or {}).items() if v is not None}


def judge_dataset(config: EngineConfig, ds: Any, *, format: str = "a4", **kwargs: Any) -> JudgeScores:
    """:func:`score_with_judge` over a normalised dataset (columns ``text``, ``rule`` and ``task``, as
    :func:`hf_barred.guardrails.columns.normalize_dataset` gives), with the classification format named ``format``.

    >>> from datasets import Dataset
    >>> judge_dataset(EngineConfig(), Dataset.from_dict({"text": ["x"], "rule": [None], "task": [None]}))
    Traceback (most recent call last):
    ...
    ValueError: judge_dataset: row 0 has no rule; expected a rule column or --rule.
    """
    from ..guardrails.formats import classification_messages

    conversations = []
    for i, row in enumerate(ds):
        if not row["rule"]:
            raise ValueError(f"judge_dataset: row {i} has no rule; expected a rule column or --rule.")
        conversations.append(classification_messages(row["rule"], row["text"], row.get("task"), format=format))
    return score_with_judge(config, conversations, **kwargs)
