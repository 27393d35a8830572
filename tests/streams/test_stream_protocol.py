"""Pure protocol logic: parsing, validation, cursors, ETags, SSE framing."""

from __future__ import annotations

import base64
import json
import random
import re

import pytest

from durasync.httpwire import error_body, is_json
from durasync.streams import protocol as p


def _status(exc: pytest.ExceptionInfo[p.RequestRefused]) -> int:
    return exc.value.status


# -- paths and offsets --


@pytest.mark.parametrize("path", ["a", "a/b/c", "x-1_2.3~", "ünïcode/ok", "a.b/c..d"])
def test_valid_paths(path: str) -> None:
    assert p.validate_stream_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "../etc", "a/../b", "a/./b", "a//b", "a/", "/a", "a\x00b", "a\\b", "x" * 1025]
)
def test_invalid_paths_are_400(path: str) -> None:
    with pytest.raises(p.RequestRefused) as exc:
        p.validate_stream_path(path)
    assert _status(exc) == 400
    assert exc.value.code == "INVALID_PATH"


def test_offset_absent_and_sentinels() -> None:
    assert p.parse_offset([]) is None
    assert p.parse_offset(["-1"]) == "-1"
    assert p.parse_offset(["now"]) == "now"
    assert p.parse_offset(["0000000000000001_0000000000000005"]) == (
        "0000000000000001_0000000000000005"
    )


@pytest.mark.parametrize(
    "values", [[""], ["a", "b"], ["0,1"], ["0 1"], ["a&b"], ["a=b"], ["a?b"], ["a/b"], ["x" * 257]]
)
def test_malformed_offsets_are_400(values: list[str]) -> None:
    with pytest.raises(p.RequestRefused) as exc:
        p.parse_offset(values)
    assert _status(exc) == 400


# -- TTL / Expires-At --------------------------------------------------------


def test_ttl_accepts_plain_integers() -> None:
    assert p.parse_ttl("1") == 1
    assert p.parse_ttl("3600") == 3600


def test_ttl_zero_and_past_expiry_are_refused() -> None:
    with pytest.raises(p.RequestRefused, match="at least 1"):
        p.parse_ttl("0")
    at = p.parse_expires_at("2030-01-01T00:00:00Z")
    assert p.check_expiry(at, now=at - 0.001) == at
    for now in (at, at + 1):
        with pytest.raises(p.RequestRefused, match="in the past"):
            p.check_expiry(at, now=now)


def test_decode_path_refuses_lenient_utf8() -> None:
    assert p.decode_path("a\ufffd", b"/v1/stream/a%EF%BF%BD") == "a\ufffd"
    assert p.decode_path("plain", b"/v1/stream/plain%FF") == "plain"  # only checked on U+FFFD
    for raw in (b"/v1/stream/a%FF", b"/v1/stream/a%C3", b"/v1/stream/a%ED%A0%80?x=%FF"):
        with pytest.raises(p.RequestRefused) as exc:
            p.decode_path("a\ufffd", raw)
        assert exc.value.code == "INVALID_PATH"


@pytest.mark.parametrize(
    "value", ["+3600", "03600", "3600.0", "3.6e3", "-1", "", " 1", "abc", "1" * 20]
)
def test_ttl_rejects_other_syntax(value: str) -> None:
    with pytest.raises(p.RequestRefused) as exc:
        p.parse_ttl(value)
    assert _status(exc) == 400


def test_expires_at_parses_rfc3339() -> None:
    assert p.parse_expires_at("2030-01-01T00:00:00Z") == 1893456000.0
    assert p.parse_expires_at("2030-01-01T01:00:00+01:00") == 1893456000.0
    assert p.parse_expires_at("2030-01-01T00:00:00.123456789Z") == pytest.approx(1893456000.123456)


@pytest.mark.parametrize(
    "value", ["tomorrow", "2030-01-01", "2030-13-01T00:00:00Z", "2030-01-01T00:00:00", "1893456000"]
)
def test_expires_at_rejects_garbage(value: str) -> None:
    with pytest.raises(p.RequestRefused):
        p.parse_expires_at(value)


# -- misc headers --


def test_stream_closed_only_true_counts() -> None:
    assert p.parse_bool_true("true")
    assert p.parse_bool_true("TRUE")
    assert not p.parse_bool_true("yes")
    assert not p.parse_bool_true("1")
    assert not p.parse_bool_true(None)


def test_producer_headers_all_or_none() -> None:
    assert p.parse_producer(None, None, None) is None
    assert p.parse_producer("w", "1", "2") == p.ProducerHeaders("w", 1, 2)
    for args in [("w", "1", None), (None, "1", "2"), ("w", None, "2")]:
        with pytest.raises(p.RequestRefused):
            p.parse_producer(*args)


@pytest.mark.parametrize(
    ("pid", "epoch", "seq"),
    [("", "0", "0"), ("w", "-1", "0"), ("w", "0", "1.5"), ("w", "01", "0"), ("w", "0", str(2**53))],
)
def test_producer_header_values_are_validated(pid: str, epoch: str, seq: str) -> None:
    with pytest.raises(p.RequestRefused) as exc:
        p.parse_producer(pid, epoch, seq)
    assert _status(exc) == 400


def test_producer_max_safe_integer_is_allowed() -> None:
    parsed = p.parse_producer("w", str(2**53 - 1), "0")
    assert parsed is not None and parsed.epoch == 2**53 - 1


