"""Authentication and authorization: one hook every request passes through.

A request is first *authenticated* into a :class:`Principal`, then each
operation is *authorized* as ``(principal, action, resource)``:

- ``action`` is ``"read"`` (GET, HEAD, live tails), ``"write"`` (PUT, POST,
  DELETE) or ``"admin"`` (control APIs such as ``__ds`` subscriptions);
- ``resource`` is a path such as ``"stream/<path>"`` (later ``"room/<name>"``).

Two policies ship:

- :class:`LoopbackAuthorizer` (the default): every loopback client may do
  everything; any other client gets 403 unless ``allow_remote`` is set.
- :class:`JWTAuthorizer` (``--auth-secret``): HS256 JWT bearer tokens, from
  ``Authorization: Bearer <token>`` or the ``?token=`` query parameter (for
  EventSource/WebSocket clients that cannot set headers). Claims::

      {"sub": "alice",                 # optional, for logs
       "read":  ["stream/a/", "room/"], # resource prefixes the token may read
       "write": ["stream/a/"],          # ... may write (write implies read)
       "admin": false,                  # optional: everything, control APIs
       "exp": 1767225600}               # optional but recommended (Unix time)

  A prefix matches when the resource starts with it; ``""`` matches all.
  Missing/invalid/expired token -> 401 with ``WWW-Authenticate: Bearer``;
  valid token without the right prefix -> 403.

Both are plain objects satisfying the :class:`Authorizer` protocol, so the
rooms layer and any embedding app can reuse or replace them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl

import jwt
import msgspec

__all__ = [
    "MIN_SECRET_BYTES",
    "Action",
    "AuthError",
    "Authorizer",
    "JWTAuthorizer",
    "LoopbackAuthorizer",
    "Principal",
    "RequestCredentials",
    "credentials_from_scope",
    "is_loopback",
]

Action = Literal["read", "write", "admin"]

#: Shortest accepted HS256 secret in bytes (RFC 7518 §3.2: a key at least as long as the hash).
MIN_SECRET_BYTES = 32


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is asking. Immutable; built once per request."""

    #: Token subject (``sub``) or ``"loopback"``/``"anonymous"``.
    subject: str
    client_host: str | None = None
    loopback: bool = False
    #: Resource prefixes granted by a token (empty for the loopback policy).
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    admin: bool = False


class AuthError(Exception):
    """Authentication or authorization failed.

    ``status`` is 401 (no/invalid credentials; answer with
    ``WWW-Authenticate``) or 403 (authenticated but not allowed).
    """

    def __init__(self, status: Literal[401, 403], code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RequestCredentials(msgspec.Struct, frozen=True, kw_only=True):
    """What authentication looks at, extracted from any request type."""

    client_host: str | None
    authorization: str | None = None
    query_token: str | None = None


@runtime_checkable
class Authorizer(Protocol):
    """The authorization hook. Implementations must be cheap and non-blocking."""

    def authenticate(self, credentials: RequestCredentials) -> Principal:
        """Turn credentials into a principal.

        Raises:
            AuthError: 401 for missing/invalid credentials, 403 when the
                client may not connect at all (e.g. non-loopback).
        """
        ...

    def authorize(self, principal: Principal, action: Action, resource: str) -> bool:
        """True iff ``principal`` may perform ``action`` on ``resource``."""
        ...


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything else."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def credentials_from_scope(scope: Mapping[str, object]) -> RequestCredentials:
    """Extract credentials from an ASGI HTTP/WebSocket scope."""
    client = scope.get("client")
    host = client[0] if isinstance(client, (tuple, list)) and client else None
    authorization: str | None = None
    headers = scope.get("headers")
    if isinstance(headers, (list, tuple)):
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
    query_token: str | None = None
    raw_query = scope.get("query_string")
    if isinstance(raw_query, bytes) and b"token=" in raw_query:
        for key, value in parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True):
            if key == "token":
                query_token = value
                break
    return RequestCredentials(
        client_host=host if isinstance(host, str) else None,
        authorization=authorization,
        query_token=query_token,
    )


class LoopbackAuthorizer:
    """Default policy: loopback clients may do everything.

    Non-loopback clients are refused with 403 unless ``allow_remote`` (then
    everyone may do everything: only for trusted networks).
    """

    def __init__(self, *, allow_remote: bool = False) -> None:
        self.allow_remote = allow_remote
        self._loopback_cache: dict[str, bool] = {}

    def authenticate(self, credentials: RequestCredentials) -> Principal:
        host = credentials.client_host
        loopback = self._loopback_cache.get(host or "")
        if loopback is None:
            loopback = is_loopback(host)
            if len(self._loopback_cache) < 4096:
                self._loopback_cache[host or ""] = loopback
        if not loopback and not self.allow_remote:
            raise AuthError(
                403,
                "REMOTE_FORBIDDEN",
                "only loopback clients are allowed; start the server with "
                "--auth-secret to admit remote clients with tokens",
            )
        return Principal(
            subject="loopback" if loopback else "anonymous", client_host=host, loopback=loopback
        )

    def authorize(self, principal: Principal, action: Action, resource: str) -> bool:
        return True


class _Claims(msgspec.Struct, frozen=True, kw_only=True):
    sub: str = "token"
    read: list[str] = []
    write: list[str] = []
    admin: bool = False


class JWTAuthorizer:
    """HS256 JWT bearer tokens whose claims grant resource prefixes.

    See the module docstring for the claim names. ``leeway`` seconds of clock
    skew are tolerated on ``exp``/``nbf``/``iat``.

    Raises:
        ValueError: ``secret`` shorter than :data:`MIN_SECRET_BYTES` (UTF-8).
    """

    def __init__(self, secret: str, *, leeway: float = 5.0) -> None:
        size = len(secret.encode())
        if size < MIN_SECRET_BYTES:
            raise ValueError(
                f"the auth secret must be at least {MIN_SECRET_BYTES} bytes (got {size}): "
                "an HS256 key shorter than its hash is guessable offline from any token"
            )
        self._secret = secret
        self._leeway = leeway

    def authenticate(self, credentials: RequestCredentials) -> Principal:
        token = credentials.query_token
        header = credentials.authorization
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError(
                    401, "INVALID_TOKEN", "Authorization header must be 'Bearer <token>'"
                )
            token = value.strip()
        if not token:
            raise AuthError(
                401,
                "MISSING_TOKEN",
                "a bearer token is required (Authorization: Bearer <token> or ?token=)",
            )
        try:
            payload = jwt.decode(token, self._secret, algorithms=["HS256"], leeway=self._leeway)
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "TOKEN_EXPIRED", "the bearer token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "INVALID_TOKEN", f"invalid bearer token: {exc}") from None
        try:
            claims = msgspec.convert(payload, _Claims)
        except msgspec.ValidationError as exc:
            raise AuthError(401, "INVALID_TOKEN", f"invalid token claims: {exc}") from None
        return Principal(
            subject=claims.sub,
            client_host=credentials.client_host,
            loopback=is_loopback(credentials.client_host),
            read=tuple(claims.read),
            write=tuple(claims.write),
            admin=claims.admin,
        )

    def authorize(self, principal: Principal, action: Action, resource: str) -> bool:
        if principal.admin:
            return True
        if action == "admin":
            return False
        if any(resource.startswith(prefix) for prefix in principal.write):
            return True
        return action == "read" and any(resource.startswith(p) for p in principal.read)
