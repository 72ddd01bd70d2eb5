"""One scoring path for a trained guardrail: texts -> model windows -> one padded batch -> one forward pass
-> violation score -> :class:`Verdict`. :class:`~hf_barred.guardrails.guardrail.Guardrail` scores through it
in-process, and ``barred serve`` for many guardrails at once (mixed-adapter batches, vLLM prompts), so both
run the same encoding and arithmetic.

- :class:`Scorer`: what one guardrail feeds its model. :meth:`Scorer.encode` gives each input its windows
  (unpadded token features; every window with ``long_inputs="chunk"``, the first with ``"truncate"``) and
  how many it spans: ``(rule, text)`` pairs for a classifier; for a generative guardrail the classification
  prompt plus the answer tokens common to both answers
  (:class:`~hf_barred.guardrails.encoding.DecisionTokens`).
- :func:`forward_scores`: windows padded with ``tokenizer.pad`` (right for classifiers, left for prompts),
  one forward pass: ``P(class 1)``, or ``P(pos) / (P(pos) + P(neg))`` for the next token.
- :func:`score_batches`: one forward pass per batch of ``(input, window)`` pairs; an input's score is the
  highest of its windows.
- :func:`generate_answers`: greedy answers after prompts (the policy JSON of flagged rows).
- :func:`verdict`: a score against the threshold, as a :class:`Verdict`.

Example (a tiny untrained classifier: the arithmetic, not a meaningful score):
    >>> import tempfile
    >>> from hf_barred.guardrails.loading import load_for_inference, load_tokenizer
    >>> from hf_barred.guardrails.scoring import Scorer, score_batches, verdict, windows_of
    >>> from hf_barred.guardrails.spec import GuardrailSpec
    >>> from hf_barred.train.tiny import make_tiny_classifier
    >>> base = make_tiny_classifier(tempfile.mkdtemp(), corpus=["kill a process", "kill my neighbour"])
    >>> spec = GuardrailSpec(kind="classifier", prompt_format="binary", base_model=base, max_length=8)
    >>> model, tokenizer = load_for_inference(base, "classifier", base, False), load_tokenizer(base, "classifier")
    >>> scorer = Scorer(tokenizer, spec, window=8)
    >>> inputs = scorer.encode(["kill a process", "kill my neighbour " * 4], [None] * 2, [None] * 2, [None] * 2)
    >>> [(len(i.windows), i.spans) for i in inputs]
    [(1, 1), (3, 3)]
    >>> scores = score_batches(model, tokenizer, "classifier", inputs, [windows_of(inputs, [0, 1])])
    >>> v = verdict(spec, scores[1], windows=inputs[1].spans)
    >>> v.windows, v.flagged == (v.score >= spec.threshold), 0.0 <= v.score <= 1.0
    (3, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from .encoding import DecisionTokens, PromptEncoder, classifier_inputs
from .formats import classifier_text, count_categories, parse_policy_answer
from .spec import GuardrailSpec

Features = dict[str, list[int]]  # one window's unpadded tokenizer output
WindowRef = tuple[int, int]  # (input index, window index)


@dataclass
class Verdict:
    """One guardrail decision.

    ``score`` is the probability of a violation in [0, 1]; ``flagged`` is ``score >= threshold``;
    ``label`` is the positive or negative label name. ``categories`` (policy guardrails) are the
    violated S-codes; ``raw`` is the decoded JSON they came from, and ``error`` says why it could
    not be parsed (the verdict itself still stands). ``windows``: how many model windows the input
    took (more than 1: a long input, scored in chunks or cut).
    """

    label: str
    flagged: bool
    score: float
    categories: list[str] = field(default_factory=list)
    raw: Optional[str] = None
    error: Optional[str] = None
    windows: int = 1


@dataclass
class Encoded:
    """One input as the model reads it: ``windows``, the token features it is scored on (unpadded), and
    ``spans``, how many windows the whole input takes (more than ``len(windows)`` when it is cut)."""

    windows: list[Features]
    spans: int


class Scorer:
    """The model inputs of one guardrail (``spec``, its ``tokenizer``); ``window``: the tokens its model reads
    at once (:func:`~hf_barred.guardrails.loading.model_window`). See the module docstring."""

    def __init__(self, tokenizer: Any, spec: GuardrailSpec, window: int):
        self.tokenizer = tokenizer
        self.spec = spec
        self.window = window
        self.chunk = spec.long_inputs == "chunk"
        self.stride = int(cast(int, spec.chunk_stride))  # GuardrailSpec.__post_init__ fills a missing one
        self.encoder: Optional[PromptEncoder] = None
        self.decision: Optional[DecisionTokens] = None
        if spec.kind == "generative":
            self.encoder = PromptEncoder(tokenizer, window)
            self.decision = self.encoder.decision_tokens(spec.prompt_format)

    def encode(
        self,
        texts: Sequence[str],
        rules: Sequence[Optional[str]],
        taxonomies: Sequence[Optional[str]],
        tasks: Sequence[Optional[str]],
    ) -> list[Encoded]:
        """Each input's windows (see :class:`Encoded`); ``rules``/``taxonomies``/``tasks``: one per text."""
        if self.spec.kind == "classifier":
            return self._classifier_inputs([classifier_text(t, task) for t, task in zip(texts, tasks)], rules)
        prefix = list(cast(DecisionTokens, self.decision).prefix)  # generative: set in __init__
        out = []
        for text, rule, taxonomy, task in zip(texts, rules, taxonomies, tasks):
            prompts = self._prompts(text, rule, taxonomy, task, chunk=True)
            kept = prompts if self.chunk else prompts[:1]
            out.append(
                Encoded(
                    [{"input_ids": p + prefix, "attention_mask": [1] * (len(p) + len(prefix))} for p in kept],
                    len(prompts),
                )
            )
        return out

    def prompt_ids(
        self, text: str, rule: Optional[str] = None, taxonomy: Optional[str] = None, task: Optional[str] = None
    ) -> list[int]:
        """The classification prompt of ``text``'s first window, without answer tokens (what a generative
        guardrail's answer is decoded after)."""
        return self._prompts(text, rule, taxonomy, task, chunk=False)[0]

    def _prompts(
        self, text: str, rule: Optional[str], taxonomy: Optional[str], task: Optional[str], chunk: bool
    ) -> list[list[int]]:
        # generative guardrails only: __init__ set the encoder and the decision tokens
        encoder, decision = cast(PromptEncoder, self.encoder), cast(DecisionTokens, self.decision)
        reserve = len(decision.prefix) + 1
        return [
            encoder.prompt_ids(m)
            for m in encoder.fitted_windows(
                self.spec.prompt_format, text, rule, task, taxonomy, reserve, chunk=chunk, stride=self.stride
            )
        ]

    def _classifier_inputs(self, texts: list[str], rules: Sequence[Optional[str]]) -> list[Encoded]:
        # one tokenizer call per rule: the stride must leave room beside the rule, so it depends on the rule
        groups: dict[Optional[str], list[int]] = {}
        for i, rule in enumerate(rules):
            groups.setdefault(rule if self.spec.pair_rule else None, []).append(i)
        out: list[Any] = [None] * len(texts)
        for rule, idx in groups.items():
            pairs = [rule] * len(idx) if self.spec.pair_rule else None
            room = (
                self.window
                - 2
                - (len(self.tokenizer(rule or "", add_special_tokens=False)["input_ids"]) + 1 if pairs else 0)
            )
            enc = classifier_inputs(
                self.tokenizer,
                [texts[i] for i in idx],
                pairs,
                self.window,
                chunk=True,
                stride=min(self.stride, max(0, room // 2)),
            )
            keys = [k for k in enc.keys() if k != "overflow_to_sample_mapping"]
            windows: list[list[Features]] = [[] for _ in idx]
            for j, row in enumerate(enc["overflow_to_sample_mapping"]):
                windows[row].append({k: enc[k][j] for k in keys})
            for row, i in enumerate(idx):
                out[i] = Encoded(windows[row] if self.chunk else windows[row][:1], len(windows[row]))
        return out


def windows_of(inputs: Sequence[Encoded], idx: Iterable[int]) -> list[WindowRef]:
    """Every ``(input, window)`` pair of the inputs ``idx``, in order (one batch: whole inputs)."""
    return [(i, k) for i in idx for k in range(len(inputs[i].windows))]


def pad_left(tokenizer: Any, features: Sequence[Features], device: Any = None) -> dict[str, Any]:
    """Prompts padded on the left (the next token follows every row's last token), as tensors on ``device``."""
    batch = tokenizer.pad(list(features), padding=True, padding_side="left", return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()} if device is not None else dict(batch)


def forward_scores(
    model: Any,
    tokenizer: Any,
    kind: str,
    features: Sequence[Features],
    decisions: Optional[Sequence[DecisionTokens]] = None,
    **forward: Any,
) -> list[float]:
    """Violation probabilities of ``features`` (windows), one forward pass. ``decisions``: one per window
    (generative); ``forward``: extra model arguments (``adapter_names=[...]``)."""
    import torch

    device = next(model.parameters()).device
    if kind == "classifier":
        batch = {k: v.to(device) for k, v in tokenizer.pad(list(features), padding=True, return_tensors="pt").items()}
        return model(**batch, **forward).logits.float().softmax(-1)[:, 1].tolist()
    decisions = cast(Sequence[DecisionTokens], decisions)  # generative: one per window
    batch = pad_left(tokenizer, features, device)
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    logits = model(**batch, position_ids=position_ids, logits_to_keep=1, **forward).logits[:, -1]
    rows = torch.arange(len(decisions), device=logits.device)
    pos = torch.tensor([d.positive for d in decisions], device=logits.device)
    neg = torch.tensor([d.negative for d in decisions], device=logits.device)
    pair = torch.stack([logits[rows, pos], logits[rows, neg]], dim=-1).float()
    return pair.softmax(-1)[:, 0].tolist()


def score_batches(
    model: Any,
    tokenizer: Any,
    kind: str,
    inputs: Sequence[Encoded],
    batches: Iterable[Sequence[WindowRef]],
    decisions: Optional[Sequence[DecisionTokens]] = None,
    forward_kwargs: Optional[Callable[[list[int]], dict[str, Any]]] = None,
) -> list[float]:
    """The violation score of each input: the highest over its windows, one forward pass per batch of
    ``(input, window)`` pairs. ``decisions``: one per input (generative); ``forward_kwargs(owners)``: extra
    model arguments for a batch whose windows belong to the inputs ``owners``."""
    import torch

    out = [0.0] * len(inputs)
    with torch.inference_mode():
        for batch in batches:
            owners = [i for i, _ in batch]
            values = forward_scores(
                model,
                tokenizer,
                kind,
                [inputs[i].windows[k] for i, k in batch],
                [decisions[i] for i in owners] if decisions is not None else None,
                **(forward_kwargs(owners) if forward_kwargs else {}),
            )
            for i, value in zip(owners, values):
                out[i] = max(out[i], float(value))
    return out


def generate_answers(
    model: Any, tokenizer: Any, prompts: Sequence[list[int]], max_new_tokens: int = 64, **forward: Any
) -> list[str]:
    """Greedy answers after ``prompts`` (token ids), one batch (the policy JSON of flagged rows)."""
    import torch

    batch = pad_left(
        tokenizer, [{"input_ids": p, "attention_mask": [1] * len(p)} for p in prompts], next(model.parameters()).device
    )
    with torch.inference_mode():
        out = model.generate(
            **batch, **forward, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def decision_probability(positive: float, negative: float) -> float:
    """``P(pos) / (P(pos) + P(neg))`` from the two decision tokens' logits or log-probabilities.

    >>> decision_probability(0.0, 0.0)
    0.5
    """
    return 1.0 / (1.0 + math.exp(negative - positive))


def verdict(
    spec: GuardrailSpec,
    score: float,
    threshold: Optional[float] = None,
    *,
    windows: int = 1,
    raw: Optional[str] = None,
    taxonomy: Optional[str] = None,
) -> Verdict:
    """The :class:`Verdict` of ``score`` (flagged when ``score >= threshold``, by default the spec's); with
    ``raw``, a policy guardrail's decoded JSON, its categories (S-codes of ``taxonomy``, else the spec's).

    >>> spec = GuardrailSpec(kind="classifier", prompt_format="binary", base_model="x", label_names=["ok", "bad"])
    >>> verdict(spec, 0.75).label, verdict(spec, 0.75, threshold=0.8).flagged
    ('bad', False)
    """
    threshold = spec.threshold if threshold is None else threshold
    flagged = score >= threshold
    out = Verdict(label=spec.label_names[int(flagged)], flagged=flagged, score=float(score), windows=windows)
    if raw is not None:
        parsed = parse_policy_answer(raw, n_categories=count_categories(taxonomy or spec.taxonomy))
        out.raw, out.categories, out.error = raw, parsed.categories, parsed.error
    return out
