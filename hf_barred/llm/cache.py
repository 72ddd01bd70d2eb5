"""Content-addressed response cache, on disk (sqlite), shared across runs and processes.

The key is a hash of (model, messages, sampling params including seed and JSON schema): a rerun,
a resume after a crash, or a changed downstream stage costs no new call. Answers are written one
by one as the engine returns them, so an interrupted batch keeps what finished. Only successful
answers are cached; errors are retried on the next run.

The database also counts, per model, the real calls made (``misses``) and the answers served from
disk (``hits``), across processes; :meth:`ResponseCache.stats` reads them.

Example:
    >>> import tempfile
    >>> from hf_barred.llm.base import Completion, SamplingParams
    >>> from hf_barred.llm.cache import ResponseCache
    >>> cache = ResponseCache(tempfile.mkdtemp() + "/responses.sqlite")
    >>> key = cache.key("m", [{"role": "user", "content": "hi"}], SamplingParams(temperature=0))
    >>> cache.get(key) is None
    True
    >>> cache.put(key, "m", Completion(text="hello", prompt_tokens=3, completion_tokens=1))
    >>> cache.get(key).text
    'hello'
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, cast

from .activity import ACTIVITY
from .base import Backend, Completion, Conversation, ResultCallback, SamplingParams, request_failure

CACHE_FORMAT = 1


class ResponseCache:
    """A sqlite file of answers keyed by content; safe for many threads and processes.

    Each thread of each process gets its own connection (a forked ``num_proc`` worker opens a new
    one: sqlite connections must not cross a fork); WAL mode and a busy timeout let concurrent
    writers from several processes share one file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, completion TEXT, created REAL)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS counters (model TEXT PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0, "
                "misses INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0, "
                "completion_tokens INTEGER NOT NULL DEFAULT 0)"
            )

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @staticmethod
    def key(model: str, messages: Conversation, params: SamplingParams) -> str:
        """sha256 of the canonical JSON of everything that determines the answer."""
        payload = {"v": CACHE_FORMAT, "model": model, "messages": messages, "params": params.cache_fields()}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Optional[Completion]:
        row = self._connect().execute("SELECT completion FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        data["cached"] = True
        return Completion(**data)

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        conn = self._connect()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in conn.execute(f"SELECT key, completion FROM responses WHERE key IN ({marks})", chunk):
                found[key] = Completion(**(json.loads(blob) | {"cached": True}))
        return found

    def put(self, key: str, model: str, completion: Completion) -> None:
        if not completion.ok:
            return
        data = completion.to_dict() | {"cached": False}
        self._connect().execute(
            "INSERT OR REPLACE INTO responses (key, model, completion, created) VALUES (?, ?, ?, ?)",
            (key, model, json.dumps(data, ensure_ascii=False), time.time()),
        )

    def count(self, model: str, hits: int = 0, misses: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0):
        self._connect().execute(
            "INSERT INTO counters (model, hits, misses, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(model) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses, "
            "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = completion_tokens + excluded.completion_tokens",
            (model, hits, misses, prompt_tokens, completion_tokens),
        )

    def stats(self, model: Optional[str] = None) -> dict[str, int]:
        """Totals of hits, misses (real calls) and tokens of real calls, for one model or all."""
        query = (
            "SELECT COALESCE(SUM(hits),0), COALESCE(SUM(misses),0), COALESCE(SUM(prompt_tokens),0), "
            "COALESCE(SUM(completion_tokens),0) FROM counters"
        )
        args: tuple = ()
        if model is not None:
            query += " WHERE model = ?"
            args = (model,)
        hits, misses, prompt, completion = self._connect().execute(query, args).fetchone()
        return {"hits": hits, "misses": misses, "prompt_tokens": prompt, "completion_tokens": completion}

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0]


