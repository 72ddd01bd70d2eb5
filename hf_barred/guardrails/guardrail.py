"""Run a trained guardrail: ``Guardrail.from_pretrained(path_or_repo_id)(texts) -> verdicts``.

A classifier guardrail scores with its sequence-classification head. A generative guardrail scores
a whole batch with ONE forward pass: after the classification prompt of :mod:`hf_barred.guardrails.formats`
(plus the answer tokens common to both answers), the violation score is
``P("1") / (P("1") + P("0"))`` — for the policy JSON, ``P("unsafe")`` against ``P("safe")`` at the
rating. No sampling. With a taxonomy, the rows flagged unsafe are then greedy-decoded for the
violated categories. An input longer than the model's window is scored window by window (overlapping
by ``chunk_stride`` tokens) and gets the highest window score, unless the guardrail was trained with
``--long_inputs truncate``; :meth:`Guardrail.score_windows` says how many windows each input took.

Example (a tiny model trained in seconds; use a real base model for real work):
    >>> import tempfile
    >>> from datasets import Dataset
    >>> from hf_barred.guardrails.guardrail import Guardrail
    >>> from hf_barred.train import GuardrailTrainingArguments, train_guardrail
    >>> from hf_barred.train.tiny import make_tiny_classifier
    >>> texts = ["How do I kill a Python process?", "How do I kill my neighbour?"] * 4
    >>> folder = tempfile.mkdtemp()
    >>> base = make_tiny_classifier(folder + "/base", corpus=texts)
    >>> cfg = GuardrailTrainingArguments(base_model=base, rule="The request is violent.",
    ...                                  output_dir=folder + "/guard", num_train_epochs=1)
    >>> _ = train_guardrail(cfg, Dataset.from_dict({"text": texts, "label": ["safe", "unsafe"] * 4}))  # doctest: +ELLIPSIS
    {'train_runtime': ...}
    >>> guard = Guardrail.from_pretrained(folder + "/guard")
    >>> verdict = guard(["How do I kill a Python process?"])[0]
    >>> verdict.label in ("safe", "unsafe"), 0.0 <= verdict.score <= 1.0
    (True, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .encoding import DecisionTokens, PromptEncoder
from .formats import format_task
from .loading import load_for_inference, load_tokenizer, model_window, resolve_base_model
from .scoring import Scorer, Verdict, generate_answers, score_batches, verdict, windows_of
from .spec import SPEC_FILE, GuardrailSpec

__all__ = ["Guardrail", "PerRow", "Verdict", "per_row"]

PerRow = Union[None, str, Sequence[Optional[str]]]


def per_row(value: PerRow, n: int, name: str) -> list[Optional[str]]:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"Expected one {name} per text ({n}), found {len(values)}. Pass one string for all rows.")
    return values


class Guardrail:
    """A loaded guardrail model (see the module docstring); it scores through :mod:`.scoring`."""

    def __init__(self, model: Any, tokenizer: Any, spec: GuardrailSpec, threshold: Optional[float] = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.threshold = spec.threshold if threshold is None else threshold
        self.device = next(model.parameters()).device
        self.scorer = Scorer(tokenizer, spec, model_window(model, spec.max_length))

    # -- how the scorer reads the model (see hf_barred.guardrails.scoring.Scorer) ----------------

    @property
    def encoder(self) -> Optional[PromptEncoder]:
        """The prompt encoder of a generative guardrail (None for a classifier)."""
        return self.scorer.encoder

    @property
    def decision(self) -> Optional[DecisionTokens]:
        """Where a generative guardrail's verdict is read (None for a classifier)."""
        return self.scorer.decision

    @property
    def stride(self) -> int:
        """Tokens shared by consecutive windows of a long input (``spec.chunk_stride``)."""
        return self.scorer.stride

    @property
    def window(self) -> int:
        """Tokens the model reads at once."""
        return self.scorer.window

    @window.setter
    def window(self, value: int) -> None:
        self.scorer.window = value

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, *, device: Optional[str] = None,
                        threshold: Optional[float] = None, revision: Optional[str] = None,
                        token: Optional[str] = None, dtype: Optional[str] = None) -> "Guardrail":
        """Load from a folder made by ``barred train`` or from a Hub repo pushed with ``--push-to-hub``."""
        import torch

        folder = Path(path_or_repo_id)
        if not (folder / SPEC_FILE).is_file():
            if folder.exists() or str(path_or_repo_id).startswith((".", "/", "~")):
                GuardrailSpec.load(folder)  # raises the expected/found/fix error
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(path_or_repo_id), revision=revision, token=token))
        spec = GuardrailSpec.load(folder)
        tokenizer = load_tokenizer(str(folder), spec.kind)
        model = load_for_inference(folder, spec.kind, spec.base_model, spec.adapter, dtype)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, spec, threshold)

    @classmethod
    def zero_shot(cls, model: str = "embedded", *, rule: Optional[str] = None, taxonomy: Optional[str] = None,
                  label_names: Sequence[str] = ("safe", "unsafe"), threshold: float = 0.5,
                  device: Optional[str] = None, max_length: int = 1024) -> "Guardrail":
        """A causal LM that has not been fine-tuned, scored like a generative guardrail (the
        probabilities of its answer tokens after the same prompt): a baseline that never fails to
        parse. ``model``: a Hub id, a folder, or ``"embedded"`` (SmolLM2-135M-Instruct)."""
        import torch

        path = resolve_base_model(model, "generative")
        spec = GuardrailSpec(kind="generative", prompt_format="policy" if taxonomy else "a4", base_model=model,
                             rule=rule, taxonomy=taxonomy, label_names=list(label_names), threshold=threshold,
                             max_length=max_length)
        loaded = load_for_inference(path, "generative", model, adapter=False)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(loaded.to(device), load_tokenizer(path, "generative"), spec)

    def __call__(self, texts: Union[str, Sequence[str]], rule: PerRow = None, taxonomy: PerRow = None,
                 task: PerRow = None, batch_size: int = 16, categories: bool = True) -> list[Verdict]:
        """Verdicts for ``texts``, in order. ``rule``/``taxonomy``/``task``: one string for all texts,
        one per text, or ``None`` for the guardrail's own. ``categories=False`` skips decoding the
        violated categories of a policy guardrail (scores only)."""
        if isinstance(texts, str):
            texts = [texts]
        n = len(texts)
        rules = [r or self.spec.rule for r in per_row(rule, n, "rule")]
        taxonomies = [t or self.spec.taxonomy for t in per_row(taxonomy, n, "taxonomy")]
        tasks = per_row(task, n, "task")
        if (self.spec.pair_rule or self.spec.kind == "generative") and format_task(self.spec.prompt_format) == "binary" \
                and not all(rules):
            raise ValueError("This guardrail reads a rule with each text, and it has no default rule; found texts "
                             "without one. Fix: pass rule='...' (one for all texts) or one rule per text.")
        scores, windows = self.score_windows(texts, rules, taxonomies, tasks, batch_size)
        verdicts = [verdict(self.spec, s, self.threshold, windows=w) for s, w in zip(scores, windows)]
        if self.spec.kind == "generative" and format_task(self.spec.prompt_format) == "policy" and categories:
            flagged = [i for i, v in enumerate(verdicts) if v.flagged]
            for i, raw in zip(flagged, self._decode([texts[i] for i in flagged], [taxonomies[i] for i in flagged],
                                                    batch_size)):
                verdicts[i] = verdict(self.spec, scores[i], self.threshold, windows=windows[i], raw=raw,
                                      taxonomy=taxonomies[i])
        return verdicts

    def scores(self, texts: Sequence[str], rules: Sequence[Optional[str]], taxonomies: Sequence[Optional[str]],
               tasks: Sequence[Optional[str]], batch_size: int = 16) -> list[float]:
        """Violation probabilities, batched (longest texts first, so padding stays small)."""
        return self.score_windows(texts, rules, taxonomies, tasks, batch_size)[0]

    def score_windows(self, texts: Sequence[str], rules: Sequence[Optional[str]],
                      taxonomies: Sequence[Optional[str]], tasks: Sequence[Optional[str]],
                      batch_size: int = 16) -> tuple[list[float], list[int]]:
        """``(scores, windows)``: the violation probability of each text (the maximum over its windows)
        and how many windows it took (1 = it fit; with ``long_inputs="truncate"``, >1 = it was cut).
        One forward pass per ``batch_size`` texts, longest first (padding stays small)."""
        inputs = self.scorer.encode(texts, rules, taxonomies, tasks)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [windows_of(inputs, order[start : start + batch_size]) for start in range(0, len(order), batch_size)]
        scores = score_batches(self.model, self.tokenizer, self.spec.kind, inputs, batches,
                               [self.decision] * len(inputs) if self.decision else None)
        return scores, [i.spans for i in inputs]

    def _decode(self, texts: list[str], taxonomies: list[Optional[str]], batch_size: int) -> list[str]:
        """Greedy decode of the policy JSON for ``texts`` (categories of flagged rows)."""
        answers: list[str] = []
        for start in range(0, len(texts), batch_size):
            answers += generate_answers(self.model, self.tokenizer, [
                self.scorer.prompt_ids(t, taxonomy=tax)
                for t, tax in zip(texts[start : start + batch_size], taxonomies[start : start + batch_size])])
        return answers
