"""Pure logic of the reserved subscription APIs (Durable Streams §9).

Sans-I/O: no sockets, no asyncio, no clock reads. Time and randomness are
arguments, so every rule here is unit-tested directly. The I/O shell is
:mod:`durasync.streams.subscriptions`.

What lives here:

- wire types of the ``__ds`` API (msgspec Structs) and input validation;
- glob matching of stream paths (``*`` one segment, ``**`` any number);
- the config hash that decides 201 (new) / 200 (same) / 409 (different);
- webhook URL rules against SSRF;
- Ed25519 webhook signatures and the public JWKS;
- the retry schedule (1 s doubling to 60 s, ±20 % jitter);
- the per-subscription wake state machine with generation + ``wake_id``
  fencing and offset acks;
- the records that share subscription state between the nodes of a cluster
  through the log store (versioned snapshots, see :class:`SubscriptionRecord`).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from durasync.namespaces import is_reserved
from durasync.streams.errors import SubscriptionError

#: Lease bounds of DS §9 (milliseconds).
DEFAULT_LEASE_TTL_MS = 30_000
MIN_LEASE_TTL_MS = 1_000
MAX_LEASE_TTL_MS = 600_000

#: Webhook retry schedule of DS §9: 1 s doubling up to 60 s, ±20 % jitter.
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
RETRY_JITTER = 0.2

#: Acked offset of a stream linked before it had any data we saw.
BEFORE_FIRST = "-1"

SubscriptionType = Literal["webhook", "pull-wake"]
LinkType = Literal["explicit", "glob"]


# --------------------------------------------------------------------------
# Paths and globs.
# --------------------------------------------------------------------------


def normalize_path(path: str) -> str:
    """Strip leading and trailing slashes: subscription paths are relative."""
    return path.strip("/")


def _segments(path: str) -> list[str]:
    return [s for s in normalize_path(path).split("/") if s]


def glob_match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches ``pattern`` (DS §9).

    ``*`` matches exactly one path segment, ``**`` zero or more segments;
    other segments match literally (``%2A`` in a pattern is a literal ``*``).
    Runs in O(len(pattern) * len(path)) by dynamic programming, so hostile
    patterns like ``**/**/**/x`` cannot blow up.
    """
    pat = _segments(pattern)
    segs = _segments(path)
    # reach[j]: pattern prefix consumed so far matches segs[:j].
    reach = [False] * (len(segs) + 1)
    reach[0] = True
    for p in pat:
        nxt = [False] * (len(segs) + 1)
        if p == "**":
            seen = False
            for j in range(len(segs) + 1):
                seen = seen or reach[j]
                nxt[j] = seen
        else:
            literal = p.replace("%2A", "*").replace("%2a", "*")
            for j in range(len(segs)):
                if reach[j] and (p == "*" or literal == segs[j]):
                    nxt[j + 1] = True
        reach = nxt
    return reach[len(segs)]


def glob_literal_prefix(pattern: str) -> str:
    """The longest literal prefix of ``pattern`` (to narrow a store listing)."""
    out: list[str] = []
    for seg in _segments(pattern):
        if "*" in seg or "%2" in seg.lower():
            break
        out.append(seg)
    return "/".join(out) + ("/" if out else "")


def compare_offsets(a: str, b: str) -> int:
    """Order two offsets; ``-1`` sorts before every real offset (DS §4)."""
    if a == b:
        return 0
    if a == BEFORE_FIRST:
        return -1
    if b == BEFORE_FIRST:
        return 1
    return -1 if a < b else 1


# --------------------------------------------------------------------------
# Wire types.
# --------------------------------------------------------------------------


class WebhookInput(msgspec.Struct, forbid_unknown_fields=False):
    url: str


class CreateInput(msgspec.Struct, forbid_unknown_fields=False):
    """Body of ``PUT __ds/subscriptions/:id``."""

    type: SubscriptionType
    pattern: str | None = None
    streams: list[str] = msgspec.field(default_factory=list)
    webhook: WebhookInput | None = None
    wake_stream: str | None = None
    lease_ttl_ms: int = DEFAULT_LEASE_TTL_MS
    description: str | None = None


class StreamsInput(msgspec.Struct):
    """Body of ``POST __ds/subscriptions/:id/streams``."""

    streams: list[str]


class ClaimInput(msgspec.Struct, forbid_unknown_fields=False):
    worker: str


class AckItem(msgspec.Struct, forbid_unknown_fields=False):
    offset: str
    stream: str | None = None
    path: str | None = None


