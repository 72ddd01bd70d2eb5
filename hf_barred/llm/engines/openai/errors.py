"""What the ``openai`` engine makes of an SDK error: the error message of one conversation, or an
:class:`EngineError` for a problem of the whole engine (see :mod:`hf_barred.llm.engines.openai.backend`).

What fails how (an engine-wide problem raises, a problem of one conversation does not):

=====================================================  ==============================================
Situation                                              Result
=====================================================  ==============================================
connection refused / DNS failure after the retries     :class:`EngineError` "could not reach ..."
(with several servers: every one of them)              (one down: the others take its requests)
401 / 403 (bad or missing key, no access)              :class:`EngineError` naming the env variable
404 (unknown model, or a base URL without ``/v1``)     :class:`EngineError` listing the served models
``api_key_env`` names an unset variable                :class:`EngineError` when the backend is built
timeout after the retries                              that conversation: ``Completion(error=...)``
429 / 5xx after the retries                            that conversation: ``Completion(error=...)``
400 / 413 / 422 (context too long, bad request)        that conversation, not retried
malformed body after the retries                       that conversation: ``Completion(error=...)``
=====================================================  ==============================================

An error ``Completion`` has ``text=""`` and ``finish_reason="error"``; the cache does not store it,
so a rerun retries it. When an ``EngineError`` is raised, the answers that had already arrived were
passed to ``on_result`` (and cached) first. The API key is read from the environment variable named
by ``api_key_env`` (``"EMPTY"`` when none is named, for local servers) when the live client is
built; it is never logged, pickled, or shown in the backend's repr or in error messages (a server
that echoes it back gets it replaced by ``***``).

Every helper reads the engine's settings from its :class:`~hf_barred.llm.config.EngineConfig`
(the base URL resolved) and redacts the key through the :class:`~.runtime.Runtime`.

Example:
    >>> from hf_barred.llm.engines.openai.errors import retries_text
    >>> retries_text(1), retries_text(6)
    ('1 retry', '6 retries')
"""

from __future__ import annotations

import socket
from typing import Optional

import openai

from ...base import EngineError
from ...config import EngineConfig
from .runtime import Runtime

__all__ = [
    "api_error_message",
    "error_detail",
    "retries_text",
    "served_models",
    "unreachable_error",
    "unreachable_reason",
]


def unreachable_error(config: EngineConfig, rt: Runtime, reason: str, retries: int) -> EngineError:
    """The engine-wide error of a server (or every server of the rotation) that cannot be reached at all."""
    urls = config.endpoint_urls
    where = (
        f"the OpenAI-compatible server at {urls[0]}"
        if len(urls) < 2
        else (f"any of the {len(urls)} OpenAI-compatible servers ({', '.join(urls)})")
    )
    return EngineError(
        rt.redact(
            f"could not reach {where} after {retries_text(retries)} "
            f"({reason}). Start the server (e.g. `vllm serve {config.model}`) or fix --base-url."
        )
    )


async def api_error_message(config: EngineConfig, rt: Runtime, exc: openai.APIError, retries: int) -> str:
    """The error of one conversation for an SDK error (after ``retries`` retries), or an EngineError
    raised for a problem of the whole engine (key, unknown model, unreachable server)."""
    url = config.base_url
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        reason = unreachable_reason(exc)
        if reason is not None:
            raise unreachable_error(config, rt, reason, retries) from None
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "timeout"
        return f"no answer within the {config.timeout:g} s timeout, after {retries_text(retries)} ({cause})"
    if not isinstance(exc, openai.APIStatusError):
        return f"{type(exc).__name__}: {exc}"
    status, detail = exc.status_code, error_detail(exc)
    if status in (401, 403):
        if config.api_key_env:
            fix = f"Set {config.api_key_env} to a valid key for this server (and model)."
        else:
            fix = (
                "Put the key in an environment variable and pass its name as --api-key-env "
                "(EngineConfig.api_key_env), e.g. OPENAI_API_KEY."
            )
        source = f"the API key in ${config.api_key_env}" if config.api_key_env else "no API key (api_key_env unset)"
        raise EngineError(
            rt.redact(
                f"the server at {url} refused the request for model {config.model!r} with {source} "
                f"(HTTP {status}: {detail}). {fix}"
            )
        ) from None
    if status == 404 and config.provider == "azure":
        raise EngineError(
            rt.redact(
                f"the Azure OpenAI resource at {url} has no deployment {config.model!r} for api-version "
                f"{config.api_version} (HTTP 404: {detail}). Pass the deployment's name as --model, the resource "
                "endpoint (https://RESOURCE.openai.azure.com) as --base-url, and a supported --api-version."
            )
        ) from None
    if status == 404:
        served = await served_models(rt)
        found = f"it serves {served}" if served else f"GET {url}/models lists the models it serves"
        raise EngineError(
            rt.redact(
                f"the server at {url} does not know the model {config.model!r} (HTTP 404: {detail}); {found}. "
                "Pass one of those as --model (EngineConfig.model), or check that --base-url ends with /v1."
            )
        ) from None
    retried = f" after {retries_text(retries)}" if status in (408, 409, 429) or status >= 500 else ""
    return f"HTTP {status}{retried}: {detail}"


async def served_models(rt: Runtime) -> list[str]:
    try:
        page = await rt.client.with_options(max_retries=0, timeout=5.0).models.list()
        return sorted(model.id for model in page.data)
    except Exception:  # best effort: only used to improve an error message
        return []


def retries_text(n: int) -> str:
    return "1 retry" if n == 1 else f"{n} retries"


def error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:500]
    return str(exc.message)[:500]


def unreachable_reason(exc: openai.APIConnectionError) -> Optional[str]:
    """Why the server could not be reached at all, read from the exception chain; None for a timeout
    of a server that was reached (that request fails alone). The aiohttp transport reports a refused
    connection as a timeout, so the chain is checked before the exception's type."""
    link: Optional[BaseException] = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return "host name not found"
        link = link.__cause__ or link.__context__
    if isinstance(exc, openai.APITimeoutError):
        return None
    cause = exc.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
