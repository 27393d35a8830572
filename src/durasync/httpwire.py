"""HTTP wire details every side shares: media types and the JSON error body.

Pure (standard library and msgspec only), importable by every layer: the store keys JSON mode
and content-type checks on :func:`media_type`, the streams and rooms routes answer errors with
:func:`error_body`, and the clients read both.
"""

from __future__ import annotations

import functools
from typing import Final

import msgspec

__all__ = ["JSON", "error_body", "is_json", "media_type"]

#: The media type of JSON mode (Durable Streams §5) and of every error body.
JSON: Final = "application/json"


@functools.lru_cache(maxsize=256)
def media_type(content_type: str) -> str:
    """The media type of a Content-Type: lower-cased, without parameters (DS §5)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type selects JSON mode: media type ``application/json``, any
    parameters, any case (DS §5). None (no header) is not JSON."""
    return content_type is not None and media_type(content_type) == JSON


class _ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str


class _ErrorBody(msgspec.Struct, frozen=True):
    error: _ErrorDetail


_encoder: Final = msgspec.json.Encoder()


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every 4xx/5xx answer: ``{"error": {"code": ..., "message": ...}}``.

    ``code`` is a stable machine-readable name (docs/streams.md, docs/protocol.md list them);
    ``message`` is for people.
    """
    return _encoder.encode(_ErrorBody(_ErrorDetail(code, message)))