class WakeInput(msgspec.Struct, forbid_unknown_fields=False):
    """Body of ``callback``, ``ack`` and ``release``."""

    wake_id: str | None = None
    generation: int | None = None
    acks: list[AckItem] | None = None
    done: bool = False


class WebhookReply(msgspec.Struct, forbid_unknown_fields=False):
    """What a webhook receiver may answer; ``done`` acks the wake snapshot."""

    done: bool = False


#: Bounds on client-chosen sizes (bad input costs the sender: DESIGN inv. 5).
MAX_ID_LEN = 256
MAX_PATH_LEN = 1024
MAX_STREAMS_PER_REQUEST = 1000
MAX_LINKS_PER_SUBSCRIPTION = 10_000
MAX_DESCRIPTION_LEN = 4096


def validate_id(sub_id: str) -> str:
    if not sub_id or len(sub_id) > MAX_ID_LEN or any(c in sub_id for c in "/\x00"):
        raise SubscriptionError("INVALID_REQUEST", "invalid subscription id")
    return sub_id


def _valid_stream_path(path: str) -> str:
    norm = normalize_path(path)
    if not norm or len(norm) > MAX_PATH_LEN or "\x00" in norm:
        raise SubscriptionError("INVALID_REQUEST", "stream paths must be non-empty strings")
    if is_reserved(norm):
        raise SubscriptionError(
            "INVALID_REQUEST", "reserved paths (first segment starting with '__') cannot be named"
        )
    if any(seg in (".", "..") for seg in norm.split("/")):
        raise SubscriptionError("INVALID_REQUEST", "stream paths must not contain . or ..")
    return norm


class SubscriptionConfig(msgspec.Struct, frozen=True):
    """A validated, normalized subscription config (what the hash covers)."""

    type: SubscriptionType
    pattern: str | None
    streams: tuple[str, ...]
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    def config_hash(self) -> str:
        """Stable hash: equal configs give 200 on re-PUT, different ones 409."""
        canonical = {
            "type": self.type,
            "pattern": self.pattern,
            "streams": sorted(set(self.streams)),
            "webhook": {"url": self.webhook_url} if self.webhook_url is not None else None,
            "wake_stream": self.wake_stream,
            "lease_ttl_ms": self.lease_ttl_ms,
            "description": self.description,
        }
        return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


def parse_create(body: bytes) -> SubscriptionConfig:
    """Decode and validate a create body (DS §9).

    Raises:
        SubscriptionError: ``INVALID_REQUEST`` naming the problem.
    """
    try:
        raw = msgspec.json.decode(body, type=CreateInput)
    except msgspec.ValidationError as exc:
        raise SubscriptionError("INVALID_REQUEST", f"invalid subscription: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise SubscriptionError(
            "INVALID_REQUEST", "body must be a JSON object (nested at most ~1,000 deep)"
        ) from None
    pattern = normalize_path(raw.pattern) if raw.pattern else None
    if pattern is not None and len(pattern) > MAX_PATH_LEN:
        raise SubscriptionError("INVALID_REQUEST", "pattern is too long")
    if pattern is not None and is_reserved(pattern):
        # It could only ever match reserved streams, which are never linked.
        raise SubscriptionError(
            "INVALID_REQUEST", "a pattern cannot start with a reserved segment ('__...')"
        )
    if len(raw.streams) > MAX_STREAMS_PER_REQUEST:
        raise SubscriptionError("INVALID_REQUEST", "too many streams")
    streams = tuple(_valid_stream_path(s) for s in raw.streams)
    if not pattern and not streams:
        raise SubscriptionError("INVALID_REQUEST", "at least one of pattern or streams is required")
    if not MIN_LEASE_TTL_MS <= raw.lease_ttl_ms <= MAX_LEASE_TTL_MS:
        raise SubscriptionError(
            "INVALID_REQUEST",
            f"lease_ttl_ms must be an integer from {MIN_LEASE_TTL_MS} to {MAX_LEASE_TTL_MS}",
        )
    if raw.description is not None and len(raw.description) > MAX_DESCRIPTION_LEN:
        raise SubscriptionError("INVALID_REQUEST", "description is too long")
    webhook_url: str | None = None
    wake_stream: str | None = None
    if raw.type == "webhook":
        if raw.webhook is None or not raw.webhook.url:
            raise SubscriptionError("INVALID_REQUEST", "webhook subscriptions require webhook.url")
        webhook_url = raw.webhook.url
    else:
        if not raw.wake_stream:
            raise SubscriptionError("INVALID_REQUEST", "pull-wake subscriptions need wake_stream")
        wake_stream = _valid_stream_path(raw.wake_stream)
    return SubscriptionConfig(
        type=raw.type,
        pattern=pattern,
        streams=streams,
        webhook_url=webhook_url,
        wake_stream=wake_stream,
        lease_ttl_ms=raw.lease_ttl_ms,
        description=raw.description,
    )


