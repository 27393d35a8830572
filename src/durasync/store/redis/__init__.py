"""The Redis log store: several durasync nodes share one Redis and act as one.

``RedisStore(url)`` keeps every stream's data and metadata in Redis, so any
number of ``durasync serve --redis URL`` processes (nodes) can serve the same
streams: appends from any node land in one total order per stream and offsets
are the same whichever node answers. Nothing authoritative is cached in a
node's memory.

Key layout (``P`` is the key prefix, default ``durasync:``; ``<path>`` is the
stream path as UTF-8):

- ``P m:<path>``: HASH, the stream's metadata: ``ct`` content type, ``mt`` its
  media type (DS §5 comparison), ``cfg``/``req`` effective and requested
  :class:`StreamConfig` as JSON (``fork_offset`` left out: it is ``bi``/``bb``),
  ``ttl``/``exp`` sliding TTL seconds / absolute expiry (Unix seconds),
  ``from`` fork source, ``ca``/``ta`` created / last touched, ``cl`` closed,
  ``cb`` the producer request that closed it (``"<epoch> <seq> <id>"``),
  ``sd`` soft-deleted, ``refs`` live forks reading it, ``bi``/``bb`` fork base
  (index, byte), ``si``/``sb`` retained start, ``ti``/``tb`` tail, ``ss`` last
  ``Stream-Seq``, ``inc`` incarnation id (random, per create).
- ``P d:<path>``: STREAM, the stream's own messages. Message ``k`` starting at
  byte ``b`` has the explicit entry id ``<k+1>-<b>`` and one field ``d``, so
  ids (and therefore offsets) are identical on every node, ``XRANGE`` by id is
  a read by index and ``XTRIM MINID`` is a trim by index.
- ``P p:<path>``: HASH, producer id -> ``"<epoch> <last seq> <updated_at>"``.
- ``P paths``: ZSET (all scores 0) of paths, for ``list_streams`` (BYLEX).
- Pub/Sub channel ``P tail``: one message after every append (flag ``-``),
  close (``c``), delete and create (``g``: re-check): header
  ``"<first index> <first byte> <tail index> <flag> <lengths> <path length>
  <content type length>"``, a newline, the path, the content type and, for
  appends of at most 64 KiB to streams without TTL/expiry, the appended
  messages themselves (``lengths`` is their comma-separated sizes, or ``-``).

Atomicity. Every check-and-write is one Lua script (:mod:`.scripts`), run by
``EVALSHA`` (a ``NOSCRIPT`` after a Redis restart reloads the script and
re-sends the call, which did not run). Scripts carry the Redis 7 shebang, so Redis refuses a
script before it starts when it cannot write (OOM, MISCONF) and no script
stops half-way; every check precedes every write inside a script:
append (DS §2 POST order closed -> content type -> producer -> Stream-Seq,
then the write, producer state and Stream-Seq, all in one script), read (with
its sliding-TTL touch), create-if-absent (with the fork reference count),
delete/soft-delete/fork GC and trim. Redis runs a script alone, so appends
from any node are totally ordered per stream. An append is one round trip.

Modules: :mod:`.scripts` (the Lua scripts, their arguments and replies:
pure), :mod:`.calls` (the pipelined call connection), :mod:`.subscription`
(one kept-up Pub/Sub subscription), :mod:`.tail` (live delivery and its
hints) and :mod:`.store` (:class:`RedisStore`, the I/O that ties them).

Durability. An append is acknowledged when Redis replied to the script; with
``appendonly yes`` and ``appendfsync always`` Redis fsyncs the AOF before it
replies (concurrent clients share an fsync). Weaker Redis settings weaken the
guarantee accordingly; this store does not claim more than Redis gives.

Clock. ``now`` is the node's clock (or the caller's ``now``), passed into the
scripts: nodes must be NTP-synchronised; skew shifts expiry by the skew.

TTL/expiry (DS §1, §2). The scripts check expiry authoritatively (expired ==
absent). Redis key expiry is only garbage collection: a stream with a TTL or
``Expires-At`` that is neither a fork nor read by forks gets ``PEXPIRE`` =
its remaining life plus one second on every write/touch, so an abandoned
stream's keys disappear by themselves. Forks and sources of forks are only
removed by delete (or a reaping create), as in the embedded store. A read
renews a sliding TTL with a write (an fsync), but only on streams that have a
sliding TTL.

Live delivery (:mod:`.tail`). ``wait_for`` holds no Redis connection: each
store (node) has one Pub/Sub subscription on ``P tail`` and fans messages out
to its local waiters; a store's own appends wake its local waiters directly.
The subscription (:mod:`.subscription`) PINGs every second and replaces a
connection that stops answering (a partition without FIN/RST); after every
(re)subscription all waiters re-check, so nothing published while it was away
is missed. A node also keeps hints (never authoritative state): the tail each
stream last announced and the newest messages of streams its live readers
watch, so a woken live reader usually gets its next read without a round trip.

Calls (:mod:`.calls`). Every Redis call goes through one mechanism: the calls
issued in one event loop tick go as one write on the store's one call
connection, without waiting for earlier replies, and replies are matched to
calls in order; callers await a plain future. So one append is one EVALSHA
round trip. Concurrent identical reads issued in one tick share one call. The
pool (``max_connections``; callers beyond it wait up to ``pool_timeout``)
serves the subscription and the start-up check.

Failures. Any Redis connection error or timeout raises
:class:`StoreUnavailable` (HTTP 503 + Retry-After); commands are never retried
(a retried append could apply twice), and connections are re-established on
the next call; a call connection that answers nothing for ``socket_timeout``
seconds while calls wait (a hung Redis, a partition without FIN/RST) is
dropped and its calls fail; a NOSCRIPT after a Redis restart reloads
the script and re-sends the call (it did not run). When an append fails with
StoreUnavailable its outcome is unknown (Redis may have applied it before the
connection broke): idempotent producers make the client's retry exact. Texts
Redis keys cannot hold (paths with lone surrogates) are a StoreClientError.
``open`` fails with StoreUnavailable when Redis does not answer (a node does
not start without its store); later outages are survived.

Supported: the full :class:`LogStore` contract (the contract tests and the
Durable Streams conformance suite, 338/338, also across two nodes), forks,
soft delete, TTL, trim, several nodes on one Redis. Not supported: Redis
Cluster (scripts touch the keys of fork sources, which are computed inside
the script and not declared); use a single Redis primary (with
Sentinel/replicas for failover at the cost of acknowledged writes not yet
replicated when the primary dies). Needs Redis >= 7.0 (script shebangs).
"""

from __future__ import annotations

from durasync.store.redis.calls import redact_url
from durasync.store.redis.store import RedisStore

__all__ = ["RedisStore", "redact_url"]
