"""A real OpenAI-protocol HTTP server on loopback, with scriptable behaviour, for tests and benchmarks.

It speaks ``POST /v1/chat/completions`` and ``GET /v1/models`` over real HTTP (starlette + uvicorn),
the Files and Batch APIs (:mod:`.batches`), and Azure OpenAI's URL shape; it enforces a provider's
request contract (``contract="openai"`` or ``"azure"``: :mod:`.contracts`), records every request it
receives, and answers each one with an :class:`Action`: a normal answer
(by default ``"echo: <last user message>"`` with word-count usage), an HTTP error with headers
(429 + Retry-After, 500, 400), a slow answer (client timeouts) or a malformed body. Actions are
scripted per request, optionally only for requests whose last user message contains a string.

In a test (a background thread; port picked by the OS)::

    with OpenAIServer(models=("test-model",)) as server:
        server.script(rate_limited(retry_after=1), match="slow down")   # first matching request: 429
        ...  # point a client at server.url ("http://127.0.0.1:PORT/v1")
        assert len(server.requests) == 2

As a process (benchmarks), printing its base URL on the first line of stdout::

    python tests/utils/servers/openai_server.py --latency 0.1 --max-parallel 32

``latency`` delays every answer; ``max_parallel`` caps how many requests are processed at once
(a server-side semaphore, like a GPU server's batch size), so ``max_parallel / latency`` is the
ideal throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.utils.servers.batches import BatchStore
from tests.utils.servers.contracts import check_azure_url, check_chat, is_reasoning, reasoning_tokens

Responder = Callable[[dict[str, Any]], Union[str, tuple[str, str]]]
"""Maps a request body to the answer text (the default echoes the last user message), or to
``(text, reasoning)``: the reasoning goes into the message's ``reasoning_content`` field, as vLLM's
reasoning parser sends it."""

LogprobResponder = Callable[[dict[str, Any]], Optional[dict[str, float]]]
"""Maps a request body to the first token's ``{token: log-probability}`` alternatives (None: no logprobs)."""


@dataclass
class Action:
    """What the server does with one request."""

    status: int = 200
    text: Optional[str] = None  # answer text; None asks the server's responder
    delay: float = 0.0  # extra seconds before answering (on top of the server's latency)
    headers: dict[str, str] = field(default_factory=dict)
    body: Optional[Union[str, bytes]] = None  # raw body sent as is (malformed replies)
    content_type: str = "application/json"
    finish_reason: str = "stop"
    message: str = ""  # error message when status >= 400
    reasoning: Optional[str] = None  # sent as the message's reasoning_content (a reasoning model's thinking)
    top_logprobs: Optional[dict[str, float]] = None  # first-token alternatives, sent when the request asks


def reply(text: str, **kwargs: Any) -> Action:
    return Action(text=text, **kwargs)


def with_logprobs(top: dict[str, float], **kwargs: Any) -> Action:
    """An answer whose first token has these ``{token: log-probability}`` alternatives (the answer text,
    unless given, is the most probable token); sent only to a request with ``logprobs: true``."""
    return Action(top_logprobs=dict(top), **kwargs)


def error(status: int, message: str = "", headers: Optional[dict[str, str]] = None) -> Action:
    return Action(status=status, message=message or f"scripted error {status}", headers=dict(headers or {}))


def rate_limited(retry_after: float, header: str = "Retry-After") -> Action:
    """A 429 that asks the client to wait ``retry_after`` seconds (``Retry-After`` or ``retry-after-ms``)."""
    value = str(int(retry_after * 1000)) if header.lower() == "retry-after-ms" else f"{retry_after:g}"
    return Action(status=429, message="Rate limit reached, slow down.", headers={header: value})


def hang(seconds: float) -> Action:
    """Answer only after ``seconds`` (longer than the client's timeout)."""
    return Action(delay=seconds)


MALFORMED_BODIES: dict[str, tuple[str, str]] = {
    "not-json": ('{"id": "chatcmpl-1", "choices": [', "application/json"),
    "html": ("<html><body>502 Bad Gateway (proxy)</body></html>", "text/html"),
    "wrong-shape": ('{"id": "chatcmpl-1", "object": "chat.completion", "result": "hello"}', "application/json"),
    "no-choices": ('{"id": "chatcmpl-1", "object": "chat.completion", "choices": []}', "application/json"),
    "no-message": ('{"id": "chatcmpl-1", "choices": [{"index": 0, "text": "hi"}]}', "application/json"),
}