@dataclass
class UsageMeter:
    """In-process usage of one engine: calls, cache hits, tokens, failures."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    """Of the completion tokens, those a reasoning model spent thinking."""
    errors: int = 0
    by_stage: dict[str, dict[str, int]] = field(default_factory=dict)
    last_error: str = ""
    """The error of the last failed request (what a run that stops on failures reports)."""

    def add(self, completion: Completion, stage: str) -> None:
        bucket = self.by_stage.setdefault(
            stage, {"calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0, "errors": 0}
        )
        if completion.cached:
            self.cache_hits += 1
            bucket["cache_hits"] += 1
            return
        if not completion.ok:
            self.errors += 1
            bucket["errors"] += 1
            self.last_error = completion.error or ""
            return
        self.calls += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.reasoning_tokens += completion.reasoning_tokens
        bucket["calls"] += 1
        bucket["prompt_tokens"] += completion.prompt_tokens
        bucket["completion_tokens"] += completion.completion_tokens


class CachedBackend:
    """Wraps a backend: answers from the cache first, sends only the misses, stores each answer
    the moment it arrives, and meters usage per stage.

    ``stage`` tags the usage (e.g. ``"generate"``); it is not part of the cache key.
    """

    def __init__(self, backend: Backend, cache: Optional[ResponseCache]):
        self.backend = backend
        self.cache = cache
        self.model_name = backend.model_name
        # The cache's name for the answers: the model's, with anything else that changes them (precision).
        self.cache_name: str = getattr(backend, "cache_name", backend.model_name)
        self.supports_json_schema = backend.supports_json_schema
        self.usage = UsageMeter()
        self._lock = threading.Lock()

    def chat(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        on_result: Optional[ResultCallback] = None,
        stage: str = "",
    ) -> list[Completion]:
        results: list[Optional[Completion]] = [None] * len(conversations)
        keys = [ResponseCache.key(self.cache_name, conv, params) for conv in conversations]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo: list[int] = []
        first_index_of_key: dict[str, int] = {}
        duplicates: dict[int, int] = {}
        found_at: set[int] = set()
        for i, key in enumerate(keys):
            if key in found:
                results[i] = found[key]
                found_at.add(i)
            elif key in first_index_of_key:  # same prompt twice in one batch: one call
                duplicates[i] = first_index_of_key[key]
            else:
                first_index_of_key[key] = i
                todo.append(i)

        def store(j: int, completion: Completion) -> None:
            i = todo[j]
            completion.model = completion.model or self.model_name
            if not completion.ok:  # rows keep this error: mark it as the request's, not the answer's
                completion.error = request_failure(completion.error or "the engine gave no answer")
            if self.cache is not None and completion.ok:
                self.cache.put(keys[i], self.cache_name, completion)
                self.cache.count(
                    self.cache_name,
                    misses=1,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                )
            results[i] = completion
            ACTIVITY.finished(completion)
            with self._lock:  # metered before anyone hears of it: a guard reading usage never misses it
                self.usage.add(completion, stage)
            if on_result is not None:
                on_result(i, completion)

        ACTIVITY.cache_hits(len(conversations) - len(todo))
        if todo:
            ACTIVITY.sent(len(todo))
            answers = self.backend.chat([conversations[i] for i in todo], params, on_result=store)
            for j, completion in enumerate(answers):  # engines that ignore on_result still land here
                if results[todo[j]] is None:
                    store(j, completion)
        for i, source in duplicates.items():
            first = cast(Completion, results[source])  # a duplicate's first occurrence was answered above
            results[i] = Completion(**(first.to_dict() | {"cached": True}))
        hits = len(conversations) - len(todo)
        if self.cache is not None and hits:
            self.cache.count(self.cache_name, hits=hits)
        answered = cast(list[Completion], results)  # every row is filled: a cache hit, an answer or a duplicate
        with self._lock:  # the answers were metered as they arrived (store); now the hits and duplicates
            for i, completion in enumerate(answered):
                if i in found_at or i in duplicates:
                    self.usage.add(completion, stage)
        return answered
