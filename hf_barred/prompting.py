"""Prompt templates: versioned Jinja files under ``hf_barred/prompts/<stage>/<version>.jinja``.

A template may hold a whole short conversation (a worked example helps small models answer in
JSON): lines ``<<system>>``, ``<<user>>`` and ``<<assistant>>`` start a message, and
:func:`split_chat` turns the rendered text into chat messages. Variables are data: they are
rendered into a message's content, never parsed as role markers of their own (see
:func:`split_chat`, which splits the *template's* lines).

Example:
    >>> from hf_barred.prompting import load_prompt, split_chat
    >>> prompt = load_prompt("generate", "v1")
    >>> prompt.version, "criterion" in prompt.text
    ('v1', True)
    >>> [m["role"] for m in split_chat("<<user>>\\nhi\\n<<assistant>>\\n{}\\n<<user>>\\nnow you")]
    ['user', 'assistant', 'user']
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2

from .llm.base import Conversation

__all__ = ["Prompt", "load_prompt", "split_chat"]

_ROLE_LINE = re.compile(r"^<<(system|user|assistant)>>[ \t]*$", re.MULTILINE)
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class Prompt:
    """One prompt template file: ``hf_barred/prompts/<name>/<version>.jinja``."""

    name: str
    version: str
    text: str

    @functools.cached_property
    def template(self) -> jinja2.Template:
        return _JINJA.from_string(self.text)

    def render(self, **variables: Any) -> str:
        return self.template.render(**variables).strip()

    def messages(self, **variables: Any) -> list[dict[str, str]]:
        """The rendered template as a one-message conversation."""
        return [{"role": "user", "content": self.render(**variables)}]

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"


@functools.lru_cache(maxsize=None)
def load_prompt(name: str, version: str) -> Prompt:
    """Load a packaged prompt template; a clear error names the versions that exist."""
    folder = resources.files("hf_barred") / "prompts" / name
    path = folder / f"{version}.jinja"
    if not path.is_file():
        available = sorted(p.name.removesuffix(".jinja") for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(
            f"no prompt template {name}/{version}.jinja: expected one of the versions {available} "
            f"in hf_barred/prompts/{name}/. Pick an existing prompt_version or add the file."
        )
    return Prompt(name=name, version=version, text=path.read_text(encoding="utf-8"))


def split_chat(text: str) -> Conversation:
    """A rendered template as chat messages (see the module doc); no marker: one user message."""
    marks = list(_ROLE_LINE.finditer(text))
    if not marks:
        return [{"role": "user", "content": text.strip()}]
    messages = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        messages.append({"role": mark.group(1), "content": text[mark.end() : end].strip()})
    return messages
