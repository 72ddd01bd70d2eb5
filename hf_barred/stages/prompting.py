"""Prompt templates and the chat messages built from them, role by role.

Templates are versioned Jinja files, ``hf_barred/stages/prompts/<set>/<stage>/<version>.jinja``, in two
sets side by side (:data:`PROMPT_SETS`): ``small``, short few-shot prompts fitted to the embedded
135M model, and ``served``, zero-shot system/user prompts with the data in tagged sections, for
strong served models (the elements of the BARRED paper's Appendix A). :func:`default_prompt_set`
picks ``small`` on the ``local`` engine and ``served`` on ``openai`` and ``vllm``.

A template is a sequence of Jinja blocks, one per chat message; the block's *name* gives the
message's role: ``system``, ``user`` or ``assistant``, optionally followed by ``_<suffix>``
(``user_example``, ``assistant_example``). :meth:`Prompt.messages` renders each block on its own
into one message's content. The roles therefore come from the template's code only: text from
seeds, datasets or model answers is a variable, rendered into a content, and whatever it holds
(``<<user>>`` lines, ``<|im_start|>`` tokens) it never creates a turn. Chat-template control
tokens written as ``<|...|>`` are also defused in every content (:func:`defuse_control_tokens`),
so that an engine that renders the conversation to text before tokenizing it cannot read them as
special tokens either. A block that renders to nothing (its template condition is false) is left
out; no other text may stand outside a block. A few templates are fragments, text placed inside
a message (:data:`FRAGMENTS`: the judges' personas).

Example:
    >>> from hf_barred.stages.prompting import load_prompt
    >>> prompt = load_prompt("judge", prompt_set="served")
    >>> prompt.id
    'served/judge/v1'
    >>> conversation = prompt.messages(round=1, persona="A careful judge.", persona_name="careful",
    ...                                criterion="Mentions a colour.", input_type="input_block",
    ...                                input_text="<<assistant>>\\nred")
    >>> [m["role"] for m in conversation]
    ['system', 'user']
    >>> "<<assistant>>\\nred" in conversation[1]["content"]
    True
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Optional

import jinja2
from jinja2 import nodes

from ..llm.base import Conversation, defuse_control_tokens

__all__ = [
    "DEFAULT_PROMPT_SETS",
    "FRAGMENTS",
    "PROMPT_SETS",
    "Prompt",
    "check_prompt_set",
    "default_prompt_set",
    "defuse_control_tokens",
    "load_prompt",
    "transcript",
]

PROMPT_SETS: dict[str, dict[str, str]] = {
    "small": {
        "decompose": "v1",
        "instantiate": "v1",
        "generate": "v1",
        "refine": "v1",
        "judge": "v2",
        "advocate": "v1",
        "guideline_edit": "v1",
    },
    "served": {
        "decompose": "v1",
        "instantiate": "v1",
        "generate": "v1",
        "refine": "v1",
        "judge": "v1",
        "advocate": "v1",
        "guideline_edit": "v1",
        "coverage": "v1",
    },
}
"""The prompt sets and the default version of each stage's template in them."""

FRAGMENTS = ("judge_persona",)
"""Templates that are a piece of text inside a message, not a conversation (one file per name:
``prompts/<set>/judge_persona/<persona>.jinja``, the persona's sentence)."""

DEFAULT_PROMPT_SETS = {"local": "small", "openai": "served", "vllm": "served"}
"""The prompt set each engine uses unless one is chosen (``--prompt-set``, ``prompt_set=``)."""

_ROLE_BLOCK = re.compile(r"^(system|user|assistant)(?:_\w+)?$")
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


def default_prompt_set(engine: str) -> str:
    """The prompt set of an engine name (``small`` for ``local``, ``served`` otherwise).

    >>> default_prompt_set("local"), default_prompt_set("vllm")
    ('small', 'served')
    """
    return DEFAULT_PROMPT_SETS.get(engine, "served")


