"""The rendezvous service's rules, sans-I/O: records, the fold of a user's log, queries.

Theory of operation (docs/p2p.md has the HTTP view).

Everything a username owns lives in **one append-only log per username** in the log store
(``__rendezvous/u/<username>``). Every change is a *record* appended to it: a claim, a
publish, a refresh, an answer, a candidate... Each record carries ``at``, the appending
node's clock, so deciding a record never reads a clock. The state is the **fold** of the log
(:class:`UserLog`): records are applied in log order and each one is either *accepted* or
*rejected* by the rules below, using only the state before it and the record itself. Every
node that folds the same log reaches the same state and the same verdict for every record,
so two nodes on one Redis agree without talking to each other, and a request learns its
verdict by folding up to its own record: "first answer wins" is "first answer record in the
log wins", decided by the store's order, not by any process's memory.

Rules (a record that breaks one is rejected and changes nothing):

- Signed records (everything the owner does) carry the public key that verified the request's
  signature, its timestamp (ms) and nonce. Rejected when the key is not the owner's, when
  ``|at - ts|`` exceeds the signature window, or when the nonce was already used within the
  window (nonces are remembered per user for the window, at most ``max_nonces_per_user``).
- A claim by another key fails while the name is held; a name is held until
  ``username_ttl`` after its last accepted signed record ("extended on use"). The same key
  re-claiming extends it. A claim of a free or expired name starts a new owner from scratch.
- A service's UUID is derived from the claim's random salt and the FQN
  (:func:`service_uuid`): stable across refreshes, republishes and restarts of the host, new
  only for a new owner of the name.
- Publish upserts the service (TTL clamped to ``[min_ttl, max_ttl]``) and replaces its open
  offers (a restarted host's old offers have no peer behind them).
- An offer belongs to one service and lives while its service lives. The first answer record
  for an unanswered, live offer wins; the offer then leaves discovery at once and stays
  ``answered_grace`` seconds for the candidate exchange.
- Expired services, their offers, answered offers past the grace and old nonces are swept
  from the state whenever a record is applied; queries also filter by their ``now``.

Bounds: username and FQN syntax, SDP size, offers per request/user, services per user,
candidates per offer and side, metadata size, nonces per user. Snapshots
(:class:`Snapshot`) let the I/O shell compact a log: a snapshot states the fold of every
record before ``as_of``; after trimming the log below ``as_of``, a cold fold starts from it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from durasync.p2p.errors import RequestError

__all__ = [
    "AddOffers",
    "Answer",
    "Candidates",
    "Claim",
    "DeleteOffer",
    "NewOffer",
    "Outcome",
    "Publish",
    "Record",
    "Refresh",
    "RendezvousSettings",
    "RequestError",
    "Snapshot",
    "Unpublish",
    "UserLog",
    "UserState",
    "check_fqn",
    "check_username",
    "decode_record",
    "encode_record",
    "service_uuid",
    "signing_payload",
    "token_hash",
    "verify_signature",
]

_USERNAME_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]{1,30})[a-z0-9]")
_FQN_NAME_RE: Final = re.compile(
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+"
)
_SEMVER_RE: Final = re.compile(
    r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(-[0-9A-Za-z.-]{1,32})?"
)

_NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
_UUID_NAMESPACE: Final = uuid.UUID("6f1c7a3e-2b59-4d1e-9a0c-5d6b8e7f1a24")
_SIGNING_PREFIX: Final = b"durasync-rendezvous-v1\n"


class RendezvousSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Limits and timings of the rendezvous service (seconds, bytes, counts)."""

    #: Serve ``/v1/rendezvous/...`` at all.
    enabled: bool = True
    default_ttl: float = 60.0
    min_ttl: float = 60.0
    max_ttl: float = 24 * 3600.0
    username_ttl: float = 365 * 24 * 3600.0
    #: How long an answered offer stays for the ICE candidate exchange.
    answered_grace: float = 60.0
    #: Accepted clock difference of a signed request's timestamp (both ways).
    signature_window: float = 300.0
    max_sdp_bytes: int = 64 * 1024
    max_offers_per_request: int = 10
    max_services_per_user: int = 16
    max_offers_per_user: int = 32
    max_candidates_per_offer: int = 64
    max_candidate_bytes: int = 2048
    max_metadata_bytes: int = 4096
    max_nonces_per_user: int = 4096
    max_body_bytes: int = 1 << 20
    #: Longest wait a long-poll may ask for (``?wait=``).
    max_wait: float = 30.0
    #: Sweep (expired users, stale indexes, compaction) period.
    sweep_interval: float = 60.0
    #: Compact a user's log once this many records follow its last snapshot.
    compact_after: int = 256
    #: Bytes of folded user states a node caches (approximate).
    cache_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if not 0 < self.min_ttl <= self.default_ttl <= self.max_ttl:
            raise ValueError("need 0 < min_ttl <= default_ttl <= max_ttl")
        if self.signature_window <= 0 or self.answered_grace <= 0 or self.max_wait < 0:
            raise ValueError("signature_window and answered_grace must be > 0, max_wait >= 0")
        counts = (
            self.max_sdp_bytes,
            self.max_offers_per_request,
            self.max_services_per_user,
            self.max_offers_per_user,
            self.max_candidates_per_offer,
            self.max_candidate_bytes,
            self.max_metadata_bytes,
            self.max_nonces_per_user,
            self.max_body_bytes,
            self.compact_after,
        )
        if min(counts) < 1:
            raise ValueError("limits must be >= 1")

    def clamp_ttl(self, ttl: float | None) -> float:
        """The TTL a request gets: the default when absent, else clamped to the bounds."""
        if ttl is None:
            return self.default_ttl
        return min(max(ttl, self.min_ttl), self.max_ttl)


