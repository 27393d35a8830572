"""An asyncio HTTP client for the rendezvous API (``/v1/rendezvous``, docs/p2p.md).

:class:`RendezvousClient` speaks the API and nothing else: no WebRTC here. Owner calls are
signed with an :class:`~durasync.p2p.identity.Identity`; every refused request raises
:class:`RendezvousError` carrying the server's status, code and message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import msgspec

from durasync.p2p.errors import RendezvousError
from durasync.p2p.identity import Identity

__all__ = [
    "AnswerEvent",
    "DiscoveredService",
    "OwnerEvents",
    "PublishedService",
    "RendezvousClient",
    "RendezvousError",
]

TOKEN_HEADER = "Rendezvous-Token"


@dataclass(frozen=True, slots=True)
class PublishedService:
    """What a publish or refresh returned."""

    uuid: str
    fqn: str
    expires_at: float
    offer_ids: list[str]


@dataclass(frozen=True, slots=True)
class DiscoveredService:
    """A service found by name or UUID, with an open offer when one was available."""

    uuid: str
    username: str
    fqn: str
    metadata: dict[str, Any]
    expires_at: float
    offer_id: str | None
    offer_sdp: str | None


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    offer_id: str
    uuid: str
    sdp: str


@dataclass(frozen=True, slots=True)
class OwnerEvents:
    """One owner-feed response: answers, answerer candidates, and where to continue."""

    answers: list[AnswerEvent]
    candidates: list[tuple[str, str]]
    next: str


class RendezvousClient:
    """Client of one rendezvous server.

    Args:
        url: the server's base URL (``http://127.0.0.1:4437``); ``/v1/rendezvous`` is added.
        identity: the owner's key (needed for the owner calls only).
        token: a bearer token when the server runs with ``--auth-secret``.
        timeout: per-request timeout in seconds (long-polls add their wait to it).
    """

    def __init__(
        self,
        url: str,
        *,
        identity: Identity | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/") + "/v1/rendezvous"
        self.identity = identity
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(base_url=self.base, headers=headers)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> RendezvousClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing ---------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        signed: bool = False,
        headers: dict[str, str] | None = None,
        wait: float = 0.0,
    ) -> Any:
        target = self.prefix + path
        if query:
            target += "?" + urlencode(query)
        data = b"" if body is None else msgspec.json.encode(body)
        hdrs = dict(headers or {})
        if data:
            hdrs["Content-Type"] = "application/json"
        if signed:
            if self.identity is None:
                raise ValueError("this call needs an identity")
            hdrs.update(self.identity.sign_request(method, target, data))
        try:
            resp = await self._http.request(
                method, target, content=data, headers=hdrs, timeout=self.timeout + wait
            )
        except httpx.HTTPError as exc:
            raise RendezvousError(0, "UNREACHABLE", f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            code, message = "HTTP_ERROR", resp.text[:300]
            try:
                err = resp.json()["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                pass
            raise RendezvousError(resp.status_code, code, message)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # -- owner ------------------------------------------------------------------------

    async def claim(self, username: str) -> dict[str, Any]:
        """Claim ``username`` for the identity's key (or extend the claim)."""
        assert self.identity is not None
        body = {"public_key": self.identity.public_key}
        result: dict[str, Any] = await self._call(
            "PUT", f"/users/{username}", body=body, signed=True
        )
        return result

    async def publish(
        self,
        username: str,
        fqn: str,
        offers: list[str],
        *,
        ttl: float | None = None,
        public: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> PublishedService:
        """Publish (upsert) ``fqn`` with these offer SDPs, replacing its open offers."""
        body: dict[str, Any] = {"public": public, "offers": [{"sdp": s} for s in offers]}
        if ttl is not None:
            body["ttl"] = ttl
        if metadata:
            body["metadata"] = metadata
        r = await self._call("PUT", f"/users/{username}/services/{fqn}", body=body, signed=True)
        return PublishedService(
            r["uuid"], r["fqn"], float(r["expires_at"]), [o["id"] for o in r["offers"]]
        )

    async def refresh(self, uuid: str, *, ttl: float | None = None) -> float:
        """Extend the service's TTL (same UUID); returns the new expiry (Unix seconds)."""
        body = {} if ttl is None else {"ttl": ttl}
        r = await self._call("POST", f"/services/{uuid}/refresh", body=body, signed=True)
        return float(r["expires_at"])

    async def unpublish(self, uuid: str) -> None:
        await self._call("DELETE", f"/services/{uuid}", signed=True)

    async def add_offers(self, uuid: str, offers: list[str]) -> list[str]:
        """Add offers to the service's pool; returns their ids."""
        body = {"offers": [{"sdp": s} for s in offers]}
        r = await self._call("POST", f"/services/{uuid}/offers", body=body, signed=True)
        return [o["id"] for o in r["offers"]]

    async def delete_offer(self, uuid: str, offer_id: str) -> None:
        await self._call("DELETE", f"/services/{uuid}/offers/{offer_id}", signed=True)

    async def owner_events(self, username: str, since: str, *, wait: float = 0.0) -> OwnerEvents:
        """Answers (and answerer candidates) since ``since``; waits up to ``wait`` s for one."""
        q = {"since": since, "wait": f"{wait:g}"}
        r = await self._call("GET", f"/users/{username}/events", query=q, signed=True, wait=wait)
        return OwnerEvents(
            [AnswerEvent(a["offer_id"], a["uuid"], a["sdp"]) for a in r["answers"]],
            [(c["offer_id"], c["candidate"]) for c in r["candidates"]],
            str(r["next"]),
        )

    async def add_offerer_candidates(self, uuid: str, offer_id: str, cands: list[str]) -> None:
        body = {"candidates": cands}
        await self._call(
            "POST", f"/services/{uuid}/offers/{offer_id}/candidates", body=body, signed=True
        )

    # -- connecting side -------------------------------------------------------------------

    async def user(self, username: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/users/{username}")
        return result

    async def public_services(self, username: str) -> list[dict[str, Any]]:
        r = await self._call("GET", f"/users/{username}/services")
        return list(r["services"])

    async def discover(
        self,
        *,
        username: str | None = None,
        fqn: str | None = None,
        uuid: str | None = None,
        wait: float = 0.0,
    ) -> DiscoveredService:
        """Find a service by ``username`` + ``fqn`` or by ``uuid``, with an open offer if any
        (waiting up to ``wait`` s for one)."""
        q = {"wait": f"{wait:g}"}
        if uuid is not None:
            r = await self._call("GET", f"/services/{uuid}", query=q, wait=wait)
        elif username is not None and fqn is not None:
            r = await self._call("GET", f"/users/{username}/services/{fqn}", query=q, wait=wait)
        else:
            raise ValueError("give username and fqn, or uuid")
        offer = r.get("offer")
        return DiscoveredService(
            r["uuid"],
            r["username"],
            r["fqn"],
            dict(r.get("metadata") or {}),
            float(r["expires_at"]),
            None if offer is None else str(offer["id"]),
            None if offer is None else str(offer["sdp"]),
        )

    async def answer(self, uuid: str, offer_id: str, sdp: str) -> str:
        """Answer an offer; returns the answerer token. 409 when another answer won."""
        r = await self._call(
            "POST", f"/services/{uuid}/offers/{offer_id}/answer", body={"sdp": sdp}
        )
        return str(r["token"])

    async def add_answerer_candidates(
        self, uuid: str, offer_id: str, token: str, cands: list[str]
    ) -> None:
        await self._call(
            "POST",
            f"/services/{uuid}/offers/{offer_id}/candidates",
            body={"candidates": cands},
            headers={TOKEN_HEADER: token},
        )

    async def offerer_candidates(
        self, uuid: str, offer_id: str, token: str, since: str, *, wait: float = 0.0
    ) -> tuple[list[str], str]:
        """The owner's candidates for the offer since ``since``; returns them and ``next``."""
        r = await self._call(
            "GET",
            f"/services/{uuid}/offers/{offer_id}/candidates",
            query={"since": since, "wait": f"{wait:g}"},
            headers={TOKEN_HEADER: token},
            wait=wait,
        )
        return [c["candidate"] for c in r["candidates"]], str(r["next"])
