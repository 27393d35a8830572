from __future__ import annotations

import pytest

from durasync.protocol import ErrorKind, classify_close_code, classify_http_status


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, ErrorKind.PERMANENT),
        (403, ErrorKind.PERMANENT),
        (404, ErrorKind.PERMANENT),
        (400, ErrorKind.PERMANENT),
        (408, ErrorKind.TRANSIENT),
        (429, ErrorKind.TRANSIENT),
        (500, ErrorKind.TRANSIENT),
        (502, ErrorKind.TRANSIENT),
        (503, ErrorKind.TRANSIENT),
        (200, ErrorKind.TRANSIENT),
    ],
)
def test_http_status(status: int, kind: ErrorKind) -> None:
    c = classify_http_status(status)
    assert c.kind is kind
    assert c.permanent is (kind is ErrorKind.PERMANENT)
    assert str(status) in c.reason


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (None, ErrorKind.TRANSIENT),
        (1000, ErrorKind.TRANSIENT),
        (1001, ErrorKind.TRANSIENT),
        (1006, ErrorKind.TRANSIENT),
        (1011, ErrorKind.TRANSIENT),
        (1012, ErrorKind.TRANSIENT),
        (1013, ErrorKind.TRANSIENT),
        (1002, ErrorKind.PERMANENT),
        (1008, ErrorKind.PERMANENT),
        (4401, ErrorKind.PERMANENT),
        (4403, ErrorKind.PERMANENT),
        (4400, ErrorKind.PERMANENT),
        (4404, ErrorKind.PERMANENT),
        (4009, ErrorKind.TRANSIENT),
        (4008, ErrorKind.TRANSIENT),
        (4011, ErrorKind.TRANSIENT),
    ],
)
def test_close_codes(code: int | None, kind: ErrorKind) -> None:
    assert classify_close_code(code).kind is kind