def parse_streams(body: bytes) -> list[str]:
    try:
        raw = msgspec.json.decode(body, type=StreamsInput)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        raise SubscriptionError(
            "INVALID_REQUEST", "streams must be a non-empty string array"
        ) from None
    if not raw.streams or len(raw.streams) > MAX_STREAMS_PER_REQUEST:
        raise SubscriptionError("INVALID_REQUEST", "streams must be a non-empty string array")
    return [_valid_stream_path(s) for s in raw.streams]


def parse_body(body: bytes, kind: type[Any]) -> Any:
    """Decode a small JSON body into ``kind`` or raise ``INVALID_REQUEST``."""
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise SubscriptionError("INVALID_REQUEST", f"invalid body: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise SubscriptionError(
            "INVALID_REQUEST", "body must be JSON (nested at most ~1,000 deep)"
        ) from None


# --------------------------------------------------------------------------
# SSRF rules for webhook URLs.
# --------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1``."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_webhook_url(url: str, *, allow_loopback_http: bool) -> None:
    """Refuse webhook targets that would let a client aim the server inward.

    Only ``https`` URLs to public hosts are accepted; IP literals in private,
    loopback, link-local, multicast or reserved ranges are refused. With
    ``allow_loopback_http`` (development servers bound to loopback) plain
    ``http`` to ``localhost`` / ``127.0.0.0/8`` / ``::1`` is allowed too.
    Host names are not resolved here (no DNS from the request path).

    Raises:
        SubscriptionError: ``WEBHOOK_URL_REJECTED`` naming the rule.
    """

    def reject(msg: str) -> SubscriptionError:
        return SubscriptionError("WEBHOOK_URL_REJECTED", msg)

    if len(url) > 2048:
        raise reject("webhook.url is too long")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise reject("webhook.url must be a valid URL") from None
    if not host:
        raise reject("webhook.url must be an absolute URL with a host")
    if parts.username is not None or parts.password is not None:
        raise reject("webhook.url must not carry credentials")
    if parts.scheme == "http":
        if allow_loopback_http and is_loopback_host(host):
            return
        raise reject("http webhook URLs are only allowed for localhost on development servers")
    if parts.scheme != "https":
        raise reject("webhook.url must use https")
    if host == "localhost" or host.endswith(".localhost"):
        raise reject("webhook.url must not target localhost")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        raise reject("webhook.url must not target private, loopback or link-local addresses")