# ---------------------------------------------------------------------------- syntax


def check_username(name: str) -> str:
    """``name`` if it is a valid username (3-32 of ``a-z 0-9 . -``, alphanumeric ends).

    Raises:
        RequestError: 400 ``BAD_USERNAME``.
    """
    if not _USERNAME_RE.fullmatch(name):
        raise RequestError(
            400,
            "BAD_USERNAME",
            "username must be 3-32 characters of a-z, 0-9, '.' and '-', "
            "starting and ending with a letter or digit",
        )
    return name


def check_fqn(fqn: str) -> str:
    """``fqn`` if it is ``reverse.domain.name@semver`` (name 3-128 chars, >= one dot).

    Raises:
        RequestError: 400 ``BAD_FQN``.
    """
    name, at, version = fqn.partition("@")
    if (
        not at
        or not 3 <= len(name) <= 128
        or not _FQN_NAME_RE.fullmatch(name)
        or not _SEMVER_RE.fullmatch(version)
    ):
        raise RequestError(
            400,
            "BAD_FQN",
            "service name must be reverse.domain.name@X.Y.Z[-pre] "
            "(lowercase labels, at least one dot, 3-128 characters before '@'), "
            f"got {fqn[:160]!r}",
        )
    return fqn


def check_nonce(nonce: str) -> str:
    """``nonce`` if it is 16-64 characters of ``A-Z a-z 0-9 _ -`` (else 400 ``BAD_NONCE``)."""
    if not _NONCE_RE.fullmatch(nonce):
        raise RequestError(400, "BAD_NONCE", "nonce must be 16-64 characters of [A-Za-z0-9_-]")
    return nonce


def service_uuid(salt: str, fqn: str) -> str:
    """The UUID of service ``fqn`` of the owner whose claim has ``salt`` (deterministic)."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{salt}/{fqn}"))


def token_hash(token: str) -> str:
    """What the log keeps of an answerer's token (so reading the log reveals no token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------- signatures


