"""The key/value cache of shared prompt prefixes, for the ``local`` engine.

A stage's prompts share prefixes: the chat template and instructions of a stage, the persona of
a judge, the sample that several judges read. :class:`PrefixCache` keeps the keys and values of
such prefixes (batch 1, up to ``max_bytes``, least recently used dropped first) like a radix
tree: a new prefix starts from the stored one that shares most tokens with it (its keys and
values for those tokens are the same, attention being causal), and only the rest is run through
the model. :func:`shared_depths` decides which prefix of each prompt is worth keeping: the
longest it shares with another prompt of the call or with a stored prefix.

Example:
    >>> from hf_barred.llm.engines.local.prefix import common_prefix_length, shared_depths
    >>> common_prefix_length([1, 2, 3, 4], [1, 2, 5])
    2
    >>> shared_depths([[1, 2, 3, 4], [1, 2, 3, 5, 6], [7, 8]], min_tokens=2)
    [3, 3, 0]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]
"""Keys and values of one token sequence: one ``(keys, values)`` pair per layer, batch 1."""


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


def shared_depths(
    prompts: Sequence[Sequence[int]], stored: Iterable[Sequence[int]] = (), min_tokens: int = 16
) -> list[int]:
    """For each prompt, the length of its longest prefix shared with another prompt or a
    ``stored`` sequence; at most its length - 1 (a tail is left to run) and 0 below ``min_tokens``."""
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))  # neighbours share most
    depth = [0] * len(prompts)
    for a, b in zip(order, order[1:]):
        shared = common_prefix_length(prompts[a], prompts[b])
        depth[a], depth[b] = max(depth[a], shared), max(depth[b], shared)
    stored = list(stored)
    for i, prompt in enumerate(prompts):
        for key in stored:
            depth[i] = max(depth[i], common_prefix_length(prompt, key))
    capped = [min(d, len(p) - 1) for d, p in zip(depth, prompts)]
    return [d if d >= min_tokens else 0 for d in capped]


class PrefixCache:
    """Keys and values of recently used prompt prefixes (batch 1, on the model's device)."""

    def __init__(self, model: Any, max_bytes: int = 512 * 2**20, min_tokens: int = 16):
        self.model = model
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self.reused_tokens = 0  # prefix tokens taken from memory instead of run through the model
        self.computed_tokens = 0  # prefix tokens run through the model

    def keys(self) -> list[tuple[int, ...]]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def kv(self, prefix: Sequence[int]) -> KV:
        """Keys and values of ``prefix`` (batch 1), from the best stored prefix plus a forward
        pass over the tokens it lacks; the result is stored."""
        prefix = tuple(prefix)
        if prefix in self._entries:
            self._entries.move_to_end(prefix)
            self.reused_tokens += len(prefix)
            return self._entries[prefix]
        known, base = 0, None
        for key, layers in self._entries.items():
            shared = common_prefix_length(key, prefix)
            if shared > known:
                known, base = shared, layers
        self.reused_tokens += known
        self.computed_tokens += len(prefix) - known
        if base is not None and known == len(prefix):  # the start of a longer stored prefix
            layers = [(k[:, :, :known], v[:, :, :known]) for k, v in base]
        else:
            layers = self._extend(base, known, prefix)
        self._entries[prefix] = layers
        self._evict()
        return layers

    def _extend(self, base: KV | None, known: int, prefix: tuple[int, ...]) -> KV:
        """Keys and values of ``prefix``: ``base``'s first ``known`` positions, then the rest run."""
        cache = DynamicCache(config=self.model.config)
        if base is not None:
            cache = DynamicCache(ddp_cache_data=[(k[:, :, :known], v[:, :, :known]) for k, v in base])
        device = self.model.device
        with torch.inference_mode():
            self.model(
                input_ids=torch.tensor([prefix[known:]], dtype=torch.long, device=device),
                attention_mask=torch.ones(1, len(prefix), dtype=torch.long, device=device),
                position_ids=torch.arange(known, len(prefix), device=device)[None],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        # the attention layers of a DynamicCache, every one filled by the forward pass over the prefix
        layers = cast(list[DynamicLayer], cache.layers)
        return [(cast(torch.Tensor, layer.keys), cast(torch.Tensor, layer.values)) for layer in layers]

    def _evict(self) -> None:
        def size(layers: KV) -> int:
            return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)

        total = sum(size(layers) for layers in self._entries.values())
        while len(self._entries) > 1 and total > self.max_bytes:
            _, layers = self._entries.popitem(last=False)
            total -= size(layers)

    def batch_cache(self, prompts: Sequence[Sequence[int]], depths: Sequence[int]) -> tuple[DynamicCache, int]:
        """A cache for a batch whose row ``i`` starts with ``prompts[i][:depths[i]]``, rows
        left-padded to the longest of those prefixes; returns it and that padded width."""
        width = max(depths)
        rows = [self.kv(p[:d]) if d else None for p, d in zip(prompts, depths)]
        template = next(r for r in rows if r is not None)
        layers = []
        for layer, (k0, v0) in enumerate(template):
            keys = k0.new_zeros((len(prompts), k0.shape[1], width, k0.shape[3]))
            values = v0.new_zeros((len(prompts), v0.shape[1], width, v0.shape[3]))
            for i, (row, d) in enumerate(zip(rows, depths)):
                if row is not None:
                    keys[i, :, width - d :] = row[layer][0][0]
                    values[i, :, width - d :] = row[layer][1][0]
            layers.append((keys, values))
        return DynamicCache(ddp_cache_data=layers), width
