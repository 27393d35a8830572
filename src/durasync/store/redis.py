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

Atomicity. Every check-and-write is one Lua script (``EVALSHA``; a
``NOSCRIPT`` after a Redis restart reloads the script and re-sends the call,
which did not run). Scripts carry the Redis 7 shebang, so Redis refuses a
script before it starts when it cannot write (OOM, MISCONF) and no script
stops half-way; every check precedes every write inside a script:
append (DS §2 POST order closed -> content type -> producer -> Stream-Seq,
then the write, producer state and Stream-Seq, all in one script), read (with
its sliding-TTL touch), create-if-absent (with the fork reference count),
delete/soft-delete/fork GC and trim. Redis runs a script alone, so appends
from any node are totally ordered per stream. An append is one round trip.

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

Live delivery. ``wait_for`` holds no Redis connection: each store (node) has
one Pub/Sub subscription on ``P tail`` and fans messages out to its local
waiters; a store's own appends wake its local waiters directly. The
subscriber PINGs every second and replaces a connection that stops answering
(a partition without FIN/RST); after every (re)subscription all waiters
re-check and everything remembered from messages is dropped, so nothing
published while it was away is missed.

Hints a node keeps (never authoritative state): the last tail announced per
path while subscribed (a live reader at the tail parks without asking Redis),
and, for streams that live readers on the node watch, a bounded window of the
newest messages the tail messages carried. A reader whose ``wait_for`` just
returned True gets its next ``read`` of that stream answered from the window
without a round trip (messages at offsets are immutable facts); such a read's
``up_to_date`` holds as of the node's last tail message for the stream (at
most one Pub/Sub delivery behind Redis: a later append wakes the next wait,
so nothing is missed or reordered). Every other read asks Redis, so a client
that appended through node A and reads through node B sees its append. Delete,
re-create and trim publish a re-check that drops what nodes hold of the path.