def test_stream_seq() -> None:
    assert p.parse_stream_seq(None) is None
    assert p.parse_stream_seq("007") == "007"
    with pytest.raises(p.RequestRefused):
        p.parse_stream_seq("")


# -- content types --


def test_content_type_normalization() -> None:
    assert p.normalize_content_type("TEXT/Plain") == "text/plain"
    assert p.normalize_content_type("application/json;charset=utf-8") == (
        "application/json; charset=utf-8"
    )
    for bad in ["", "text", "text/", "/plain", "text/plain; bad", "a b/c"]:
        with pytest.raises(p.RequestRefused):
            p.normalize_content_type(bad)


def test_json_and_text_modes() -> None:
    assert is_json("application/json; charset=utf-8")
    assert not is_json("application/x-ndjson")
    assert p.is_text_type("text/csv")
    assert p.is_text_type("application/json")
    assert not p.is_text_type("application/octet-stream")
    assert not p.is_text_type("image/png")


# -- JSON mode --


def test_json_flattens_exactly_one_level() -> None:
    assert p.parse_json_messages(b'[1, {"a": 2}]', allow_empty_array=False) == [b"1", b'{"a": 2}']
    assert p.parse_json_messages(b"[[1,2]]", allow_empty_array=False) == [b"[1,2]"]
    assert p.parse_json_messages(b' {"x": 1} ', allow_empty_array=False) == [b'{"x": 1}']
    assert p.parse_json_messages(b'"s"', allow_empty_array=False) == [b'"s"']


def test_json_empty_array_rules() -> None:
    assert p.parse_json_messages(b"[]", allow_empty_array=True) == []
    with pytest.raises(p.RequestRefused) as exc:
        p.parse_json_messages(b" [ ] ", allow_empty_array=False)
    assert _status(exc) == 400


@pytest.mark.parametrize("body", [b"", b"[1,", b"{", b"[1] x", b"tru", b"\xff", b"[1,]"])
def test_invalid_json_is_400(body: bytes) -> None:
    with pytest.raises(p.RequestRefused) as exc:
        p.parse_json_messages(body, allow_empty_array=True)
    assert exc.value.code == "INVALID_JSON"


def test_json_array_assembly() -> None:
    assert p.json_array([]) == b"[]"
    assert json.loads(p.json_array([b"1", b'{"a":[2]}'])) == [1, {"a": [2]}]


# -- ETag and cursor --


def test_etag_changes_on_close_and_range() -> None:
    open_tag = p.etag_for("a/b", "-1", "0000000000000001_0000000000000003", closed=False)
    closed_tag = p.etag_for("a/b", "-1", "0000000000000001_0000000000000003", closed=True)
    other = p.etag_for("a/b", "-1", "0000000000000002_0000000000000004", closed=False)
    assert len({open_tag, closed_tag, other}) == 3
    assert open_tag.startswith('"') and open_tag.endswith('"')


def test_etag_matching() -> None:
    tag = p.etag_for("s", "-1", "x", closed=False)
    assert p.etag_matches(tag, tag)
    assert p.etag_matches(f'"other", W/{tag}', tag)
    assert p.etag_matches("*", tag)
    assert not p.etag_matches('"other"', tag)
    assert not p.etag_matches(None, tag)


def test_cursor_counts_intervals_since_epoch() -> None:
    now = p.CURSOR_EPOCH + 20 * 100 + 5
    assert p.compute_cursor(now, None) == "100"
    assert p.compute_cursor(now, "99") == "100"
    assert p.compute_cursor(now, "garbage") == "100"


def test_cursor_collision_adds_jitter() -> None:
    now = p.CURSOR_EPOCH + 20 * 100
    rng = random.Random(7)
    for client in ["100", "150"]:
        for _ in range(50):
            value = int(p.compute_cursor(now, client, rng=rng))
            assert int(client) < value <= int(client) + 180


# -- SSE framing --


def _parse(frame: bytes) -> tuple[str, str]:
    text = frame.decode()
    assert text.endswith("\n\n")
    event = ""
    data: list[str] = []
    for line in text[:-2].split("\n"):
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            content = line[5:]
            data.append(content[1:] if content.startswith(" ") else content)
    return event, "\n".join(data)


def test_sse_data_splits_every_line_terminator() -> None:
    frame = p.sse_data(b"a\r\n\r\nevent: control\rdata: x\n end", base64_encode=False)
    assert b"\r" not in frame
    assert frame.count(b"\n\n") == 1  # the payload cannot end the event
    event, data = _parse(frame)
    assert event == "data"
    assert data == "a\n\nevent: control\ndata: x\n end"


def test_sse_data_base64() -> None:
    payload = bytes(range(256))
    event, data = _parse(p.sse_data(payload, base64_encode=True))
    assert event == "data"
    assert base64.b64decode(data) == payload


def test_sse_control_fields() -> None:
    _, data = _parse(p.sse_control("o1", cursor="5", up_to_date=True, closed=False))
    assert json.loads(data) == {"streamNextOffset": "o1", "streamCursor": "5", "upToDate": True}
    _, data = _parse(p.sse_control("o2", cursor="5", up_to_date=False, closed=True))
    assert json.loads(data) == {"streamNextOffset": "o2", "upToDate": True, "streamClosed": True}


def test_error_body_shape() -> None:
    body = json.loads(error_body("X", "bad thing"))
    assert body == {"error": {"code": "X", "message": "bad thing"}}
    assert re.fullmatch(rb"[ -~]+", error_body("X", "y"))
