"""The ``vllm`` engine: in-process vLLM (:mod:`.engine`), one batched ``LLM.chat`` per ``chat`` call."""
