"""The ``local`` engine: a transformers model on CPU or GPU in its own decoding loop.

- :mod:`.engine`: :class:`LocalBackend`, batching and the chat interface;
- :mod:`.decode`: the decoding loop of one micro-batch; :mod:`.prefix`: shared-prefix key/value reuse;
- :mod:`.attention`: SDPA with shared key/value heads on CPU;
- :mod:`.precision`: which precision ``dtype="auto"`` runs; :mod:`.packed`: bfloat16 layers with their
  weights packed once for oneDNN;
- :mod:`.constrained`: JSON-schema constrained decoding with xgrammar.
"""
