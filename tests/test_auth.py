"""The authorization hook: loopback default and HS256 JWT claims."""

from __future__ import annotations

import time

import jwt
import pytest

from durasync.auth import (
    AuthError,
    Authorizer,
    JWTAuthorizer,
    LoopbackAuthorizer,
    Principal,
    RequestCredentials,
    credentials_from_scope,
    is_loopback,
)

SECRET = "a-test-secret-of-at-least-32-bytes!!"
EXPIRED = jwt.encode({"exp": time.time() - 60}, SECRET, algorithm="HS256")
WRONG_ALG = jwt.encode({"a": 1}, SECRET + SECRET, algorithm="HS512")


def creds(host: str | None = "127.0.0.1", **kw: str | None) -> RequestCredentials:
    return RequestCredentials(client_host=host, **kw)


def tok(secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"exp": time.time() + 3600, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("::ffff:8.8.8.8", False),
        ("", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_is_loopback(host: str | None, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_both_policies_satisfy_the_protocol() -> None:
    assert isinstance(LoopbackAuthorizer(), Authorizer)
    assert isinstance(JWTAuthorizer(SECRET), Authorizer)


def test_loopback_policy() -> None:
    auth = LoopbackAuthorizer()
    principal = auth.authenticate(creds())
    assert principal.loopback
    for action in ("read", "write", "admin"):
        assert auth.authorize(principal, action, "stream/x")
    with pytest.raises(AuthError) as exc:
        auth.authenticate(creds("192.0.2.1"))
    assert exc.value.status == 403 and "--auth-secret" in exc.value.message
    remote = LoopbackAuthorizer(allow_remote=True).authenticate(creds("192.0.2.1"))
    assert not remote.loopback


def test_jwt_prefix_claims() -> None:
    auth = JWTAuthorizer(SECRET)
    p = auth.authenticate(
        creds(authorization=f"Bearer {tok(sub='al', read=['stream/r/'], write=['stream/w/'])}")
    )
    assert p.subject == "al"
    assert auth.authorize(p, "read", "stream/r/1")
    assert not auth.authorize(p, "write", "stream/r/1")
    assert auth.authorize(p, "write", "stream/w/1")
    assert auth.authorize(p, "read", "stream/w/1")  # write implies read
    assert not auth.authorize(p, "read", "stream/other")
    assert not auth.authorize(p, "admin", "stream/w/1")
    admin = Principal(subject="root", admin=True)
    assert auth.authorize(admin, "admin", "stream/__ds/x")
    everything = auth.authenticate(creds(query_token=tok(write=[""])))
    assert auth.authorize(everything, "write", "room/any")


@pytest.mark.parametrize(
    ("credentials", "code"),
    [
        (creds(), "MISSING_TOKEN"),
        (creds(authorization="Basic abc"), "INVALID_TOKEN"),
        (creds(authorization="Bearer "), "INVALID_TOKEN"),
        (creds(authorization="Bearer garbage"), "INVALID_TOKEN"),
        (
            creds(authorization=f"Bearer {tok(secret='another-secret-of-32-bytes-length!!')}"),
            "INVALID_TOKEN",
        ),
        (
            creds(authorization=f"Bearer {EXPIRED}"),
            "TOKEN_EXPIRED",
        ),
        (creds(authorization=f"Bearer {tok(read='stream/')}"), "INVALID_TOKEN"),
        (
            creds(authorization=f"Bearer {WRONG_ALG}"),
            "INVALID_TOKEN",
        ),
    ],
)
def test_jwt_rejections_are_401(credentials: RequestCredentials, code: str) -> None:
    with pytest.raises(AuthError) as exc:
        JWTAuthorizer(SECRET).authenticate(credentials)
    assert exc.value.status == 401
    assert exc.value.code == code


def test_header_wins_over_query_token() -> None:
    auth = JWTAuthorizer(SECRET)
    p = auth.authenticate(
        creds(authorization=f"Bearer {tok(sub='header')}", query_token=tok(sub="query"))
    )
    assert p.subject == "header"


def test_credentials_from_scope() -> None:
    scope = {
        "client": ("127.0.0.1", 5),
        "headers": [(b"authorization", b"Bearer abc")],
        "query_string": b"offset=-1&token=xyz",
    }
    c = credentials_from_scope(scope)
    assert c == RequestCredentials(
        client_host="127.0.0.1", authorization="Bearer abc", query_token="xyz"
    )
    assert credentials_from_scope({}) == RequestCredentials(client_host=None)


def test_empty_secret_refused() -> None:
    with pytest.raises(ValueError):
        JWTAuthorizer("")


@pytest.mark.parametrize("secret", ["s", "secret", "x" * 31, "é" * 15])
def test_short_secret_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JWTAuthorizer(secret)


def test_32_byte_secret_accepted_without_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        auth = JWTAuthorizer("x" * 32)
        token = jwt.encode({"sub": "a", "read": ["stream/"]}, "x" * 32, algorithm="HS256")
        principal = auth.authenticate(RequestCredentials(client_host="10.0.0.1", query_token=token))
    assert principal.subject == "a"
