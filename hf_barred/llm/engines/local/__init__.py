"""The ``local`` engine: a transformers model on CPU or GPU in its own decoding loop.

- :mod:`.engine`: :class:`LocalBackend`, batching and the chat interface;
- :mod:`.decode`: the decoding loop of one micro-batch; :mod:`.prefix`: shared-prefix key/value reuse;
- :mod:`.attention`: SDPA with shared key/value heads on CPU; :mod:`.precision`: bfloat16 with packed weights;
- :mod:`.constrained`: JSON-schema constrained decoding with xgrammar.
"""
