"""The engines behind :class:`~hf_barred.llm.base.Backend`, one subpackage each:
:mod:`.local` (transformers in its own decoding loop, the embedded model), :mod:`.openai` (any
OpenAI-compatible server) and :mod:`.vllm` (in-process vLLM). :func:`hf_barred.llm.build_backend`
imports the one a config names, on first use.
"""
