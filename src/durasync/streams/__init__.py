"""Durable Streams over HTTP on the log store.

- :mod:`durasync.streams.protocol`: pure parsing, validation and framing;
- :mod:`durasync.streams.app`: :class:`~durasync.streams.app.StreamsApp`, the
  raw ASGI app serving ``/v1/stream/<path>``;
- :mod:`durasync.streams.subscriptions`: the reserved ``__ds`` APIs (DS §9).

Nothing is imported here eagerly so that importing one part stays cheap.
"""

from __future__ import annotations