def check_prompt_set(prompt_set: str) -> str:
    """``prompt_set`` if it names a set, else a ValueError saying expected / found / fix."""
    if prompt_set not in PROMPT_SETS:
        raise ValueError(
            f"prompt set: expected one of {sorted(PROMPT_SETS)}, found {prompt_set!r}. "
            "Pick one with --prompt-set small|served (or prompt_set=...)."
        )
    return prompt_set


def _check_layout(text: str, where: str) -> list[tuple[str, str]]:
    """``(block name, role)`` of each top-level block; a ValueError for text outside the blocks,
    nested blocks or a block name that is not a role."""
    tree = _JINJA.parse(text)
    blocks: list[tuple[str, str]] = []
    for node in tree.body:
        if isinstance(node, nodes.Block):
            match = _ROLE_BLOCK.match(node.name)
            if match is None:
                raise ValueError(
                    f"{where}: block {node.name!r} is not a role: expected system, user or assistant, "
                    "optionally followed by _<suffix>."
                )
            if any(True for _ in node.find_all(nodes.Block)):
                raise ValueError(f"{where}: block {node.name!r} holds another block: one block is one message.")
            blocks.append((node.name, match.group(1)))
        elif isinstance(node, nodes.Output) and all(
            isinstance(child, nodes.TemplateData) and not child.data.strip() for child in node.nodes
        ):
            continue
        else:
            raise ValueError(
                f"{where}: text or a statement outside a message block (line {node.lineno}); "
                "every message is a {% block <role> %} ... {% endblock %}."
            )
    if not blocks:
        raise ValueError(f"{where}: no message block; expected {{% block user %}} ... {{% endblock %}} at least.")
    return blocks


@dataclass(frozen=True)
class Prompt:
    """One prompt template file: ``hf_barred/stages/prompts/<prompt_set>/<name>/<version>.jinja``."""

    name: str
    version: str
    text: str
    prompt_set: str = "small"

    @functools.cached_property
    def template(self) -> jinja2.Template:
        return _JINJA.from_string(self.text)

    @functools.cached_property
    def blocks(self) -> list[tuple[str, str]]:
        """``(block name, role)`` of each message block, in the file's order."""
        return _check_layout(self.text, self.id)

    def messages(self, **variables: Any) -> Conversation:
        """The conversation: one message per block that renders to some text, its role the
        block's. ``variables`` are data: they fill contents, never roles."""
        context = self.template.new_context(dict(variables))
        conversation = []
        for name, role in self.blocks:
            content = "".join(self.template.blocks[name](context)).strip()
            if content:
                conversation.append({"role": role, "content": defuse_control_tokens(content)})
        return conversation

    def render(self, **variables: Any) -> str:
        """The conversation as one readable text (:func:`transcript`), for previews and tests."""
        return transcript(self.messages(**variables))

    @property
    def id(self) -> str:
        return f"{self.prompt_set}/{self.name}/{self.version}"


def transcript(conversation: Conversation) -> str:
    """A conversation as text, each message under a ``### role`` heading (for reading only).

    >>> print(transcript([{"role": "user", "content": "hi"}]))
    ### user
    hi
    """
    return "\n\n".join(f"### {m['role']}\n{m['content']}" for m in conversation)


@functools.cache
def load_prompt(name: str, version: Optional[str] = None, prompt_set: str = "small") -> Prompt:
    """Load a packaged prompt template (``version`` None: the set's default, :data:`PROMPT_SETS`);
    a clear error names the versions that exist."""
    check_prompt_set(prompt_set)
    version = version or PROMPT_SETS[prompt_set].get(name, "v1")
    folder = resources.files(__package__) / "prompts" / prompt_set / name
    path = folder / f"{version}.jinja"
    if not path.is_file():
        available = sorted(p.name.removesuffix(".jinja") for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(
            f"no prompt template {prompt_set}/{name}/{version}.jinja: expected one of the versions {available} "
            f"in hf_barred/stages/prompts/{prompt_set}/{name}/. Pick an existing prompt_version or add the file."
        )
    prompt = Prompt(name=name, version=version, text=path.read_text(encoding="utf-8"), prompt_set=prompt_set)
    if name not in FRAGMENTS:
        _ = prompt.blocks  # a malformed template fails here, not in the middle of a map
    return prompt
