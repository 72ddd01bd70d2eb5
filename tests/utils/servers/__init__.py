"""Real servers on loopback for offline tests (OpenAI protocol, ...)."""
