"""Many LoRA guardrails on ONE base model, in-process: named peft adapters, mixed-adapter batches.

Every adapter guardrail that shares a base model (and kind) is loaded with ``load_adapter`` onto one
``PeftModel``; a classifier adapter brings its own head (peft's ``modules_to_save``). A batch of
``(guardrail, text)`` rows, whatever the mix of guardrails, is ONE forward pass with
``adapter_names=[...]`` (peft routes each row through its own adapter and head). The windows, the
padding, the forward pass and the score are those of :mod:`hf_barred.guardrails.scoring`, the path that
``Guardrail.from_pretrained(folder)(texts)`` scores through in-process; this module only batches the windows
of many guardrails together (:func:`batch_order`).

:class:`SeparateModels` is the fallback for full-weight folders: one model per guardrail.

Example (two tiny LoRA classifiers on one tiny base, built in seconds):
    >>> import tempfile
    >>> from hf_barred.serve.adapter_pool import AdapterPool
    >>> from hf_barred.serve.guards import ServedGuard
    >>> from hf_barred.train.tiny import make_tiny_lora_classifier
    >>> from hf_barred.train.tiny import make_tiny_classifier
    >>> root = tempfile.mkdtemp()
    >>> texts = ["kill a process", "kill my neighbour"]
    >>> base = make_tiny_classifier(root + "/base", corpus=texts)
    >>> guards = [ServedGuard.load(make_tiny_lora_classifier(base, f"{root}/g{i}", texts, [0, 1], seed=i), name=f"g{i}")
    ...           for i in range(2)]
    >>> pool = AdapterPool(guards)
    >>> verdicts = pool.check([("g0", texts[0]), ("g1", texts[0])])
    >>> len(verdicts), verdicts[0].score != verdicts[1].score
    (2, True)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Optional

from ..guardrails.scoring import Encoded, Verdict, WindowRef, generate_answers, score_batches, windows_of
from .guards import ServedGuard, load_base

Row = tuple[str, str]  # (guardrail name, text)


class AdapterPool:
    """All adapter guardrails of one base model and kind, as named adapters on one model."""

    backend = "adapter-pool"

    def __init__(
        self,
        guards: Sequence[ServedGuard],
        *,
        dtype: Optional[str] = None,
        batch_size: int = 64,
        max_new_tokens: int = 64,
    ):
        from peft import PeftModel

        if not guards:
            raise ValueError("An adapter pool needs at least one guardrail.")
        kinds = {(g.kind, g.base_path) for g in guards}
        if len(kinds) != 1 or not all(g.adapter for g in guards):
            raise ValueError(f"An adapter pool holds LoRA guardrails of one base and kind; found {sorted(kinds)}.")
        self.guards = {g.name: g for g in guards}
        self.kind = guards[0].kind
        self.base_path = guards[0].base_path
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        first, *rest = guards
        for guard in rest:  # rows of all guardrails are padded together: their tokenizers must agree
            if (len(guard.tokenizer), guard.tokenizer.pad_token_id) != (
                len(first.tokenizer),
                first.tokenizer.pad_token_id,
            ):
                raise ValueError(
                    f"Guardrails {first.name} and {guard.name} share the base {self.base_path} but not "
                    "its tokenizer (vocabulary or pad token differ). Fix: serve them separately."
                )
        model = PeftModel.from_pretrained(load_base(first, dtype), str(first.folder), adapter_name=first.name)
        for guard in rest:
            model.load_adapter(str(guard.folder), adapter_name=guard.name)
        self.model = model.eval()
        self.tokenizer = first.tokenizer
        self._lock = threading.Lock()  # one forward pass at a time (the batcher already serialises)

    @property
    def names(self) -> list[str]:
        return list(self.guards)

    def health(self) -> tuple[bool, str]:
        return True, f"{len(self.guards)} adapters on {self.base_path}"

    def check(self, rows: Sequence[Row]) -> list[Verdict]:
        """Verdicts for ``(guardrail, text)`` rows, in order (any mix of this pool's guardrails)."""
        inputs = self._inputs(rows)
        scores = self._scores(rows, inputs)
        verdicts = [self.guards[name].verdict(s, windows=e.spans) for (name, _), s, e in zip(rows, scores, inputs)]
        flagged = [i for i, ((name, _), v) in enumerate(zip(rows, verdicts)) if v.flagged and self.guards[name].policy]
        if flagged:
            for i, raw in zip(flagged, self.decode([rows[i] for i in flagged])):
                verdicts[i] = self.guards[rows[i][0]].verdict(verdicts[i].score, raw, windows=verdicts[i].windows)
        return verdicts

    def scores(self, rows: Sequence[Row]) -> list[float]:
        """Violation probabilities (an input's highest window), ``batch_size`` windows per mixed-adapter pass,
        in :func:`batch_order`."""
        return self._scores(rows, self._inputs(rows))

    def decode(self, rows: Sequence[Row]) -> list[str]:
        """Greedy policy JSON for flagged rows of policy guardrails (their violated categories)."""
        answers: list[str] = []
        with self._lock:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                prompts = [self.guards[n].prompt_ids(t) for n, t in chunk]
                answers += generate_answers(
                    self.model, self.tokenizer, prompts, self.max_new_tokens, **self._adapters([n for n, _ in chunk])
                )
        return answers

    # -- internals --------------------------------------------------------------------------------

    def _inputs(self, rows: Sequence[Row]) -> list[Encoded]:
        """Each row's windows, encoded by its guardrail (one tokenizer call per guardrail)."""
        by_guard: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(rows):
            by_guard.setdefault(name, []).append(i)
        out: list[Any] = [None] * len(rows)
        for name, idx in by_guard.items():
            for i, encoded in zip(idx, self.guards[name].inputs([rows[i][1] for i in idx])):
                out[i] = encoded
        return out

    def _scores(self, rows: Sequence[Row], inputs: list[Encoded]) -> list[float]:
        windows: list[WindowRef] = windows_of(inputs, range(len(rows)))
        order = batch_order(
            [len(inputs[i].windows[k]["input_ids"]) for i, k in windows], [rows[i][0] for i, _ in windows]
        )
        batches = [
            [windows[j] for j in order[start : start + self.batch_size]]
            for start in range(0, len(order), self.batch_size)
        ]
        decisions = [self.guards[name].decision for name, _ in rows] if self.kind == "generative" else None
        with self._lock:
            return score_batches(
                self.model,
                self.tokenizer,
                self.kind,
                inputs,
                batches,
                decisions,
                lambda owners: self._adapters([rows[i][0] for i in owners]),
            )

    def _adapters(self, names: list[str]) -> dict[str, Any]:
        """Forward kwargs for rows of ``names``: one adapter -> make it active (peft's plain path, no
        per-layer gather/scatter); several -> ``adapter_names`` (peft's mixed-batch path)."""
        if len(set(names)) == 1:
            self.model.set_adapter(names[0])
            return {}
        return {"adapter_names": names}


class SeparateModels:
    """Full-weight guardrails, each its own model (they share nothing to batch across)."""

    backend = "in-process"

    def __init__(self, guards: Sequence[ServedGuard], *, dtype: Optional[str] = None, batch_size: int = 32):
        self.guards = {g.name: g for g in guards}
        self.models = {g.name: g.load_model(dtype) for g in guards}
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.guards)

    def health(self) -> tuple[bool, str]:
        return True, f"{len(self.models)} separate models"

    def check(self, rows: Sequence[Row]) -> list[Verdict]:
        out: list[Any] = [None] * len(rows)
        by_guard: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(rows):
            by_guard.setdefault(name, []).append(i)
        with self._lock:
            for name, idx in by_guard.items():
                for i, verdict in zip(idx, self.models[name]([rows[i][1] for i in idx], batch_size=self.batch_size)):
                    out[i] = verdict
        return out


def batch_order(lengths: Sequence[int], adapters: Sequence[str], bucket: int = 32) -> list[int]:
    """Row order for batching: longest first by ``bucket``-token length band, then by adapter within a band.

    Padding stays small (a batch spans about one band), and a batch holds few distinct adapters: peft's
    mixed-adapter forward loops over the distinct adapters of a batch in every LoRA layer, so 64 rows
    of 4 adapters cost about half as much as 64 rows of 32 (measured on 32 MiniLM adapters, CPU).

    Example:
        >>> batch_order([5, 40, 6, 41], ["b", "a", "a", "b"])
        [1, 3, 2, 0]
    """
    return sorted(range(len(lengths)), key=lambda i: (-(lengths[i] // bucket), adapters[i], -lengths[i]))