def malformed(kind: str = "not-json") -> Action:
    """A 200 whose body is not a chat completion; ``kind`` is a key of ``MALFORMED_BODIES``."""
    body, content_type = MALFORMED_BODIES[kind]
    return Action(body=body, content_type=content_type)


def echo(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1] if users else ''}"


def last_user_content(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]) if users else ""


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    time: float  # time.monotonic() on arrival


@dataclass
class _Script:
    match: Optional[str]
    actions: collections.deque
    forever: bool


class OpenAIServer:
    """An OpenAI-compatible chat server on 127.0.0.1 (see the module docstring).

    ``models``: the model names it serves (others get a 404 like vLLM's); ``api_key``: if set,
    requests without ``Authorization: Bearer <api_key>`` get a 401 whose message echoes the header
    sent (as some providers do), to check that clients redact keys; ``latency`` and ``max_parallel``:
    see the module docstring; ``responder``: answer text for unscripted requests.

    Log-probabilities: a request with ``logprobs: true`` gets ``choices[0].logprobs.content`` (the
    first token with ``top_logprobs`` alternatives, OpenAI's shape) when its action has ``top_logprobs``
    (:func:`with_logprobs`) or ``logprob_responder`` gives some; otherwise ``logprobs`` is null, like a
    server without them. ``reject_logprobs``: answer such requests with a 400, as some servers do.

    Contracts: ``contract`` is ``generic`` (anything OpenAI-shaped, like vLLM), ``openai`` (OpenAI's rules
    for reasoning and other models; a reasoning model spends reasoning tokens, within
    ``max_completion_tokens``) or ``azure`` (the same rules on Azure's routes, ``deployments`` mapping each
    deployment name to its model, the key in the ``api-key`` header). ``batches``: the Files and Batch
    APIs' store (:class:`~tests.utils.servers.batches.BatchStore`), one by default.
    """

    def __init__(
        self,
        *,
        models: Sequence[str] = ("test-model",),
        api_key: Optional[str] = None,
        latency: float = 0.0,
        max_parallel: Optional[int] = None,
        responder: Responder = echo,
        logprob_responder: Optional[LogprobResponder] = None,
        reject_logprobs: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        contract: str = "generic",
        deployments: Optional[dict[str, str]] = None,
        batches: Optional[BatchStore] = None,
    ):
        if contract not in ("generic", "openai", "azure"):
            raise ValueError(f"contract: expected generic, openai or azure, found {contract!r}")
        self.contract = contract
        self.deployments = dict(deployments or {})
        self.batches = batches or BatchStore(self._answer)
        self.batches.answer = self._answer
        self.models = tuple(models) + tuple(self.deployments)
        self.api_key = api_key
        self.latency = latency
        self.max_parallel = max_parallel
        self.responder = responder
        self.logprob_responder = logprob_responder
        self.reject_logprobs = reject_logprobs
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.answered: list[dict[str, Any]] = []
        """The bodies of the chat requests answered with a completion (HTTP 200), in the order answered."""
        self.in_flight = 0
        self.peak_in_flight = 0
        self._scripts: list[_Script] = []
        self._lock = threading.Lock()
        self._semaphore: Optional[asyncio.Semaphore] = None
        self._counter = 0
        self._server: Optional[uvicorn.Server] = None
        self._thread: Optional[threading.Thread] = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/files", self._upload, methods=["POST"]),
                Route("/v1/files/{file_id}/content", self._file_content, methods=["GET"]),
                Route("/v1/batches", self._create_batch, methods=["POST"]),
                Route("/v1/batches/{batch_id}", self._retrieve_batch, methods=["GET"]),
                Route("/openai/deployments/{deployment}/chat/completions", self._chat, methods=["POST"]),
                Route("/openai/files", self._upload, methods=["POST"]),
                Route("/openai/files/{file_id}/content", self._file_content, methods=["GET"]),
                Route("/openai/batches", self._create_batch, methods=["POST"]),
                Route("/openai/batches/{batch_id}", self._retrieve_batch, methods=["GET"]),
            ]
        )

    # ----------------------------------------------------------------- scripting and inspection
    @property
    def url(self) -> str:
        """The base URL a client uses, ending in ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *actions: Action, match: Optional[str] = None, forever: bool = False) -> OpenAIServer:
        """Answer the next requests (whose last user message contains ``match``, if given) with
        ``actions`` in order; with ``forever`` the last action repeats for good."""
        with self._lock:
            self._scripts.append(_Script(match, collections.deque(actions), forever))
        return self

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.answered.clear()
            self.peak_in_flight = 0

    def requests_for(self, match: str) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if match in last_user_content(r.body)]

    def _next_action(self, body: dict[str, Any]) -> Action:
        content = last_user_content(body)
        with self._lock:
            for script in self._scripts:
                if not script.actions or (script.match is not None and script.match not in content):
                    continue
                if script.forever and len(script.actions) == 1:
                    return script.actions[0]
                return script.actions.popleft()
        return Action()

    # ----------------------------------------------------------------- HTTP handlers
    async def _models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "hf_barred-tests"} for m in self.models]
        return _json({"object": "list", "data": data})

    def _refused(self, request: Request) -> Optional[Response]:
        """The route's own refusal: a path of the other provider's shape, Azure's api-version, or the key."""
        azure_route = request.url.path.startswith("/openai/")
        if azure_route != (self.contract == "azure"):
            return _error(404, f"no route {request.url.path} on this server ({self.contract} contract)")
        if azure_route:
            refused = check_azure_url(request.url.path, dict(request.query_params), self.deployments)
            if refused is not None:
                return _error(refused["status"], refused["message"], kind=refused["type"], code=refused["code"])
        if self.api_key is not None:
            sent = request.headers.get("api-key", "") if azure_route else request.headers.get("authorization", "")
            if sent != (self.api_key if azure_route else f"Bearer {self.api_key}"):
                return _error(
                    401,
                    f"Incorrect API key provided: {sent.removeprefix('Bearer ')!r}.",
                    kind="invalid_request_error",
                    code="invalid_api_key",
                )
        return None

    async def _chat(self, request: Request) -> Response:
        arrived = time.monotonic()
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "request body is not JSON")
        self.requests.append(RecordedRequest(body=body, headers=dict(request.headers), time=arrived))
        refused = self._refused(request)
        if refused is not None:
            return refused
        if "deployment" in request.path_params:  # Azure: the deployment names the model; the body's is ignored
            body = body | {"model": request.path_params["deployment"]}
        model = body.get("model")
        if model not in self.models:
            return _error(404, f"The model `{model}` does not exist.", kind="NotFoundError", code="model_not_found")
        problem = check_chat(self.contract, self.deployments.get(model, model), body)
        if problem is not None:
            return _error(
                problem["status"],
                problem["message"],
                kind=problem["type"],
                code=problem["code"],
                param=problem["param"],
            )

        action = self._next_action(body)
        if self._semaphore is None:  # created in the server's own loop
            self._semaphore = asyncio.Semaphore(self.max_parallel or 1_000_000)
        async with self._semaphore:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                wait = self.latency + action.delay
                if wait > 0:
                    await asyncio.sleep(wait)
            except asyncio.CancelledError:  # the server is stopping: no traceback in the test log
                return Response(status_code=503)
            finally:
                self.in_flight -= 1

        if action.body is not None:
            return Response(
                action.body, status_code=action.status, media_type=action.content_type, headers=action.headers
            )
        if action.status >= 400:
            return _error(action.status, action.message, headers=action.headers)
        status, payload = self._completion(body, action)
        if status == 200:
            self.answered.append(body)
        return _json(payload, status=status, headers=action.headers)

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A batch line's answer: the chat contract, then the server's answer (scripts and latency do not apply)."""
        model = body.get("model")
        if model not in self.models:
            return 404, {
                "error": {
                    "message": f"The model `{model}` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": "model_not_found",
                }
            }
        problem = check_chat(self.contract, self.deployments.get(model, model), body)
        if problem is not None:
            return problem["status"], {"error": {k: problem[k] for k in ("message", "type", "param", "code")}}
        self.requests.append(RecordedRequest(body=body, headers={}, time=time.monotonic()))
        return self._completion(body, Action())

    def _completion(self, body: dict[str, Any], action: Action) -> tuple[int, dict[str, Any]]:
        model = body["model"]
        wants_logprobs = bool(body.get("logprobs"))
        if wants_logprobs and self.reject_logprobs:
            return 400, {
                "error": {
                    "message": "logprobs are not supported by this server",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": 400,
                }
            }
        top = action.top_logprobs
        if top is None and wants_logprobs and self.logprob_responder is not None:
            top = self.logprob_responder(body)
        if top is not None and action.text is None:
            answer = max(top, key=top.__getitem__)
        else:
            answer = action.text if action.text is not None else self.responder(body)
        text, reasoning = answer if isinstance(answer, tuple) else (answer, action.reasoning)
        finish_reason = action.finish_reason
        thinking = (
            reasoning_tokens(body)
            if self.contract != "generic" and is_reasoning(self.deployments.get(model, model))
            else 0
        )
        budget = body.get("max_completion_tokens")
        if thinking and budget is not None and thinking + len(text.split()) > budget:
            # the budget ran out while the model was still thinking (or answering): cut off, as OpenAI does
            text, finish_reason = ("" if thinking >= budget else " ".join(text.split()[: budget - thinking])), "length"
            thinking = min(thinking, budget)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        logprobs = _logprobs_payload(text, top, int(body.get("top_logprobs") or 0)) if wants_logprobs and top else None
        self._counter += 1
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(text.split()) + len((reasoning or "").split()) + thinking
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if thinking:
            usage["completion_tokens_details"] = {"reasoning_tokens": thinking}
        return 200, {
            "id": f"chatcmpl-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.deployments.get(model, model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": logprobs}],
            "usage": usage,
        }

    # ----------------------------------------------------------------- files and batches
    async def _upload(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(400, "expected a multipart 'file' field", kind="invalid_request_error")
        try:
            return _json(self.batches.upload(await upload.read(), str(form.get("purpose")), upload.filename or ""))
        except ValueError as err:
            return _error(400, str(err), kind="invalid_request_error")

    async def _file_content(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        file_id = request.path_params["file_id"]
        if file_id not in self.batches.files:
            return _error(404, f"No such File object: {file_id}", kind="invalid_request_error")
        return Response(self.batches.content(file_id), media_type="application/octet-stream")

    async def _create_batch(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = json.loads(await request.body())
        expected = "/chat/completions" if self.contract == "azure" else "/v1/chat/completions"
        if body.get("endpoint") != expected:
            return _error(
                400, f"endpoint: expected {expected!r}, found {body.get('endpoint')!r}", kind="invalid_request_error"
            )
        try:
            return _json(
                self.batches.create(body.get("input_file_id"), body["endpoint"], body.get("completion_window"))
            )
        except KeyError:
            return _error(404, f"No such File object: {body.get('input_file_id')}", kind="invalid_request_error")
        except ValueError as err:
            return _error(400, str(err), kind="invalid_request_error")

    async def _retrieve_batch(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        batch_id = request.path_params["batch_id"]
        if batch_id not in self.batches.batches:
            return _error(404, f"No batch found with id '{batch_id}'.", kind="invalid_request_error")
        return _json(self.batches.retrieve(batch_id))

    # ----------------------------------------------------------------- lifecycle
    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            backlog=4096,
            timeout_keep_alive=60,
        )

    def _bind(self) -> socket.socket:
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else Nagle adds ~40 ms a reply)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(4096)  # connections queue from now on, even before uvicorn accepts them
        self.port = sock.getsockname()[1]
        return sock

    def start(self) -> OpenAIServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        sock = self._bind()
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="openai-test-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test OpenAI server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted or the parent process exits (the command line)."""
        sock = self._bind()
        parent = os.getppid()

        def exit_with_parent() -> None:  # never outlive a benchmark or test that was killed
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(0)

        threading.Thread(target=exit_with_parent, daemon=True).start()
        print(self.url, flush=True)
        uvicorn.Server(self._config()).run(sockets=[sock])

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _logprobs_payload(text: str, top: dict[str, float], k: int) -> dict[str, Any]:
    """OpenAI's ``choices[0].logprobs`` for a one-token answer: ``content[0]`` with the ``k`` best alternatives."""
    best = sorted(top.items(), key=lambda item: -item[1])[:k]
    entry = lambda token, logprob: {"token": token, "logprob": logprob, "bytes": list(token.encode())}  # noqa: E731
    first = entry(text, top.get(text, best[0][1] if best else 0.0))
    return {"content": [first | {"top_logprobs": [entry(t, lp) for t, lp in best]}], "refusal": None}


def _json(payload: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _error(
    status: int,
    message: str,
    kind: str = "server_error",
    code: Any = None,
    headers: Optional[dict[str, str]] = None,
    param: Optional[str] = None,
) -> Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code if code is not None else status}}
    return _json(body, status=status, headers=headers)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--max-parallel", type=int, default=None, help="requests processed at once")
    parser.add_argument("--model", action="append", default=None, help="served model name (repeatable)")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    args = parser.parse_args(argv)
    OpenAIServer(
        models=tuple(args.model or ["test-model"]),
        api_key=args.api_key,
        latency=args.latency,
        max_parallel=args.max_parallel,
        host=args.host,
        port=args.port,
    ).serve_forever()


if __name__ == "__main__":
    sys.exit(main())