Calls. Every Redis call goes through one mechanism: the store's own tasks
send the calls issued in one event loop tick as one write on the store's one
call connection, without waiting for earlier replies (RESP answers in order;
Redis runs them in one pass and shares one fsync), and match replies to calls
in order; callers await a plain future. So one append is one EVALSHA round
trip with no task, pool checkout or pipeline object of its own, and a caller
cancelled mid-call (a client that went away) ends cancelled instead of
redis-py swallowing the cancellation (redis-py #2028). Concurrent identical
reads issued in one tick share one call. At most ``_MAX_IN_FLIGHT`` calls are
outstanding; more wait in the queue (bounded by their waiting callers). The
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

import asyncio
import collections
import contextlib
import logging
import math
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from durasync.store.base import (
    OFFSET_NOW,
    OFFSET_START,
    AppendResult,
    BadOffset,
    ContentTypeMismatch,
    CreateResult,
    Entry,
    LogStore,
    Producer,
    ProducerBadEpochStart,
    ProducerFenced,
    ProducerSeqGap,
    ReadResult,
    SeqConflict,
    StoreClientError,
    StoreUnavailable,
    StreamClosed,
    StreamConfig,
    StreamExists,
    StreamGone,
    StreamInfo,
    StreamNotFound,
)
from durasync.store.engine import StreamMeta, live_meta, stream_info
from durasync.store.notify import Deadlines
from durasync.store.offsets import decode_offset, encode_offset
from durasync.store.rules import (
    DEFAULT_CONTENT_TYPE,
    PRODUCER_STATE_TTL_SECONDS,
    fork_config,
    is_expired,
    media_type,
    same_create,
)

__all__ = ["RedisStore"]

log = logging.getLogger("durasync.store.redis")

_OFFSET_FMT = "%016d_%016d"

# --------------------------------------------------------------------------
# Lua. Every script gets the key prefix as ARGV[1]. Numbers are formatted
# with %d before they reach redis.call (Lua would write 1e+15 otherwise) and
# times travel as the decimal text Python wrote, so they round-trip exactly.
# --------------------------------------------------------------------------

_LUA_PRELUDE = """
local P = ARGV[1]
local FIELDS = {'ct', 'mt', 'ttl', 'exp', 'from', 'ta', 'cl', 'cb', 'sd', 'refs',
                'bi', 'bb', 'si', 'sb', 'ti', 'tb', 'ss', 'inc'}
local NUMERIC = {refs = true, bi = true, bb = true, si = true, sb = true, ti = true, tb = true}
local GRACE_MS = 1000

local function fmt(n) return string.format('%d', n) end

local function meta(path)
  local v = redis.call('HMGET', P .. 'm:' .. path, unpack(FIELDS))
  if not v[15] then return nil end
  local m = {path = path}
  for i, f in ipairs(FIELDS) do
    local x = v[i]
    if x and NUMERIC[f] then x = tonumber(x) end
    m[f] = x
  end
  if not m.refs then m.refs = 0 end
  return m
end

-- DS §1: an expired stream behaves as absent. Absolute expiry wins; a
-- sliding TTL counts from the last append or read.
local function expired(m, now)
  if m.exp and now >= tonumber(m.exp) then return true end
  if m.ttl and now >= tonumber(m.ta) + tonumber(m.ttl) then return true end
  return false
end

-- Redis expiry as garbage collection only (the check above is authoritative):
-- never on forks or on streams forks read (their data must stay).
local function gc_expire(m, now)
  if m.from or m.refs > 0 or (not m.ttl and not m.exp) then return end
  local deadline = nil
  if m.exp then deadline = tonumber(m.exp) end
  if m.ttl then
    local d = tonumber(m.ta) + tonumber(m.ttl)
    if deadline == nil or d < deadline then deadline = d end
  end
  local ms = math.floor((deadline - now) * 1000) + GRACE_MS
  if ms < GRACE_MS then ms = GRACE_MS end
  local s = fmt(ms)
  redis.call('PEXPIRE', P .. 'm:' .. m.path, s)
  redis.call('PEXPIRE', P .. 'd:' .. m.path, s)
  redis.call('PEXPIRE', P .. 'p:' .. m.path, s)
end

-- Tail message: "<first index> <first byte> <tail index> <flag> <lengths>
-- <path length> <content type length>", a newline, then the path, the content type and
-- the appended messages (lengths "-": no data carried).
local function publish(path, fi, fb, ti, flag, lens, ct, data)
  redis.call('PUBLISH', P .. 'tail', fmt(fi) .. ' ' .. fmt(fb) .. ' ' .. fmt(ti) .. ' ' .. flag
    .. ' ' .. lens .. ' ' .. fmt(#path) .. ' ' .. fmt(#ct) .. '\\n' .. path .. ct .. data)
end

-- DS §6: a stream forks still read is soft-deleted (data kept, URL gone);
-- removing the last fork of a soft-deleted source collects it (cascading).
local function delete_stream(m)
  if m.refs > 0 then
    redis.call('HSET', P .. 'm:' .. m.path, 'sd', '1')
    publish(m.path, 0, 0, m.ti, 'g', '-', '', '')
    return
  end
  local cur = m
  while cur do
    redis.call('DEL', P .. 'm:' .. cur.path, P .. 'd:' .. cur.path, P .. 'p:' .. cur.path)
    redis.call('ZREM', P .. 'paths', cur.path)
    publish(cur.path, 0, 0, cur.ti, 'g', '-', '', '')
    local parent_path = cur.from
    cur = nil
    if parent_path then
      local parent = meta(parent_path)
      if parent then
        local refs = parent.refs - 1
        if refs < 0 then refs = 0 end
        if parent.sd and refs == 0 then
          cur = parent
        else
          redis.call('HSET', P .. 'm:' .. parent_path, 'refs', fmt(refs))
        end
      end
    end
  end
end

-- Remove an expired stream lazily (a create may reuse the path).
local function reap(m, now)
  if m and not m.sd and expired(m, now) then
    delete_stream(m)
    return meta(m.path)
  end
  return m
end

-- DS §2 Stream-Seq: byte-wise comparison (Lua's < uses the locale's strcoll).
local function bytes_gt(a, b)
  local la, lb = #a, #b
  local n = la
  if lb < n then n = lb end
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return la > lb
end
"""

# ARGV: P, path, "<now> <epoch> <seq> <flags> <ct>", producer id, Stream-Seq,
# messages... (flags: producer given, Stream-Seq given, close, as 0/1; ct is ''
# or '=' .. the media type). Few arguments: each costs the client time.
# Returns "ok <old tail index> <old tail byte> <tail index> <tail byte> <flag>
# <producer epoch> <producer seq>" (one bulk string: cheap to parse) or an
# error/duplicate table.
_LUA_APPEND = """
local path = ARGV[2]
local now_s, ep_s, seq_s, flags, ct_arg = string.match(ARGV[3], '^(%S+) (%S+) (%S+) (%S+) ?(.*)$')
local now = tonumber(now_s)
local mkey = P .. 'm:' .. path
-- Only the fields an append uses, in one table constructor (meta() reads all
-- 18 in a loop: a third of this script's time).
local v = redis.call('HMGET', mkey, 'ti', 'tb', 'ct', 'mt', 'cl', 'sd', 'ttl', 'exp', 'ta', 'ss',
                     'cb', 'from', 'refs')
if not v[1] then return {'not_found'} end
local m = {path = path, ti = tonumber(v[1]), tb = tonumber(v[2]), ct = v[3], mt = v[4], cl = v[5],
           sd = v[6], ttl = v[7], exp = v[8], ta = v[9], ss = v[10], cb = v[11], from = v[12],
           refs = tonumber(v[13]) or 0}
if expired(m, now) then return {'not_found'} end
if m.sd then return {'gone'} end
local has_p = string.sub(flags, 1, 1) == '1'
local pid, epoch, seq = ARGV[4], tonumber(ep_s), tonumber(seq_s)
local has_ss, ss = string.sub(flags, 2, 2) == '1', ARGV[5]
local close = string.sub(flags, 3, 3) == '1'
local first = 6
local n = #ARGV - first + 1
-- DS §2 POST: closed comes first. DS §3: the exact producer request that
-- closed the stream is a retry.
if m.cl then
  if has_p and m.cb == (ep_s .. ' ' .. seq_s .. ' ' .. pid) then
    return {'closed_dup', fmt(m.ti), fmt(m.tb)}
  end
  if n == 0 and not has_p then
    if m.ttl then
      redis.call('HSET', mkey, 'ta', now_s)
      m.ta = now_s
      gc_expire(m, now)
    end
    return {'closed_only', fmt(m.ti), fmt(m.tb)}
  end
  return {'closed', fmt(m.ti), fmt(m.tb)}
end
-- DS §2/§5: content type (media type, case-insensitive, computed by the caller).
if n > 0 and ct_arg ~= '' and ct_arg ~= ('=' .. m.mt) then return {'content_type', m.ct} end
-- DS §3: idempotent producer.
local new_e, new_s
if has_p then
  local raw = redis.call('HGET', P .. 'p:' .. path, pid)
  local e, s
  if raw then
    local a, b, c = string.match(raw, '^(%d+) (%d+) (.+)$')
    e, s = tonumber(a), tonumber(b)
    if now - tonumber(c) > PRODUCER_TTL then raw = false end
  end
  if not raw then
    if seq ~= 0 then return {'gap', '0', seq_s} end
    new_e, new_s = epoch, 0
  elseif epoch < e then
    return {'fenced', fmt(e)}
  elseif epoch > e then
    if seq ~= 0 then return {'epoch_start', ep_s, seq_s} end
    new_e, new_s = epoch, 0
  elseif seq <= s then
    return {'dup', fmt(m.ti), fmt(m.tb), fmt(e), fmt(s)}
  elseif seq == s + 1 then
    new_e, new_s = e, seq
  else
    return {'gap', fmt(s + 1), seq_s}
  end
end
-- DS §2: Stream-Seq must increase byte-wise.
if has_ss and m.ss and not bytes_gt(ss, m.ss) then return {'seq', m.ss} end
local ti, tb = m.ti, m.tb
local dkey = P .. 'd:' .. path
for i = first, #ARGV do
  local d = ARGV[i]
  redis.call('XADD', dkey, fmt(ti + 1) .. '-' .. fmt(tb), 'd', d)
  ti = ti + 1
  tb = tb + #d
end
local h = {'ti', fmt(ti), 'tb', fmt(tb), 'ta', now_s}
if close then
  h[#h + 1] = 'cl'
  h[#h + 1] = '1'
  if has_p then
    h[#h + 1] = 'cb'
    h[#h + 1] = ep_s .. ' ' .. seq_s .. ' ' .. pid
  end
end
if has_ss then
  h[#h + 1] = 'ss'
  h[#h + 1] = ss
end
redis.call('HSET', mkey, unpack(h))
if new_e then
  redis.call('HSET', P .. 'p:' .. path, pid, fmt(new_e) .. ' ' .. fmt(new_s) .. ' ' .. now_s)
end
m.ta = now_s
gc_expire(m, now)
local flag = '-'
if close then flag = 'c' end
-- Live readers on other nodes get the new messages with the wake-up (no read
-- round trip), unless they are large or the stream expires (a read must then
-- check expiry or renew the TTL in Redis).
local lens, body = '-', ''
if n > 0 and tb - m.tb <= DATA_IN_MESSAGE_MAX and not m.ttl and not m.exp then
  local ls = {}
  for i = first, #ARGV do ls[#ls + 1] = fmt(#ARGV[i]) end
  lens = table.concat(ls, ',')
  body = table.concat(ARGV, '', first, #ARGV)
end
publish(path, m.ti, m.tb, ti, flag, lens, m.ct, body)
local pe, ps = '-', '-'
if new_e then pe, ps = fmt(new_e), fmt(new_s) end
return 'ok ' .. fmt(m.ti) .. ' ' .. fmt(m.tb) .. ' ' .. fmt(ti) .. ' ' .. fmt(tb) .. ' ' .. flag
  .. ' ' .. pe .. ' ' .. ps .. ' ' .. lens .. ' ' .. m.ct
"""

# ARGV: P, path, now, touch, kind ('s' start, 'n' now, 'o' offset), index,
# byte, max bytes, max messages.
# Returns {'ok', content type, closed, tail index, index, byte, then per entry
# its byte position and data}.
_LUA_READ = """
local path, now_s = ARGV[2], ARGV[3]
local now = tonumber(now_s)
local m = meta(path)
if not m or expired(m, now) then return {'not_found'} end
if m.sd then return {'gone'} end
-- DS §2 GET: a read renews a sliding TTL (a write only where there is one).
if ARGV[4] == '1' and m.ttl then
  redis.call('HSET', P .. 'm:' .. path, 'ta', now_s)
  m.ta = now_s
  gc_expire(m, now)
end
local kind = ARGV[5]
local index, bpos
if kind == 's' then
  index, bpos = m.si, m.sb
elseif kind == 'n' then
  index, bpos = m.ti, m.tb
else
  index, bpos = tonumber(ARGV[6]), tonumber(ARGV[7])
end
local max_bytes, max_messages = tonumber(ARGV[8]), tonumber(ARGV[9])
local out = {'ok', m.ct, m.cl and '1' or '0', fmt(m.ti), fmt(index), fmt(bpos)}
if index > m.ti or (index == m.ti and bpos ~= m.tb) then return {'beyond_tail'} end
if index == m.ti then return out end
if index < m.si then return {'below_start'} end
-- DS §6: own ranges along the fork chain; each stream owns
-- [bi, min(ti, the child's fork point)).
local segs = {}
local cur, upper = m, m.ti
while cur do
  local hi = math.min(upper, cur.ti)
  if hi > cur.bi then table.insert(segs, 1, {cur, hi}) end
  upper = math.min(upper, cur.bi)
  if upper <= index or not cur.from then break end
  cur = meta(cur.from)
end
local count, used, expect, full = 0, 0, index, false
for _, seg in ipairs(segs) do
  local s, hi = seg[1], seg[2]
  if hi > expect then
    local dkey = P .. 'd:' .. s.path
    local avg = 1
    if s.ti > s.bi then avg = math.max(1, (s.tb - s.bb) / (s.ti - s.bi)) end
    while expect < hi and not full do
      -- Fetch what the budget probably holds (bounded), not the whole range.
      local want = math.min(max_messages - count, hi - expect, 1024)
      local fit = math.floor((max_bytes - used) / avg) + 1
      if fit < want then want = fit end
      if want < 1 then want = 1 end
      local rows = redis.call('XRANGE', dkey, fmt(expect + 1), fmt(hi), 'COUNT', fmt(want))
      if #rows == 0 then break end
      for _, row in ipairs(rows) do
        local id = row[1]
        local dash = string.find(id, '-', 1, true)
        local ri = tonumber(string.sub(id, 1, dash - 1)) - 1
        local rb = tonumber(string.sub(id, dash + 1))
        local data = row[2][2]
        -- A hole: the data below was trimmed (or a fork source's was).
        if ri ~= expect then return {'below_start'} end
        if count == 0 and rb ~= bpos then return {'not_boundary'} end
        if count > 0 and (used + #data > max_bytes or count >= max_messages) then
          full = true
          break
        end
        out[#out + 1] = fmt(rb)
        out[#out + 1] = data
        count, used, expect = count + 1, used + #data, expect + 1
      end
      if count >= max_messages or used >= max_bytes then full = true end
    end
    if full or expect < hi then break end
  end
end
if count == 0 then return {'below_start'} end
return out
"""

# ARGV: P, path, now, ct, mt, ttl, exp, cfg, req, closed, from, fork kind
# ('t' source tail / 'o' offset), fork index, fork byte, source incarnation,
# new incarnation, initial messages...
_LUA_CREATE = """
local path, now_s = ARGV[2], ARGV[3]
local now = tonumber(now_s)
local mkey = P .. 'm:' .. path
local m = reap(meta(path), now)
if m then
  if m.sd then return {'exists_deleted'} end
  local all = redis.call('HGETALL', mkey)
  table.insert(all, 1, 'exists')
  return all
end
local bi, bb = 0, 0
local from = ARGV[11]
local src = nil
if from ~= '' then
  src = reap(meta(from), now)
  if not src then return {'source_not_found'} end
  if src.sd then return {'source_gone'} end
  -- The caller derived the config from this very incarnation of the source.
  if src.inc ~= ARGV[15] then return {'retry'} end
  if ARGV[12] == 't' then
    bi, bb = src.ti, src.tb
  else
    bi, bb = tonumber(ARGV[13]), tonumber(ARGV[14])
    -- Validated by the caller; trimmed away since: validate again.
    if bi > src.ti or bi < src.si then return {'retry'} end
  end
end
local h = {'ct', ARGV[4], 'mt', ARGV[5], 'cfg', ARGV[8], 'req', ARGV[9], 'ca', now_s,
           'ta', now_s, 'refs', '0', 'bi', fmt(bi), 'bb', fmt(bb), 'si', '0', 'sb', '0',
           'inc', ARGV[16]}
if ARGV[6] ~= '' then h[#h + 1] = 'ttl'; h[#h + 1] = ARGV[6] end
if ARGV[7] ~= '' then h[#h + 1] = 'exp'; h[#h + 1] = ARGV[7] end
if from ~= '' then h[#h + 1] = 'from'; h[#h + 1] = from end
if ARGV[10] == '1' then h[#h + 1] = 'cl'; h[#h + 1] = '1' end
local ti, tb = bi, bb
local dkey = P .. 'd:' .. path
-- A new incarnation starts from nothing (no leftover of an expired one).
redis.call('DEL', mkey, dkey, P .. 'p:' .. path)
for i = 17, #ARGV do
  local d = ARGV[i]
  redis.call('XADD', dkey, fmt(ti + 1) .. '-' .. fmt(tb), 'd', d)
  ti = ti + 1
  tb = tb + #d
end
h[#h + 1] = 'ti'
h[#h + 1] = fmt(ti)
h[#h + 1] = 'tb'
h[#h + 1] = fmt(tb)
redis.call('HSET', mkey, unpack(h))
redis.call('ZADD', P .. 'paths', '0', path)
if src then
  redis.call('HINCRBY', P .. 'm:' .. from, 'refs', '1')
  -- A source that forks read is never collected by Redis expiry.
  redis.call('PERSIST', P .. 'm:' .. from)
  redis.call('PERSIST', P .. 'd:' .. from)
  redis.call('PERSIST', P .. 'p:' .. from)
end
gc_expire(meta(path), now)
-- A new incarnation of the path: nodes forget what they knew of an old one
-- (which Redis expiry may have removed without a message) and waiters re-check.
publish(path, 0, 0, ti, 'g', '-', '', '')
local all = redis.call('HGETALL', mkey)
table.insert(all, 1, 'created')
return all
"""

# ARGV: P, path, now.
_LUA_DELETE = """
local now = tonumber(ARGV[3])
local m = meta(ARGV[2])
if not m or expired(m, now) then return {'not_found'} end
if m.sd then return {'gone'} end
delete_stream(m)
return {'ok'}
"""

# ARGV: P, path, now, index, byte (a boundary the caller validated).
_LUA_TRIM = """
local path = ARGV[2]
local now = tonumber(ARGV[3])
local m = meta(path)
if not m or expired(m, now) then return {'not_found'} end
if m.sd then return {'gone'} end
local index = tonumber(ARGV[4])
if index <= m.si then return {'ok', '0'} end
if index > m.ti or (index == m.ti and tonumber(ARGV[5]) ~= m.tb) then return {'beyond_tail'} end
-- Message k has id <k+1>-<byte>: MINID <index+1> drops exactly k < index.
redis.call('XTRIM', P .. 'd:' .. path, 'MINID', fmt(index + 1))
redis.call('HSET', P .. 'm:' .. path, 'si', fmt(index), 'sb', ARGV[5])
-- Nodes drop what they hold of the stream's messages (a read below the
-- new start must fail) and waiters re-check.
publish(path, 0, 0, m.ti, 'g', '-', '', '')
return {'ok', fmt(index - m.si)}
"""

# ARGV: P, paths... : forget index entries whose stream is gone (Redis expiry).
_LUA_PRUNE = """
for i = 2, #ARGV do
  if redis.call('EXISTS', P .. 'm:' .. ARGV[i]) == 0 then
    redis.call('ZREM', P .. 'paths', ARGV[i])
  end
end
return 0
"""


def _lua(body: str, *, allow_oom: bool = False) -> str:
    prelude = _LUA_PRELUDE.replace(
        "local GRACE_MS = 1000",
        f"local GRACE_MS = 1000\nlocal PRODUCER_TTL = {PRODUCER_STATE_TTL_SECONDS!r}"
        f"\nlocal DATA_IN_MESSAGE_MAX = {_DATA_IN_MESSAGE_MAX}",
    )
    # The shebang (Redis >= 7.0) makes Redis refuse a script that may write
    # *before* it runs when it cannot accept writes (OOM, MISCONF): a script
    # never stops half-way, since Redis has no rollback.
    # Reads, deletes and trims (which free memory) still run when Redis is
    # out of memory (``allow-oom``); creates and appends are refused whole.
    shebang = "#!lua flags=allow-oom\n" if allow_oom else "#!lua\n"
    return shebang + prelude + body


_CONFIG_ENCODER = msgspec.json.Encoder()
_CONFIG_DECODER = msgspec.json.Decoder(StreamConfig)


def _text(value: float) -> str:
    """A time as text that round-trips exactly (Lua's tonumber reads it back)."""
    return repr(float(value))


def _parse_meta(path: str, flat: Sequence[bytes]) -> StreamMeta:
    """A :class:`StreamMeta` from a metadata HASH (``HGETALL`` as a flat list)."""
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    config = _CONFIG_DECODER.decode(h[b"cfg"])
    requested = _CONFIG_DECODER.decode(h[b"req"])
    base_index, base_byte = int(h[b"bi"]), int(h[b"bb"])
    if config.forked_from is not None:
        fork_offset = encode_offset(base_index, base_byte)
        config = msgspec.structs.replace(config, fork_offset=fork_offset)
        requested = msgspec.structs.replace(requested, fork_offset=fork_offset)
    closed_by: Producer | None = None
    raw_cb = h.get(b"cb")
    if raw_cb is not None:
        epoch, seq, producer_id = raw_cb.decode().split(" ", 2)
        closed_by = Producer(producer_id, int(epoch), int(seq))
    raw_ss = h.get(b"ss")
    return StreamMeta(
        path=path,
        config=config,
        requested=requested,
        created_at=float(h[b"ca"]),
        touched_at=float(h[b"ta"]),
        closed=b"cl" in h,
        closed_by=closed_by,
        soft_deleted=b"sd" in h,
        fork_refs=int(h.get(b"refs", b"0")),
        base_index=base_index,
        base_byte=base_byte,
        start_index=int(h[b"si"]),
        start_byte=int(h[b"sb"]),
        tail_index=int(h[b"ti"]),
        tail_byte=int(h[b"tb"]),
        last_stream_seq=raw_ss.decode() if raw_ss is not None else None,
    )


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's exception as seen (its callers may all have left)."""
    if not task.cancelled():
        task.exception()


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_text(*texts: str) -> None:
    """Paths, producer ids and Stream-Seq values must be UTF-8 (Redis keys).

    Raises:
        StoreClientError: a text holds lone surrogates (HTTP 400).
    """
    for text in texts:
        if not _encodable(text):
            raise StoreClientError(f"not valid UTF-8 text: {text[:64]!r}")


def _flat(h: dict[bytes, bytes]) -> list[bytes]:
    return [x for kv in h.items() for x in kv]


class _Delivery:
    """Messages an append published with its wake-up (immutable facts)."""

    __slots__ = ("at", "closed", "content_type", "first_byte", "first_index", "messages")

    def __init__(
        self,
        first_index: int,
        first_byte: int,
        messages: list[bytes],
        *,
        closed: bool,
        content_type: str,
        at: float,
    ) -> None:
        self.first_index = first_index
        self.first_byte = first_byte
        self.messages = messages
        self.closed = closed
        self.content_type = content_type
        self.at = at

    @property
    def end_index(self) -> int:
        return self.first_index + len(self.messages)

    def read(
        self, offset: str, max_bytes: int, max_messages: int, *, at_tail: bool
    ) -> ReadResult | None:
        """The read from ``offset`` these messages answer, or None (ask Redis).

        ``at_tail``: the caller knows no later append (its node's last tail
        message ends here), so a read reaching the end is ``up_to_date``.
        """
        try:
            index, byte_pos = decode_offset(offset)
        except BadOffset:
            return None
        k = index - self.first_index
        if not 0 <= k < len(self.messages):
            return None
        pos = self.first_byte
        for data in self.messages[:k]:
            pos += len(data)
        if pos != byte_pos:
            return None
        entries: list[Entry] = []
        used = 0
        current = offset
        for data in self.messages[k:]:
            if entries and (used + len(data) > max_bytes or len(entries) >= max_messages):
                break
            index += 1
            byte_pos += len(data)
            following = _OFFSET_FMT % (index, byte_pos)
            entries.append(Entry(data, current, following))
            current = following
            used += len(data)
        at_end = index == self.end_index
        return ReadResult(
            entries=entries,
            next_offset=current,
            up_to_date=at_end and (at_tail or self.closed),
            closed=at_end and self.closed,
            content_type=self.content_type,
        )


class _Recent:
    """The newest messages of a watched stream, contiguous, as tail messages told.

    Bounded (``_RECENT_MAX_MESSAGES`` and ``_RECENT_MAX_BYTES``, oldest
    dropped). Only used to answer live readers (see ``RedisStore._hand_off``).
    """

    __slots__ = (
        "closed",
        "content_type",
        "first_byte",
        "first_index",
        "messages",
        "size",
        "watched_at",
    )

    def __init__(self, delivery: _Delivery, watched_at: float) -> None:
        self.first_index = delivery.first_index
        self.first_byte = delivery.first_byte
        self.messages = list(delivery.messages)
        self.size = sum(len(m) for m in self.messages)
        self.content_type = delivery.content_type
        self.closed = delivery.closed
        #: Last time a reader waited on the stream (unwatched windows are dropped).
        self.watched_at = watched_at
        self._trim()

    @property
    def end_index(self) -> int:
        return self.first_index + len(self.messages)

    def extend(self, delivery: _Delivery) -> bool:
        """Append the next messages; False (unchanged) unless they follow on."""
        if delivery.first_index != self.end_index or self.closed:
            return False
        self.messages.extend(delivery.messages)
        self.size += sum(len(m) for m in delivery.messages)
        self.closed = delivery.closed
        self._trim()
        return True

    def _trim(self) -> None:
        drop = 0
        size = self.size
        messages = self.messages
        while len(messages) - drop > 1 and (
            len(messages) - drop > _RECENT_MAX_MESSAGES or size > _RECENT_MAX_BYTES
        ):
            size -= len(messages[drop])
            self.first_byte += len(messages[drop])
            drop += 1
        if drop:
            del messages[:drop]
            self.first_index += drop
            self.size = size

    def delivery_from(self, index: int, at: float) -> _Delivery | None:
        """The window's messages from ``index`` on, or None when it does not hold it."""
        k = index - self.first_index
        if not 0 <= k < len(self.messages):
            return None
        byte_pos = self.first_byte + sum(len(m) for m in self.messages[:k])
        return _Delivery(
            index,
            byte_pos,
            self.messages[k:],
            closed=self.closed,
            content_type=self.content_type,
            at=at,
        )


class _Waiter:
    """One local ``wait_for`` call: its resolved index and how it ended."""

    __slots__ = ("future", "index", "recheck", "verdict")

    def __init__(self) -> None:
        #: Set while the waiter sleeps: a bare future (not an ``Event`` under
        #: ``asyncio.timeout``: less work per wait), its timeout shared with
        #: other waits (``notify.Deadlines``).
        self.future: asyncio.Future[None] | None = None
        #: The index the caller waits past; None while its check is in flight.
        self.index: int | None = None
        self.verdict: bool | None = None
        self.recheck = False

    def wake(self) -> None:
        """Wake the sleeping waiter (its flags say why); a no-op while awake."""
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)


