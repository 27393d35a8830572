"""durasync.crdt: the scene-graph CRDT of vuer-rtc rooms, as a pure library (no I/O, no clock).

- :mod:`~durasync.crdt.messages`: :class:`Message` / :class:`Op` wire types (long and compact
  names), validation (:class:`CRDTValidationError`), vector clock / Lamport helpers.
- :mod:`~durasync.crdt.graph`: :class:`SceneGraph` and the apply rule of every otype.
- :mod:`~durasync.crdt.text`: the span-based RGA text CRDT (:class:`TextDoc`).
- :mod:`~durasync.crdt.replica`: :class:`Replica` (canonical-order fold, pending edits, edit
  buffer, undo/redo, snapshots and compaction).
- :mod:`~durasync.crdt.canonical`: canonical JSON dump and checksum.

See docs/crdt.md for the model, the otype table, the convergence rule and the deviations from
the reference implementation.
"""

from __future__ import annotations

from durasync.crdt.canonical import canonical_json, checksum, format_number, format_tree
from durasync.crdt.errors import CRDTError, CRDTUsageError, CRDTValidationError
from durasync.crdt.graph import TEXT, Node, SceneGraph
from durasync.crdt.messages import (
    OTYPES,
    Limits,
    Message,
    Op,
    decode_message,
    decode_message_obj,
    encode_message_json,
    encode_message_msgpack,
    lamport_next,
    merge_clocks,
    tick_clock,
    validate_message,
    validate_op,
)
from durasync.crdt.replica import Replica, Snapshot, sort_key

__all__ = [
    "OTYPES",
    "TEXT",
    "CRDTError",
    "CRDTUsageError",
    "CRDTValidationError",
    "Limits",
    "Message",
    "Node",
    "Op",
    "Replica",
    "SceneGraph",
    "Snapshot",
    "canonical_json",
    "checksum",
    "decode_message",
    "decode_message_obj",
    "encode_message_json",
    "encode_message_msgpack",
    "format_number",
    "format_tree",
    "lamport_next",
    "merge_clocks",
    "sort_key",
    "tick_clock",
    "validate_message",
    "validate_op",
]
