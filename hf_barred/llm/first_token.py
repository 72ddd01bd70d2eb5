"""The first answer token's log-probabilities, from each engine: what a logprob-scored judge reads.

- :func:`local_digit_logprobs`: the next-token distribution after the prompt, from the very model the
  ``local`` engine loaded (``get_engine(config).backend``), summed over every token that reads ``1``/``0``;
- :func:`vllm_top_logprobs`: one generated token with ``logprobs=k`` from the in-process vLLM;
- :func:`openai_top_logprobs`: ``max_tokens=1`` with ``logprobs``/``top_logprobs`` from an OpenAI-compatible
  server (None for a row whose answer carries none; all None when the server refuses the parameter).

Example:
    >>> from hf_barred.llm.first_token import digit_token_ids
    >>> class Vocab:  # a tokenizer's two calls that digit_token_ids uses
    ...     def get_vocab(self): return {"1": 5, "\u01201": 6, "0": 7, "10": 8, "a": 9}
    ...     def convert_tokens_to_string(self, tokens): return tokens[0].replace("\u0120", " ")
    >>> digit_token_ids(Vocab())
    {'1': [5, 6], '0': [7]}
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional, cast

from .base import Conversation, EngineError
from .config import EngineConfig

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from .engines.local.engine import LocalBackend
    from .engines.vllm.engine import VLLMBackend

__all__ = ["digit_token_ids", "local_digit_logprobs", "openai_top_logprobs", "vllm_top_logprobs"]


def local_digit_logprobs(config: EngineConfig, conversations: list[Conversation]) -> list[dict[str, float]]:
    """``{"1": log P, "0": log P}`` of the first answer token after each prompt, summed over every token that
    reads as the digit, from the model the local engine of ``config`` loaded (left-padded batches)."""
    import torch

    from . import get_engine

    backend = cast("LocalBackend", get_engine(config).backend)  # config.engine is "local"
    model, tokenizer = backend.model, backend.tokenizer
    ids_of = digit_token_ids(tokenizer)
    prompts = [
        tokenizer(
            tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False), add_special_tokens=False
        )["input_ids"]
        for conv in conversations
    ]
    out: list[dict[str, float]] = [{} for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(order), config.batch_size):
        batch = order[start : start + config.batch_size]
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch])
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
        with torch.inference_mode():
            logits = (
                model(
                    input_ids=input_ids.to(model.device),
                    attention_mask=mask.to(model.device),
                    position_ids=positions.to(model.device),
                )
                .logits[:, -1, :]
                .float()
            )
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for row, i in enumerate(batch):
            for digit, ids in ids_of.items():
                out[i][digit] = torch.logsumexp(logprobs[row, ids], dim=0).item()
    return out


def digit_token_ids(tokenizer: Any) -> dict[str, list[int]]:
    """Every vocabulary id whose text is ``"1"`` or ``"0"`` once stripped (``"1"``, ``" 1"``, ...)."""
    ids: dict[str, list[int]] = {"1": [], "0": []}
    for token, index in tokenizer.get_vocab().items():
        if "0" not in token and "1" not in token:  # cheap filter: decoding 50k tokens one by one is slow
            continue
        text = tokenizer.convert_tokens_to_string([token]).strip()
        if text in ids:
            ids[text].append(index)
    if not ids["1"] or not ids["0"]:
        raise ValueError(
            "The local model's tokenizer has no token for the digit 1 or 0; it cannot be scored "
            "by logprobs. Fix: pass mode='generation'."
        )
    return ids


def vllm_top_logprobs(
    config: EngineConfig, conversations: list[Conversation], top_logprobs: int
) -> list[Optional[dict[str, float]]]:
    """One generated token with ``logprobs=top_logprobs`` from the in-process vLLM of the vllm engine."""
    import vllm

    from . import get_engine

    backend = cast("VLLMBackend", get_engine(config).backend)  # config.engine is "vllm"
    sampling = vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=top_logprobs, seed=0)
    outputs = backend.llm.chat(conversations, sampling, use_tqdm=False)
    tops: list[Optional[dict[str, float]]] = []
    for output in outputs:
        logprobs = output.outputs[0].logprobs
        tops.append({(lp.decoded_token or ""): lp.logprob for lp in logprobs[0].values()} if logprobs else None)
    return tops


def openai_top_logprobs(
    config: EngineConfig, conversations: list[Conversation], top_logprobs: int
) -> list[Optional[dict[str, float]]]:
    """``max_tokens=1`` with ``logprobs``/``top_logprobs`` from an OpenAI-compatible server; None for a row
    whose answer carries no logprobs. A server that refuses the parameter (HTTP 400) gives all None, and so
    does a reasoning model (it takes neither ``max_tokens`` nor logprobs, and thinks before its first token):
    the judge is then asked to generate."""
    import openai

    if config.is_reasoning or config.provider in ("anthropic", "azure"):  # no logprobs there (Azure: deployments)
        return [None] * len(conversations)

    key = os.environ.get(config.api_key_env, "") if config.api_key_env else "EMPTY"
    client = openai.OpenAI(
        base_url=config.base_url, api_key=key or "EMPTY", timeout=config.timeout, max_retries=config.max_retries
    )

    def one(conversation: Conversation) -> Optional[dict[str, float]]:
        try:
            answer = client.chat.completions.create(
                model=config.model,
                messages=cast("list[ChatCompletionMessageParam]", conversation),  # role/content dicts
                max_tokens=1,
                temperature=0.0,
                seed=0,
                logprobs=True,
                top_logprobs=top_logprobs,
            )
        except openai.BadRequestError:
            raise
        except (openai.APIStatusError, openai.APITimeoutError):  # this row only: generation will retry it
            return None
        content = answer.choices[0].logprobs.content if answer.choices and answer.choices[0].logprobs else None
        if not content:
            return None
        return {t.token: t.logprob for t in content[0].top_logprobs or []} or {content[0].token: content[0].logprob}

    try:
        with ThreadPoolExecutor(max_workers=min(config.max_concurrency, max(1, len(conversations)))) as pool:
            return list(pool.map(one, conversations))
    except openai.BadRequestError:  # e.g. "logprobs are not supported": generate instead
        return [None] * len(conversations)
    except openai.APIConnectionError as err:
        raise EngineError(
            f"could not reach the openai engine at {config.base_url}: {err}. Fix: start the server or check --base-url."
        ) from err
    finally:
        client.close()