_pack = cast("Callable[[tuple[Any, ...]], bytes]", hiredis.pack_command)


class _Call:
    """One call: its script (None: a plain command, ``name``), the call as
    RESP bytes and the caller's future (None: the store's own SCRIPT LOAD)."""

    __slots__ = ("future", "name", "packed", "redone", "script")

    def __init__(
        self,
        script: AsyncScript | None,
        name: str | None,
        packed: bytes,
        future: asyncio.Future[Any] | None,
    ) -> None:
        self.script = script
        self.name = name
        self.packed = packed
        self.future = future
        #: Re-sent once after NOSCRIPT (a second NOSCRIPT is an error).
        self.redone = False


def _fail_calls(calls: list[_Call], failure: StoreUnavailable) -> None:
    """Fail the waiting callers of ``calls`` (internal calls and gone callers: nothing)."""
    for call in calls:
        if call.future is not None and not call.future.done():
            call.future.set_exception(failure)


#: Appends of at most this many payload bytes carry their data in the tail
#: message, so live readers on every node skip the read round trip.
_DATA_IN_MESSAGE_MAX = 64 * 1024

#: A delivery handed from a woken ``wait_for`` to the same task's next read
#: is used only this soon after the wake-up (seconds) ...
_HANDOFF_MAX_AGE = 1.0
#: ... and at most this many are kept (oldest dropped).
_HANDOFF_MAX = 4096

