"""Reserved subscription APIs of Durable Streams (DS §9): webhook and pull-wake.

Served under ``{stream_prefix}/__ds/``; the streams app routes every request
whose path starts with ``{stream_prefix}/__ds`` here first. Routes:

- ``GET  __ds/jwks.json`` — public Ed25519 keys of webhook signatures;
- ``PUT|GET|DELETE __ds/subscriptions/:id`` — create (201) / confirm (200) /
  conflict (409, by config hash), read, delete;
- ``POST __ds/subscriptions/:id/streams``, ``DELETE .../streams/:path`` —
  explicit stream links;
- ``POST .../callback`` — webhook consumer acks (Bearer callback token);
- ``POST .../claim|ack|release`` — pull-wake leases.

This module is the I/O shell: HTTP routing, timers and delivery workers.
All rules (globs, fencing, acks, SSRF, signatures, retry schedule) live in
:mod:`durasync.streams.subscriptions_core` as pure functions.

Contract with the streams layer:

- call :meth:`SubscriptionService.notify_append` after every successful
  append or close **and** after a PUT that created a stream with data,
  before sending the response (so a client that saw the response and then
  claims sees the work); it is cheap, never blocks on I/O and never raises;
- call :meth:`SubscriptionService.notify_delete` after a stream is deleted;
- ``start`` / ``aclose`` with the app's lifespan (``start`` is also run
  lazily on first use).

Guarantees and limits:

- On a store of one process (memory, embedded), subscription state lives
  **in memory** (lost on restart, like the npm reference server); the
  signing key too, unless one is passed in.
- On a store shared by several nodes (Redis; ``shared``), every
  subscription is a reserved record stream ``__ds/subscriptions/<id>`` of
  versioned snapshots, written with ``Stream-Seq`` = version so that two
  nodes changing it at once cannot both win (the loser re-reads and
  re-applies); every request reads it fresh, so any node answers for any
  subscription. The webhook signing key and the callback-token key live in
  ``__ds/keys`` (the first node to start stores its own; the others adopt
  them), so signatures and tokens verify on every node. These records are
  readable by whoever can read the store (the Redis); they are never served
  over HTTP. Each node refreshes its list of subscriptions every
  ``index_interval`` seconds (to match appends it receives). Timers (lease
  expiry, webhook retries) run on the node that set them; a claim, and the
  next matching append on any node, also end an expired lease, so a dead
  node's lease does not block its subscription beyond the lease TTL.
- A store that cannot answer gives 503 + ``Retry-After`` (never a guess).
- Every queue is bounded: the delivery queue holds at most ``max_queue``
  items; when full a wake is not queued, and the wake's lease expiry
  re-triggers it (latency degrades to the lease TTL, nothing is lost).
- Webhook retries follow 1 s doubling to 60 s with ±20 % jitter; redirects
  are not followed (SSRF).
- Plain ``http`` webhooks to loopback are accepted only when
  ``allow_loopback_webhooks`` is true; ``None`` (default) means "iff the
  request arrived on a loopback-bound server".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import secrets
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote

import httpx
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.types import Receive, Scope, Send

from durasync.namespaces import is_reserved
from durasync.store.base import OFFSET_START, LogStore, StreamConfig
from durasync.store.errors import (
    DataGone,
    NoSuchStream,
    SeqConflict,
    StoreClientError,
    StoreError,
    StoreUnavailable,
)
from durasync.streams.errors import SubscriptionError
from durasync.streams.subscriptions_core import (
    BEFORE_FIRST,
    KEYS_PATH,
    RECORDS_PREFIX,
    ClaimInput,
    SharedKeys,
    Subscription,
    SubscriptionConfig,
    Wake,
    WakeInput,
    WebhookReply,
    WebhookSigner,
    b64url,
    b64url_decode,
    compare_offsets,
    decode_record,
    encode_record,
    glob_literal_prefix,
    glob_match,
    is_loopback_host,
    make_token,
    new_wake_id,
    normalize_path,
    parse_body,
    parse_create,
    parse_streams,
    record_id,
    record_path,
    record_seq,
    retry_delay,
    validate_id,
    validate_webhook_url,
    verify_token,
)

__all__ = ["SubscriptionService"]

log = logging.getLogger("durasync.subscriptions")

#: Largest request body the control API reads (bytes).
MAX_BODY = 256 * 1024
#: Largest webhook reply body read (bytes); the rest is ignored.
MAX_REPLY = 64 * 1024

_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]

_Item = tuple[Literal["deliver", "wake_event"], str, int, str]


class _BodyTooLarge(Exception):
    pass


class _Conflict(Exception):
    """Another node wrote the same record version first (``Stream-Seq`` check)."""


_T = TypeVar("_T")

#: Attempts of one read-modify-write before answering 503 (heavy contention).
CAS_ATTEMPTS = 8
#: Bound on queued append/delete notices waiting for the shared-mode processor.
MAX_PENDING_NOTICES = 10_000
_JSON = StreamConfig(content_type="application/json")


class SubscriptionService:
    """Subscriptions over the streams of one store (DS §9).

    ``notify_append`` is called by the streams layer after every successful
    append or close; it never blocks and never raises.

    ``shared`` says whether the store is shared with other nodes (Redis):
    then every subscription's state and the signing/token keys live in the
    store (reserved ``__ds/`` streams) and every request reads them fresh, so
    any node answers for any subscription. ``None`` (default) takes the
    store's own ``shared``. Otherwise state lives in this process only.
    """

    def __init__(
        self,
        store: LogStore,
        *,
        stream_prefix: str = "/v1/stream",
        public_base_url: str | None = None,
        allow_loopback_webhooks: bool | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        delivery_workers: int = 4,
        delivery_timeout: float = 10.0,
        max_queue: int = 10_000,
        max_subscriptions: int = 10_000,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
        shared: bool | None = None,
        index_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.stream_prefix = stream_prefix.rstrip("/")
        self._control_prefix = f"{self.stream_prefix}/__ds"
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.allow_loopback_webhooks = allow_loopback_webhooks
        self.signer = WebhookSigner(signing_key)
        self._explicit_key = signing_key is not None
        self._token_key = secrets.token_bytes(32)
        self._workers_n = max(1, delivery_workers)
        self._delivery_timeout = delivery_timeout
        self._max_subscriptions = max_subscriptions
        self._clock = clock
        self._rand = rand
        self._transport = transport
        self.shared = store.shared if shared is None else shared
        self._index_interval = index_interval
        #: Memory mode: the state. Shared mode: a cache of the last version
        #: seen, used only to match appends to subscriptions (never to answer).
        self._subs: dict[str, Subscription] = {}
        self._base_urls: dict[str, str] = {}
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max(1, max_queue))
        self._lease_timers: dict[str, asyncio.TimerHandle] = {}
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        # Shared mode only.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._keys_ready = False
        self._keys_lock: asyncio.Lock | None = None
        self._notices: dict[str, list[tuple[str, str | None]]] = {}
        self._notice_count = 0
        self._notice_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------
    # Lifecycle.
    # ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the delivery workers (idempotent)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._workers or self._closed:
            return
        self._client = httpx.AsyncClient(
            timeout=self._delivery_timeout,
            follow_redirects=False,
            transport=self._transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._workers = [
            asyncio.create_task(self._worker(), name=f"ds-subscriptions-{i}")
            for i in range(self._workers_n)
        ]
        if self.shared:
            self._notice_event = asyncio.Event()
            self._workers.append(
                asyncio.create_task(self._process_notices(), name="ds-subs-notices")
            )
            self._workers.append(asyncio.create_task(self._index_loop(), name="ds-subs-index"))

    async def aclose(self) -> None:
        """Stop timers and workers; undelivered wakes are dropped."""
        self._closed = True
        for handle in [*self._lease_timers.values(), *self._retry_timers.values()]:
            handle.cancel()
        self._lease_timers.clear()
        self._retry_timers.clear()
        tasks = {*self._workers, *self._tasks}
        # Bounded: a client library may swallow a cancellation that lands inside
        # one of its calls (redis-py #2028); such a task sees ``_closed`` at its
        # next loop turn, and is cancelled again meanwhile.
        for _ in range(50):
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            _done, tasks = await asyncio.wait(tasks, timeout=0.1)
        if tasks:
            log.warning("subscriptions: %d background tasks did not stop", len(tasks))
        self._workers = []
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------
    # Hooks called by the streams layer.
    # ------------------------------------------------------------------

    def wants_appends(self) -> bool:
        """Whether :meth:`notify_append` can do anything now (a cheap pre-check
        the streams layer makes on every append: no subscriptions, no call)."""
        return bool(self._subs) and not self._closed

    async def notify_append(self, path: str, tail: str) -> None:
        """Record that ``path`` (without the stream prefix) now ends at ``tail``.

        Links the stream to every subscription whose pattern matches it and
        starts a wake where work is pending. O(subscriptions), no I/O: in
        shared mode the store write happens in a background task (a claim
        that comes first finds the work itself, as it reads stream tails).
        """
        if not self._subs or self._closed:
            return
        path = normalize_path(path)
        if is_reserved(path):
            return  # internal streams never link to a subscription
        for sub in list(self._subs.values()):
            try:
                if sub.matches(path):
                    sub.on_append(path, tail)
                    if self.shared:
                        self._notice(sub.id, path, tail)
                    else:
                        self._after_change(sub)
            except SubscriptionError as exc:  # link bound reached: skip, keep serving
                log.warning("subscription %s: %s", sub.id, exc.message)

    async def notify_delete(self, path: str) -> None:
        """Forget ``path`` in every subscription (the stream was deleted)."""
        path = normalize_path(path)
        for sub in self._subs.values():
            if sub.links.pop(path, None) is not None and self.shared:
                self._notice(sub.id, path, None)

    def _notice(self, sub_id: str, path: str, tail: str | None) -> None:
        """Queue an append (``tail``) or delete (``None``) for the shared-mode processor."""
        if self._notice_count >= MAX_PENDING_NOTICES:
            # Bounded: tails are re-read from the streams on every load, so a
            # dropped notice only delays a wake until the next append or claim.
            log.warning("subscription notices full; dropped %s for %s", path, sub_id)
            return
        self._notices.setdefault(sub_id, []).append((path, tail))
        self._notice_count += 1
        if self._notice_event is not None:
            self._notice_event.set()

    async def _process_notices(self) -> None:
        assert self._notice_event is not None
        while not self._closed:
            await self._notice_event.wait()
            self._notice_event.clear()
            notices, self._notices, self._notice_count = self._notices, {}, 0
            for sub_id, items in notices.items():

                def apply(sub: Subscription, items: list[tuple[str, str | None]] = items) -> None:
                    # The node that armed this lease's timer may be gone: an expired
                    # lease ends here, and the wake below redelivers (DS §9 leases).
                    sub.lease_expired(self._clock())
                    for path, tail in items:
                        if tail is None:
                            sub.links.pop(path, None)
                        elif sub.matches(path):
                            sub.on_append(path, tail)

                try:
                    await self._mutate(sub_id, apply)
                except SubscriptionError:
                    self._forget(sub_id)  # deleted through another node
                    continue
                except StoreError as exc:
                    log.warning("subscription %s: cannot record appends: %s", sub_id, exc)
                except Exception:
                    log.exception("subscription %s: notice processing failed", sub_id)

    async def _index_loop(self) -> None:
        """Keep the cache of subscriptions in step with the store (created elsewhere)."""
        while not self._closed:
            try:
                await self._refresh_index()
            except StoreError as exc:
                log.info("subscription index refresh failed: %s", exc)
            except Exception:
                log.exception("subscription index refresh failed")
            await asyncio.sleep(self._index_interval)

    async def _refresh_index(self) -> None:
        infos = await self.store.list_streams(RECORDS_PREFIX, limit=self._max_subscriptions)
        seen: set[str] = set()
        for info in infos:
            sub_id = record_id(info.path)
            if sub_id is None:
                continue
            seen.add(sub_id)
            if sub_id not in self._subs:
                with contextlib.suppress(SubscriptionError):
                    sub, _version, base = await self._load(sub_id)
                    self._remember(sub, base)
        for sub_id in list(self._subs):
            if sub_id not in seen:
                # The listing may predate a create by this node: forget only what is gone.
                try:
                    await self._load(sub_id)
                except SubscriptionError:
                    self._forget(sub_id)

    # ------------------------------------------------------------------
    # State: in memory, or versioned records in the shared store.
    # ------------------------------------------------------------------

    async def _ensure_keys(self) -> None:
        """Shared mode: adopt the cluster's keys (the first node to start stores its own)."""
        if not self.shared or self._keys_ready:
            return
        if self._keys_lock is None:
            self._keys_lock = asyncio.Lock()
        async with self._keys_lock:
            if self._keys_ready:
                return
            mine = SharedKeys(
                signing_key=b64url(self.signer.private_bytes()),
                token_key=b64url(self._token_key),
            )
            result = await self.store.create(KEYS_PATH, _JSON, initial=[msgspec.json.encode(mine)])
            if not result.created:
                read = await self.store.read(KEYS_PATH, OFFSET_START, max_messages=1)
                if not read.entries:
                    raise StoreUnavailable("shared subscription keys are missing")
                keys = msgspec.json.decode(read.entries[0].data, type=SharedKeys)
                if not self._explicit_key:
                    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(keys.signing_key))
                    self.signer = WebhookSigner(key)
                self._token_key = b64url_decode(keys.token_key)
            self._keys_ready = True

    async def _load(self, sub_id: str) -> tuple[Subscription, int, str]:
        """Shared mode: the newest stored version, with tails re-read from the streams.

        Raises:
            SubscriptionError: ``SUBSCRIPTION_NOT_FOUND``.
            StoreError: the store cannot answer (503 at the edge).
        """
        path = record_path(sub_id)
        offset = OFFSET_START
        last: bytes | None = None
        for _ in range(100):  # bounded: records are trimmed on every write
            try:
                read = await self.store.read(path, offset, max_messages=1000)
            except (NoSuchStream, DataGone):
                raise SubscriptionError(
                    "SUBSCRIPTION_NOT_FOUND", "subscription not found"
                ) from None
            if read.entries:
                last = read.entries[-1].data
            offset = read.next_offset
            if read.up_to_date:
                break
        if last is None:
            raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "subscription not found")
        try:
            record = decode_record(last)
        except ValueError:
            log.error("subscription %s: corrupt record", sub_id)
            raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "subscription not found") from None
        sub = record.sub
        # Appends through other nodes move tails without a record write.
        for link in sub.links.values():
            try:
                tail = (await self.store.head(link.path)).tail
            except StoreClientError:
                continue
            if compare_offsets(tail, link.tail_offset) > 0:
                link.tail_offset = tail
        return sub, record.version, record.base_url

    async def _save(self, sub: Subscription, version: int, base_url: str) -> None:
        """Shared mode: write ``version`` of ``sub``; :class:`_Conflict` if it exists already."""
        data = encode_record(sub, version, base_url)
        path = record_path(sub.id)
        if version == 1:
            created = await self.store.create(path, _JSON, initial=[data])
            if not created.created:
                raise _Conflict
            return
        try:
            result = await self.store.append(path, [data], stream_seq=record_seq(version))
        except SeqConflict:
            raise _Conflict from None
        except (NoSuchStream, DataGone):
            raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "subscription not found") from None
        if result.offsets:
            # Only the newest version matters: keep the record stream short.
            try:
                await self.store.trim(path, result.offsets[-1])
            except StoreError as exc:
                log.info("subscription %s: cannot trim its record: %s", sub.id, exc)

    def _remember(self, sub: Subscription, base_url: str) -> None:
        self._subs[sub.id] = sub
        self._base_urls[sub.id] = base_url

    def _lock_for(self, sub_id: str) -> asyncio.Lock:
        lock = self._locks.get(sub_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sub_id] = lock
        return lock

    async def _read(self, sub_id: str) -> Subscription:
        """The subscription as it is now (fresh from the store in shared mode)."""
        if not self.shared:
            return self._get(sub_id)
        sub, _version, base = await self._load(sub_id)
        self._base_urls[sub_id] = base
        return sub

    async def _mutate(
        self, sub_id: str, change: Callable[[Subscription], _T], *, wake: bool = True
    ) -> tuple[Subscription, _T]:
        """Apply ``change`` to the subscription, start a wake if due, persist, dispatch.

        ``change`` may raise :class:`SubscriptionError` (nothing is written
        then). In shared mode it may run more than once, each time on a fresh
        copy: another node wrote in between (read -> modify -> conditional
        write, see :mod:`subscriptions_core`). A change that leaves the state
        as it was writes nothing.

        Raises:
            SubscriptionError: from ``change``, or ``SUBSCRIPTION_NOT_FOUND``.
            StoreUnavailable: the store is down, or contention did not settle.
        """
        if not self.shared:
            sub = self._get(sub_id)
            result = change(sub)
            if wake:
                self._after_change(sub)
            else:
                self._sync_lease_timer(sub)
            return sub, result
        async with self._lock_for(sub_id):
            for _ in range(CAS_ATTEMPTS):
                sub, version, base = await self._load(sub_id)
                before = encode_record(sub, version, base)
                result = change(sub)
                started = sub.maybe_wake(self._clock(), new_wake_id) if wake else None
                if encode_record(sub, version, base) != before:
                    try:
                        await self._save(sub, version + 1, base)
                    except _Conflict:
                        continue
                self._remember(sub, base)
                self._dispatch(sub, started)
                return sub, result
        raise StoreUnavailable(f"subscription {sub_id} is changing too fast; retry")

    def _forget(self, sub_id: str) -> None:
        self._subs.pop(sub_id, None)
        self._base_urls.pop(sub_id, None)
        for timers in (self._lease_timers, self._retry_timers):
            handle = timers.pop(sub_id, None)
            if handle is not None:
                handle.cancel()

    # ------------------------------------------------------------------
    # State transitions (synchronous; I/O is queued).
    # ------------------------------------------------------------------

    def _after_change(self, sub: Subscription) -> None:
        """Memory mode: start a wake if due and keep the lease timer in step."""
        if self._closed:
            return
        self._ensure_started()
        self._dispatch(sub, sub.maybe_wake(self._clock(), new_wake_id))

    def _dispatch(self, sub: Subscription, wake: Wake | None) -> None:
        """Queue the I/O of a wake that just started; re-arm the lease timer."""
        if self._closed:
            return
        self._ensure_started()
        if wake is not None:
            if sub.config.type == "webhook":
                # A pending retry timer will deliver the newest wake itself.
                if sub.id not in self._retry_timers:
                    self._enqueue(("deliver", sub.id, wake.generation, ""))
            else:
                stream = sub.first_pending() or ""
                self._enqueue(("wake_event", sub.id, wake.generation, stream))
        self._sync_lease_timer(sub)

    def _enqueue(self, item: _Item) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # Bounded by design: the lease timer re-triggers this wake later.
            log.warning("subscription delivery queue full; %s deferred to lease expiry", item[1])

    def _sync_lease_timer(self, sub: Subscription) -> None:
        old = self._lease_timers.pop(sub.id, None)
        if old is not None:
            old.cancel()
        if sub.lease_deadline is None or self._closed:
            return
        delay = max(0.0, sub.lease_deadline - self._clock())
        loop = asyncio.get_running_loop()
        self._lease_timers[sub.id] = loop.call_later(delay, self._on_lease_timer, sub.id)

    def _on_lease_timer(self, sub_id: str) -> None:
        self._lease_timers.pop(sub_id, None)
        if self.shared:
            self._spawn(self._expire_lease(sub_id))
            return
        sub = self._subs.get(sub_id)
        if sub is None:
            return
        if sub.lease_expired(self._clock()):
            self._after_change(sub)
        else:
            self._sync_lease_timer(sub)

    async def _expire_lease(self, sub_id: str) -> None:
        try:
            await self._mutate(sub_id, lambda sub: sub.lease_expired(self._clock()))
        except SubscriptionError:
            self._forget(sub_id)
        except StoreError as exc:
            log.warning("subscription %s: lease expiry not recorded: %s", sub_id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_retry(self, sub: Subscription) -> None:
        """Arm the retry timer for ``sub.retry_count`` (already counted)."""
        if self._closed or sub.id in self._retry_timers:
            return
        delay = retry_delay(sub.retry_count, self._rand())
        loop = asyncio.get_running_loop()
        self._retry_timers[sub.id] = loop.call_later(delay, self._on_retry_timer, sub.id)

    def _on_retry_timer(self, sub_id: str) -> None:
        self._retry_timers.pop(sub_id, None)
        if self.shared:
            self._spawn(self._retry(sub_id))
            return
        sub = self._subs.get(sub_id)
        if sub is None:
            return
        if sub.wake is None:
            # The lease ran out meanwhile: start the next wake if work is left.
            self._after_change(sub)
            return
        self._enqueue(("deliver", sub.id, sub.wake.generation, ""))

    async def _retry(self, sub_id: str) -> None:
        try:
            sub, _ = await self._mutate(sub_id, lambda sub: None)  # starts a wake if due
        except SubscriptionError:
            self._forget(sub_id)
            return
        except StoreError as exc:
            log.warning("subscription %s: retry deferred: %s", sub_id, exc)
            return
        if sub.wake is not None:
            self._enqueue(("deliver", sub.id, sub.wake.generation, ""))

    # ------------------------------------------------------------------
    # Background I/O.
    # ------------------------------------------------------------------

    async def _worker(self) -> None:
        while not self._closed:
            kind, sub_id, generation, stream = await self._queue.get()
            try:
                if self.shared:
                    await self._ensure_keys()
                    try:
                        sub: Subscription | None = await self._read(sub_id)
                    except SubscriptionError:
                        sub = None
                else:
                    sub = self._subs.get(sub_id)
                if sub is None or sub.wake is None or sub.wake.generation != generation:
                    continue  # stale: a newer wake has its own item or retry timer
                if kind == "deliver":
                    await self._deliver(sub)
                else:
                    await self._write_wake_event(sub, generation, stream)
            except asyncio.CancelledError:
                raise
            except Exception:  # a worker must survive any one bad delivery
                log.exception("subscription %s: delivery failed", sub_id)
            finally:
                self._queue.task_done()

    def _base_url(self, sub_id: str) -> str:
        return self.public_base_url or self._base_urls.get(sub_id, "http://127.0.0.1")

    async def _deliver(self, sub: Subscription) -> None:
        """POST the outstanding wake to the webhook; retry on failure (DS §9)."""
        wake = sub.wake
        url = sub.config.webhook_url
        if wake is None or url is None or self._client is None:
            return
        now = self._clock()
        base = self._base_url(sub.id)
        sub_path = f"{self._control_prefix}/subscriptions/{_quote_segment(sub.id)}"
        body = msgspec.json.encode(
            {
                "subscription_id": sub.id,
                "wake_id": wake.wake_id,
                "generation": wake.generation,
                "streams": sub.stream_infos(),
                "callback_url": f"{base}{sub_path}/callback",
                "callback_token": make_token(self._token_key, sub.id, wake.generation, now),
            }
        )
        headers = {
            "content-type": "application/json",
            "webhook-signature": self.signer.sign(body, now),
        }
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as resp:
                ok = 200 <= resp.status_code < 300
                raw = b""
                if ok:
                    async for chunk in resp.aiter_bytes():
                        raw += chunk
                        if len(raw) > MAX_REPLY:
                            break
        except httpx.HTTPError as exc:
            log.info("subscription %s: webhook delivery failed: %s", sub.id, exc)
            ok = False
        reply: WebhookReply | None = None
        if ok:
            try:
                reply = msgspec.json.decode(raw, type=WebhookReply) if raw.strip() else None
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                reply = None
        done = reply is not None and reply.done
        await self._after_delivery(sub, wake.wake_id, ok=ok, done=done)

    async def _after_delivery(
        self, sub: Subscription, wake_id: str, *, ok: bool, done: bool
    ) -> None:
        """Record a delivery's outcome: retry count and status, or the auto-ack (DS §9)."""
        retrying = sub.id in self._retry_timers

        def record(s: Subscription) -> bool:
            if not ok:
                if not retrying:
                    s.retry_count += 1
                    s.status = "failed"
                return False
            s.status = "active"
            s.retry_count = 0
            # ``{"done": true}`` acks the wake's snapshot (if still current).
            return done and s.auto_ack(wake_id)

        if not self.shared:
            if self._subs.get(sub.id) is not sub:
                return  # deleted meanwhile
            if record(sub):
                self._after_change(sub)
            if not ok:
                self._schedule_retry(sub)
            return
        try:
            fresh, _ = await self._mutate(sub.id, record)
        except SubscriptionError:
            return  # deleted meanwhile
        if not ok:
            self._schedule_retry(fresh)

    async def _write_wake_event(self, sub: Subscription, generation: int, stream: str) -> None:
        """Append a wake event to the pull-wake subscription's wake stream."""
        target = sub.config.wake_stream
        if target is None:
            return
        event = {
            "type": "wake",
            "subscription_id": sub.id,
            "stream": stream,
            "generation": generation,
            "ts": int(self._clock() * 1000),
        }
        try:
            await self.store.append(target, [msgspec.json.encode(event)])
        except StoreError as exc:
            # The wake stays claimable; only the notification is lost.
            log.warning("subscription %s: cannot write wake event: %s", sub.id, exc)

    # ------------------------------------------------------------------
    # HTTP.
    # ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry for ``{stream_prefix}/__ds/...`` requests."""
        if scope["type"] != "http":
            return
        self._ensure_started()
        extra: list[tuple[bytes, bytes]]
        try:
            await self._ensure_keys()
            status, payload, extra = await self._route(scope, receive)
        except SubscriptionError as exc:
            status, payload, extra = exc.status, exc.body(), []
        except _BodyTooLarge:
            err = SubscriptionError("PAYLOAD_TOO_LARGE", f"body exceeds {MAX_BODY} bytes")
            status, payload, extra = err.status, err.body(), []
        except StoreError as exc:
            # The shared store is unreachable (or refused a reserved record):
            # the state is unknown, so say "retry" rather than guess.
            log.warning("subscriptions: store error: %s", exc)
            status, extra = 503, [(b"retry-after", b"1")]
            payload = {"error": {"code": "UNAVAILABLE", "message": "store unavailable; retry"}}
        await _respond(send, status, payload, extra)

    async def _route(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        raw = raw_path.split(b"?", 1)[0].decode("latin-1")
        prefix = self._control_prefix
        if not (raw == prefix or raw.startswith(prefix + "/")):
            raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "control route not found")
        parts = [unquote(p) for p in raw[len(prefix) :].split("/")[1:]]
        if parts == ["jwks.json"]:
            _allow(method, "GET")
            headers = [(b"content-type", b"application/jwk-set+json")]
            headers.append((b"cache-control", b"public, max-age=300"))
            return 200, self.signer.jwks(), headers
        if len(parts) < 2 or parts[0] != "subscriptions" or not parts[1]:
            raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "control route not found")
        sub_id = validate_id(parts[1])
        rest = parts[2:]
        if not rest:
            return await self._handle_base(scope, receive, method, sub_id)
        if rest == ["streams"]:
            _allow(method, "POST")
            streams = parse_streams(await _read_body(receive))
            await self._read(sub_id)  # 404 before reading tails
            tails = [(path, await self._tail(path)) for path in streams]

            def add(sub: Subscription) -> None:
                for path, tail in tails:
                    sub.link(path, "explicit", tail)

            await self._mutate(sub_id, add)
            return 204, None, []
        if rest[0] == "streams" and len(rest) > 1:
            _allow(method, "DELETE")
            path = normalize_path("/".join(rest[1:]))
            await self._mutate(sub_id, lambda sub: sub.unlink_explicit(path), wake=False)
            return 204, None, []
        if len(rest) == 1 and rest[0] in ("callback", "claim", "ack", "release"):
            _allow(method, "POST")
            return await self._handle_wake_action(scope, receive, sub_id, rest[0])
        raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "control route not found")

    async def _handle_base(
        self, scope: Scope, receive: Receive, method: str, sub_id: str
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        if method == "GET":
            sub = await self._read(sub_id)
            return 200, self._view(sub), []
        if method == "DELETE":
            if self.shared:
                with contextlib.suppress(NoSuchStream, DataGone):
                    await self.store.delete(record_path(sub_id))
            self._forget(sub_id)
            return 204, None, []
        _allow(method, "PUT")
        config = parse_create(await _read_body(receive))
        existing = await self._existing(sub_id)
        if existing is not None:
            return self._confirm(existing, config)
        if config.webhook_url is not None:
            validate_webhook_url(config.webhook_url, allow_loopback_http=self._loopback_ok(scope))
        if len(self._subs) >= self._max_subscriptions:
            raise SubscriptionError("LIMIT_EXCEEDED", "too many subscriptions")
        sub = Subscription(
            id=sub_id,
            config=config,
            config_hash=config.config_hash(),
            created_at=dt.datetime.fromtimestamp(self._clock(), dt.UTC).isoformat(),
        )
        for path in config.streams:
            sub.link(path, "explicit", await self._tail(path))
        if config.pattern is not None:
            prefix = glob_literal_prefix(config.pattern)
            for info in await self.store.list_streams(prefix, limit=10_000):
                rel = normalize_path(info.path)
                if glob_match(config.pattern, rel) and not is_reserved(rel):
                    sub.link(rel, "glob", info.tail)
        base = self._request_base_url(scope)
        if self.shared:
            started = sub.maybe_wake(self._clock(), new_wake_id)
            try:
                await self._save(sub, 1, base)
            except _Conflict:
                # Another node created it first: same rule as a re-PUT.
                winner = await self._read(sub_id)
                return self._confirm(winner, config)
            self._remember(sub, base)
            self._dispatch(sub, started)
            return 201, self._view(sub), []
        # Another PUT may have won while we awaited the store.
        if sub_id in self._subs:
            raise SubscriptionError("SUBSCRIPTION_ALREADY_EXISTS", "concurrent create")
        self._remember(sub, base)
        self._after_change(sub)
        return 201, self._view(sub), []

    async def _existing(self, sub_id: str) -> Subscription | None:
        try:
            return await self._read(sub_id)
        except SubscriptionError:
            return None

    def _confirm(
        self, existing: Subscription, config: SubscriptionConfig
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        """A PUT of an existing id: 200 with the same config, 409 otherwise (DS §9)."""
        if existing.config_hash != config.config_hash():
            raise SubscriptionError(
                "SUBSCRIPTION_ALREADY_EXISTS",
                "subscription already exists with a different configuration",
            )
        return 200, self._view(existing), []

    async def _handle_wake_action(
        self, scope: Scope, receive: Receive, sub_id: str, action: str
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        body = await _read_body(receive)
        sub = await self._read(sub_id)
        now = self._clock()
        if action == "claim":
            claim: ClaimInput = parse_body(body, ClaimInput)
            if not claim.worker or len(claim.worker) > 256:
                raise SubscriptionError("INVALID_REQUEST", "worker must be a non-empty string")

            def take(s: Subscription) -> Wake:
                if self.shared:
                    # The node that armed the lease timer may be gone.
                    s.lease_expired(now)
                return s.claim(claim.worker, now, new_wake_id)

            sub, wake = await self._mutate(sub_id, take)
            return (
                200,
                {
                    "wake_id": wake.wake_id,
                    "generation": wake.generation,
                    "token": make_token(self._token_key, sub.id, wake.generation, now),
                    "streams": sub.stream_infos(),
                    "lease_ttl_ms": sub.config.lease_ttl_ms,
                },
                [],
            )
        if action != "callback" and sub.config.type != "pull-wake":
            raise SubscriptionError("INVALID_REQUEST", "subscription is not pull-wake")
        if action == "callback" and sub.config.type != "webhook":
            raise SubscriptionError("INVALID_REQUEST", "subscription is not a webhook")
        token_gen = verify_token(self._token_key, _bearer(scope), sub.id, now)
        req: WakeInput = parse_body(body, WakeInput)
        if action == "release":

            def release(s: Subscription) -> None:
                s.check_fence(token_gen, req)
                s.end_wake()

            await self._mutate(sub_id, release)
            return 204, None, []

        def ack(s: Subscription) -> None:
            s.ack(token_gen, req, now)

        # Not done: a heartbeat extends the lease; no new wake yet.
        sub, _ = await self._mutate(sub_id, ack, wake=req.done)
        next_wake = req.done and sub.wake is not None
        return 200, {"ok": True, "next_wake": next_wake}, []

    # ------------------------------------------------------------------
    # Helpers.
    # ------------------------------------------------------------------

    def _get(self, sub_id: str) -> Subscription:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise SubscriptionError("SUBSCRIPTION_NOT_FOUND", "subscription not found")
        return sub

    def _view(self, sub: Subscription) -> dict[str, Any]:
        return sub.to_json(self._base_url(sub.id), self.signer, self.stream_prefix)

    async def _tail(self, path: str) -> str:
        """The stream's tail, or ``-1`` if it does not exist (yet)."""
        try:
            return (await self.store.head(path)).tail
        except StoreClientError:
            return BEFORE_FIRST
        except StoreError:
            if self.shared:
                raise  # 503: a guessed ``-1`` would be stored for every node
            return BEFORE_FIRST

    def _loopback_ok(self, scope: Scope) -> bool:
        if self.allow_loopback_webhooks is not None:
            return self.allow_loopback_webhooks
        server = scope.get("server")
        return server is not None and is_loopback_host(str(server[0]))

    def _request_base_url(self, scope: Scope) -> str:
        if self.public_base_url:
            return self.public_base_url
        scheme = scope.get("scheme", "http")
        host = ""
        for name, value in scope.get("headers", []):
            if name == b"host":
                host = value.decode("latin-1")
                break
        if not host or any(c in host for c in "/\\@ \t\r\n"):
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scheme}://{host}"


def _quote_segment(value: str) -> str:
    return quote(value, safe="")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise SubscriptionError("METHOD_NOT_ALLOWED", f"use {allowed}")


def _bearer(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise SubscriptionError("TOKEN_INVALID", "missing or malformed Authorization header")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]]) -> None:
    body = b"" if payload is None or status == 204 else msgspec.json.encode(payload)
    names = {name for name, _ in extra}
    headers = [(n, v) for n, v in _JSON_HEADERS if n not in names] + extra
    if status == 405:
        headers.append((b"allow", b"GET, PUT, POST, DELETE"))
    if status == 204:
        headers = [(n, v) for n, v in headers if n != b"content-type"]
    else:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
