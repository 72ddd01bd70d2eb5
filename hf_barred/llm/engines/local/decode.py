"""The ``local`` engine's decoding loop: one micro-batch of prompts, token by token.

What it does that a plain ``model.generate`` does not:

- **Prefix reuse.** Each row starts from the keys and values of a prompt prefix it shares with
  other prompts, kept in a :class:`~hf_barred.llm.engines.local.prefix.PrefixCache`; only the rest of the
  prompt (its tail) is run through the model.
- **Finished rows leave the batch.** A row that ended (end-of-turn token, stop string or
  ``max_new_tokens``) is reported at once through ``on_row``; once a quarter of the batch is done,
  those rows are dropped from the batch and its key/value cache, so few steps compute tokens that
  are thrown away.
- **Reserved key/value storage.** Each layer's keys and values are written into storage sized for
  the whole answer, instead of being copied into a longer tensor at every step.
- **Per-row seeds.** A sampled row draws from its own generator, seeded from the call's seed and
  the row's prompt, so its answer does not depend on which prompts share its micro-batch.

Greedy decoding picks the same tokens as ``model.generate`` (up to float rounding: a shared
prefix is computed in a separate, smaller matrix product; the tests check that the tokens agree).

Example:
    >>> from hf_barred.llm.engines.local.decode import TokenPicker
    >>> import torch
    >>> TokenPicker(temperature=0.0, top_p=1.0, seeds=[None])(torch.tensor([[0.1, 2.0, 0.3]]), [0])
    [1]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Optional, cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .prefix import PrefixCache

RowCallback = Callable[[int, list[int], str], None]
"""``on_row(row, tokens, finish_reason)``: a row of the micro-batch is done."""


def row_seed(seed: int, prompt: Sequence[int]) -> int:
    """A 63-bit seed for one row: the call's ``seed`` mixed with the row's prompt tokens."""
    digest = hashlib.blake2b(f"{seed}:{','.join(map(str, prompt))}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TokenPicker:
    """Chooses each row's next token: argmax when ``temperature == 0``, else temperature and
    nucleus (``top_p``) filtering as transformers' warpers do, then one draw from the row's
    distribution by its own generator (``seeds[row]``; None: torch's global generator)."""

    def __init__(self, temperature: float, top_p: float, seeds: Sequence[Optional[int]]):
        self.temperature = temperature
        self.top_p = top_p
        self.generators: list[Optional[torch.Generator]] = [
            None if seed is None else torch.Generator().manual_seed(seed) for seed in seeds
        ]

    def __call__(self, logits: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Next tokens for ``logits`` (one row per entry of ``rows``, the rows' indices)."""
        if self.temperature == 0:
            return logits.argmax(dim=-1).tolist()
        scores = logits / self.temperature
        if self.top_p < 1.0:  # drop the least likely tokens whose total mass is below 1 - top_p
            ordered, order = torch.sort(scores, descending=False)
            drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - self.top_p
            drop[..., -1:] = False  # keep the most likely token
            scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
        # Inverse-CDF sampling: one uniform draw per row from the row's generator, one batched search.
        cdf = scores.softmax(dim=-1).cumsum(dim=-1)
        draws = torch.cat([torch.rand(1, generator=self.generators[row]) for row in rows]).to(cdf.device)
        chosen = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None], right=True)[:, 0]
        return chosen.clamp_(max=cdf.shape[-1] - 1).tolist()


class _ReservedLayer(DynamicLayer):
    """A key/value cache layer that writes into storage reserved for ``capacity`` positions,
    instead of copying the whole cache at each step as ``DynamicLayer`` does (``torch.cat``)."""

    def __init__(self, capacity: int, keys: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None):
        super().__init__()
        self.capacity = capacity
        if keys is not None and values is not None and keys.shape[-2]:
            self._reserve(keys, values)
            self._k[:, :, : keys.shape[-2]], self._v[:, :, : keys.shape[-2]] = keys, values
            self.keys, self.values = self._k[:, :, : keys.shape[-2]], self._v[:, :, : keys.shape[-2]]

    def _reserve(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.lazy_initialization(keys, values)
        self._k = keys.new_empty((*keys.shape[:2], self.capacity, keys.shape[3]))
        self._v = values.new_empty((*values.shape[:2], self.capacity, values.shape[3]))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self._reserve(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        self._k[:, :, start:end], self._v[:, :, start:end] = key_states, value_states
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        length = self.get_seq_length()
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]


def _reserved_cache(cache: Optional[DynamicCache], config: Any, capacity: int) -> DynamicCache:
    """``cache`` (or an empty one) with every layer moved into storage for ``capacity`` positions
    (layers of other kinds, such as sliding windows, are left as they are)."""
    fresh = cache is None
    cache = DynamicCache(config=config) if cache is None else cache
    if all(type(layer) is DynamicLayer for layer in cache.layers):
        layers = cast(list[DynamicLayer], cache.layers)  # checked just above
        cache.layers = [
            _ReservedLayer(capacity) if fresh else _ReservedLayer(capacity, layer.keys, layer.values)
            for layer in layers
        ]
    return cache


def _first_inputs(prompts: Sequence[Sequence[int]], depths: Sequence[int], width: int, pad_id: int, device: Any):
    """The tails (after each row's ``depths[i]`` cached tokens, themselves left-padded to
    ``width``), left-padded; the attention mask over cache + tails; the tails' positions."""
    tails = [p[d:] for p, d in zip(prompts, depths)]
    tail_width = max(len(t) for t in tails)
    ids = torch.full((len(prompts), tail_width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width + tail_width), dtype=torch.long)
    for i, (tail, d) in enumerate(zip(tails, depths)):
        ids[i, tail_width - len(tail) :] = torch.tensor(tail, dtype=torch.long)
        mask[i, width - d : width] = 1
        mask[i, width + tail_width - len(tail) :] = 1
    positions = (mask.cumsum(-1) - 1)[:, width:]
    positions.masked_fill_(mask[:, width:] == 0, 1)
    return ids.to(device), mask.to(device), positions.to(device)


def decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    pick: TokenPicker,
    grammar: Any = None,
    stopped: Optional[Callable[[int, list[int]], bool]] = None,
    prefix_cache: Optional[PrefixCache] = None,
    prefix_depths: Optional[Sequence[int]] = None,
    on_row: Optional[RowCallback] = None,
) -> list[tuple[list[int], str]]:
    """Generate for every prompt; returns ``(tokens, finish_reason)`` per prompt, in order.

    ``grammar`` (a :class:`~hf_barred.llm.engines.local.constrained.GrammarRows`) masks and follows each
    row's tokens; ``stopped(row, tokens)`` says whether a stop string was reached. Row ``i``
    starts from the keys and values of its first ``prefix_depths[i]`` tokens, taken from
    ``prefix_cache`` (see :func:`~hf_barred.llm.engines.local.prefix.shared_depths`). The finishing token
    (end-of-turn) is part of ``tokens``.
    """
    device = model.device
    depths = [0] * len(prompts) if prefix_cache is None else list(prefix_depths or [0] * len(prompts))
    cache, width = prefix_cache.batch_cache(prompts, depths) if prefix_cache is not None and any(depths) else (None, 0)
    ids, mask, positions = _first_inputs(prompts, depths, width, pad_id, device)
    cache = _reserved_cache(cache, model.config, mask.shape[1] + max_new_tokens)
    next_position = mask.sum(dim=-1, keepdim=True)
    rows = list(range(len(prompts)))  # the prompt index of each batch row
    tokens: list[list[int]] = [[] for _ in prompts]
    finish: list[Optional[str]] = [None] * len(prompts)
    with torch.inference_mode():
        while True:
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :].float()
            if grammar is not None:
                grammar.mask(logits, rows)
            chosen = pick(logits, rows)
            for row, token in zip(rows, chosen):
                if finish[row] is not None:  # done, still in the batch until the next compaction
                    continue
                tokens[row].append(token)
                if grammar is not None:
                    grammar.accept(row, token)
                if token in eos_ids or (stopped is not None and stopped(row, tokens[row])):
                    finish[row] = "stop"
                elif len(tokens[row]) >= max_new_tokens:
                    finish[row] = "length"
                reason = finish[row]
                if reason is not None:
                    if grammar is not None:
                        grammar.release(row)
                    if on_row is not None:
                        on_row(row, tokens[row], reason)
            keep = [k for k, row in enumerate(rows) if finish[row] is None]
            if not keep:
                break
            # Dropping rows copies the cache: worth it once a quarter of the batch is done.
            if len(rows) - len(keep) >= max(1, len(rows) // 4):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, next_position = mask[index], next_position[index]
                rows, chosen = [rows[k] for k in keep], [chosen[k] for k in keep]
            ids = torch.tensor(chosen, dtype=torch.long, device=device)[:, None]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            positions, next_position = next_position, next_position + 1
    return [(t, f or "length") for t, f in zip(tokens, finish)]