#: The subscriber PINGs Redis this often (seconds) when idle, and treats its
#: connection as dead after this long without any message or PONG.
_PUBSUB_PING_EVERY = 1.0
_PUBSUB_DEAD_AFTER = 3.5

#: Recent-message windows of watched streams: at most this many streams
#: (least recently updated dropped), each at most this many messages and
#: bytes, dropped when no reader waited on the stream for this long (s).
_RECENT_MAX_PATHS = 256
_RECENT_MAX_MESSAGES = 128
_RECENT_MAX_BYTES = 64 * 1024
_RECENT_UNWATCHED = 10.0

#: Paths whose last announced tail a node remembers (oldest dropped).
_KNOWN_MAX = 65536

#: Most calls sent and not yet answered on the call connection (callers
#: beyond it wait in the queue, which the waiting callers bound).
_MAX_IN_FLIGHT = 1024

#: Longest wait for each step of ``close`` (subscriber, connections).
_CLOSE_STEP_TIMEOUT = 2.0

#: Attempts of a create whose fork source changed under it (then 503).
_CREATE_ATTEMPTS = 5


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class RedisStore(LogStore):
    """The ``redis`` backend; see the module docstring for layout and guarantees.

    ``url`` is a ``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``) URL.
    ``max_connections`` bounds the connection pool (the subscription and the
    start-up check; calls share one connection of their own); ``socket_timeout``
    bounds every command, so a hung Redis gives StoreUnavailable, not a hang.
    ``clock`` supplies ``now`` when a call passes none.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "durasync:",
        max_connections: int = 64,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        pool_timeout: float = 2.0,
        health_check_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._clock = clock
        self._channel = (prefix + "tail").encode()
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=health_check_interval,
            # Never retry a command: an append whose reply was lost may have
            # been applied, and a blind retry would apply it twice.
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._append = self._redis.register_script(_lua(_LUA_APPEND))
        self._read = self._redis.register_script(_lua(_LUA_READ, allow_oom=True))
        self._create = self._redis.register_script(_lua(_LUA_CREATE))
        self._delete = self._redis.register_script(_lua(_LUA_DELETE, allow_oom=True))
        self._trim = self._redis.register_script(_lua(_LUA_TRIM, allow_oom=True))
        self._prune = self._redis.register_script(_lua(_LUA_PRUNE, allow_oom=True))
        self._waiters: dict[str, set[_Waiter]] = {}
        self._deadlines = Deadlines()
        #: Calls queued, sent (awaiting replies, in order) and to re-send
        #: after NOSCRIPT; see ``_call_loop``.
        self._pending: list[_Call] = []
        self._sent: collections.deque[_Call] = collections.deque()
        self._redo: list[_Call] = []
        self._pending_ready = asyncio.Event()
        self._caller: asyncio.Task[None] | None = None
        self._call_timeout = socket_timeout
        # The call connection has no socket timeout of its own (redis-py would
        # start a task per write to apply it): ``_call_loop`` bounds waits.
        self._call_kwargs = {**self._pool.connection_kwargs, "socket_timeout": None}
        #: Loop time of the call connection's last progress (a reply, or a
        #: write when nothing was outstanding).
        self._progress_at = 0.0
        self._read_joins: dict[tuple[str, str, int, int], asyncio.Task[ReadResult]] = {}
        self._handoffs: dict[tuple[asyncio.Task[Any], str], _Delivery] = {}
        #: path -> newest messages, for streams live readers watch here.
        self._recent: dict[str, _Recent] = {}
        #: path -> (tail index, closed) as the last tail message announced,
        #: valid while the subscription stays up (cleared on resubscribe).
        self._known: dict[str, tuple[int, bool]] = {}
        self._subscriber: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._closed = False
        #: Times the subscriber (re)subscribed; tests and metrics read it.
        self.subscriptions = 0
        #: Tail messages that were not ours (another publisher on the channel).
        self.malformed_messages = 0
        #: Loop time the subscription last delivered anything (message or PONG).
        self._sub_seen = 0.0

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Check that Redis answers and start the node's one Pub/Sub subscriber.

        Raises:
            StoreUnavailable: Redis does not answer.
        """
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise StoreUnavailable(
                f"redis at {redact_url(self.url)} is unavailable: {exc}"
            ) from exc
        self._subscriber = asyncio.create_task(self._subscribe_loop(), name="redis-store-pubsub")
        # Live delivery relies on the subscription: wait (bounded) until it is up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._subscribed.wait()

    async def close(self) -> None:
        self._closed = True
        caller, self._caller = self._caller, None
        if caller is not None:
            # Let calls already queued or sent finish (their callers are
            # waiting): the call loop ends once they are answered.
            self._pending_ready.set()
            done, _ = await asyncio.wait({caller}, timeout=5.0)
            if not done:
                caller.cancel()
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(_CLOSE_STEP_TIMEOUT):
                    await caller
            closed = StoreUnavailable("the store is closed")
            self._fail_sent(closed)
            self._fail_queued(closed)
        task, self._subscriber = self._subscriber, None
        if task is not None:
            task.cancel()
            # Bounded: closing must not hang on a connection that is stuck.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(_CLOSE_STEP_TIMEOUT):
                    await task
        for waiters in self._waiters.values():
            for w in waiters:
                w.verdict = False
                w.wake()
        self._waiters.clear()
        self._handoffs.clear()
        self._recent.clear()
        for close in (self._redis.aclose, self._pool.aclose):
            try:
                async with asyncio.timeout(_CLOSE_STEP_TIMEOUT):
                    await close()
            except (TimeoutError, RedisError, OSError) as exc:
                log.warning("closing the redis connections: %r", exc)

    # -- live delivery -----------------------------------------------------------

    async def _subscribe_loop(self) -> None:
        """One subscription per node; reconnects with backoff and then wakes everyone.

        A reader task reads the subscription's replies straight off its
        connection (redis-py's per-message PubSub machinery cost as much CPU as
        the appends themselves); this loop PINGs every ``_PUBSUB_PING_EVERY``
        seconds and replaces the connection when nothing (message or PONG)
        came for ``_PUBSUB_DEAD_AFTER`` seconds: a partition without FIN/RST
        raises nothing by itself.
        """
        backoff = 0.05
        loop = asyncio.get_running_loop()
        while not self._closed:
            pubsub = self._redis.pubsub()
            reader: asyncio.Task[None] | None = None
            try:
                await pubsub.subscribe(self._channel)
                conn = pubsub.connection
                if conn is None:
                    raise RedisConnectionError("the subscription has no connection")
                self._sub_seen = loop.time()
                reader = asyncio.create_task(self._read_tail_messages(conn))
                while True:
                    await asyncio.wait({reader}, timeout=_PUBSUB_PING_EVERY)
                    if reader.done():
                        reader.result()  # its error
                        raise RedisConnectionError("the subscription ended")
                    if loop.time() - self._sub_seen > _PUBSUB_DEAD_AFTER:
                        raise RedisConnectionError("the subscription stopped answering PING")
                    if self._subscribed.is_set():
                        backoff = 0.05
                    await conn.send_command("PING", b"durasync", check_health=False)
            except (RedisError, OSError) as exc:
                log.warning("redis subscription lost (%s); reconnecting", exc)
            except Exception:
                # Never let live delivery die with a bug: log, resubscribe.
                log.exception("redis subscriber failed; resubscribing")
            finally:
                self._subscribed.clear()
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(BaseException):
                        await reader
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLOSE_STEP_TIMEOUT):
                        await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _read_tail_messages(self, conn: Any) -> None:
        """Read the subscription's replies until the connection fails."""
        loop = asyncio.get_running_loop()
        while True:
            reply = await conn.read_response(
                timeout=math.inf, disconnect_on_error=False, push_request=True
            )
            self._sub_seen = loop.time()
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message":
                self._dispatch(reply[2])
            elif kind == b"subscribe":
                # Confirmed: from now on every tail message reaches us.
                # Appends may have happened while we were not subscribed.
                self.subscriptions += 1
                self._subscribed.set()
                self._wake_all()

    def _dispatch(self, data: bytes) -> None:
        try:
            nl = data.index(b"\n")
            fi, fb, ti, flag_b, lens, plen_b, clen_b = data[:nl].split(b" ")
            plen, clen = int(plen_b), int(clen_b)
            path = data[nl + 1 : nl + 1 + plen].decode()
            tail_index = int(ti)
            flag = flag_b.decode()
        except (ValueError, UnicodeDecodeError):
            # Someone else publishes on our channel: say so, but do not flood.
            self.malformed_messages += 1
            if self.malformed_messages % 1000 == 1:
                log.warning(
                    "ignoring malformed tail messages (%d so far): %r",
                    self.malformed_messages,
                    data[:100],
                )
            return
        self._learn(path, tail_index, flag)
        if path not in self._waiters and path not in self._recent:
            return
        delivery: _Delivery | None = None
        if lens != b"-":
            try:
                start = nl + 1 + plen
                content_type = data[start : start + clen].decode()
                pos = start + clen
                messages: list[bytes] = []
                for length in lens.split(b","):
                    end = pos + int(length)
                    messages.append(data[pos:end])
                    pos = end
                if pos == len(data):
                    delivery = _Delivery(
                        int(fi),
                        int(fb),
                        messages,
                        closed=flag == "c",
                        content_type=content_type,
                        at=asyncio.get_running_loop().time(),
                    )
            except (ValueError, UnicodeDecodeError):
                delivery = None
        self._remember(path, flag, delivery)
        self._wake(path, tail_index, flag)

    def _remember(self, path: str, flag: str, delivery: _Delivery | None) -> None:
        """Keep a watched stream's newest messages (for live readers' handoffs)."""
        recent = self._recent
        window = recent.pop(path, None)
        if delivery is None or flag == "g":
            return  # a change without data (delete, close only, large or TTL): forget
        now = delivery.at
        if window is not None:
            if now - window.watched_at > _RECENT_UNWATCHED:
                window = None  # nobody waits here any more
            elif not window.extend(delivery):
                window = _Recent(delivery, window.watched_at)
        elif path in self._waiters:
            window = _Recent(delivery, now)
        if window is None:
            return
        if len(recent) >= _RECENT_MAX_PATHS:
            del recent[next(iter(recent))]
        recent[path] = window

    def _wake(self, path: str, tail_index: int, flag: str) -> None:
        waiters = self._waiters.get(path)
        if not waiters:
            return
        for w in waiters:
            if w.verdict is not None:
                continue
            if flag == "g":
                # Deleted (or soft-deleted): the stream may be recreated; re-check.
                w.recheck = True
            elif w.index is None:
                w.recheck = True
            elif tail_index > w.index or flag == "c":
                w.verdict = True
            else:
                continue
            w.wake()

    def _learn(self, path: str, tail_index: int, flag: str) -> None:
        """Remember the newest tail a message announced (bounded, oldest dropped)."""
        known = self._known
        before = known.pop(path, None)
        if flag == "g":
            # A deleted or re-created stream: data handed from before is moot.
            for key in [k for k in self._handoffs if k[1] == path]:
                del self._handoffs[key]
            self._recent.pop(path, None)
            return
        if not self._subscribed.is_set():
            return
        if len(known) >= _KNOWN_MAX:
            del known[next(iter(known))]
        # Own append replies and tail messages race on two connections: keep
        # the newest tail (tails only grow until a delete, which pops it).
        if before is not None and before[0] > tail_index:
            known[path] = before
        else:
            known[path] = (tail_index, flag == "c" or (before is not None and before[1]))

    def _wake_all(self) -> None:
        # Messages may have been missed: forget what they said.
        self._known.clear()
        self._recent.clear()
        for waiters in self._waiters.values():
            for w in waiters:
                w.recheck = True
                w.wake()

    async def _wait_probe(self, path: str, offset: str, index: int | None) -> bool | int:
        """True (ready), False (gone) or the index to wait past."""
        values = await self._command(
            "HMGET", self.prefix + "m:" + path, "ti", "si", "cl", "sd", "ttl", "exp", "ta"
        )
        ti_raw, si_raw, cl, sd, ttl, exp, ta = values
        if ti_raw is None or sd is not None:
            return False
        now = self._clock()
        if exp is not None and now >= float(exp):
            return False
        if ttl is not None and ta is not None and now >= float(ta) + float(ttl):
            return False
        tail = int(ti_raw)
        if index is None:
            if offset == OFFSET_START:
                index = int(si_raw or 0)
            elif offset == OFFSET_NOW:
                index = tail
            else:
                index = decode_offset(offset)[0]
        if tail > index or cl is not None:
            return True
        return index

    async def wait_for(self, path: str, offset: str, timeout: float) -> bool:  # noqa: ASYNC109
        if self._closed or not _encodable(path):
            return False
        if offset not in (OFFSET_START, OFFSET_NOW):
            try:
                decode_offset(offset)
            except BadOffset:
                return True  # malformed: let the caller's read report it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        w = _Waiter()
        # Registered before the probe: a tail message racing the probe re-checks.
        self._waiters.setdefault(path, set()).add(w)
        index: int | None = None
        try:
            while True:
                w.recheck = False
                w.index = None
                known = self._known.get(path) if index is None else None
                if (
                    known is not None
                    and offset not in (OFFSET_START, OFFSET_NOW)
                    and self._subscribed.is_set()
                ):
                    # Subscribed since that message, and every append and
                    # close publishes one: a later change will wake us, so the
                    # announced tail decides without asking Redis (DS §5 live).
                    wanted = decode_offset(offset)[0]
                    state: bool | int = True if known[0] > wanted or known[1] else wanted
                else:
                    try:
                        state = await self._wait_probe(path, offset, index)
                    except StoreUnavailable:
                        # closed meanwhile: as on timeout (the LogStore contract);
                        # else the caller's read reports the outage
                        return not self._closed
                if state is True:
                    if index is None and offset not in (OFFSET_START, OFFSET_NOW):
                        index = decode_offset(offset)[0]
                    if index is not None:
                        self._hand_off(path, index)
                    return True
                if state is False:
                    return False
                index = w.index = state
                window = self._recent.get(path)
                if window is not None:
                    window.watched_at = loop.time()
                while w.verdict is None and not w.recheck:
                    if deadline - loop.time() <= 0:
                        return False
                    # Woken by ``wake`` (the flags say why) or by the deadline
                    # (the next pass sees it passed).
                    future = w.future = loop.create_future()
                    key = self._deadlines.add(loop, future, deadline)
                    try:
                        await future
                    finally:
                        w.future = None
                        self._deadlines.discard(key, future)
                if w.verdict is not None:
                    if w.verdict:
                        self._hand_off(path, index)
                    return w.verdict
                if loop.time() >= deadline:
                    return False
        finally:
            waiters = self._waiters.get(path)
            if waiters is not None:
                waiters.discard(w)
                if not waiters:
                    del self._waiters[path]

    def _hand_off(self, path: str, index: int) -> None:
        """Keep the recent messages from ``index`` for this task's next read of ``path``.

        Only the task whose ``wait_for`` just returned True gets them: a live
        reader, reading right away. Other reads always ask Redis.
        """
        task = asyncio.current_task()
        window = self._recent.get(path)
        if task is None or window is None:
            return
        now = asyncio.get_running_loop().time()
        window.watched_at = now
        delivery = window.delivery_from(index, now)
        if delivery is None:
            return
        handoffs = self._handoffs
        if len(handoffs) >= _HANDOFF_MAX:
            del handoffs[next(iter(handoffs))]
        handoffs[(task, path)] = delivery

    # -- calls -------------------------------------------------------------------

    async def _run(self, script: AsyncScript, args: list[Any]) -> Any:
        """Run one script call on the store's call connection (see ``_call_loop``).

        Every call issued during one event-loop iteration goes to Redis in one
        write (Redis runs them in one pass and one fsync); each call is still
        its own atomic script.

        Raises:
            StoreUnavailable: any Redis error (outcome unknown for writes).
        """
        return await self._enqueue(script, args)

    async def _command(self, *args: Any) -> Any:
        """Run one plain command on the same connection as the scripts.

        Every Redis call of the store goes through ``_enqueue``: the caller
        awaits a plain future and redis-py runs in the store's own tasks, so
        cancelling a caller (a client that went away) can never be swallowed
        or half-applied inside redis-py (redis-py #2028).
        """
        return await self._enqueue(None, list(args))

    async def _enqueue(self, script: AsyncScript | None, args: list[Any]) -> Any:
        if self._caller is None or self._caller.done():
            if self._closed:
                raise StoreUnavailable("the store is closed")
            self._caller = asyncio.get_running_loop().create_task(
                self._call_loop(), name="redis-store-calls"
            )
        command = ("EVALSHA", script.sha, 0, *args) if script is not None else tuple(args)
        try:
            # hiredis packs in C (redis-py's pure-Python packing cost ~6 us a call).
            packed = _pack(command)
        except TypeError:  # bytearray and the like: as bytes
            packed = _pack(tuple(bytes(a) if isinstance(a, bytearray) else a for a in command))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(script, None if script is not None else args[0], packed, future))
        self._pending_ready.set()
        return await future

    async def _call_loop(self) -> None:
        """The store's one connection for calls: written back to back, replies read in order.

        RESP answers the calls on one connection in the order they were sent, so
        a writer task sends what callers queued as soon as it can (one write per
        loop iteration, without waiting for earlier replies) and a reader task
        matches each reply to the oldest call sent. There is no task, pool
        checkout or pipeline object per call or per batch: on this path they
        cost as much CPU as the appends themselves.

        Failures: a call that was written is never sent again (an append whose
        reply was lost may have been applied), except after a NOSCRIPT reply
        (Redis lost its script cache, the call did not run): the script is
        loaded and the call re-sent once, ahead of everything not yet written.
        A connection that fails, or that answers nothing for ``socket_timeout``
        seconds while calls wait (a hung Redis, a partition without FIN/RST),
        is dropped: its calls fail with StoreUnavailable (outcome unknown) and
        the next calls connect anew. Calls still queued when a connection
        cannot be made fail with StoreUnavailable (they were never sent).
        """
        loop = asyncio.get_running_loop()
        while not self._closed or self._pending or self._redo:
            if not (self._pending or self._redo):
                self._pending_ready.clear()
                await self._pending_ready.wait()
                continue
            conn = self._pool.connection_class(**self._call_kwargs)
            writer: asyncio.Task[None] | None = None
            reader: asyncio.Task[None] | None = None
            try:
                try:
                    # Bounded: a Redis that accepts connections but does not answer.
                    async with asyncio.timeout(self._call_timeout):
                        await conn.connect()  # type: ignore[no-untyped-call]
                except (RedisError, OSError, TimeoutError) as exc:
                    self._fail_queued(StoreUnavailable(f"redis: cannot connect: {exc}"))
                    continue
                self._progress_at = loop.time()
                writer = loop.create_task(self._write_calls(conn))
                reader = loop.create_task(self._read_replies(conn))
                check_every = max(min(self._call_timeout / 4, 0.5), 0.01)
                while True:
                    done, _ = await asyncio.wait(
                        {writer, reader}, timeout=check_every, return_when=asyncio.FIRST_COMPLETED
                    )
                    if done:
                        for task in done:
                            task.result()  # its error
                        if writer in done and self._closed:
                            return  # closing, and every call was answered
                        raise RedisConnectionError("the call connection ended")
                    if self._sent and loop.time() - self._progress_at > self._call_timeout:
                        raise RedisTimeoutError(f"no reply from redis for {self._call_timeout:g} s")
            except (RedisError, OSError) as exc:
                if self._sent:
                    log.warning("redis call connection lost with calls in flight (%s)", exc)
                self._fail_sent(StoreUnavailable(f"redis: {exc}"))
            except Exception as exc:
                # Never let the calls die with a bug: log, fail what was sent, go on.
                log.exception("redis call connection failed; reconnecting")
                self._fail_sent(StoreUnavailable(f"redis call failed: {exc!r}"))
            except BaseException as exc:
                self._fail_sent(StoreUnavailable(f"redis call failed: {exc!r}"))
                self._fail_queued(StoreUnavailable(f"redis call failed: {exc!r}"))
                raise
            finally:
                for half in (writer, reader):
                    if half is not None:
                        half.cancel()
                        with contextlib.suppress(BaseException):
                            await half
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLOSE_STEP_TIMEOUT):
                        await conn.disconnect()

    async def _write_calls(self, conn: Any) -> None:
        """Send queued calls as they come (the writer half of ``_call_loop``)."""
        loop = asyncio.get_running_loop()
        ready = self._pending_ready
        while True:
            if self._closed and not (self._pending or self._redo or self._sent):
                return
            if not self._redo and (not self._pending or len(self._sent) >= _MAX_IN_FLIGHT):
                ready.clear()
                await ready.wait()
                continue
            # Reads pending now are sent now: later readers must not join them.
            self._read_joins.clear()
            batch: list[_Call] = []
            if self._redo:
                # NOSCRIPT: load each script once, then its calls, ahead of the rest.
                loaded: set[int] = set()
                for call in self._redo:
                    script = call.script
                    if script is not None and id(script) not in loaded:
                        loaded.add(id(script))
                        load = _pack(("SCRIPT", "LOAD", script.script))
                        batch.append(_Call(None, "SCRIPT", load, None))
                    batch.append(call)
                self._redo = []
            room = max(_MAX_IN_FLIGHT - len(self._sent) - len(batch), 0)
            batch += self._pending[:room]
            del self._pending[:room]
            packed = b"".join([call.packed for call in batch])
            if not self._sent:
                self._progress_at = loop.time()
            # Sent from here on: on any failure their outcome is unknown.
            self._sent.extend(batch)
            await conn.send_packed_command(packed, check_health=False)

    async def _read_replies(self, conn: Any) -> None:
        """Match replies to sent calls in order (the reader half of ``_call_loop``)."""
        loop = asyncio.get_running_loop()
        sent = self._sent
        callbacks = self._redis.response_callbacks
        while True:
            try:
                reply = await conn.read_response(timeout=math.inf, disconnect_on_error=False)
            except ResponseError as exc:
                reply = exc
            if not sent:
                raise RedisConnectionError("a reply that no call asked for")
            call = sent.popleft()
            self._progress_at = loop.time()
            if (len(sent) < _MAX_IN_FLIGHT and self._pending) or (self._closed and not sent):
                self._pending_ready.set()
            future = call.future
            if isinstance(reply, NoScriptError) and call.script is not None and not call.redone:
                call.redone = True
                self._redo.append(call)
                self._pending_ready.set()
                continue
            if future is None or future.done():
                continue  # internal (SCRIPT LOAD), or the caller went away; it ran anyway
            if isinstance(reply, RedisError):
                future.set_exception(StoreUnavailable(f"redis: {reply}"))
                continue
            if call.name is not None:
                # As redis-py's parse_response: the command's reply callback.
                callback = callbacks.get(call.name)
                if callback is not None:
                    try:
                        reply = callback(reply)
                    except Exception as exc:  # a reply redis-py cannot shape
                        future.set_exception(StoreUnavailable(f"redis: {exc!r}"))
                        continue
            future.set_result(reply)

    def _fail_sent(self, failure: StoreUnavailable) -> None:
        sent = list(self._sent)
        self._sent.clear()
        _fail_calls(sent, failure)

    def _fail_queued(self, failure: StoreUnavailable) -> None:
        queued, self._pending, self._redo = [*self._redo, *self._pending], [], []
        _fail_calls(queued, failure)

    async def _fetch_raw(self, path: str) -> dict[bytes, bytes]:
        raw = cast("dict[bytes, bytes]", await self._command("HGETALL", self.prefix + "m:" + path))
        return raw

    async def _fetch_meta(self, path: str) -> StreamMeta | None:
        raw = await self._fetch_raw(path)
        return _parse_meta(path, _flat(raw)) if raw else None

    # -- create ------------------------------------------------------------------

    async def create(
        self,
        path: str,
        config: StreamConfig,
        *,
        initial: Sequence[bytes] = (),
        closed: bool = False,
        now: float | None = None,
    ) -> CreateResult:
        _check_text(path, config.forked_from or "")
        when = self._now(now)
        for _ in range(_CREATE_ATTEMPTS):
            existing = await self._fetch_meta(path)
            if existing is not None and not (
                not existing.soft_deleted and is_expired(existing.config, existing.touched_at, when)
            ):
                return self._confirm(path, existing, config, closed)
            args = await self._create_args(path, config, initial, closed, when)
            res = await self._run(self._create, args)
            status = res[0]
            if status == b"created":
                return CreateResult(created=True, info=stream_info(_parse_meta(path, res[1:])))
            if status == b"exists":
                return self._confirm(path, _parse_meta(path, res[1:]), config, closed)
            if status == b"exists_deleted":
                raise StreamExists(f"{path!r} is held by a deleted stream that forks still read")
            if status == b"source_not_found":
                raise StreamNotFound(f"fork source {config.forked_from!r} does not exist")
            if status == b"source_gone":
                raise StreamGone(f"fork source {config.forked_from!r} was deleted")
            # ``retry``: the fork source changed between our look and the script.
        raise StoreUnavailable(f"create of {path!r} kept racing changes of its fork source")

    @staticmethod
    def _confirm(
        path: str, existing: StreamMeta, config: StreamConfig, closed: bool
    ) -> CreateResult:
        """DS §2 PUT: an identical re-create succeeds, anything else conflicts."""
        if existing.soft_deleted:
            # DS §6: a soft-deleted path cannot be reused while forks live.
            raise StreamExists(f"{path!r} is held by a deleted stream that forks still read")
        if same_create(existing.requested, existing.config, existing.closed, config, closed):
            return CreateResult(created=False, info=stream_info(existing))
        raise StreamExists(f"stream {path!r} exists with a different configuration")

    async def _create_args(
        self,
        path: str,
        config: StreamConfig,
        initial: Sequence[bytes],
        closed: bool,
        now: float,
    ) -> list[Any]:
        """Validate a create and compute what the script writes (DS §2 PUT, §6)."""
        if config.fork_sub_offset and config.forked_from is None:
            raise BadOffset("a fork sub-offset needs a fork source")
        fork_kind, fork_index, fork_byte, source_inc = "", 0, 0, ""
        effective = requested = config
        if config.forked_from is not None:
            if config.fork_sub_offset and config.fork_offset is None:
                raise BadOffset("a fork sub-offset needs an explicit fork offset")
            raw = await self._fetch_raw(config.forked_from)
            if not raw:
                raise StreamNotFound(f"fork source {config.forked_from!r} does not exist")
            source = _parse_meta(config.forked_from, _flat(raw))
            # The script checks it still is this incarnation of the source.
            source_inc = raw.get(b"inc", b"").decode()
            if not source.soft_deleted and is_expired(source.config, source.touched_at, now):
                if source.fork_refs > 0:
                    raise StreamGone(f"fork source {config.forked_from!r} expired")
                raise StreamNotFound(f"fork source {config.forked_from!r} does not exist")
            if source.soft_deleted:
                raise StreamGone(f"fork source {config.forked_from!r} was deleted")
            if config.fork_offset is None:
                fork_kind = "t"
            else:
                fork_kind = "o"
                fork_index, fork_byte = await self._boundary(source, config.fork_offset, now)
            effective = fork_config(config, source.config, source.tail)
        elif not config.content_type:
            effective = requested = msgspec.structs.replace(
                config, content_type=DEFAULT_CONTENT_TYPE
            )
        cfg = _CONFIG_ENCODER.encode(msgspec.structs.replace(effective, fork_offset=None))
        req = _CONFIG_ENCODER.encode(msgspec.structs.replace(requested, fork_offset=None))
        return [
            self.prefix,
            path,
            _text(now),
            effective.content_type,
            media_type(effective.content_type),
            str(effective.ttl_seconds) if effective.ttl_seconds is not None else "",
            _text(effective.expires_at) if effective.expires_at is not None else "",
            cfg,
            req,
            "1" if closed else "0",
            config.forked_from or "",
            fork_kind,
            str(fork_index),
            str(fork_byte),
            source_inc,
            uuid.uuid4().hex,
            *initial,
        ]

    async def _boundary(self, source: StreamMeta, offset: str, now: float) -> tuple[int, int]:
        """Validate ``offset`` as a boundary of ``source`` (DS §6: else 400)."""
        index, byte_pos = decode_offset(offset)
        if index == source.tail_index and byte_pos == source.tail_byte:
            return index, byte_pos
        if index >= source.tail_index:
            raise BadOffset(f"fork offset {offset} is beyond the source's tail")
        try:
            await self._read_call(source.path, offset, 1, 1, now, touch=False)
        except StreamGone as exc:
            raise BadOffset(f"fork offset {offset} is below the source's retained data") from exc
        return index, byte_pos

    # -- append ------------------------------------------------------------------

    async def append(
        self,
        path: str,
        messages: Sequence[bytes],
        *,
        content_type: str | None = None,
        producer: Producer | None = None,
        stream_seq: str | None = None,
        close: bool = False,
        now: float | None = None,
    ) -> AppendResult:
        if not messages and not close:
            raise ValueError("append of no messages without close")
        _check_text(path, producer.producer_id if producer else "", stream_seq or "")
        flags = (
            ("1" if producer is not None else "0")
            + ("1" if stream_seq is not None else "0")
            + ("1" if close else "0")
        )
        head = "%r %d %d %s %s" % (  # noqa: UP031 - hot path
            float(self._now(now)),
            producer.epoch if producer is not None else 0,
            producer.seq if producer is not None else 0,
            flags,
            "=" + media_type(content_type) if content_type is not None else "",
        )
        res = await self._run(
            self._append,
            [
                self.prefix,
                path,
                head,
                producer.producer_id if producer is not None else "",
                stream_seq if stream_seq is not None else "",
                *messages,
            ],
        )
        if isinstance(res, bytes):
            # "ok <index> <byte> <tail index> <tail byte> <flag> <epoch> <seq>
            # <lengths> <content type>"
            _, index_s, byte_s, tail_s, tail_byte_s, flag, epoch_s, seq_s, lens, ct = (
                res.decode().split(" ", 9)
            )
            index, byte_pos = int(index_s), int(byte_s)
            first_index, first_byte = index, byte_pos
            offsets: list[str] = []
            for data in messages:
                offsets.append(_OFFSET_FMT % (index, byte_pos))
                index += 1
                byte_pos += len(data)
            tail_index = int(tail_s)
            closed = flag == "c"
            self._learn(path, tail_index, flag)
            if path in self._waiters or path in self._recent:
                delivery = (
                    _Delivery(
                        first_index,
                        first_byte,
                        [bytes(m) for m in messages],
                        closed=closed,
                        content_type=ct,
                        at=asyncio.get_running_loop().time(),
                    )
                    if lens != "-"
                    else None
                )
                self._remember(path, flag, delivery)
                self._wake(path, tail_index, flag)
            return AppendResult(
                status="appended" if messages else "closed_only",
                offsets=offsets,
                tail=_OFFSET_FMT % (tail_index, int(tail_byte_s)),
                closed=closed,
                producer_epoch=int(epoch_s) if epoch_s != "-" else None,
                producer_seq=int(seq_s) if seq_s != "-" else None,
            )
        status = res[0]
        if status == b"dup":
            return AppendResult(
                status="duplicate",
                offsets=[],
                tail=_OFFSET_FMT % (int(res[1]), int(res[2])),
                closed=False,
                producer_epoch=int(res[3]),
                producer_seq=int(res[4]),
            )
        if status == b"closed_dup":
            assert producer is not None
            return AppendResult(
                status="duplicate",
                offsets=[],
                tail=_OFFSET_FMT % (int(res[1]), int(res[2])),
                closed=True,
                producer_epoch=producer.epoch,
                producer_seq=producer.seq,
            )
        if status == b"closed_only":
            return AppendResult(
                status="closed_only",
                offsets=[],
                tail=_OFFSET_FMT % (int(res[1]), int(res[2])),
                closed=True,
            )
        raise self._append_error(path, res)

    @staticmethod
    def _append_error(path: str, res: list[Any]) -> Exception:
        status = res[0]
        if status == b"not_found":
            return StreamNotFound(f"no stream at {path!r}")
        if status == b"gone":
            return StreamGone(f"stream {path!r} was deleted")
        if status == b"closed":
            return StreamClosed("stream is closed", tail=_OFFSET_FMT % (int(res[1]), int(res[2])))
        if status == b"content_type":
            return ContentTypeMismatch(
                f"content type does not match the stream's {res[1].decode()!r}"
            )
        if status == b"fenced":
            current = int(res[1])
            return ProducerFenced(
                f"producer epoch is stale (current {current})", current_epoch=current
            )
        if status == b"epoch_start":
            return ProducerBadEpochStart(
                f"new producer epoch {int(res[1])} must start at seq 0, got {int(res[2])}"
            )
        if status == b"gap":
            expected, received = int(res[1]), int(res[2])
            return ProducerSeqGap(
                f"producer seq {received} skips ahead (expected {expected})",
                expected=expected,
                received=received,
            )
        if status == b"seq":
            return SeqConflict(f"Stream-Seq is not greater than {res[1].decode()!r}")
        return StoreUnavailable(f"unexpected reply from the append script: {status!r}")

    # -- read --------------------------------------------------------------------

    async def read(
        self,
        path: str,
        offset: str = OFFSET_START,
        *,
        max_bytes: int = 1 << 20,
        max_messages: int = 10_000,
        now: float | None = None,
    ) -> ReadResult:
        _check_text(path)
        if now is not None:
            return await self._read_call(path, offset, max_bytes, max_messages, now, touch=True)
        if self._handoffs:
            # The read right after this task's wait_for was woken by an append
            # that carried its messages: they are the answer (offsets and data
            # are immutable facts), no round trip. Only streams without TTL or
            # expiry carry data (nothing to renew or check). ``up_to_date`` is
            # as of this node's last tail message for the stream (at most one
            # Pub/Sub delivery behind Redis; a later append wakes the next wait).
            delivery = self._handoffs.pop((asyncio.current_task(), path), None)  # type: ignore[arg-type]
            if (
                delivery is not None
                and asyncio.get_running_loop().time() - delivery.at <= _HANDOFF_MAX_AGE
            ):
                known = self._known.get(path)
                at_tail = (
                    known is not None
                    and known[0] == delivery.end_index
                    and self._subscribed.is_set()
                )
                handed = delivery.read(offset, max_bytes, max_messages, at_tail=at_tail)
                if handed is not None:
                    return handed
        # Live readers woken by one append all read the same range in the same
        # loop tick: they share one Redis call. A read is joined only until it
        # is sent (``_flush`` forgets the key), so every reader gets a read made
        # after its own call began: never a state older than its request.
        key = (path, offset, max_bytes, max_messages)
        shared = self._read_joins.get(key)
        if shared is None:
            shared = asyncio.get_running_loop().create_task(
                self._read_call(path, offset, max_bytes, max_messages, self._clock(), touch=True)
            )
            shared.add_done_callback(_retrieve)
            self._read_joins[key] = shared
        return await asyncio.shield(shared)

    async def _read_call(
        self,
        path: str,
        offset: str,
        max_bytes: int,
        max_messages: int,
        now: float,
        *,
        touch: bool,
    ) -> ReadResult:
        if offset == OFFSET_START:
            kind, index, byte_pos = "s", 0, 0
        elif offset == OFFSET_NOW:
            kind, index, byte_pos = "n", 0, 0
        else:
            kind = "o"
            index, byte_pos = decode_offset(offset)
        res = await self._run(
            self._read,
            [
                self.prefix,
                path,
                _text(now),
                "1" if touch else "0",
                kind,
                str(index),
                str(byte_pos),
                str(max(max_bytes, 1)),
                str(max(max_messages, 1)),
            ],
        )
        status = res[0]
        if status != b"ok":
            if status == b"not_found":
                raise StreamNotFound(f"no stream at {path!r}")
            if status == b"gone":
                raise StreamGone(f"stream {path!r} was deleted")
            if status == b"below_start":
                raise StreamGone(f"offset {offset} is below the retained data")
            if status == b"beyond_tail":
                raise BadOffset(f"offset {offset} is beyond the stream's tail")
            if status == b"not_boundary":
                raise BadOffset(f"offset {offset} is not a message boundary")
            raise StoreUnavailable(f"unexpected reply from the read script: {status!r}")
        content_type = res[1].decode()
        closed = res[2] == b"1"
        tail_index = int(res[3])
        index, byte_pos = int(res[4]), int(res[5])
        current = _OFFSET_FMT % (index, byte_pos)
        entries: list[Entry] = []
        append = entries.append
        rows = res[6:]
        for i in range(0, len(rows), 2):
            data = rows[i + 1]
            byte_pos = int(rows[i]) + len(data)
            index += 1
            following = _OFFSET_FMT % (index, byte_pos)
            append(Entry(data, current, following))
            current = following
        up_to_date = index == tail_index
        return ReadResult(
            entries=entries,
            next_offset=current,
            up_to_date=up_to_date,
            closed=closed and up_to_date,
            content_type=content_type,
        )

    # -- head, delete, list, trim ---------------------------------------------------

    async def head(self, path: str, *, now: float | None = None) -> StreamInfo:
        _check_text(path)
        meta = live_meta(await self._fetch_meta(path), path, {}, self._now(now))
        return stream_info(meta)

    async def delete(self, path: str) -> None:
        _check_text(path)
        res = await self._run(self._delete, [self.prefix, path, _text(self._clock())])
        status = res[0]
        if status == b"not_found":
            raise StreamNotFound(f"no stream at {path!r}")
        if status == b"gone":
            raise StreamGone(f"stream {path!r} was deleted")
        # The script published the deletion; wake local waiters without the round trip.
        self._learn(path, 0, "g")
        self._wake(path, 0, "g")

    async def list_streams(self, prefix: str = "", *, limit: int = 1000) -> list[StreamInfo]:
        _check_text(prefix)
        now = self._clock()
        out: list[StreamInfo] = []
        low = b"[" + prefix.encode()
        high = b"(" + prefix.encode() + b"\xff" if prefix else b"+"
        batch = max(min(limit, 1000), 16)
        key = self.prefix + "paths"
        while len(out) < limit:
            names = cast(
                "list[bytes]",
                await self._command("ZRANGEBYLEX", key, low, high, "LIMIT", 0, batch),
            )
            if not names:
                break
            # Issued together: one pipeline.
            hashes = await asyncio.gather(*(self._fetch_raw(name.decode()) for name in names))
            missing: list[bytes] = []
            for name, h in zip(names, hashes, strict=True):
                if not h:
                    missing.append(name)
                    continue
                meta = _parse_meta(name.decode(), _flat(h))
                if meta.soft_deleted or is_expired(meta.config, meta.touched_at, now):
                    continue
                out.append(stream_info(meta))
                if len(out) >= limit:
                    break
            if missing:
                await self._run(self._prune, [self.prefix, *missing])
            if len(names) < batch:
                break
            low = b"(" + names[-1]
        return out

    async def trim(self, path: str, below: str) -> int:
        _check_text(path)
        now = self._clock()
        index, byte_pos = decode_offset(below)
        meta = live_meta(await self._fetch_meta(path), path, {}, now)
        if index <= meta.start_index:
            return 0
        if index != meta.tail_index or byte_pos != meta.tail_byte:
            if index > meta.tail_index:
                raise BadOffset(f"trim offset {below} is beyond the tail")
            # Validate the boundary (BadOffset / StreamGone like the engine).
            await self._read_call(path, below, 1, 1, now, touch=False)
        res = await self._run(
            self._trim, [self.prefix, path, _text(now), str(index), str(byte_pos)]
        )
        status = res[0]
        if status == b"ok":
            return int(res[1])
        if status == b"not_found":
            raise StreamNotFound(f"no stream at {path!r}")
        if status == b"gone":
            raise StreamGone(f"stream {path!r} was deleted")
        raise BadOffset(f"trim offset {below} is beyond the tail")
