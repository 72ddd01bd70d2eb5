"""The HTTP app of ``barred serve`` (FastAPI): OpenAI-shaped ``POST /v1/moderations``, ``GET /v1/models``,
``GET /health``.

``/v1/*`` need ``Authorization: Bearer KEY`` when the server has a key; ``/health`` stays open for load
balancers. Failures answer in OpenAI's error shape: 401 (key), 404 (unknown guardrail, with the
known names), 413 (too long, too many texts, too big a body), 422 (malformed body, no text echoed),
503 (a backend is down: ``/health`` says which). Logs carry counts and timings, never request text.

Example (any backend with ``names``, ``check`` and ``health``; here one that flags long texts):
    >>> from fastapi.testclient import TestClient
    >>> from hf_barred.guardrails.guardrail import Verdict
    >>> from hf_barred.serve.app import create_app
    >>> from hf_barred.serve.registry import Registry
    >>> from hf_barred.serve.guards import ServedGuard
    >>> from hf_barred.guardrails.spec import GuardrailSpec
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> spec = GuardrailSpec(kind="classifier", prompt_format="binary", base_model="x", label_names=["ok", "long"])
    >>> _ = spec.save(folder)
    >>> guard = ServedGuard.load(folder, name="length")
    >>> class Length:
    ...     backend, names = "demo", ["length"]
    ...     def check(self, rows):
    ...         return [guard.verdict(min(len(text) / 10, 1.0)) for _, text in rows]
    ...     def health(self):
    ...         return True, "demo"
    >>> client = TestClient(create_app(Registry([guard], [Length()])))
    >>> client.post("/v1/moderations", json={"input": ["hi", "a long text"]}).json()["results"][1]["flagged"]
    True
    >>> client.post("/v1/moderations", json={"input": "hi", "model": "nope"}).status_code
    404
"""

# No `from __future__ import annotations`: FastAPI reads the (local) Request annotations at runtime.

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Optional

from ..guardrails.guardrail import Verdict
from .registry import Registry, UnknownGuardrail
from .schemas import GuardVerdict, Health, ModelList, ModerationRequest, ModerationResponse, ModerationResult
from .security import ServeLimits, bearer_ok, error_body, validation_summary
from .vllm_backend import BackendUnavailable

logger = logging.getLogger("hf_barred.serve")


class ApiError(Exception):
    """An error answered as ``status`` with OpenAI's error body."""

    def __init__(self, status: int, message: str, type_: str, code: Optional[str] = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.extra = status, message, type_, code, extra


def create_app(registry: Registry, *, limits: Optional[ServeLimits] = None, api_key: Optional[str] = None) -> Any:
    """The FastAPI app over ``registry`` (see the module docstring); ``limits`` default to :class:`ServeLimits`'s."""
    limits = limits or ServeLimits()
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await registry.aclose()

    app = FastAPI(
        title="hf_barred guardrails",
        version="1",
        lifespan=lifespan,
        description="OpenAI-style moderation API over hf_barred guardrails.",
    )
    guards = registry.guards

    def authorized(request: Request) -> None:
        if not bearer_ok(request.headers.get("authorization"), api_key):
            raise ApiError(
                401,
                "Missing or wrong API key. Fix: send `Authorization: Bearer <key>` with the key "
                "in the server's --api-key-env variable.",
                "invalid_request_error",
                "invalid_api_key",
            )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(
            error_body(err.message, err.type, err.code, **err.extra), status_code=err.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        details = validation_summary(list(err.errors()))
        where = "; ".join(f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in details)
        return JSONResponse(
            error_body(
                f'Malformed request body ({where}). Expected {{"input": str or [str], '
                '"model": name or [names] (optional)}.',
                "invalid_request_error",
                "invalid_body",
                details=details,
            ),
            status_code=422,
        )

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            return JSONResponse(
                error_body(
                    f"Request body of {length} bytes; the limit is {limits.max_body_bytes}. "
                    "Fix: send fewer texts per request.",
                    "invalid_request_error",
                    "body_too_large",
                ),
                status_code=413,
            )
        return await call_next(request)

    @app.get("/health", response_model=Health)
    async def health() -> JSONResponse:
        backends = await registry.health()
        ok = all(b["ok"] for b in backends)
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "backends": backends}, status_code=200 if ok else 503
        )

    @app.get("/v1/models", response_model=ModelList, dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{**g.describe(), "backend": registry.route[name].backend} for name, g in guards.items()],
        }

    @app.post("/v1/moderations", response_model=ModerationResponse, dependencies=[Depends(authorized)])
    async def moderations(body: ModerationRequest) -> ModerationResponse:
        texts = body.texts()
        if not texts:
            raise ApiError(
                422, "`input` is an empty list. Expected at least one text.", "invalid_request_error", "empty_input"
            )
        if len(texts) > limits.max_inputs:
            raise ApiError(
                413,
                f"{len(texts)} texts in one request; the limit is {limits.max_inputs}. Fix: split the request.",
                "invalid_request_error",
                "too_many_inputs",
            )
        longest = max(len(t) for t in texts)
        if longest > limits.max_input_chars:
            raise ApiError(
                413,
                f"A text of {longest} characters; the limit is {limits.max_input_chars}. Fix: "
                "shorten it, or start the server with a larger --max-input-chars.",
                "invalid_request_error",
                "input_too_long",
            )
        try:
            names = registry.resolve(body.names())
        except UnknownGuardrail as err:
            raise ApiError(404, str(err), "not_found_error", "model_not_found", known=err.known) from None
        started = time.perf_counter()
        try:
            results = await registry.check(names, texts)
        except BackendUnavailable as err:
            logger.error("moderation failed: a backend is unavailable: %s", err)
            raise ApiError(
                503,
                f"A guardrail backend is unavailable: {err}. See GET /health.",
                "server_error",
                "backend_unavailable",
            ) from None
        logger.info(
            "moderation: %d text(s) x %d guardrail(s) in %.1f ms",
            len(texts),
            len(names),
            1000 * (time.perf_counter() - started),
        )
        return ModerationResponse(
            id=f"modr-{uuid.uuid4().hex}", model=",".join(names), results=[_result(r, guards) for r in results]
        )

    return app


def _result(verdicts: dict[str, Verdict], guards: dict[str, Any]) -> ModerationResult:
    """One text's result: a key per guardrail, plus ``name/S<i>`` per S-code of a policy guardrail (its
    score is the guardrail's violation score when the code was decoded as violated, else 0)."""
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    for name, v in verdicts.items():
        categories[name], scores[name] = v.flagged, v.score
        for code in guards[name].category_codes:
            hit = code in v.categories
            categories[f"{name}/{code}"], scores[f"{name}/{code}"] = hit, v.score if hit else 0.0
    return ModerationResult(
        flagged=any(v.flagged for v in verdicts.values()),
        categories=categories,
        category_scores=scores,
        category_applied_input_types={key: ["text"] for key in categories},
        guardrails={
            name: GuardVerdict(label=v.label, flagged=v.flagged, score=v.score, categories=v.categories, error=v.error)
            for name, v in verdicts.items()
        },
    )