def signing_payload(method: str, target: str, body: bytes, timestamp_ms: int, nonce: str) -> bytes:
    """The bytes a request's Ed25519 signature covers.

    ``durasync-rendezvous-v1\\n{METHOD}\\n{target}\\n{sha256(body) hex}\\n{timestamp ms}\\n{nonce}``
    where ``target`` is the request path plus ``?query`` when there is one.
    """
    digest = hashlib.sha256(body).hexdigest()
    text = f"{method.upper()}\n{target}\n{digest}\n{timestamp_ms}\n{nonce}"
    return _SIGNING_PREFIX + text.encode("utf-8")


def decode_public_key(key_b64: str) -> Ed25519PublicKey:
    """A raw 32-byte Ed25519 public key from base64 (standard or URL-safe).

    Raises:
        RequestError: 400 ``BAD_KEY``.
    """
    try:
        raw = base64.urlsafe_b64decode(_pad(key_b64.replace("+", "-").replace("/", "_")))
        if len(raw) != 32:
            raise ValueError("not 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError):
        raise RequestError(
            400, "BAD_KEY", "public_key must be a base64 raw 32-byte Ed25519 key"
        ) from None


def verify_signature(key_b64: str, signature_b64: str, payload: bytes) -> bool:
    """True iff ``signature_b64`` is the key's valid Ed25519 signature of ``payload``."""
    try:
        key = decode_public_key(key_b64)
        sig = base64.urlsafe_b64decode(_pad(signature_b64.replace("+", "-").replace("/", "_")))
        if len(sig) != 64:
            return False
        key.verify(sig, payload)
    except (RequestError, InvalidSignature, ValueError, TypeError):
        return False
    return True


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


# ---------------------------------------------------------------------------- records


class _Rec(msgspec.Struct, tag_field="t", frozen=True, kw_only=True, omit_defaults=True):
    #: The appending node's clock (Unix seconds): the record's time in every rule.
    at: float


class _Signed(_Rec, frozen=True, kw_only=True):
    key: str
    ts: int
    nonce: str


class NewOffer(msgspec.Struct, frozen=True):
    """An offer as a record carries it: id chosen by the appending node, SDP."""

    id: str
    sdp: str


class Claim(_Signed, tag="claim", frozen=True, kw_only=True):
    """Claim (or re-claim, extending it) the username for ``key``; ``salt`` seeds UUIDs."""

    salt: str


class Publish(_Signed, tag="publish", frozen=True, kw_only=True):
    """Upsert service ``fqn`` and replace its open offers with ``offers``."""

    fqn: str
    ttl: float
    public: bool = False
    metadata: dict[str, Any] = {}
    offers: list[NewOffer] = []


class Refresh(_Signed, tag="refresh", frozen=True, kw_only=True):
    """Extend service ``uuid`` to ``at + ttl`` (same UUID, same offers)."""

    uuid: str
    ttl: float


class Unpublish(_Signed, tag="unpublish", frozen=True, kw_only=True):
    """Delete service ``uuid`` and its offers."""

    uuid: str


class AddOffers(_Signed, tag="offers", frozen=True, kw_only=True):
    """Add offers to service ``uuid``'s pool."""

    uuid: str
    offers: list[NewOffer]


class DeleteOffer(_Signed, tag="deloffer", frozen=True, kw_only=True):
    """Withdraw offer ``offer_id``."""

    offer_id: str


class Answer(_Rec, tag="answer", frozen=True, kw_only=True):
    """An answer to ``offer_id`` of service ``uuid`` (unsigned: anyone allowed to connect)."""

    uuid: str
    offer_id: str
    sdp: str
    token_hash: str


class Candidates(_Rec, tag="cand", frozen=True, kw_only=True):
    """Trickled ICE candidates for ``offer_id`` from one side.

    ``offerer`` records are signed by the owner (``key``/``ts``/``nonce`` set);
    ``answerer`` records carry the hash of the winning answerer's token.
    """

    offer_id: str
    role: Literal["offerer", "answerer"]
    candidates: list[str]
    key: str = ""
    ts: int = 0
    nonce: str = ""
    token_hash: str = ""


class AnswerState(msgspec.Struct, kw_only=True):
    sdp: str
    token_hash: str
    at: float
    offset: str


class CandidateState(msgspec.Struct, kw_only=True):
    candidate: str
    offset: str


class OfferState(msgspec.Struct, kw_only=True):
    id: str
    uuid: str
    sdp: str
    created_at: float
    answer: AnswerState | None = None
    offerer_candidates: list[CandidateState] = []
    answerer_candidates: list[CandidateState] = []


class ServiceState(msgspec.Struct, kw_only=True):
    uuid: str
    fqn: str
    public: bool
    metadata: dict[str, Any]
    created_at: float
    expires_at: float


class UserState(msgspec.Struct, kw_only=True):
    """The fold of one username's log (see module docs)."""

    key: str
    salt: str
    claimed_at: float
    last_used: float
    services: dict[str, ServiceState] = {}
    offers: dict[str, OfferState] = {}
    #: nonce -> its request timestamp (ms), for the signature window.
    nonces: dict[str, int] = {}


class Snapshot(_Rec, tag="snapshot", frozen=True, kw_only=True):
    """The fold of every record before ``as_of`` (None: the name was unclaimed)."""

    as_of: str
    state: UserState | None


Record = (
    Claim | Publish | Refresh | Unpublish | AddOffers | DeleteOffer | Answer | Candidates | Snapshot
)

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Record)


