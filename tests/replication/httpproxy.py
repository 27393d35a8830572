"""An HTTP reverse proxy for the outcome tests (in-process, loopback): counts the requests
per method and path and can answer 503 (with Retry-After) instead of forwarding."""

from __future__ import annotations

import collections

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class CountingProxy:
    """``app`` forwards everything to ``upstream``; ``failing`` makes it answer 503."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.answers: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.failing = False
        self.retry_after = "0"
        self._client = httpx.AsyncClient(timeout=30)
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._forward,
                    methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
                )
            ]
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _forward(self, request: Request) -> Response:
        key = (request.method, request.url.path)
        self.counts[key] += 1
        if self.failing:
            self.answers[(*key, 503)] += 1
            return Response(
                b'{"error":{"code":"DOWN","message":"down"}}',
                status_code=503,
                headers={"Retry-After": self.retry_after},
            )
        resp = await self._client.request(
            request.method,
            self.upstream + request.url.path,
            params=request.query_params,
            headers={k: v for k, v in request.headers.items() if k.lower() not in ("host",)},
            content=await request.body(),
        )
        self.answers[(*key, resp.status_code)] += 1
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
        return Response(resp.content, status_code=resp.status_code, headers=headers)
