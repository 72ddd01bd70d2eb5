"""The answers stages ask an LLM for: their sizes, so a constrained answer can always close.

Example:
    >>> from hf_barred.answers import string_budget
    >>> string_budget(128, fields=2, overhead_tokens=10)
    177
"""

from __future__ import annotations

__all__ = ["string_budget"]


def string_budget(max_tokens: int, fields: int = 1, overhead_tokens: int = 0) -> int:
    """The ``maxLength`` of each of ``fields`` JSON strings that, with ``overhead_tokens`` of keys
    and punctuation, lets a constrained answer close within ``max_tokens`` (at a conservative 3
    characters per token; English runs at about 4).

    >>> string_budget(128, fields=2, overhead_tokens=10)
    177
    """
    return max(8, (max_tokens - overhead_tokens) * 3 // fields)