def encode_record(record: Record) -> bytes:
    """A record as the log stores it (JSON)."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> Record:
    """Parse a stored record.

    Raises:
        msgspec.DecodeError, msgspec.ValidationError: not a record (a corrupt log).
    """
    return _decoder.decode(data)


# ---------------------------------------------------------------------------- the fold


@dataclass(frozen=True, slots=True)
class Outcome:
    """A record's verdict: accepted, or refused with an HTTP status, code and message."""

    ok: bool
    status: int = 200
    code: str = ""
    message: str = ""

    def raise_for_error(self) -> None:
        """Raise :class:`RequestError` when refused."""
        if not self.ok:
            raise RequestError(self.status, self.code, self.message)


ACCEPTED: Final = Outcome(True)


def _no(status: int, code: str, message: str) -> Outcome:
    return Outcome(False, status, code, message)


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A live service as discovery shows it."""

    username: str
    uuid: str
    fqn: str
    public: bool
    metadata: dict[str, Any]
    expires_at: float


@dataclass(frozen=True, slots=True)
class OfferView:
    """An open offer handed to a connecting peer."""

    id: str
    uuid: str
    sdp: str


@dataclass(frozen=True, slots=True)
class AnswerView:
    offer_id: str
    uuid: str
    sdp: str
    offset: str


@dataclass(frozen=True, slots=True)
class CandidateView:
    offer_id: str
    candidate: str
    offset: str


@dataclass(slots=True)
class UserLog:
    """The fold of one username's log up to ``offset`` (the next offset to read).

    Feed :meth:`apply` every entry in log order; it returns the entry's verdict. The
    queries take ``now`` and never mutate.
    """

    username: str
    settings: RendezvousSettings
    state: UserState | None = None
    offset: str = "-1"
    #: Records applied since the last snapshot (compaction trigger).
    since_snapshot: int = 0
    #: Approximate bytes held (cache accounting).
    size: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    # -- applying -------------------------------------------------------------

    def apply(self, record: Record, offset: str, next_offset: str) -> Outcome:
        """Apply the entry at ``offset`` (its successor is ``next_offset``); return its verdict.

        Snapshots are skipped (a warm fold already holds their content). Verdicts of the
        last 1024 entries are kept in :attr:`outcomes` for requests waiting on them.
        """
        self.offset = next_offset
        if isinstance(record, Snapshot):
            return ACCEPTED
        self.since_snapshot += 1
        if self.state is not None and _sweep(self.state, record.at, self.settings):
            self.size = _state_size(self.state)
        outcome = self.check(record, record.at)
        if outcome.ok:
            self._mutate(record, offset)
        self.outcomes[offset] = outcome
        if len(self.outcomes) > 1024:
            del self.outcomes[next(iter(self.outcomes))]
        return outcome

    def start_from(self, snapshot: Snapshot) -> None:
        """Cold start on a compacted log: the state as of ``snapshot.as_of``."""
        self.state = msgspec.convert(msgspec.to_builtins(snapshot.state), UserState | None)
        self.since_snapshot = 0
        self.size = _state_size(self.state)

    def check(self, rec: Record, at: float) -> Outcome:
        """Would ``rec`` be accepted at time ``at``? Pure: changes nothing."""
        st = self.state
        s = self.settings
        if isinstance(rec, Snapshot):
            return ACCEPTED
        if isinstance(rec, Claim):
            if st is not None and st.last_used + s.username_ttl > at and st.key != rec.key:
                return _no(409, "USERNAME_TAKEN", f"username {self.username!r} is claimed")
            return self._check_signed(rec, at, claim=True)
        if isinstance(rec, _Signed) or (isinstance(rec, Candidates) and rec.role == "offerer"):
            if st is None or st.last_used + s.username_ttl <= at:
                return _no(404, "NO_SUCH_USER", f"username {self.username!r} is not claimed")
            signed = self._check_signed(rec, at, claim=False)
            if not signed.ok:
                return signed
        elif st is None:
            return _no(404, "NO_SUCH_USER", f"username {self.username!r} is not claimed")
        assert st is not None
        if isinstance(rec, Publish):
            svc = _live_service_by_fqn(st, rec.fqn, at)
            if svc is None and _live_services(st, at) >= s.max_services_per_user:
                return _no(
                    429, "TOO_MANY_SERVICES", f"at most {s.max_services_per_user} services per user"
                )
            keep = 0 if svc is None else sum(1 for o in st.offers.values() if o.uuid != svc.uuid)
            total = (len(st.offers) if svc is None else keep) + len(rec.offers)
            if total > s.max_offers_per_user:
                return _no(
                    429, "TOO_MANY_OFFERS", f"at most {s.max_offers_per_user} offers per user"
                )
            return ACCEPTED
        if isinstance(rec, Refresh | Unpublish):
            if _live_service(st, rec.uuid, at) is None:
                return _no(404, "NO_SUCH_SERVICE", f"no live service {rec.uuid}")
            return ACCEPTED
        if isinstance(rec, AddOffers):
            if _live_service(st, rec.uuid, at) is None:
                return _no(404, "NO_SUCH_SERVICE", f"no live service {rec.uuid}")
            if len(st.offers) + len(rec.offers) > s.max_offers_per_user:
                return _no(
                    429, "TOO_MANY_OFFERS", f"at most {s.max_offers_per_user} offers per user"
                )
            return ACCEPTED
        if isinstance(rec, DeleteOffer):
            if rec.offer_id not in st.offers:
                return _no(404, "NO_SUCH_OFFER", f"no offer {rec.offer_id}")
            return ACCEPTED
        if isinstance(rec, Answer):
            offer = st.offers.get(rec.offer_id)
            if offer is None or offer.uuid != rec.uuid:
                return _no(404, "NO_SUCH_OFFER", f"service {rec.uuid} has no offer {rec.offer_id}")
            if _live_service(st, rec.uuid, at) is None:
                return _no(410, "SERVICE_EXPIRED", f"service {rec.uuid} has expired")
            if offer.answer is not None:
                return _no(409, "ALREADY_ANSWERED", f"offer {rec.offer_id} was already answered")
            return ACCEPTED
        if isinstance(rec, Candidates):
            offer = st.offers.get(rec.offer_id)
            if offer is None:
                return _no(404, "NO_SUCH_OFFER", f"no offer {rec.offer_id}")
            if rec.role == "answerer":
                if offer.answer is None or offer.answer.token_hash != rec.token_hash:
                    return _no(403, "NOT_ANSWERER", "the token is not the winning answerer's")
                have = len(offer.answerer_candidates)
            else:
                have = len(offer.offerer_candidates)
            if have + len(rec.candidates) > s.max_candidates_per_offer:
                return _no(
                    429,
                    "TOO_MANY_CANDIDATES",
                    f"at most {s.max_candidates_per_offer} candidates per offer and side",
                )
            return ACCEPTED
        raise AssertionError(f"unknown record {type(rec).__name__}")  # pragma: no cover

    def _check_signed(self, rec: _Signed | Candidates, at: float, *, claim: bool) -> Outcome:
        st = self.state
        s = self.settings
        if abs(at * 1000 - rec.ts) > s.signature_window * 1000:
            return _no(401, "STALE_TIMESTAMP", "request timestamp is outside the ±5 min window")
        live = st is not None and st.last_used + s.username_ttl > at
        if live and st is not None:
            if st.key != rec.key:
                return _no(403, "NOT_OWNER", f"the signing key does not own {self.username!r}")
            if rec.nonce in st.nonces:
                return _no(401, "REPLAYED_NONCE", "this nonce was already used")
            horizon = at * 1000 - s.signature_window * 1000
            fresh = sum(1 for ts in st.nonces.values() if ts >= horizon)
            if fresh >= s.max_nonces_per_user:
                return _no(429, "TOO_MANY_REQUESTS", "too many signed requests in the window")
        elif not claim:
            return _no(404, "NO_SUCH_USER", f"username {self.username!r} is not claimed")
        return ACCEPTED

    def _mutate(self, rec: Record, offset: str) -> None:
        s = self.settings
        at = rec.at
        if isinstance(rec, Claim):
            st = self.state
            if st is None or st.last_used + s.username_ttl <= at:
                self.state = UserState(key=rec.key, salt=rec.salt, claimed_at=at, last_used=at)
                self.size = _state_size(self.state)
        st = self.state
        assert st is not None
        if isinstance(rec, _Signed) or (isinstance(rec, Candidates) and rec.role == "offerer"):
            st.last_used = at
            st.nonces[rec.nonce] = rec.ts
            self.size += 64
        if isinstance(rec, Publish):
            uid = service_uuid(st.salt, rec.fqn)
            old = st.services.get(uid)
            st.services[uid] = ServiceState(
                uuid=uid,
                fqn=rec.fqn,
                public=rec.public,
                metadata=rec.metadata,
                created_at=old.created_at if old is not None else at,
                expires_at=at + rec.ttl,
            )
            for oid in [o.id for o in st.offers.values() if o.uuid == uid and o.answer is None]:
                self._drop_offer(oid)
            self._add_offers(uid, rec.offers, at)
        elif isinstance(rec, Refresh):
            st.services[rec.uuid].expires_at = at + rec.ttl
        elif isinstance(rec, Unpublish):
            del st.services[rec.uuid]
            for oid in [o.id for o in st.offers.values() if o.uuid == rec.uuid]:
                self._drop_offer(oid)
        elif isinstance(rec, AddOffers):
            self._add_offers(rec.uuid, rec.offers, at)
        elif isinstance(rec, DeleteOffer):
            self._drop_offer(rec.offer_id)
        elif isinstance(rec, Answer):
            st.offers[rec.offer_id].answer = AnswerState(
                sdp=rec.sdp, token_hash=rec.token_hash, at=at, offset=offset
            )
            self.size += len(rec.sdp) + 128
        elif isinstance(rec, Candidates):
            offer = st.offers[rec.offer_id]
            side = offer.answerer_candidates if rec.role == "answerer" else offer.offerer_candidates
            side.extend(CandidateState(candidate=c, offset=offset) for c in rec.candidates)
            self.size += sum(len(c) + 64 for c in rec.candidates)

    def _add_offers(self, uid: str, offers: list[NewOffer], at: float) -> None:
        st = self.state
        assert st is not None
        for o in offers:
            st.offers[o.id] = OfferState(id=o.id, uuid=uid, sdp=o.sdp, created_at=at)
            self.size += len(o.sdp) + 128

    def _drop_offer(self, offer_id: str) -> None:
        st = self.state
        assert st is not None
        offer = st.offers.pop(offer_id, None)
        if offer is not None:
            self.size -= _offer_size(offer)

    # -- queries --------------------------------------------------------------

    def owner_key(self, now: float) -> str | None:
        """The public key holding the name at ``now``, or None when it is free."""
        st = self.state
        if st is None or st.last_used + self.settings.username_ttl <= now:
            return None
        return st.key

    def claim_view(self, now: float) -> dict[str, Any]:
        """``GET /users/{name}``'s body."""
        key = self.owner_key(now)
        if key is None or self.state is None:
            return {"username": self.username, "available": True}
        return {
            "username": self.username,
            "available": False,
            "public_key": key,
            "claimed_at": self.state.claimed_at,
            "expires_at": self.state.last_used + self.settings.username_ttl,
        }

    def service_by_fqn(self, fqn: str, now: float) -> ServiceView | None:
        """The live service ``fqn`` (public or private), or None."""
        if self.owner_key(now) is None or self.state is None:
            return None
        svc = _live_service_by_fqn(self.state, fqn, now)
        return None if svc is None else self._view(svc)

    def service(self, uid: str, now: float) -> ServiceView | None:
        """The live service with UUID ``uid``, or None."""
        if self.owner_key(now) is None or self.state is None:
            return None
        svc = _live_service(self.state, uid, now)
        return None if svc is None else self._view(svc)

    def public_services(self, now: float) -> list[ServiceView]:
        """The user's live public services, by FQN."""
        if self.owner_key(now) is None or self.state is None:
            return []
        st = self.state
        views = [self._view(v) for v in st.services.values() if v.public and v.expires_at > now]
        return sorted(views, key=lambda v: v.fqn)

    def open_offers(self, uid: str, now: float) -> list[OfferView]:
        """Unanswered offers of live service ``uid`` (the pool), oldest first."""
        if self.service(uid, now) is None or self.state is None:
            return []
        return [
            OfferView(o.id, o.uuid, o.sdp)
            for o in self.state.offers.values()
            if o.uuid == uid and o.answer is None
        ]

    def owner_feed(self, since: str, now: float) -> tuple[list[AnswerView], list[CandidateView]]:
        """Answers and answerer candidates logged at or after offset ``since``."""
        st = self.state
        if st is None:
            return [], []
        answers: list[AnswerView] = []
        cands: list[CandidateView] = []
        for o in st.offers.values():
            a = o.answer
            if a is None or a.at + self.settings.answered_grace <= now:
                continue
            if _at_or_after(a.offset, since):
                answers.append(AnswerView(o.id, o.uuid, a.sdp, a.offset))
            cands.extend(
                CandidateView(o.id, c.candidate, c.offset)
                for c in o.answerer_candidates
                if _at_or_after(c.offset, since)
            )
        answers.sort(key=lambda a: a.offset)
        cands.sort(key=lambda c: c.offset)
        return answers, cands

    def answerer_feed(self, offer_id: str, token: str, since: str) -> list[CandidateView]:
        """The owner's candidates for ``offer_id`` at or after ``since``.

        Raises:
            RequestError: 404 no such offer, 403 not the winning answerer's token.
        """
        st = self.state
        offer = None if st is None else st.offers.get(offer_id)
        if offer is None:
            raise RequestError(404, "NO_SUCH_OFFER", f"no offer {offer_id}")
        if offer.answer is None or offer.answer.token_hash != token_hash(token):
            raise RequestError(403, "NOT_ANSWERER", "the token is not the winning answerer's")
        return [
            CandidateView(offer_id, c.candidate, c.offset)
            for c in offer.offerer_candidates
            if _at_or_after(c.offset, since)
        ]

    def is_empty(self, now: float) -> bool:
        """True when the name is free and nothing else is held (the log may be deleted)."""
        return self.owner_key(now) is None

    def _view(self, svc: ServiceState) -> ServiceView:
        return ServiceView(
            self.username, svc.uuid, svc.fqn, svc.public, svc.metadata, svc.expires_at
        )


