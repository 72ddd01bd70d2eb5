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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .formats import classifier_text
from .encoding import PromptEncoder, classifier_inputs
from .formats import count_categories, format_task, parse_policy_answer
from .loading import load_for_inference, load_tokenizer, model_window, resolve_base_model
from .spec import SPEC_FILE, GuardrailSpec

PerRow = Union[None, str, Sequence[Optional[str]]]


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


def per_row(value: PerRow, n: int, name: str) -> list[Optional[str]]:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"Expected one {name} per text ({n}), found {len(values)}. Pass one string for all rows.")
    return values


class Guardrail:
    """A loaded guardrail model (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, spec: GuardrailSpec, threshold: Optional[float] = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.threshold = spec.threshold if threshold is None else threshold
        self.device = next(model.parameters()).device
        self.window = model_window(model, spec.max_length)
        self.chunk = spec.long_inputs == "chunk"
        self.stride = spec.chunk_stride
        if spec.kind == "generative":
            self.encoder = PromptEncoder(tokenizer, self.window)
            self.decision = self.encoder.decision_tokens(spec.prompt_format)

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
        names = self.spec.label_names
        verdicts = [Verdict(label=names[int(s >= self.threshold)], flagged=s >= self.threshold, score=s, windows=w)
                    for s, w in zip(scores, windows)]
        if self.spec.kind == "generative" and format_task(self.spec.prompt_format) == "policy" and categories:
            flagged = [i for i, v in enumerate(verdicts) if v.flagged]
            for i, raw in zip(flagged, self._decode([texts[i] for i in flagged], [taxonomies[i] for i in flagged],
                                                    batch_size)):
                parsed = parse_policy_answer(raw, n_categories=count_categories(taxonomies[i]))
                verdicts[i].raw, verdicts[i].categories, verdicts[i].error = raw, parsed.categories, parsed.error
        return verdicts

    def scores(self, texts: Sequence[str], rules: Sequence[Optional[str]], taxonomies: Sequence[Optional[str]],
               tasks: Sequence[Optional[str]], batch_size: int = 16) -> list[float]:
        """Violation probabilities, batched (longest texts first, so padding stays small)."""
        return self.score_windows(texts, rules, taxonomies, tasks, batch_size)[0]

    def score_windows(self, texts: Sequence[str], rules: Sequence[Optional[str]],
                      taxonomies: Sequence[Optional[str]], tasks: Sequence[Optional[str]],
                      batch_size: int = 16) -> tuple[list[float], list[int]]:
        """``(scores, windows)``: the violation probability of each text (the maximum over its windows)
        and how many windows it took (1 = it fit; with ``long_inputs="truncate"``, >1 = it was cut)."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out, counts = [0.0] * len(texts), [1] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                if self.spec.kind == "classifier":
                    # a task_and_response input: the classifier sees the task beside the response
                    scores, owner, long = self._score_classifier(
                        [classifier_text(texts[i], tasks[i]) for i in idx], [rules[i] for i in idx])
                else:
                    scores, owner, long = self._score_generative(
                        [texts[i] for i in idx], [rules[i] for i in idx], [taxonomies[i] for i in idx],
                        [tasks[i] for i in idx])
                best: dict[int, float] = {}
                for row, s in zip(owner, scores):
                    best[row] = max(best.get(row, 0.0), float(s))
                for row, i in enumerate(idx):
                    out[i], counts[i] = best[row], long[row]
        return out, counts

    # -- classifier -------------------------------------------------------------------------------

    def _score_classifier(self, texts: list[str], rules: list[Optional[str]]) -> tuple[list[float], list[int], list[int]]:
        pairs = rules if self.spec.pair_rule else None
        room = self.window - 2 - (max(len(self.tokenizer(r or "", add_special_tokens=False)["input_ids"])
                                      for r in pairs) + 1 if pairs else 0)
        enc = classifier_inputs(self.tokenizer, texts, pairs, self.window, chunk=True,
                                stride=min(self.stride, max(0, room // 2)), padding=True, return_tensors="pt")
        owner = enc.pop("overflow_to_sample_mapping").tolist()
        counts = [owner.count(row) for row in range(len(texts))]
        if not self.chunk:  # keep the first window of each text only
            first = sorted({owner.index(row) for row in range(len(texts))})
            enc = {k: v[first] for k, v in enc.items()}
            owner = [owner[i] for i in first]
        enc = {k: v.to(self.device) for k, v in enc.items()}
        return self.model(**enc).logits.float().softmax(-1)[:, 1].tolist(), owner, counts

    # -- generative -------------------------------------------------------------------------------

    def _prompt_windows(self, text: str, rule: Optional[str], taxonomy: Optional[str], task: Optional[str],
                        chunk: bool) -> list[list[int]]:
        reserve = len(self.decision.prefix) + 1
        return [self.encoder.prompt_ids(m) for m in
                self.encoder.fitted_windows(self.spec.prompt_format, text, rule, task, taxonomy, reserve,
                                            chunk=chunk, stride=self.stride)]

    def _prompt_ids(self, text: str, rule: Optional[str], taxonomy: Optional[str], task: Optional[str]) -> list[int]:
        return self._prompt_windows(text, rule, taxonomy, task, chunk=False)[0]

    def _score_generative(self, texts: list[str], rules: list[Optional[str]], taxonomies: list[Optional[str]],
                          tasks: list[Optional[str]]) -> tuple[list[float], list[int], list[int]]:
        prompts, owner, counts = [], [], []
        for row, (text, rule, taxonomy, task) in enumerate(zip(texts, rules, taxonomies, tasks)):
            parts = self._prompt_windows(text, rule, taxonomy, task, chunk=True)
            counts.append(len(parts))
            parts = parts if self.chunk else parts[:1]
            prompts += parts
            owner += [row] * len(parts)
        batch = self._left_pad([p + list(self.decision.prefix) for p in prompts])
        position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = self.model(**batch, position_ids=position_ids, logits_to_keep=1).logits[:, -1]
        pair = logits[:, [self.decision.positive, self.decision.negative]].float()
        return pair.softmax(-1)[:, 0].tolist(), owner, counts

    def _left_pad(self, rows: list[list[int]]) -> dict[str, Any]:
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def _decode(self, texts: list[str], taxonomies: list[Optional[str]], batch_size: int) -> list[str]:
        """Greedy decode of the policy JSON for ``texts`` (categories of flagged rows)."""
        import torch

        answers: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                prompts = [self._prompt_ids(t, None, tax, None) for t, tax in
                           zip(texts[start : start + batch_size], taxonomies[start : start + batch_size])]
                batch = self._left_pad(prompts)
                out = self.model.generate(**batch, max_new_tokens=64, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
                answers += self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return answers
