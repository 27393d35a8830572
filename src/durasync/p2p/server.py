"""The rendezvous service inside ``durasync serve``: the log-store shell and its HTTP routes.

:class:`RendezvousService` keeps each username's state as a log in the store
(``__rendezvous/u/<username>``, see :mod:`durasync.p2p.rendezvous` for the rules) plus one
index stream per service UUID (``__rendezvous/s/<uuid>``, naming the owner). Both live in the
reserved ``__`` namespace, which the public stream API does not serve. A request that changes
something appends one record and then folds the log up to it: the verdict is the fold's, so
every node of a Redis deployment decides the same way. Folds are cached per node (bounded in
bytes) and advanced incrementally; the cache is never authoritative.

Live waits (the owner's answer feed, an answerer's candidate feed, a connector waiting for a
free offer) park on the store's ``wait_for`` of the user's log: an answer appended through any
node wakes them at once, so a connect costs no polling delay.

A sweeper task (every ``sweep_interval``) deletes the logs of names unused for
``username_ttl`` and index streams whose service is gone, and compacts long logs (a
:class:`~durasync.p2p.rendezvous.Snapshot` record, then a trim below its ``as_of``).

Authorization: every request is first authenticated and authorized by the server's
:class:`~durasync.auth.Authorizer` on the resource ``rendezvous/<username>``: ``read`` for
discovery and for connecting (answering an offer, the answerer's candidates), ``write`` for the
owner's operations; the owner's operations are then also verified against the name's Ed25519 key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from durasync.auth import Action, AuthError, Authorizer, credentials_from_scope
from durasync.httpwire import error_body
from durasync.p2p.identity import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from durasync.p2p.rendezvous import (
    AddOffers,
    Answer,
    Candidates,
    Claim,
    DeleteOffer,
    NewOffer,
    OfferView,
    Publish,
    Record,
    Refresh,
    RendezvousSettings,
    RequestError,
    ServiceView,
    Snapshot,
    Unpublish,
    UserLog,
    check_fqn,
    check_nonce,
    check_username,
    decode_public_key,
    decode_record,
    encode_record,
    service_uuid,
    signing_payload,
    token_hash,
    validate_candidates,
    validate_metadata,
    validate_sdp,
    verify_signature,
)
from durasync.store.base import LogStore, StreamConfig
from durasync.store.errors import DataGone, NoSuchStream, StoreError, StoreUnavailable, StreamExists
from durasync.store.offsets import decode_offset, is_offset

__all__ = ["RendezvousService", "rendezvous_routes"]

log = logging.getLogger("durasync.p2p")

USER_PREFIX: Final = "__rendezvous/u/"
INDEX_PREFIX: Final = "__rendezvous/s/"
TOKEN_HEADER: Final = "Rendezvous-Token"
_CONFIG: Final = StreamConfig(content_type="application/json")
_USER_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyz.-"
_UUID_ALPHABET: Final = "0123456789abcdef-"
_LIST_LIMIT: Final = 1000
_T = TypeVar("_T")


class _Sdp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sdp: str


class _ClaimBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    public_key: str


class _PublishBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ttl: float | None = None
    public: bool = False
    metadata: dict[str, Any] = {}
    offers: list[_Sdp] = []


class _RefreshBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ttl: float | None = None


class _OffersBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    offers: list[_Sdp]


class _CandidatesBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    candidates: list[str]


_json: Final = msgspec.json.Encoder()


def _ok(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status_code=status, media_type="application/json")


def _service_json(v: ServiceView) -> dict[str, Any]:
    return {
        "uuid": v.uuid,
        "username": v.username,
        "fqn": v.fqn,
        "public": v.public,
        "metadata": v.metadata,
        "expires_at": v.expires_at,
    }


class _Index(msgspec.Struct, frozen=True):
    username: str
    fqn: str


class RendezvousService:
    """Rendezvous state over a :class:`LogStore` plus its HTTP routes (see module docs).

    ``start``/``aclose`` belong in the server's lifespan. ``clock`` gives Unix seconds; it is
    the time records are stamped with and signatures are checked against.
    """

    def __init__(
        self,
        store: LogStore,
        settings: RendezvousSettings | None = None,
        *,
        authorizer: Authorizer,
        clock: Callable[[], float] = time.time,
        prefix: str = "/v1/rendezvous",
    ) -> None:
        self.store = store
        self.settings = settings or RendezvousSettings()
        self.authorizer = authorizer
        self.clock = clock
        self.prefix = prefix.rstrip("/")
        self._cache: OrderedDict[str, UserLog] = OrderedDict()
        self._cached_bytes = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._waiting = 0

    @property
    def live_requests(self) -> int:
        """Number of long-polls waiting now (for ``/healthz``, tests and metrics)."""
        return self._waiting

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sweeper."""
        self._closing.clear()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    def begin_shutdown(self) -> None:
        """End every open long-poll now (each answers with what it has); later ones do not wait."""
        self._closing.set()

    async def aclose(self) -> None:
        """Stop the sweeper and end every open long-poll (they answer with what they have)."""
        self._closing.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # ------------------------------------------------------------------ the logs

    @staticmethod
    def user_path(username: str) -> str:
        return USER_PREFIX + username

    async def fold(self, username: str) -> UserLog:
        """The fold of ``username``'s log up to its current tail."""
        lock = self._locks.get(username)
        if lock is None:
            if len(self._locks) >= 4096:
                for name in [n for n, lk in self._locks.items() if not lk.locked()]:
                    del self._locks[name]
            lock = self._locks[username] = asyncio.Lock()
        async with lock:
            ulog = self._cache.pop(username, None)
            if ulog is not None:
                self._cached_bytes -= ulog.size
            else:
                ulog = UserLog(username, self.settings)
            try:
                await self._advance(ulog)
            except DataGone:
                # Compacted below our position by another node: start cold.
                ulog = UserLog(username, self.settings)
                await self._advance(ulog)
            self._cache[username] = ulog
            self._cached_bytes += ulog.size
            self._evict()
            return ulog

    def _evict(self) -> None:
        while self._cached_bytes > self.settings.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.size

    async def _advance(self, ulog: UserLog) -> None:
        path = self.user_path(ulog.username)
        if ulog.offset == "-1":
            await self._cold(ulog)
            return
        await self._read_into(ulog, path, ulog.offset)

    async def _read_into(self, ulog: UserLog, path: str, offset: str) -> None:
        while True:
            try:
                res = await self.store.read(path, offset, max_messages=512)
            except NoSuchStream:
                ulog.state = None
                ulog.offset = "-1"
                return
            for e in res.entries:
                ulog.apply(decode_record(e.data), e.offset, e.next_offset)
            offset = res.next_offset
            if res.up_to_date or not res.entries:
                return

    async def _cold(self, ulog: UserLog) -> None:
        path = self.user_path(ulog.username)
        try:
            info = await self.store.head(path)
        except NoSuchStream:
            return
        if decode_offset(info.start)[0] == 0:
            await self._read_into(ulog, path, "-1")
            return
        # Compacted: records before the snapshot whose as_of is the log's start come after
        # that state; apply them once the snapshot is found.
        pending: list[tuple[Record, str, str]] = []
        offset = info.start
        found = False
        while True:
            res = await self.store.read(path, offset, max_messages=512)
            for e in res.entries:
                rec = decode_record(e.data)
                if not found:
                    if isinstance(rec, Snapshot) and rec.as_of == info.start:
                        ulog.start_from(rec)
                        found = True
                        for r, o, n in pending:
                            ulog.apply(r, o, n)
                        ulog.offset = e.next_offset
                    else:
                        pending.append((rec, e.offset, e.next_offset))
                    continue
                ulog.apply(rec, e.offset, e.next_offset)
            offset = res.next_offset
            if res.up_to_date or not res.entries:
                break
        if not found:
            raise StoreUnavailable(f"rendezvous log {path!r} is trimmed without its snapshot")

    async def submit(self, username: str, record: Record) -> UserLog:
        """Append ``record`` to the user's log and fold up to it.

        Raises:
            RequestError: the fold refused the record (its verdict).
        """
        path = self.user_path(username)
        data = encode_record(record)
        try:
            res = await self.store.append(path, [data])
        except NoSuchStream:
            with contextlib.suppress(StreamExists):
                await self.store.create(path, _CONFIG)
            res = await self.store.append(path, [data])
        ulog = await self.fold(username)
        outcome = ulog.outcomes.get(res.offsets[0])
        if outcome is None:
            raise StoreUnavailable("the record's verdict was not seen; retry")
        outcome.raise_for_error()
        if ulog.since_snapshot >= self.settings.compact_after:
            await self._compact(username)
        return ulog

    async def _compact(self, username: str) -> None:
        ulog = await self.fold(username)
        path = self.user_path(username)
        as_of = ulog.offset
        if not is_offset(as_of):
            return
        snap = Snapshot(at=self.clock(), as_of=as_of, state=ulog.state)
        await self.store.append(path, [encode_record(snap)])
        with contextlib.suppress(NoSuchStream):
            await self.store.trim(path, as_of)
        ulog.since_snapshot = 0

    async def _ensure_index(self, username: str, uid: str, fqn: str) -> None:
        data = msgspec.json.encode(_Index(username, fqn))
        with contextlib.suppress(StreamExists):
            await self.store.create(INDEX_PREFIX + uid, _CONFIG, initial=[data])

    async def _owner_of(self, uid: str) -> str:
        """The username that published service ``uid`` (via its index), or 404."""
        try:
            res = await self.store.read(INDEX_PREFIX + uid, "-1", max_messages=1)
        except (NoSuchStream, DataGone):
            raise RequestError(404, "NO_SUCH_SERVICE", f"no service {uid}") from None
        if not res.entries:
            raise RequestError(404, "NO_SUCH_SERVICE", f"no service {uid}")
        return msgspec.json.decode(res.entries[0].data, type=_Index).username

    async def _wait(
        self,
        username: str,
        ulog: UserLog,
        wait: float,
        ready: Callable[[UserLog], _T | None],
    ) -> tuple[UserLog, _T | None]:
        """Fold until ``ready(ulog)`` gives a value or ``wait`` seconds passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        self._waiting += 1
        try:
            while True:
                value = ready(ulog)
                remaining = deadline - loop.time()
                if value is not None or remaining <= 0 or self._closing.is_set():
                    return ulog, value
                offset = ulog.offset
                if not is_offset(offset):
                    return ulog, None
                waiter = asyncio.ensure_future(
                    self.store.wait_for(self.user_path(username), offset, remaining)
                )
                closing = asyncio.ensure_future(self._closing.wait())
                try:
                    await asyncio.wait((waiter, closing), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                    waiter.cancel()
                more = waiter.done() and not waiter.cancelled() and waiter.result()
                if not more:
                    return ulog, ready(ulog)
                ulog = await self.fold(username)
        finally:
            self._waiting -= 1

    # ------------------------------------------------------------------ sweeping

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning("rendezvous sweep failed: %s", exc)
            except Exception:
                log.exception("rendezvous sweep failed")

    async def sweep(self) -> int:
        """One sweep pass; returns how many streams it deleted."""
        now = self.clock()
        deleted = 0
        async for info in self._walk(USER_PREFIX, _USER_ALPHABET):
            name = info.path[len(USER_PREFIX) :]
            ulog = await self.fold(name)
            if ulog.is_empty(now):
                with contextlib.suppress(NoSuchStream, DataGone):
                    await self.store.delete(info.path)
                    deleted += 1
                self._drop_cached(name)
            elif ulog.since_snapshot >= self.settings.compact_after:
                await self._compact(name)
        async for info in self._walk(INDEX_PREFIX, _UUID_ALPHABET):
            uid = info.path[len(INDEX_PREFIX) :]
            if now - info.created_at < 600:
                continue
            try:
                owner = await self._owner_of(uid)
            except RequestError:
                continue
            if (await self.fold(owner)).service(uid, now) is None:
                with contextlib.suppress(NoSuchStream, DataGone):
                    await self.store.delete(info.path)
                    deleted += 1
        return deleted

    def _drop_cached(self, username: str) -> None:
        ulog = self._cache.pop(username, None)
        if ulog is not None:
            self._cached_bytes -= ulog.size

    async def _walk(self, prefix: str, alphabet: str) -> AsyncIterator[Any]:
        """Every live stream under ``prefix`` (list_streams pages split by next character)."""
        infos = await self.store.list_streams(prefix, limit=_LIST_LIMIT)
        if len(infos) < _LIST_LIMIT:
            for info in infos:
                yield info
            return
        for info in infos:
            if info.path == prefix:
                yield info
        for c in alphabet:
            async for info in self._walk(prefix + c, alphabet):
                yield info

    # ------------------------------------------------------------------ HTTP

    def routes(self) -> list[BaseRoute]:
        """The ``/v1/rendezvous`` routes (docs/p2p.md)."""
        p = self.prefix
        h = self._handler
        return [
            Route(p + "/users/{username}", h(self._get_user), methods=["GET"]),
            Route(p + "/users/{username}", h(self._claim), methods=["PUT"]),
            Route(p + "/users/{username}/services", h(self._list_services), methods=["GET"]),
            Route(p + "/users/{username}/events", h(self._owner_events), methods=["GET"]),
            Route(p + "/users/{username}/services/{fqn}", h(self._get_by_fqn), methods=["GET"]),
            Route(p + "/users/{username}/services/{fqn}", h(self._publish), methods=["PUT"]),
            Route(p + "/services/{uuid}", h(self._get_by_uuid), methods=["GET"]),
            Route(p + "/services/{uuid}", h(self._unpublish), methods=["DELETE"]),
            Route(p + "/services/{uuid}/refresh", h(self._refresh), methods=["POST"]),
            Route(p + "/services/{uuid}/offers", h(self._add_offers), methods=["POST"]),
            Route(
                p + "/services/{uuid}/offers/{offer_id}", h(self._delete_offer), methods=["DELETE"]
            ),
            Route(
                p + "/services/{uuid}/offers/{offer_id}/answer", h(self._answer), methods=["POST"]
            ),
            Route(
                p + "/services/{uuid}/offers/{offer_id}/candidates",
                h(self._post_candidates),
                methods=["POST"],
            ),
            Route(
                p + "/services/{uuid}/offers/{offer_id}/candidates",
                h(self._get_candidates),
                methods=["GET"],
            ),
        ]

    def _handler(
        self, fn: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                return await fn(request)
            except RequestError as exc:
                return Response(
                    error_body(exc.code, exc.message),
                    status_code=exc.status,
                    media_type="application/json",
                )
            except AuthError as exc:
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                return Response(
                    error_body(exc.code, exc.message),
                    status_code=exc.status,
                    media_type="application/json",
                    headers=headers,
                )
            except StoreUnavailable as exc:
                return Response(
                    error_body("UNAVAILABLE", str(exc)),
                    status_code=503,
                    media_type="application/json",
                    headers={"Retry-After": "1"},
                )

        return handle

    # -- request helpers --------------------------------------------------------

    def _authorize(self, request: Request, action: Action, username: str) -> None:
        principal = self.authorizer.authenticate(credentials_from_scope(request.scope))
        if not self.authorizer.authorize(principal, action, f"rendezvous/{username}"):
            raise AuthError(403, "FORBIDDEN", f"no {action} access to rendezvous/{username}")

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, "BODY_TOO_LARGE", f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "BODY_TOO_LARGE", f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _decode(body: bytes, kind: type[_T]) -> _T:
        try:
            return msgspec.json.decode(body or b"{}", type=kind)
        except msgspec.ValidationError as exc:
            raise RequestError(400, "BAD_BODY", f"invalid request body: {exc}") from None
        except msgspec.DecodeError as exc:
            raise RequestError(400, "BAD_JSON", f"request body is not JSON: {exc}") from None
        except RecursionError:
            raise RequestError(400, "BAD_JSON", "request body is nested too deeply") from None

    def _signature(self, request: Request, body: bytes, key: str | None) -> tuple[str, int, str]:
        """Verify the request's signature by ``key``; returns (key, ts ms, nonce).

        Raises:
            RequestError: 401 missing/invalid signature or stale timestamp; 404 when the
                name has no key (``key`` None).
        """
        h = request.headers
        ts_text, nonce, sig = h.get(TIMESTAMP_HEADER), h.get(NONCE_HEADER), h.get(SIGNATURE_HEADER)
        if not ts_text or not nonce or not sig:
            raise RequestError(
                401,
                "SIGNATURE_REQUIRED",
                f"sign the request: {TIMESTAMP_HEADER}, {NONCE_HEADER}, {SIGNATURE_HEADER}",
            )
        if not ts_text.isdigit() or len(ts_text) > 16:
            raise RequestError(400, "BAD_TIMESTAMP", f"{TIMESTAMP_HEADER} must be Unix ms")
        ts = int(ts_text)
        check_nonce(nonce)
        if abs(self.clock() * 1000 - ts) > self.settings.signature_window * 1000:
            raise RequestError(
                401, "STALE_TIMESTAMP", "request timestamp is outside the ±5 min window"
            )
        if key is None:
            raise RequestError(404, "NO_SUCH_USER", "the username is not claimed")
        target = request.url.path
        query = request.scope.get("query_string", b"")
        if query:
            target += "?" + query.decode("latin-1")
        payload = signing_payload(request.method, target, body, ts, nonce)
        if not verify_signature(key, sig, payload):
            raise RequestError(401, "BAD_SIGNATURE", "the signature does not verify")
        return key, ts, nonce

    def _username(self, request: Request) -> str:
        return check_username(request.path_params["username"])

    @staticmethod
    def _uuid(request: Request) -> str:
        uid = str(request.path_params["uuid"])
        if len(uid) != 36 or any(c not in _UUID_ALPHABET for c in uid):
            raise RequestError(400, "BAD_UUID", "service id must be a lowercase UUID")
        return uid

    @staticmethod
    def _offer_id(request: Request) -> str:
        oid = str(request.path_params["offer_id"])
        if len(oid) != 32 or any(c not in "0123456789abcdef" for c in oid):
            raise RequestError(400, "BAD_OFFER_ID", "offer id must be 32 lowercase hex digits")
        return oid

    def _wait_param(self, request: Request) -> float:
        text = request.query_params.get("wait", "0")
        try:
            wait = float(text)
        except ValueError:
            raise RequestError(400, "BAD_WAIT", "wait must be a number of seconds") from None
        if not 0 <= wait < float("inf"):
            raise RequestError(400, "BAD_WAIT", "wait must be >= 0")
        return min(wait, self.settings.max_wait)

    @staticmethod
    def _since_param(request: Request) -> str:
        since = request.query_params.get("since", "-1")
        if since != "-1" and not is_offset(since):
            raise RequestError(400, "BAD_SINCE", "since must be -1 or an offset from 'next'")
        return since

    def _new_offers(self, offers: list[_Sdp]) -> list[NewOffer]:
        if len(offers) > self.settings.max_offers_per_request:
            raise RequestError(
                413,
                "TOO_MANY_OFFERS",
                f"at most {self.settings.max_offers_per_request} offers per request",
            )
        return [NewOffer(secrets.token_hex(16), validate_sdp(o.sdp, self.settings)) for o in offers]

    async def _signed_submit(self, username: str, ulog: UserLog, record: Record) -> UserLog:
        ulog.check(record, record.at).raise_for_error()
        return await self.submit(username, record)

    # -- handlers -----------------------------------------------------------------

    async def _get_user(self, request: Request) -> Response:
        username = self._username(request)
        self._authorize(request, "read", username)
        ulog = await self.fold(username)
        return _ok(ulog.claim_view(self.clock()))

    async def _claim(self, request: Request) -> Response:
        username = self._username(request)
        self._authorize(request, "write", username)
        body = await self._body(request)
        req = self._decode(body, _ClaimBody)
        decode_public_key(req.public_key)
        key, ts, nonce = self._signature(request, body, req.public_key)
        ulog = await self.fold(username)
        rec = Claim(at=self.clock(), key=key, ts=ts, nonce=nonce, salt=secrets.token_hex(16))
        ulog = await self._signed_submit(username, ulog, rec)
        return _ok(ulog.claim_view(self.clock()))

    async def _list_services(self, request: Request) -> Response:
        username = self._username(request)
        self._authorize(request, "read", username)
        ulog = await self.fold(username)
        now = self.clock()
        return _ok(
            {
                "username": username,
                "services": [_service_json(v) for v in ulog.public_services(now)],
            }
        )

    async def _publish(self, request: Request) -> Response:
        username = self._username(request)
        fqn = check_fqn(request.path_params["fqn"])
        self._authorize(request, "write", username)
        body = await self._body(request)
        req = self._decode(body, _PublishBody)
        ulog = await self.fold(username)
        key, ts, nonce = self._signature(request, body, ulog.owner_key(self.clock()))
        offers = self._new_offers(req.offers)
        rec = Publish(
            at=self.clock(),
            key=key,
            ts=ts,
            nonce=nonce,
            fqn=fqn,
            ttl=self.settings.clamp_ttl(req.ttl),
            public=req.public,
            metadata=validate_metadata(req.metadata, self.settings),
            offers=offers,
        )
        ulog.check(rec, rec.at).raise_for_error()
        assert ulog.state is not None
        uid = service_uuid(ulog.state.salt, fqn)
        await self._ensure_index(username, uid, fqn)
        ulog = await self.submit(username, rec)
        view = ulog.service(uid, self.clock())
        if view is None:
            raise RequestError(410, "SERVICE_EXPIRED", "the service expired meanwhile")
        return _ok({**_service_json(view), "offers": [{"id": o.id} for o in offers]}, status=200)

    async def _refresh(self, request: Request) -> Response:
        uid = self._uuid(request)
        username = await self._owner_of(uid)
        self._authorize(request, "write", username)
        body = await self._body(request)
        req = self._decode(body, _RefreshBody)
        ulog = await self.fold(username)
        key, ts, nonce = self._signature(request, body, ulog.owner_key(self.clock()))
        rec = Refresh(
            at=self.clock(),
            key=key,
            ts=ts,
            nonce=nonce,
            uuid=uid,
            ttl=self.settings.clamp_ttl(req.ttl),
        )
        ulog = await self._signed_submit(username, ulog, rec)
        view = ulog.service(uid, self.clock())
        if view is None:
            raise RequestError(410, "SERVICE_EXPIRED", "the service expired meanwhile")
        await self._ensure_index(username, uid, view.fqn)
        return _ok(_service_json(view))

    async def _unpublish(self, request: Request) -> Response:
        uid = self._uuid(request)
        username = await self._owner_of(uid)
        self._authorize(request, "write", username)
        body = await self._body(request)
        ulog = await self.fold(username)
        key, ts, nonce = self._signature(request, body, ulog.owner_key(self.clock()))
        rec = Unpublish(at=self.clock(), key=key, ts=ts, nonce=nonce, uuid=uid)
        await self._signed_submit(username, ulog, rec)
        return Response(status_code=204)

    async def _add_offers(self, request: Request) -> Response:
        uid = self._uuid(request)
        username = await self._owner_of(uid)
        self._authorize(request, "write", username)
        body = await self._body(request)
        req = self._decode(body, _OffersBody)
        ulog = await self.fold(username)
        key, ts, nonce = self._signature(request, body, ulog.owner_key(self.clock()))
        offers = self._new_offers(req.offers)
        if not offers:
            raise RequestError(400, "NO_OFFERS", "offers must not be empty")
        rec = AddOffers(at=self.clock(), key=key, ts=ts, nonce=nonce, uuid=uid, offers=offers)
        await self._signed_submit(username, ulog, rec)
        return _ok({"offers": [{"id": o.id} for o in offers]}, status=201)

    async def _delete_offer(self, request: Request) -> Response:
        uid = self._uuid(request)
        oid = self._offer_id(request)
        username = await self._owner_of(uid)
        self._authorize(request, "write", username)
        body = await self._body(request)
        ulog = await self.fold(username)
        key, ts, nonce = self._signature(request, body, ulog.owner_key(self.clock()))
        rec = DeleteOffer(at=self.clock(), key=key, ts=ts, nonce=nonce, offer_id=oid)
        await self._signed_submit(username, ulog, rec)
        return Response(status_code=204)

    async def _discover(
        self, request: Request, username: str, find: Callable[[UserLog], ServiceView | None]
    ) -> Response:
        wait = self._wait_param(request)
        ulog = await self.fold(username)
        view = find(ulog)
        if view is None:
            raise RequestError(404, "NO_SUCH_SERVICE", "no such live service")
        uid = view.uuid

        def pick(u: UserLog) -> OfferView | None:
            offers = u.open_offers(uid, self.clock())
            return random.choice(offers) if offers else None

        ulog, offer = await self._wait(username, ulog, wait, pick)
        view = ulog.service(uid, self.clock()) or view
        body = _service_json(view)
        body["offer"] = None if offer is None else {"id": offer.id, "sdp": offer.sdp}
        return _ok(body)

    async def _get_by_fqn(self, request: Request) -> Response:
        username = self._username(request)
        fqn = check_fqn(request.path_params["fqn"])
        self._authorize(request, "read", username)
        return await self._discover(
            request, username, lambda u: u.service_by_fqn(fqn, self.clock())
        )

    async def _get_by_uuid(self, request: Request) -> Response:
        uid = self._uuid(request)
        username = await self._owner_of(uid)
        self._authorize(request, "read", username)
        return await self._discover(request, username, lambda u: u.service(uid, self.clock()))

    async def _answer(self, request: Request) -> Response:
        uid = self._uuid(request)
        oid = self._offer_id(request)
        username = await self._owner_of(uid)
        self._authorize(request, "read", username)
        body = await self._body(request)
        req = self._decode(body, _Sdp)
        token = secrets.token_urlsafe(24)
        rec = Answer(
            at=self.clock(),
            uuid=uid,
            offer_id=oid,
            sdp=validate_sdp(req.sdp, self.settings),
            token_hash=token_hash(token),
        )
        ulog = await self.fold(username)
        ulog.check(rec, rec.at).raise_for_error()
        await self.submit(username, rec)
        return _ok({"offer_id": oid, "token": token})

    async def _post_candidates(self, request: Request) -> Response:
        uid = self._uuid(request)
        oid = self._offer_id(request)
        username = await self._owner_of(uid)
        body = await self._body(request)
        req = self._decode(body, _CandidatesBody)
        cands = validate_candidates(req.candidates, self.settings)
        token = request.headers.get(TOKEN_HEADER)
        ulog = await self.fold(username)
        rec: Candidates
        if token is not None:
            self._authorize(request, "read", username)
            rec = Candidates(
                at=self.clock(),
                offer_id=oid,
                role="answerer",
                candidates=cands,
                token_hash=token_hash(token),
            )
        else:
            self._authorize(request, "write", username)
            key, ts, nonce = self._signature(request, body, ulog.owner_key(self.clock()))
            rec = Candidates(
                at=self.clock(),
                offer_id=oid,
                role="offerer",
                candidates=cands,
                key=key,
                ts=ts,
                nonce=nonce,
            )
        ulog.check(rec, rec.at).raise_for_error()
        await self.submit(username, rec)
        return _ok({"count": len(cands)}, status=201)

    async def _get_candidates(self, request: Request) -> Response:
        uid = self._uuid(request)
        oid = self._offer_id(request)
        username = await self._owner_of(uid)
        self._authorize(request, "read", username)
        token = request.headers.get(TOKEN_HEADER)
        if not token:
            raise RequestError(401, "TOKEN_REQUIRED", f"send the answer's token in {TOKEN_HEADER}")
        since = self._since_param(request)
        wait = self._wait_param(request)
        ulog = await self.fold(username)
        ulog.answerer_feed(oid, token, since)  # 403/404 before waiting

        def ready(u: UserLog) -> list[Any] | None:
            found = u.answerer_feed(oid, token, since)
            return found or None

        ulog, found = await self._wait(username, ulog, wait, ready)
        items = found or []
        return _ok(
            {
                "candidates": [{"candidate": c.candidate, "offset": c.offset} for c in items],
                "next": ulog.offset,
            }
        )

    async def _owner_events(self, request: Request) -> Response:
        username = self._username(request)
        self._authorize(request, "write", username)
        since = self._since_param(request)
        wait = self._wait_param(request)
        ulog = await self.fold(username)
        self._signature(request, b"", ulog.owner_key(self.clock()))

        def ready(u: UserLog) -> tuple[list[Any], list[Any]] | None:
            answers, cands = u.owner_feed(since, self.clock())
            return (answers, cands) if answers or cands else None

        ulog, found = await self._wait(username, ulog, wait, ready)
        answers, cands = found or ([], [])
        return _ok(
            {
                "answers": [
                    {"offer_id": a.offer_id, "uuid": a.uuid, "sdp": a.sdp, "offset": a.offset}
                    for a in answers
                ],
                "candidates": [
                    {"offer_id": c.offer_id, "candidate": c.candidate, "offset": c.offset}
                    for c in cands
                ],
                "next": ulog.offset,
            }
        )


def rendezvous_routes(service: RendezvousService) -> list[BaseRoute]:
    """The service's routes, for mounting in an ASGI app."""
    return service.routes()
