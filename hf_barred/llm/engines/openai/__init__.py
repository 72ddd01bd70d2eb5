"""The ``openai`` engine: any OpenAI-compatible chat server.

- :mod:`.backend`: :class:`OpenAICompatBackend`, the batch interface over many requests in flight;
- :mod:`.runtime`: the per-process event loop, SDK client, semaphore and rate limiters;
- :mod:`.wire`: request sizing, backoff and parsing a completion body;
- :mod:`.errors`: what an SDK error means for one request or for the whole engine.
"""
