"""Errors of the CRDT layer.

One hierarchy, split by blame (DESIGN.md "Conventions"):

- :class:`CRDTValidationError` -- the *peer's* fault: a message or op is malformed (unknown
  otype, wrong value shape, NaN/inf, wrong vector length, oversized value, undecodable bytes).
  It names the offending field as a JSON-path-like string (``"ops[2].value"``). Raising it
  never leaves a graph or replica half-modified: validation runs before anything is applied.

  - :class:`TextOpError` -- a malformed text op or text edit (:mod:`durasync.crdt.text`).
- :class:`CRDTUsageError` -- the *caller's* fault: an API used out of order (for example
  ``undo`` with nothing to undo is *not* an error, it returns ``None``; but feeding a snapshot
  of another format version is).
"""

from __future__ import annotations

__all__ = ["CRDTError", "CRDTUsageError", "CRDTValidationError", "TextOpError"]


class CRDTError(Exception):
    """Base class of every error raised by :mod:`durasync.crdt`."""


class CRDTValidationError(CRDTError, ValueError):
    """A message, op or snapshot from a peer is malformed.

    ``field`` names the offending field (``"lt"``, ``"ops[0].value"``, ``"line 3"`` ...);
    ``message`` says what is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TextOpError(CRDTValidationError):
    """A text op or local text edit is malformed; ``field`` names the offending field."""


class CRDTUsageError(CRDTError, RuntimeError):
    """The library was used incorrectly by local code (not a peer's fault)."""
