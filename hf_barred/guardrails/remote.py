"""A guardrail served by ``barred serve``, used like a local one: ``RemoteGuardrail(url, name)(texts)``.

It returns the same :class:`~hf_barred.guardrails.guardrail.Verdict` objects as
``Guardrail.from_pretrained(folder)(texts)`` and has the same ``spec`` and ``threshold``, so code that
scores a local guardrail (``barred evaluate``'s ``predict_with_guardrail``) scores a served one. The
server runs each guardrail with its own rule or taxonomy; asking for another one is an error.

Example (against a server on 127.0.0.1:8000 serving a guardrail named ``violence``):
    >>> from hf_barred.guardrails.remote import RemoteGuardrail
    >>> RemoteGuardrail("http://127.0.0.1:8000", "violence")(["Hi"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

from .guardrail import PerRow, Verdict, per_row
from .spec import spec_from_card


class RemoteGuardrail:
    """A served guardrail (see the module docstring). ``url``: the server, with or without ``/v1``;
    ``api_key`` or ``api_key_env`` (the name of an env var) when the server has a key."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        api_key: Optional[str] = None,
        api_key_env: Optional[str] = None,
        threshold: Optional[float] = None,
        timeout: float = 120.0,
        batch_size: int = 64,
    ):
        import httpx

        self.url = url.rstrip("/").removesuffix("/v1")
        self.name = name
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self._client = httpx.Client(
            base_url=self.url, timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else {}
        )
        self.batch_size = batch_size
        cards = self._get("/v1/models")["data"]
        found = {c["id"]: c for c in cards}
        if name not in found:
            raise ValueError(
                f"Expected a guardrail named {name!r} at {self.url}; found {', '.join(found) or 'none'}. "
                "Fix: pass one of those names."
            )
        self.card = found[name]
        self.spec = spec_from_card(self.card)
        self.threshold = self.spec.threshold if threshold is None else threshold

    def _get(self, path: str) -> dict[str, Any]:
        return self._request("GET", path)

    def _request(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.request(method, path, json=json)
        except httpx.HTTPError as err:
            raise ConnectionError(
                f"Expected a `barred serve` server at {self.url}; found none ({type(err).__name__}: "
                f"{err}). Fix: start it, or check the URL."
            ) from err
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise RuntimeError(f"{self.url}{path} answered {response.status_code}: {message}")
        return response.json()

    def __call__(
        self,
        texts: Union[str, Sequence[str]],
        rule: PerRow = None,
        taxonomy: PerRow = None,
        task: PerRow = None,
        batch_size: Optional[int] = None,
        categories: bool = True,
    ) -> list[Verdict]:
        """Verdicts for ``texts``, in order (the arguments of
        :meth:`hf_barred.guardrails.guardrail.Guardrail.__call__`)."""
        if isinstance(texts, str):
            texts = [texts]
        n = len(texts)
        for values, own, what in (
            (rule, self.spec.rule, "rule"),
            (taxonomy, self.spec.taxonomy, "taxonomy"),
            (task, None, "task"),
        ):
            other = {v for v in per_row(values, n, what) if v is not None and v != own}
            if other:
                raise ValueError(
                    f"The served guardrail {self.name} checks with its own {what}; found texts with another "
                    f"one. Fix: drop the {what} (or evaluate a local folder with Guardrail.from_pretrained)."
                )
        out: list[Verdict] = []
        step = batch_size or self.batch_size
        for start in range(0, n, step):
            body = {"model": self.name, "input": list(texts[start : start + step])}
            for result in self._request("POST", "/v1/moderations", json=body)["results"]:
                got = result["guardrails"][self.name]
                flagged = got["score"] >= self.threshold
                out.append(
                    Verdict(
                        label=self.spec.label_names[int(flagged)],
                        flagged=flagged,
                        score=got["score"],
                        categories=got["categories"] if categories else [],
                        error=got.get("error"),
                    )
                )
        return out

    def close(self) -> None:
        self._client.close()


def from_endpoint(url: str, name: str, **kwargs: Any) -> RemoteGuardrail:
    """The guardrail ``name`` that ``barred serve`` serves at ``url`` (see :class:`RemoteGuardrail`)."""
    return RemoteGuardrail(url, name, **kwargs)