def _at_or_after(offset: str, since: str) -> bool:
    return since in ("-1", "") or offset >= since


def _live_service(st: UserState, uid: str, at: float) -> ServiceState | None:
    svc = st.services.get(uid)
    return svc if svc is not None and svc.expires_at > at else None


def _live_service_by_fqn(st: UserState, fqn: str, at: float) -> ServiceState | None:
    return _live_service(st, service_uuid(st.salt, fqn), at)


def _live_services(st: UserState, at: float) -> int:
    return sum(1 for v in st.services.values() if v.expires_at > at)


def _sweep(st: UserState, at: float, s: RendezvousSettings) -> bool:
    """Drop what expired by ``at``: services and their open offers, answered offers past
    the grace, nonces outside the window. True if anything was dropped."""
    dead = [uid for uid, v in st.services.items() if v.expires_at <= at]
    for uid in dead:
        del st.services[uid]
    gone = [
        oid
        for oid, o in st.offers.items()
        if (o.answer is None and o.uuid not in st.services)
        or (o.answer is not None and o.answer.at + s.answered_grace <= at)
    ]
    for oid in gone:
        del st.offers[oid]
    horizon = at * 1000 - s.signature_window * 1000
    old = [n for n, ts in st.nonces.items() if ts < horizon]
    for n in old:
        del st.nonces[n]
    return bool(dead or gone or old)


