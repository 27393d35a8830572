"""Replication links as the operator declares them: a TOML file, parsed and validated (pure).

``durasync serve --replicate FILE`` reads a file like::

    [replication]                      # optional: settings shared by every link
    reconcile-interval = 300           # seconds between integrity reconciles of a live link

    [[links]]
    name = "to-cloud"                  # unique per server
    remote = "http://127.0.0.1:4438"   # another durasync, or any Durable Streams server
    token = "..."                      # optional bearer token for the remote
    pull = ["sensors/"]                # stream path prefixes mirrored from the remote
    push = ["outbox/"]                 # stream path prefixes forwarded to the remote
    rooms = ["lab-"]                   # room name prefixes replicated both ways

Every problem is a :class:`LinkConfigError` whose message is one line naming the file, the link
and the key, so ``serve`` can stop with it.

Identity. A link's durable state is keyed by ``(name, remote, scope_id)`` where
``scope_id = base64url(sha256(canonical JSON of the scope))`` and the scope is the
de-duplicated, sorted prefix lists (:func:`scope_id`). Changing what a link covers makes a
new link with fresh checkpoints; old checkpoints are never silently reused for a different
set of streams or rooms.

Ownership rules checked here (so that no stream has two writers and nothing loops):

- a stream path prefix pulled by one link is pulled by no other link (prefixes overlap when
  one starts with the other): a mirrored stream has exactly one source;
- no pull prefix overlaps a push prefix to the same remote, within one link or across links
  (a stream would be mirrored from the remote and forwarded back to it);
- prefixes never reach the server's reserved namespace (paths whose first segment starts
  with ``__``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from durasync.namespaces import is_reserved

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_LINKS",
    "MAX_PREFIXES",
    "LinkConfig",
    "LinkConfigError",
    "ReplicationConfig",
    "ReplicationSettings",
    "link_id",
    "load_config",
    "parse_config",
    "scope_id",
]

#: Largest ``--replicate`` file read (bytes).
MAX_CONFIG_BYTES: Final = 1 << 20
#: Links per server.
MAX_LINKS: Final = 64
#: Prefixes per list of one link.
MAX_PREFIXES: Final = 256
_MAX_PREFIX_CHARS: Final = 1024
_MAX_ROOM_PREFIX_CHARS: Final = 128
_MAX_TOKEN_CHARS: Final = 8192
_MAX_URL_CHARS: Final = 2048

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ROOM_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9._~-]*")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f\\]")


class LinkConfigError(ValueError):
    """The replication file is unreadable or invalid; the message is one line naming it."""


class ReplicationSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables shared by every link (the ``[replication]`` table; all in seconds or counts).

    The defaults follow the issue and the seed; tests shorten them.
    """

    #: Integrity reconcile of a live link (rooms: hash-tree comparison; streams: re-probe).
    reconcile_interval: float = 300.0
    #: How often a link lists the remote's streams under its pull prefixes (new streams,
    #: deletions) and the local ones under its push prefixes.
    discover_interval: float = 5.0
    #: Bound of one HTTP request to the remote (connect, write, read of a non-live answer).
    request_timeout: float = 10.0
    #: How long a live read waits at the remote for new data before asking again.
    live_wait: float = 25.0
    #: Deliveries of one link applied but not yet checkpointed; beyond it the link repairs.
    max_in_flight: int = 100
    #: Largest batch moved in one request (messages and bytes).
    batch_messages: int = 10_000
    batch_bytes: int = 4 << 20
    #: Repair retries: delays after the 1st, 2nd and 3rd failure; then degraded polling
    #: every ``poll_min`` + random ``poll_jitter`` seconds.
    repair_delays: tuple[float, ...] = (1.0, 3.0, 10.0)
    poll_min: float = 15.0
    poll_jitter: float = 15.0
    #: Push retries of a transient failure (delays before each attempt), then reconcile.
    push_retry_delays: tuple[float, ...] = (0.0, 0.25, 1.0, 2.0)
    #: Longest Retry-After honoured (a remote cannot park a link for longer).
    max_retry_after: float = 60.0
    #: Events kept per subscriber of the event stream before the oldest are dropped.
    event_queue: int = 1024

    def __post_init__(self) -> None:
        for name in (
            "reconcile_interval",
            "discover_interval",
            "request_timeout",
            "live_wait",
            "poll_min",
            "max_retry_after",
        ):
            value = getattr(self, name)
            if not 0 < value <= 86_400:
                raise ValueError(f"{name} must be within (0, 86400] seconds")
        if not 0 <= self.poll_jitter <= 86_400:
            raise ValueError("poll_jitter must be within [0, 86400] seconds")
        for name in ("max_in_flight", "batch_messages", "batch_bytes", "event_queue"):
            value = getattr(self, name)
            if not 1 <= value <= 1 << 30:
                raise ValueError(f"{name} must be a positive count")
        for name in ("repair_delays", "push_retry_delays"):
            delays = getattr(self, name)
            if not 1 <= len(delays) <= 16 or any(not 0 <= d <= 3600 for d in delays):
                raise ValueError(f"{name} must hold 1-16 delays within [0, 3600] seconds")


class LinkConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One declared link. Prefix lists are de-duplicated and sorted."""

    name: str
    #: Base URL of the remote server (scheme, host, port, optional path), no trailing ``/``.
    remote: str
    token: str | None = None
    pull: tuple[str, ...] = ()
    push: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()

    @property
    def scope(self) -> dict[str, list[str]]:
        """What the link covers, in canonical form."""
        return {"pull": list(self.pull), "push": list(self.push), "rooms": list(self.rooms)}

    @property
    def scope_id(self) -> str:
        return scope_id(self.scope)

    @property
    def link_id(self) -> str:
        """The durable identity of this link: ``(name, remote, scope_id)`` hashed."""
        return link_id(self.name, self.remote, self.scope_id)

    def pulls(self, path: str) -> bool:
        """Whether stream ``path`` is mirrored from the remote by this link."""
        return any(path.startswith(p) for p in self.pull)

    def pushes(self, path: str) -> bool:
        """Whether local stream ``path`` is forwarded to the remote by this link."""
        return any(path.startswith(p) for p in self.push)

    def replicates_room(self, room: str) -> bool:
        return any(room.startswith(p) for p in self.rooms)


class ReplicationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The whole file: shared settings and the links (names unique)."""

    settings: ReplicationSettings = ReplicationSettings()
    links: tuple[LinkConfig, ...] = ()

    def link(self, name: str) -> LinkConfig | None:
        for link in self.links:
            if link.name == name:
                return link
        return None

    def mirror_of(self, path: str) -> LinkConfig | None:
        """The link that mirrors stream ``path`` here (it is read-only then), or None."""
        for link in self.links:
            if link.pulls(path):
                return link
        return None


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def scope_id(scope: Mapping[str, Sequence[str]]) -> str:
    """``base64url(sha256(canonical JSON))`` of a scope (lists de-duplicated and sorted).

    Canonical JSON: sorted keys, no spaces, UTF-8. The same scope gives the same id on every
    server; adding or removing a prefix gives a different id.
    """
    canonical = {key: sorted(set(values)) for key, values in scope.items()}
    return _b64(hashlib.sha256(_canonical(canonical)).digest())


def link_id(name: str, remote: str, scope: str) -> str:
    """The ledger key of a link: ``base64url(sha256(canonical JSON [name, remote, scope_id]))``."""
    return _b64(hashlib.sha256(_canonical([name, remote, scope])).digest())


# ---------------------------------------------------------------------------------- parsing

_SETTING_KEYS: Final = {
    "reconcile-interval": "reconcile_interval",
    "discover-interval": "discover_interval",
    "request-timeout": "request_timeout",
    "live-wait": "live_wait",
    "max-in-flight": "max_in_flight",
    "batch-messages": "batch_messages",
    "batch-bytes": "batch_bytes",
    "repair-delays": "repair_delays",
    "poll-min": "poll_min",
    "poll-jitter": "poll_jitter",
    "push-retry-delays": "push_retry_delays",
    "max-retry-after": "max_retry_after",
    "event-queue": "event_queue",
}
_LINK_KEYS: Final = ("name", "remote", "token", "pull", "push", "rooms")


