"""Run a trained guardrail: ``Guardrail.from_pretrained(path_or_repo_id)(texts) -> verdicts``.

A classifier guardrail scores with its sequence-classification head. A generative guardrail scores
a whole batch with ONE forward pass: after the classification prompt of :mod:`hf_barred.guardrails.formats`
(plus the answer tokens common to both answers), the violation score is
``P("1") / (P("1") + P("0"))`` — for the policy JSON, ``P("unsafe")`` against ``P("safe")`` at the
rating. No sampling. With a taxonomy, the rows flagged unsafe are then greedy-decoded for the
violated categories. An input longer than the model's window is scored window by window (overlapping
by ``chunk_stride`` tokens) and gets the highest window score, unless the guardrail was trained with
``--long_inputs truncate``; :meth:`Guardrail.score_windows` says how many windows each input took. The
scoring itself is :mod:`hf_barred.guardrails.scoring`, which ``barred serve`` scores through too.

Saving, loading and pushing go through ``huggingface_hub.ModelHubMixin``: :meth:`Guardrail.save_pretrained`
writes the folder format of ``barred train`` (the weights or the LoRA adapter, the tokenizer,
``guardrail_config.json`` and the ``README.md`` card it was loaded with), :meth:`Guardrail.from_pretrained`
reads such a folder or a Hub repo, :meth:`Guardrail.push_to_hub` uploads one.

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
    >>> rows = Dataset.from_dict({"text": texts, "label": ["safe", "unsafe"] * 4})
    >>> _ = train_guardrail(cfg, rows)  # doctest: +ELLIPSIS
    {'train_runtime': ...}
    >>> guard = Guardrail.from_pretrained(folder + "/guard")
    >>> verdict = guard(["How do I kill a Python process?"])[0]
    >>> verdict.label in ("safe", "unsafe"), 0.0 <= verdict.score <= 1.0
    (True, True)
    >>> guard.save_pretrained(folder + "/copy")  # weights, tokenizer, guardrail_config.json, README.md
    >>> Guardrail.from_pretrained(folder + "/copy")(["How do I kill a Python process?"])[0].score == verdict.score
    True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from huggingface_hub import ModelHubMixin

from .encoding import DecisionTokens, PromptEncoder
from .formats import format_task
from .loading import guardrail_folder, is_local, load_for_inference, load_tokenizer, model_window, resolve_base_model
from .scoring import Scorer, Verdict, generate_answers, score_batches, verdict, windows_of
from .spec import GuardrailSpec

__all__ = ["Guardrail", "PerRow", "Verdict", "per_row"]

PerRow = Union[None, str, Sequence[Optional[str]]]
CARD_FILE = "README.md"


def per_row(value: PerRow, n: int, name: str) -> list[Optional[str]]:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"Expected one {name} per text ({n}), found {len(values)}. Pass one string for all rows.")
    return values


class Guardrail(ModelHubMixin, library_name="hf_barred", tags=["hf-barred", "guardrail"]):
    """A loaded guardrail model (see the module docstring); it scores through :mod:`.scoring`. ``card``: the
    text of the ``README.md`` it was loaded with (saved and pushed with it), or None."""

    def __init__(self, model: Any, tokenizer: Any, spec: GuardrailSpec, threshold: Optional[float] = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.threshold = spec.threshold if threshold is None else threshold
        self.device = next(model.parameters()).device
        self.scorer = Scorer(tokenizer, spec, model_window(model, spec.max_length))
        self.card: Optional[str] = None

    # The mixin never writes its config.json: a guardrail's config is guardrail_config.json, and config.json
    # (if any) belongs to the transformers model.
    @property
    def _hub_mixin_config(self) -> None:
        return None

    @_hub_mixin_config.setter
    def _hub_mixin_config(self, value: Any) -> None:
        pass

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

    # -- save, load, push (huggingface_hub.ModelHubMixin) ------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        device: Optional[str] = None,
        threshold: Optional[float] = None,
        dtype: Optional[str] = None,
        **hub_kwargs: Any,
    ) -> Guardrail:
        """Load from a folder made by ``barred train`` (or :meth:`save_pretrained`) or from a Hub repo (pushed
        with ``--push_to_hub`` or :meth:`push_to_hub`). ``device``: default cuda when there is one;
        ``threshold``: default the saved one; ``dtype``: the weights' (default as saved); ``hub_kwargs``:
        ``revision``, ``token``, ``cache_dir``, ``force_download``, ``local_files_only``."""
        source = pretrained_model_name_or_path
        if is_local(source):  # a path must hold a guardrail: the expected/found/fix error, not a Hub lookup
            source = guardrail_folder(source)
        with _no_config_json_warning():
            return super().from_pretrained(source, device=device, threshold=threshold, dtype=dtype, **hub_kwargs)

    # huggingface_hub documents overriding _from_pretrained with named loading arguments, but types the base
    # with **model_kwargs: an override that takes only named arguments cannot match it
    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        revision: Optional[str],
        cache_dir: Any,
        force_download: bool,
        local_files_only: bool,
        token: Any,
        device: Optional[str] = None,
        threshold: Optional[float] = None,
        dtype: Optional[str] = None,
    ) -> Guardrail:
        import torch

        folder = guardrail_folder(
            model_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
        )
        spec = GuardrailSpec.load(folder)
        tokenizer = load_tokenizer(str(folder), spec.kind)
        model = load_for_inference(folder, spec.kind, spec.base_model, spec.adapter, dtype)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        guard = cls(model.to(device), tokenizer, spec, threshold)
        if (folder / CARD_FILE).is_file():
            guard.card = (folder / CARD_FILE).read_text(encoding="utf-8")
        return guard

    def _save_pretrained(self, save_directory: Path) -> None:
        """The folder format of ``barred train``: the weights (or the adapter), the tokenizer,
        ``guardrail_config.json`` and the card (without one, ``save_pretrained`` writes the mixin's)."""
        self.model.save_pretrained(str(save_directory))
        card = save_directory / CARD_FILE
        card.unlink(missing_ok=True)  # peft writes a generic card: a guardrail's card is its own
        if self.card is not None:
            card.write_text(self.card, encoding="utf-8")
        self.tokenizer.save_pretrained(str(save_directory))
        self.spec.save(save_directory)

    @classmethod
    def zero_shot(
        cls,
        model: str = "embedded",
        *,
        rule: Optional[str] = None,
        taxonomy: Optional[str] = None,
        label_names: Sequence[str] = ("safe", "unsafe"),
        threshold: float = 0.5,
        device: Optional[str] = None,
        max_length: int = 1024,
    ) -> Guardrail:
        """A causal LM that has not been fine-tuned, scored like a generative guardrail (the
        probabilities of its answer tokens after the same prompt): a baseline that never fails to
        parse. ``model``: a Hub id, a folder, or ``"embedded"`` (SmolLM2-135M-Instruct)."""
        import torch

        path = resolve_base_model(model, "generative")
        spec = GuardrailSpec(
            kind="generative",
            prompt_format="policy" if taxonomy else "a4",
            base_model=model,
            rule=rule,
            taxonomy=taxonomy,
            label_names=list(label_names),
            threshold=threshold,
            max_length=max_length,
        )
        loaded = load_for_inference(path, "generative", model, adapter=False)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(loaded.to(device), load_tokenizer(path, "generative"), spec)

    # -- scoring --------------------------------------------------------------------------------

    def __call__(
        self,
        texts: Union[str, Sequence[str]],
        rule: PerRow = None,
        taxonomy: PerRow = None,
        task: PerRow = None,
        batch_size: int = 16,
        categories: bool = True,
    ) -> list[Verdict]:
        """Verdicts for ``texts``, in order. ``rule``/``taxonomy``/``task``: one string for all texts,
        one per text, or ``None`` for the guardrail's own. ``categories=False`` skips decoding the
        violated categories of a policy guardrail (scores only)."""
        if isinstance(texts, str):
            texts = [texts]
        n = len(texts)
        rules = [r or self.spec.rule for r in per_row(rule, n, "rule")]
        taxonomies = [t or self.spec.taxonomy for t in per_row(taxonomy, n, "taxonomy")]
        tasks = per_row(task, n, "task")
        if (
            (self.spec.pair_rule or self.spec.kind == "generative")
            and format_task(self.spec.prompt_format) == "binary"
            and not all(rules)
        ):
            raise ValueError(
                "This guardrail reads a rule with each text, and it has no default rule; found texts "
                "without one. Fix: pass rule='...' (one for all texts) or one rule per text."
            )
        scores, windows = self.score_windows(texts, rules, taxonomies, tasks, batch_size)
        verdicts = [verdict(self.spec, s, self.threshold, windows=w) for s, w in zip(scores, windows)]
        if self.spec.kind == "generative" and format_task(self.spec.prompt_format) == "policy" and categories:
            flagged = [i for i, v in enumerate(verdicts) if v.flagged]
            for i, raw in zip(
                flagged, self._decode([texts[i] for i in flagged], [taxonomies[i] for i in flagged], batch_size)
            ):
                verdicts[i] = verdict(
                    self.spec, scores[i], self.threshold, windows=windows[i], raw=raw, taxonomy=taxonomies[i]
                )
        return verdicts

    def scores(
        self,
        texts: Sequence[str],
        rules: Sequence[Optional[str]],
        taxonomies: Sequence[Optional[str]],
        tasks: Sequence[Optional[str]],
        batch_size: int = 16,
    ) -> list[float]:
        """Violation probabilities, batched (longest texts first, so padding stays small)."""
        return self.score_windows(texts, rules, taxonomies, tasks, batch_size)[0]

    def score_windows(
        self,
        texts: Sequence[str],
        rules: Sequence[Optional[str]],
        taxonomies: Sequence[Optional[str]],
        tasks: Sequence[Optional[str]],
        batch_size: int = 16,
    ) -> tuple[list[float], list[int]]:
        """``(scores, windows)``: the violation probability of each text (the maximum over its windows)
        and how many windows it took (1 = it fit; with ``long_inputs="truncate"``, >1 = it was cut).
        One forward pass per ``batch_size`` texts, longest first (padding stays small)."""
        inputs = self.scorer.encode(texts, rules, taxonomies, tasks)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [windows_of(inputs, order[start : start + batch_size]) for start in range(0, len(order), batch_size)]
        scores = score_batches(
            self.model,
            self.tokenizer,
            self.spec.kind,
            inputs,
            batches,
            [self.decision] * len(inputs) if self.decision else None,
        )
        return scores, [i.spans for i in inputs]

    def _decode(self, texts: list[str], taxonomies: list[Optional[str]], batch_size: int) -> list[str]:
        """Greedy decode of the policy JSON for ``texts`` (categories of flagged rows)."""
        answers: list[str] = []
        for start in range(0, len(texts), batch_size):
            answers += generate_answers(
                self.model,
                self.tokenizer,
                [
                    self.scorer.prompt_ids(t, taxonomy=tax)
                    for t, tax in zip(texts[start : start + batch_size], taxonomies[start : start + batch_size])
                ],
            )
        return answers


class _ConfigJsonNotFound(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("config.json not found")


@contextlib.contextmanager
def _no_config_json_warning() -> Iterator[None]:
    """Silence the mixin's "config.json not found" while a guardrail loads: an adapter folder has none."""
    hub_logger, quiet = logging.getLogger("huggingface_hub.hub_mixin"), _ConfigJsonNotFound()
    hub_logger.addFilter(quiet)
    try:
        yield
    finally:
        hub_logger.removeFilter(quiet)
