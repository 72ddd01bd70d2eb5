"""The ``openai`` engine: any OpenAI-compatible chat server.

- :mod:`.backend`: :class:`OpenAICompatBackend`, the batch interface over many requests in flight;
- :mod:`.runtime`: the per-process event loop, SDK client, semaphore and rate limiters;
- :mod:`.wire`: request sizing, backoff and parsing a completion body;
- :mod:`.errors`: what an SDK error means for one request or for the whole engine;
- :mod:`.batch`: provider batch mode (``--batch``): a step's requests as one Batch API job.

Each provider's contract (reasoning models, Azure, Anthropic, Gemini) is its profile in
:mod:`hf_barred.llm.providers`.
"""
