"""User text in Markdown card bodies, rendered so that it cannot break the card.

Rules, seeds, names and paths come from users (and from models): put into a card as they are, a
line of ```` ``` ````, a ``#`` heading, a ``|`` table cell or an ``<img onerror=...>`` would change the
card. These filters render such text inert:

- :func:`fenced` — a block of text in a code fence longer than any run of backticks or tildes in
  it (CommonMark shows a fence's content literally; no HTML, no Markdown);
- :func:`inline_code` — a code span whose backtick run is longer than any inside, on one line;
- :func:`inline_text` — plain text on one line, HTML escaped and its Markdown punctuation escaped.

Example:
    >>> from hf_barred.hub.markdown import fenced, inline_code, inline_text
    >>> print(fenced("a\\n```\\n# not a heading"))
    ````text
    a
    ```
    # not a heading
    ````
    >>> inline_code("say `hi`"), inline_text("<img src=x onerror=alert(1)> *bold*")
    ('`` say `hi` ``', '&lt;img src=x onerror=alert\\\\(1\\\\)&gt; \\\\*bold\\\\*')
"""

from __future__ import annotations

import html
import re

__all__ = ["fenced", "inline_code", "inline_text", "jinja_filters"]

_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def fenced(text: str, info: str = "text") -> str:
    """``text`` in a code fence (backticks) longer than any backtick or tilde run it contains (at least 3)."""
    longest = max((len(run) for run in re.findall(r"`+|~+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip(chr(10))}\n{fence}"


def inline_code(text: str) -> str:
    """``text`` as a one-line code span that no backtick inside can close."""
    flat = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if longest or flat.startswith("`") or flat.endswith("`") else ""
    return f"{ticks}{pad}{flat}{pad}{ticks}"


def inline_text(text: str) -> str:
    """``text`` on one line, HTML escaped and with Markdown punctuation backslash-escaped."""
    flat = " ".join(str(text).split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(flat, quote=False))


def jinja_filters() -> dict:
    """The filters above by name, for ``DatasetCard.from_template``'s Jinja environment."""
    return {"fenced": fenced, "inline_code": inline_code, "inline_text": inline_text}
