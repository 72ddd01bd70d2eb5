"""``barred serve``: many guardrails behind one OpenAI-style moderation API.

- :mod:`.guards` what the server reads from a saved guardrail folder (the one module coupled to it);
- :mod:`.adapter_pool` LoRA guardrails of one base as named peft adapters, mixed-adapter batches;
- :mod:`.vllm_backend` generative LoRA guardrails on one ``vllm serve --enable-lora`` per base;
- :mod:`.batching` micro-batching of close-together requests;
- :mod:`.registry` routing a check to the backends; :mod:`.launch` building them and running uvicorn;
- :mod:`.app` the FastAPI app; :mod:`.schemas` its bodies; :mod:`.security` key, limits, errors.

The client side is :class:`hf_barred.guardrails.remote.RemoteGuardrail`.
"""