# --------------------------------------------------------------------------
# Signatures.
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class WebhookSigner:
    """Ed25519 signing key for webhook deliveries and its public JWKS.

    ``kid`` is ``ds_`` + the RFC 7638 JWK thumbprint, so it is stable for a
    key. The header is ``t=<unix seconds>,kid=<kid>,ed25519=<base64url sig>``
    and the signed message is ``f"{t}.{raw body}"`` (DS §9).
    """

    def __init__(self, private_key: Ed25519PrivateKey | None = None) -> None:
        self._key = private_key or Ed25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.x = b64url(raw)
        thumb_input = msgspec.json.encode({"crv": "Ed25519", "kty": "OKP", "x": self.x})
        self.kid = "ds_" + b64url(hashlib.sha256(thumb_input).digest())

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (to share it with the other nodes of a cluster)."""
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": self.x,
                    "kid": self.kid,
                    "use": "sig",
                    "alg": "EdDSA",
                }
            ]
        }

    def sign(self, body: bytes, now: float) -> str:
        """The ``Webhook-Signature`` header value for ``body`` at time ``now``."""
        ts = int(now)
        sig = self._key.sign(f"{ts}.".encode() + body)
        return f"t={ts},kid={self.kid},ed25519={b64url(sig)}"


def retry_delay(attempt: int, rand: float) -> float:
    """Delay in seconds before webhook retry number ``attempt`` (1-based).

    ``min(1 s * 2**(attempt-1), 60 s)`` with ±20 % jitter; ``rand`` is a
    uniform sample from [0, 1) (injected so tests are deterministic).
    """
    base = min(RETRY_BASE_S * 2.0 ** max(0, min(attempt - 1, 30)), RETRY_MAX_S)
    return max(0.0, base * (1.0 + RETRY_JITTER * (2.0 * rand - 1.0)))


# --------------------------------------------------------------------------
# The wake state machine.
# --------------------------------------------------------------------------


@dataclass
class Link:
    """One stream of a subscription and how far the consumer acked it."""

    path: str
    link_types: set[LinkType]
    acked_offset: str
    tail_offset: str

    @property
    def has_pending(self) -> bool:
        return compare_offsets(self.tail_offset, self.acked_offset) > 0

    @property
    def link_type(self) -> LinkType:
        return "explicit" if "explicit" in self.link_types else "glob"


@dataclass
class Wake:
    """An outstanding wake: who may act on it, and what it covered."""

    wake_id: str
    generation: int
    snapshot: dict[str, str]
    #: Pull-wake worker holding the lease (webhooks have none).
    holder: str | None = None


@dataclass
class Subscription:
    """State of one subscription. Mutated only by the methods below.

    Invariant: at most one wake is outstanding; ``generation`` only grows,
    so a token or ``wake_id`` of an earlier wake is fenced (409 ``FENCED``).
    """

    id: str
    config: SubscriptionConfig
    config_hash: str
    created_at: str
    links: dict[str, Link] = field(default_factory=dict)
    generation: int = 0
    wake: Wake | None = None
    lease_deadline: float | None = None
    status: Literal["active", "failed"] = "active"
    retry_count: int = 0

    # -- links --------------------------------------------------------------

    def link(self, path: str, link_type: LinkType, tail: str, acked: str | None = None) -> Link:
        """Link ``path`` (idempotent; an existing link keeps its acked offset).

        Raises:
            SubscriptionError: ``LIMIT_EXCEEDED`` past the per-subscription bound.
        """
        existing = self.links.get(path)
        if existing is not None:
            existing.link_types.add(link_type)
            if compare_offsets(tail, existing.tail_offset) > 0:
                existing.tail_offset = tail
            return existing
        if len(self.links) >= MAX_LINKS_PER_SUBSCRIPTION:
            raise SubscriptionError("LIMIT_EXCEEDED", "too many streams in one subscription")
        new = Link(path, {link_type}, tail if acked is None else acked, tail)
        self.links[path] = new
        return new

    def unlink_explicit(self, path: str) -> None:
        link = self.links.get(path)
        if link is None:
            return
        link.link_types.discard("explicit")
        if not link.link_types:
            del self.links[path]

    def matches(self, path: str) -> bool:
        """Whether an append to ``path`` concerns this subscription."""
        if path in self.links:
            return True
        return self.config.pattern is not None and glob_match(self.config.pattern, path)

    def on_append(self, path: str, tail: str) -> None:
        """Record a new tail; a glob match links the stream from its start."""
        link = self.links.get(path)
        if link is None:
            # DS §9: a stream that starts matching is delivered from its start.
            link = self.link(path, "glob", tail, acked=BEFORE_FIRST)
        elif compare_offsets(tail, link.tail_offset) > 0:
            link.tail_offset = tail

    # -- wakes --------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        return any(link.has_pending for link in self.links.values())

    def first_pending(self) -> str | None:
        return next((p for p, link in self.links.items() if link.has_pending), None)

    def stream_infos(self) -> list[dict[str, Any]]:
        return [
            {
                "path": link.path,
                "link_type": link.link_type,
                "acked_offset": link.acked_offset,
                "tail_offset": link.tail_offset,
                "has_pending": link.has_pending,
            }
            for link in self.links.values()
        ]

    def maybe_wake(self, now: float, new_id: Callable[[], str]) -> Wake | None:
        """Start a wake if none is outstanding and work is pending."""
        if self.wake is not None or not self.has_pending:
            return None
        self.generation += 1
        self.wake = Wake(
            wake_id=new_id(),
            generation=self.generation,
            snapshot={p: link.tail_offset for p, link in self.links.items()},
        )
        if self.config.type == "webhook":
            # The receiver holds the lease from delivery on (DS §9 webhook).
            self.lease_deadline = now + self.config.lease_ttl_ms / 1000.0
        return self.wake

    def claim(self, worker: str, now: float, new_id: Callable[[], str]) -> Wake:
        """Pull-wake claim: take the lease on the outstanding (or a new) wake.

        Raises:
            SubscriptionError: ``ALREADY_CLAIMED`` (with ``current_holder``),
                ``NO_PENDING_WORK``, ``INVALID_REQUEST`` for webhooks.
        """
        if self.config.type != "pull-wake":
            raise SubscriptionError("INVALID_REQUEST", "subscription is not pull-wake")
        if self.wake is not None and self.wake.holder is not None:
            raise SubscriptionError(
                "ALREADY_CLAIMED",
                "another worker holds the lease",
                current_holder=self.wake.holder,
                generation=self.generation,
            )
        if self.wake is None and self.maybe_wake(now, new_id) is None:
            raise SubscriptionError("NO_PENDING_WORK", "subscription has no pending work")
        assert self.wake is not None
        self.wake.holder = worker
        self.lease_deadline = now + self.config.lease_ttl_ms / 1000.0
        return self.wake

    def check_fence(self, token_generation: int, req: WakeInput) -> Wake:
        """The outstanding wake iff token and request name it; else ``FENCED``."""
        wake = self.wake
        if (
            wake is None
            or token_generation != wake.generation
            or req.generation != wake.generation
            or req.wake_id != wake.wake_id
        ):
            raise SubscriptionError("FENCED", "wake generation is stale")
        return wake

    def apply_acks(self, acks: Iterable[AckItem]) -> None:
        """Advance acked offsets; all-or-nothing.

        Raises:
            SubscriptionError: ``INVALID_OFFSET`` for an unknown stream, ``-1``,
                a regression, or an offset beyond the known tail.
        """
        updates: list[tuple[Link, str]] = []
        for ack in acks:
            path = normalize_path(ack.stream or ack.path or "")
            link = self.links.get(path)
            if not path or link is None:
                raise SubscriptionError("INVALID_OFFSET", "ack names an unknown stream")
            if ack.offset == BEFORE_FIRST:
                raise SubscriptionError("INVALID_OFFSET", "ack offset must not be -1")
            if compare_offsets(ack.offset, link.acked_offset) < 0:
                raise SubscriptionError("INVALID_OFFSET", "ack offset regresses the acked cursor")
            if compare_offsets(ack.offset, link.tail_offset) > 0:
                raise SubscriptionError("INVALID_OFFSET", "ack offset is beyond the stream tail")
            updates.append((link, ack.offset))
        for link, offset in updates:
            link.acked_offset = offset

    def ack(self, token_generation: int, req: WakeInput, now: float) -> None:
        """Callback / ack: fence, apply acks, extend the lease, end if ``done``."""
        self.check_fence(token_generation, req)
        self.apply_acks(req.acks or ())
        self.lease_deadline = now + self.config.lease_ttl_ms / 1000.0
        if req.done:
            self.end_wake()

    def auto_ack(self, wake_id: str) -> bool:
        """Webhook answered ``{"done": true}``: ack the wake's snapshot and end it.

        Ignored (returns False) if that wake is no longer the outstanding one.
        """
        wake = self.wake
        if wake is None or wake.wake_id != wake_id:
            return False
        for path, tail in wake.snapshot.items():
            link = self.links.get(path)
            if link is not None and compare_offsets(tail, link.acked_offset) > 0:
                link.acked_offset = tail
        self.end_wake()
        return True

    def end_wake(self) -> None:
        self.wake = None
        self.lease_deadline = None

    def lease_expired(self, now: float) -> bool:
        """End the outstanding wake if its lease ran out; True if it did."""
        if self.wake is not None and self.lease_deadline is not None and now >= self.lease_deadline:
            self.end_wake()
            return True
        return False

    # -- view ---------------------------------------------------------------

    def to_json(self, base_url: str, signer: WebhookSigner, stream_prefix: str) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {
            "id": self.id,
            "subscription_id": self.id,
            "type": cfg.type,
            "streams": [
                {"path": link.path, "link_type": link.link_type, "acked_offset": link.acked_offset}
                for link in self.links.values()
            ],
            "lease_ttl_ms": cfg.lease_ttl_ms,
            "created_at": self.created_at,
            "status": self.status,
        }
        if cfg.pattern is not None:
            out["pattern"] = cfg.pattern
        if cfg.webhook_url is not None:
            out["webhook"] = {
                "url": cfg.webhook_url,
                "signing": {
                    "alg": "ed25519",
                    "kid": signer.kid,
                    "jwks_url": f"{base_url}{stream_prefix}/__ds/jwks.json",
                },
            }
        if cfg.wake_stream is not None:
            out["wake_stream"] = cfg.wake_stream
        if cfg.description is not None:
            out["description"] = cfg.description
        return out


def new_wake_id() -> str:
    return "w_" + secrets.token_hex(12)


# --------------------------------------------------------------------------
# Callback / lease tokens (HS256 JWT via pyjwt).
# --------------------------------------------------------------------------

#: Lifetime of a callback token; the wake's generation fences it much sooner.
TOKEN_TTL_S = 3600


def make_token(key: bytes, sub_id: str, generation: int, now: float) -> str:
    """A bearer token authorising acts on wake ``generation`` of ``sub_id``."""
    claims = {
        "sub": f"subscription:{sub_id}",
        "gen": generation,
        "exp": int(now) + TOKEN_TTL_S,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, key, algorithm="HS256")


def verify_token(key: bytes, token: str, sub_id: str, now: float) -> int:
    """The wake generation a token was issued for.

    Raises:
        SubscriptionError: ``TOKEN_INVALID`` (bad signature, wrong
            subscription, malformed) or ``TOKEN_EXPIRED``.
    """
    try:
        claims = jwt.decode(
            token, key, algorithms=["HS256"], options={"verify_exp": False, "require": ["exp"]}
        )
    except jwt.PyJWTError:
        raise SubscriptionError("TOKEN_INVALID", "token invalid") from None
    gen = claims.get("gen")
    exp = claims.get("exp")
    if claims.get("sub") != f"subscription:{sub_id}" or not isinstance(gen, int):
        raise SubscriptionError("TOKEN_INVALID", "token invalid")
    if not isinstance(exp, int) or now > exp:
        raise SubscriptionError("TOKEN_EXPIRED", "token expired")
    return gen


# --------------------------------------------------------------------------
# Shared state: records in reserved streams of the log store.
# --------------------------------------------------------------------------
#
# On a store shared by several nodes (Redis), every node must answer for
# every subscription: a subscription created through node A is read, claimed
# and acked through node B. Its state therefore lives in the store, as a
# reserved stream per subscription holding versioned snapshots. A change is
# read -> modify -> append(version + 1) with ``Stream-Seq`` = the version: the
# store checks ``Stream-Seq`` atomically with the write (DS §2), so of two
# nodes writing the same version one gets SeqConflict, re-reads and re-applies
# (optimistic concurrency; no lock server). Paths under ``__ds/`` are never
# reachable as streams over HTTP (the streams app routes them here).

#: Store path prefix of subscription records.
RECORDS_PREFIX = "__ds/subscriptions/"
#: Store path of the cluster's shared keys (webhook signing, callback tokens).
KEYS_PATH = "__ds/keys"


def record_path(sub_id: str) -> str:
    """Store path of a subscription's record stream (the id percent-quoted)."""
    return RECORDS_PREFIX + quote(sub_id, safe="")