def _number(where: str, key: str, value: object, *, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LinkConfigError(f"{where}: {key} must be a number")
    if integer and not isinstance(value, int):
        raise LinkConfigError(f"{where}: {key} must be an integer")
    return value


def _settings(where: str, raw: object) -> ReplicationSettings:
    if not isinstance(raw, dict):
        raise LinkConfigError(f"{where}: [replication] must be a table")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field = _SETTING_KEYS.get(key)
        if field is None:
            known = ", ".join(sorted(_SETTING_KEYS))
            raise LinkConfigError(
                f"{where}: [replication] has unknown key {key!r} (known: {known})"
            )
        if field.endswith("_delays"):
            if not isinstance(value, list):
                raise LinkConfigError(f"{where}: {key} must be a list of seconds")
            values[field] = tuple(float(_number(where, key, v, integer=False)) for v in value)
        else:
            integer = field in ("max_in_flight", "batch_messages", "batch_bytes", "event_queue")
            values[field] = _number(where, key, value, integer=integer)
    try:
        return ReplicationSettings(**values)
    except ValueError as exc:
        raise LinkConfigError(f"{where}: [replication]: {exc}") from None


def _remote(where: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise LinkConfigError(f"{where}: remote must be a non-empty URL string")
    if len(value) > _MAX_URL_CHARS or _CONTROL_RE.search(value) or " " in value:
        raise LinkConfigError(f"{where}: remote is not a usable URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LinkConfigError(f"{where}: remote must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise LinkConfigError(
            f"{where}: remote must not carry a query, fragment or credentials (use token)"
        )
    try:
        _ = parts.port
    except ValueError:
        raise LinkConfigError(f"{where}: remote has an invalid port") from None
    return value.rstrip("/")


def _string_list(where: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LinkConfigError(f"{where}: {key} must be a list of strings")
    if len(value) > MAX_PREFIXES:
        raise LinkConfigError(f"{where}: {key} has more than {MAX_PREFIXES} prefixes")
    return list(value)


def _stream_prefixes(where: str, key: str, value: object) -> tuple[str, ...]:
    prefixes = _string_list(where, key, value)
    for prefix in prefixes:
        if len(prefix) > _MAX_PREFIX_CHARS or _CONTROL_RE.search(prefix):
            raise LinkConfigError(
                f"{where}: {key} prefix {prefix[:64]!r} is not a stream path prefix"
            )
        if prefix.startswith("/"):
            raise LinkConfigError(
                f"{where}: {key} prefix {prefix[:64]!r} must not start with '/' "
                "(paths are relative to /v1/stream/)"
            )
        if is_reserved(prefix):
            # ("" and "_" also cover reserved paths: those are left out wherever they are used.)
            raise LinkConfigError(
                f"{where}: {key} prefix {prefix[:64]!r} names the server's reserved "
                "namespace ('__...')"
            )
        for segment in prefix.split("/")[:-1]:
            if segment in ("", ".", ".."):
                raise LinkConfigError(
                    f"{where}: {key} prefix {prefix[:64]!r} has an empty, '.' or '..' segment"
                )
    return tuple(sorted(set(prefixes)))


def _room_prefixes(where: str, value: object) -> tuple[str, ...]:
    prefixes = _string_list(where, "rooms", value)
    for prefix in prefixes:
        if len(prefix) > _MAX_ROOM_PREFIX_CHARS or not _ROOM_PREFIX_RE.fullmatch(prefix):
            raise LinkConfigError(
                f"{where}: rooms prefix {prefix[:64]!r} is not a room name prefix "
                "(room names are 1-128 of [A-Za-z0-9._~-])"
            )
    return tuple(sorted(set(prefixes)))


def _overlap(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def _link(where: str, index: int, raw: object) -> LinkConfig:
    if not isinstance(raw, dict):
        raise LinkConfigError(f"{where}: links[{index}] must be a table ([[links]])")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise LinkConfigError(
            f"{where}: links[{index}].name must be 1-64 of [A-Za-z0-9._-], got {name!r}"[:300]
        )
    at = f"{where}: link {name!r}"
    for key in raw:
        if key not in _LINK_KEYS:
            raise LinkConfigError(f"{at}: unknown key {key!r} (known: {', '.join(_LINK_KEYS)})")
    if "remote" not in raw:
        raise LinkConfigError(f"{at}: remote is required")
    remote = _remote(at, raw["remote"])
    token = raw.get("token")
    if token is not None and (
        not isinstance(token, str)
        or not token
        or len(token) > _MAX_TOKEN_CHARS
        or not token.isprintable()
    ):
        raise LinkConfigError(f"{at}: token must be a non-empty printable string")
    pull = _stream_prefixes(at, "pull", raw.get("pull", []))
    push = _stream_prefixes(at, "push", raw.get("push", []))
    rooms = _room_prefixes(at, raw.get("rooms", []))
    if not (pull or push or rooms):
        raise LinkConfigError(f"{at}: give at least one of pull, push, rooms")
    for a in pull:
        for b in push:
            if _overlap(a, b):
                raise LinkConfigError(
                    f"{at}: pull prefix {a!r} overlaps push prefix {b!r} (a stream would go "
                    "back to the server it came from)"
                )
    return LinkConfig(name=name, remote=remote, token=token, pull=pull, push=push, rooms=rooms)


def parse_config(raw: Mapping[str, object], where: str = "replication config") -> ReplicationConfig:
    """Validate a parsed TOML document.

    Raises:
        LinkConfigError: one line naming ``where``, the link and the key at fault.
    """
    for key in raw:
        if key not in ("replication", "links"):
            raise LinkConfigError(
                f"{where}: unknown top-level key {key!r} (use [replication], [[links]])"
            )
    settings = _settings(where, raw["replication"]) if "replication" in raw else None
    links_raw = raw.get("links", [])
    if not isinstance(links_raw, list):
        raise LinkConfigError(f"{where}: links must be an array of tables ([[links]])")
    if len(links_raw) > MAX_LINKS:
        raise LinkConfigError(f"{where}: more than {MAX_LINKS} links")
    links = [_link(where, i, item) for i, item in enumerate(links_raw)]
    names: set[str] = set()
    for link in links:
        if link.name in names:
            raise LinkConfigError(f"{where}: link name {link.name!r} is used twice")
        names.add(link.name)
    for i, a in enumerate(links):
        for b in links[i + 1 :]:
            for pa in a.pull:
                for pb in b.pull:
                    if _overlap(pa, pb):
                        raise LinkConfigError(
                            f"{where}: links {a.name!r} and {b.name!r} both pull {pa!r}/{pb!r}: "
                            "a mirrored stream has exactly one source"
                        )
            if a.remote != b.remote:
                continue
            for x, y in ((a, b), (b, a)):
                for pull in x.pull:
                    for push in y.push:
                        if _overlap(pull, push):
                            raise LinkConfigError(
                                f"{where}: link {x.name!r} pulls {pull!r} from {x.remote} and "
                                f"link {y.name!r} pushes {push!r} to it (a stream would go back "
                                "to the server it came from)"
                            )
    return ReplicationConfig(settings=settings or ReplicationSettings(), links=tuple(links))


def load_config(path: Path) -> ReplicationConfig:
    """Read and validate a ``--replicate`` file.

    Raises:
        LinkConfigError: unreadable, too large, not TOML, or invalid (one line naming the problem).
    """
    where = f"replication config {path}"
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise LinkConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise LinkConfigError(f"{where}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise LinkConfigError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise LinkConfigError(f"{where}: not valid TOML: {exc}") from None
    return parse_config(raw, where)