def _offer_size(o: OfferState) -> int:
    size = len(o.sdp) + 128
    if o.answer is not None:
        size += len(o.answer.sdp) + 128
    size += sum(len(c.candidate) + 64 for c in o.offerer_candidates)
    size += sum(len(c.candidate) + 64 for c in o.answerer_candidates)
    return size


def _state_size(st: UserState | None) -> int:
    if st is None:
        return 256
    return (
        256
        + sum(_offer_size(o) for o in st.offers.values())
        + sum(256 + len(msgspec.json.encode(v.metadata)) for v in st.services.values())
        + 64 * len(st.nonces)
    )


def validate_sdp(sdp: str, settings: RendezvousSettings) -> str:
    """``sdp`` if non-empty and within ``max_sdp_bytes`` (else 400/413)."""
    if not sdp.strip():
        raise RequestError(400, "BAD_SDP", "sdp must not be empty")
    if len(sdp.encode("utf-8")) > settings.max_sdp_bytes:
        raise RequestError(413, "SDP_TOO_LARGE", f"sdp exceeds {settings.max_sdp_bytes} bytes")
    return sdp


def validate_candidates(cands: list[str], settings: RendezvousSettings) -> list[str]:
    """``cands`` if 1..max_candidates_per_offer strings each within max_candidate_bytes."""
    if not cands:
        raise RequestError(400, "NO_CANDIDATES", "candidates must not be empty")
    if len(cands) > settings.max_candidates_per_offer:
        raise RequestError(
            413, "TOO_MANY_CANDIDATES", f"at most {settings.max_candidates_per_offer} per request"
        )
    for c in cands:
        if len(c.encode("utf-8")) > settings.max_candidate_bytes:
            raise RequestError(
                413,
                "CANDIDATE_TOO_LARGE",
                f"a candidate exceeds {settings.max_candidate_bytes} bytes",
            )
    return cands


MAX_METADATA_DEPTH: Final = 8


def validate_metadata(metadata: dict[str, Any], settings: RendezvousSettings) -> dict[str, Any]:
    """``metadata`` if its JSON is within ``max_metadata_bytes`` (else 413) and nests at most
    :data:`MAX_METADATA_DEPTH` levels (else 400)."""
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise RequestError(
                400, "METADATA_TOO_DEEP", f"metadata nests more than {MAX_METADATA_DEPTH} levels"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    if len(msgspec.json.encode(metadata)) > settings.max_metadata_bytes:
        raise RequestError(
            413, "METADATA_TOO_LARGE", f"metadata exceeds {settings.max_metadata_bytes} bytes"
        )
    return metadata