def record_id(path: str) -> str | None:
    """Inverse of :func:`record_path`; ``None`` for other paths."""
    if not path.startswith(RECORDS_PREFIX):
        return None
    rest = path[len(RECORDS_PREFIX) :]
    return unquote(rest) if rest and "/" not in rest else None


def record_seq(version: int) -> str:
    """``Stream-Seq`` of a record version: fixed width, so byte order is numeric order."""
    return f"{version:020d}"


class SubscriptionRecord(msgspec.Struct, kw_only=True):
    """One version of a subscription's state as stored in its record stream.

    ``base_url`` is where the subscription was created (callback and JWKS
    URLs point there). Tail offsets in ``sub.links`` are only as fresh as the
    last write: readers refresh them from the streams themselves.
    """

    version: int
    base_url: str
    sub: Subscription


def encode_record(sub: Subscription, version: int, base_url: str) -> bytes:
    return msgspec.json.encode(SubscriptionRecord(version=version, base_url=base_url, sub=sub))


def decode_record(data: bytes) -> SubscriptionRecord:
    """Decode a stored record.

    Raises:
        ValueError: the bytes are not a record (corrupt or foreign data).
    """
    try:
        return msgspec.json.decode(data, type=SubscriptionRecord)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a subscription record: {exc}") from None


class SharedKeys(msgspec.Struct):
    """Keys every node of a cluster must use (first node to start picks them)."""

    #: Raw Ed25519 private key, base64url: webhook signatures verify against
    #: the JWKS whichever node serves it.
    signing_key: str
    #: HS256 key of callback/lease tokens: a token from one node works on all.
    token_key: str


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
