"""The Redis store's Lua scripts and their calling conventions (pure: no I/O).

Every check-and-write of the store is one of these scripts (see the package
docstring for why). Next to each script are the Python functions that build
its ARGV and read its reply, so the format both sides agree on lives in one
place; the tail message the scripts publish is read here too
(:func:`parse_tail_message`), and the metadata HASH the scripts write is read by
:func:`parse_meta`.

Every script gets the key prefix as ARGV[1]. Numbers are formatted with %d
before they reach redis.call (Lua would write 1e+15 otherwise) and times travel
as the decimal text Python wrote (:func:`time_text`), so they round-trip
exactly. The append script decides exactly as :func:`durasync.store.rules.plan_append`
(tests/store/test_append_rules.py runs one table of cases against both).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from durasync.httpwire import media_type
from durasync.store.base import (
    OFFSET_NOW,
    OFFSET_START,
    AppendResult,
    Entry,
    Producer,
    ReadResult,
    StreamConfig,
)
from durasync.store.engine import StreamMeta
from durasync.store.errors import (
    BadOffset,
    ContentTypeMismatch,
    DataGone,
    NoSuchStream,
    ProducerBadEpochStart,
    ProducerSeqAhead,
    SeqConflict,
    StaleProducerEpoch,
    StoreUnavailable,
    StreamClosed,
    TailMismatch,
)
from durasync.store.offsets import OFFSET_FMT, decode_offset, encode_offset
from durasync.store.redis.calls import Script
from durasync.store.rules import PRODUCER_STATE_TTL_SECONDS

__all__ = [
    "APPEND",
    "APPEND_AT",
    "CREATE",
    "DATA_IN_MESSAGE_MAX",
    "DELETE",
    "PRUNE",
    "READ",
    "TRIM",
    "ForkPoint",
    "TailHeader",
    "Written",
    "append_args",
    "append_at_args",
    "append_error",
    "append_reply",
    "carried_messages",
    "create_args",
    "flat",
    "parse_meta",
    "parse_tail_message",
    "read_args",
    "read_reply",
    "time_text",
]

#: Appends of at most this many payload bytes carry their data in the tail
#: message, so live readers on every node skip the read round trip.
DATA_IN_MESSAGE_MAX = 64 * 1024

# --------------------------------------------------------------------------
# Lua. Shared definitions first (every script starts with them, after the
# constants ``_lua`` puts in front: PRODUCER_TTL, DATA_IN_MESSAGE_MAX), then
# one body per script with its ARGV and reply.
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
# <producer epoch> <producer seq> <lengths> <content type>" (one bulk string:
# cheap to parse; see append_reply) or an error/duplicate table (append_error).
_LUA_APPEND = """
local path = ARGV[2]
local now_s, ep_s, seq_s, flags, ct_arg = string.match(ARGV[3], '^(%S+) (%S+) (%S+) (%S+) ?(.*)$')
local now = tonumber(now_s)
local mkey = P .. 'm:' .. path
-- Only the fields an append uses, in one table constructor (meta() reads all
-- 18 in a loop, a large share of this script's time).
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

# ARGV: P, path, now, index, byte (where the batch must start), close ('1'/'0'),
# messages... The replica append (LogStore.append_at): no content type, producer or
# Stream-Seq check; the tail check is the point. Replies like the append script ("ok ..."
# with no producer fields; "rebased ..." when the stream first moved to a new start) or
# {'tail_mismatch', tail index, tail byte} / the append errors.
_LUA_APPEND_AT = """
local path, now_s = ARGV[2], ARGV[3]
local now = tonumber(now_s)
local want_i, want_b = tonumber(ARGV[4]), tonumber(ARGV[5])
local close = ARGV[6] == '1'
local first = 7
local n = #ARGV - first + 1
local mkey = P .. 'm:' .. path
local v = redis.call('HMGET', mkey, 'ti', 'tb', 'ct', 'cl', 'sd', 'ttl', 'exp', 'ta', 'si', 'sb',
                     'from', 'refs')
if not v[1] then return {'not_found'} end
local m = {path = path, ti = tonumber(v[1]), tb = tonumber(v[2]), ct = v[3], cl = v[4],
           sd = v[5], ttl = v[6], exp = v[7], ta = v[8], si = tonumber(v[9]),
           sb = tonumber(v[10]), from = v[11], refs = tonumber(v[12]) or 0}
if expired(m, now) then return {'not_found'} end
if m.sd then return {'gone'} end
local at_tail = want_i == m.ti and want_b == m.tb
if m.cl then
  if at_tail and n == 0 then
    if m.ttl then
      redis.call('HSET', mkey, 'ta', now_s)
      m.ta = now_s
      gc_expire(m, now)
    end
    return {'closed_only', fmt(m.ti), fmt(m.tb)}
  end
  return {'closed', fmt(m.ti), fmt(m.tb)}
end
local rebased = false
if not at_tail then
  -- Nothing retained: the stream starts over at the offset (as if trimmed there).
  if m.si == m.ti and not m.from and want_i > m.ti and want_b >= m.tb then
    rebased = true
  else
    return {'tail_mismatch', fmt(m.ti), fmt(m.tb)}
  end
end
local ti, tb = want_i, want_b
local dkey = P .. 'd:' .. path
for i = first, #ARGV do
  local d = ARGV[i]
  redis.call('XADD', dkey, fmt(ti + 1) .. '-' .. fmt(tb), 'd', d)
  ti = ti + 1
  tb = tb + #d
end
local h = {'ti', fmt(ti), 'tb', fmt(tb), 'ta', now_s}
if rebased then
  h[#h + 1] = 'si'
  h[#h + 1] = fmt(want_i)
  h[#h + 1] = 'sb'
  h[#h + 1] = fmt(want_b)
end
if close then
  h[#h + 1] = 'cl'
  h[#h + 1] = '1'
end
redis.call('HSET', mkey, unpack(h))
m.ta = now_s
gc_expire(m, now)
local flag = '-'
if close then flag = 'c' end
local lens, body = '-', ''
if rebased then
  -- Nodes forget what they held of the stream and waiters re-check.
  publish(path, 0, 0, ti, 'g', '-', '', '')
else
  if n > 0 and tb - m.tb <= DATA_IN_MESSAGE_MAX and not m.ttl and not m.exp then
    local ls = {}
    for i = first, #ARGV do ls[#ls + 1] = fmt(#ARGV[i]) end
    lens = table.concat(ls, ',')
    body = table.concat(ARGV, '', first, #ARGV)
  end
  publish(path, m.ti, m.tb, ti, flag, lens, m.ct, body)
end
local word = 'ok '
if rebased then word = 'rebased ' end
return word .. fmt(want_i) .. ' ' .. fmt(want_b) .. ' ' .. fmt(ti) .. ' ' .. fmt(tb) .. ' '
  .. flag .. ' - - ' .. lens .. ' ' .. m.ct
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


def _lua(body: str, *, allow_oom: bool = False) -> Script:
    # The shebang (Redis >= 7.0) makes Redis refuse a script that may write
    # *before* it runs when it cannot accept writes (OOM, MISCONF): a script
    # never stops half-way, since Redis has no rollback.
    # Reads, deletes and trims (which free memory) still run when Redis is
    # out of memory (``allow-oom``); creates and appends are refused whole.
    shebang = "#!lua flags=allow-oom\n" if allow_oom else "#!lua\n"
    constants = (
        f"local PRODUCER_TTL = {PRODUCER_STATE_TTL_SECONDS!r}\n"
        f"local DATA_IN_MESSAGE_MAX = {DATA_IN_MESSAGE_MAX}\n"
    )
    return Script(shebang + constants + _LUA_PRELUDE + body)


APPEND = _lua(_LUA_APPEND)
APPEND_AT = _lua(_LUA_APPEND_AT)
READ = _lua(_LUA_READ, allow_oom=True)
CREATE = _lua(_LUA_CREATE)
DELETE = _lua(_LUA_DELETE, allow_oom=True)
TRIM = _lua(_LUA_TRIM, allow_oom=True)
PRUNE = _lua(_LUA_PRUNE, allow_oom=True)


def time_text(value: float) -> str:
    """A time as text that round-trips exactly (Lua's tonumber reads it back)."""
    return repr(float(value))


# --------------------------------------------------------------------------
# Append
# --------------------------------------------------------------------------


def append_args(
    prefix: str,
    path: str,
    messages: Sequence[bytes],
    *,
    content_type: str | None,
    producer: Producer | None,
    stream_seq: str | None,
    close: bool,
    now: float,
) -> list[Any]:
    """The append script's ARGV for one :meth:`LogStore.append` call."""
    flags = (
        ("1" if producer is not None else "0")
        + ("1" if stream_seq is not None else "0")
        + ("1" if close else "0")
    )
    head = "%r %d %d %s %s" % (  # noqa: UP031 - hot path
        float(now),
        producer.epoch if producer is not None else 0,
        producer.seq if producer is not None else 0,
        flags,
        "=" + media_type(content_type) if content_type is not None else "",
    )
    return [
        prefix,
        path,
        head,
        producer.producer_id if producer is not None else "",
        stream_seq if stream_seq is not None else "",
        *messages,
    ]


#: What an accepted append wrote (the script's ``ok``), for the node's tail
#: bookkeeping: (first index, first byte, tail index afterwards, flag ``c`` if it
#: closed the stream else ``-``, whether the tail message carried the messages,
#: the stream's content type). A plain tuple: one is made per append.
Written = tuple[int, int, int, str, bool, str]


def append_reply(
    path: str, messages: Sequence[bytes], producer: Producer | None, res: Any
) -> tuple[AppendResult, Written | None]:
    """The append script's reply as the caller's result, and what it wrote (None: nothing).

    Raises:
        The store error the script reported (see :func:`append_error`).
    """
    if isinstance(res, bytes):
        # "ok <index> <byte> <tail index> <tail byte> <flag> <epoch> <seq>
        # <lengths> <content type>"
        _, index_s, byte_s, tail_s, tail_byte_s, flag, epoch_s, seq_s, lens, ct = (
            res.decode().split(" ", 9)
        )
        index, byte_pos = int(index_s), int(byte_s)
        tail_index = int(tail_s)
        written = (index, byte_pos, tail_index, flag, lens != "-", ct)
        offsets: list[str] = []
        for data in messages:
            offsets.append(OFFSET_FMT % (index, byte_pos))
            index += 1
            byte_pos += len(data)
        result = AppendResult(
            status="appended" if messages else "closed_only",
            offsets=offsets,
            tail=OFFSET_FMT % (tail_index, int(tail_byte_s)),
            closed=flag == "c",
            producer_epoch=int(epoch_s) if epoch_s != "-" else None,
            producer_seq=int(seq_s) if seq_s != "-" else None,
        )
        return result, written
    status = res[0]
    if status == b"dup":
        return AppendResult(
            status="duplicate",
            offsets=[],
            tail=OFFSET_FMT % (int(res[1]), int(res[2])),
            closed=False,
            producer_epoch=int(res[3]),
            producer_seq=int(res[4]),
        ), None
    if status == b"closed_dup":
        assert producer is not None
        return AppendResult(
            status="duplicate",
            offsets=[],
            tail=OFFSET_FMT % (int(res[1]), int(res[2])),
            closed=True,
            producer_epoch=producer.epoch,
            producer_seq=producer.seq,
        ), None
    if status == b"closed_only":
        return AppendResult(
            status="closed_only",
            offsets=[],
            tail=OFFSET_FMT % (int(res[1]), int(res[2])),
            closed=True,
        ), None
    raise append_error(path, res)


def append_error(path: str, res: list[Any]) -> Exception:
    """The store error an append script's error table stands for."""
    status = res[0]
    if status == b"not_found":
        return NoSuchStream(f"no stream at {path!r}")
    if status == b"gone":
        return DataGone(f"stream {path!r} was deleted")
    if status == b"closed":
        return StreamClosed("stream is closed", tail=OFFSET_FMT % (int(res[1]), int(res[2])))
    if status == b"content_type":
        return ContentTypeMismatch(f"content type does not match the stream's {res[1].decode()!r}")
    if status == b"fenced":
        current = int(res[1])
        return StaleProducerEpoch(
            f"producer epoch is stale (current {current})", current_epoch=current
        )
    if status == b"epoch_start":
        return ProducerBadEpochStart(
            f"new producer epoch {int(res[1])} must start at seq 0, got {int(res[2])}"
        )
    if status == b"gap":
        expected, received = int(res[1]), int(res[2])
        return ProducerSeqAhead(
            f"producer seq {received} skips ahead (expected {expected})",
            expected=expected,
            received=received,
        )
    if status == b"seq":
        return SeqConflict(f"Stream-Seq is not greater than {res[1].decode()!r}")
    if status == b"tail_mismatch":
        tail = OFFSET_FMT % (int(res[1]), int(res[2]))
        return TailMismatch(f"the offset is not the tail {tail} of {path!r}", tail=tail)
    return StoreUnavailable(f"unexpected reply from the append script: {status!r}")


def append_at_args(
    prefix: str, path: str, offset: str, messages: Sequence[bytes], *, close: bool, now: float
) -> list[Any]:
    """The replica append script's ARGV for one :meth:`LogStore.append_at` call.

    Raises:
        BadOffset: ``offset`` is malformed.
    """
    index, byte_pos = decode_offset(offset)
    return [
        prefix,
        path,
        time_text(now),
        str(index),
        str(byte_pos),
        "1" if close else "0",
        *messages,
    ]


# --------------------------------------------------------------------------
# Read
# --------------------------------------------------------------------------


def read_args(
    prefix: str,
    path: str,
    offset: str,
    max_bytes: int,
    max_messages: int,
    *,
    now: float,
    touch: bool,
) -> list[Any]:
    """The read script's ARGV (``touch``: renew a sliding TTL).

    Raises:
        BadOffset: ``offset`` is malformed.
    """
    if offset == OFFSET_START:
        kind, index, byte_pos = "s", 0, 0
    elif offset == OFFSET_NOW:
        kind, index, byte_pos = "n", 0, 0
    else:
        kind = "o"
        index, byte_pos = decode_offset(offset)
    return [
        prefix,
        path,
        time_text(now),
        "1" if touch else "0",
        kind,
        str(index),
        str(byte_pos),
        str(max(max_bytes, 1)),
        str(max(max_messages, 1)),
    ]


def read_reply(path: str, offset: str, res: Any) -> ReadResult:
    """The read script's reply as a :class:`ReadResult`.

    Raises:
        NoSuchStream, DataGone, BadOffset: as the script decided.
    """
    status = res[0]
    if status != b"ok":
        if status == b"not_found":
            raise NoSuchStream(f"no stream at {path!r}")
        if status == b"gone":
            raise DataGone(f"stream {path!r} was deleted")
        if status == b"below_start":
            raise DataGone(f"offset {offset} is below the retained data")
        if status == b"beyond_tail":
            raise BadOffset(f"offset {offset} is beyond the stream's tail")
        if status == b"not_boundary":
            raise BadOffset(f"offset {offset} is not a message boundary")
        raise StoreUnavailable(f"unexpected reply from the read script: {status!r}")
    content_type = res[1].decode()
    closed = res[2] == b"1"
    tail_index = int(res[3])
    index, byte_pos = int(res[4]), int(res[5])
    current = OFFSET_FMT % (index, byte_pos)
    entries: list[Entry] = []
    append = entries.append
    rows = res[6:]
    for i in range(0, len(rows), 2):
        data = rows[i + 1]
        byte_pos = int(rows[i]) + len(data)
        index += 1
        following = OFFSET_FMT % (index, byte_pos)
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


# --------------------------------------------------------------------------
# Create and the metadata HASH
# --------------------------------------------------------------------------

_CONFIG_ENCODER = msgspec.json.Encoder()
_CONFIG_DECODER = msgspec.json.Decoder(StreamConfig)


class ForkPoint(NamedTuple):
    """Where a fork starts in its source, as the create script checks it."""

    #: ``t``: the source's tail when the script runs; ``o``: the offset below.
    kind: str
    fork_index: int
    fork_byte: int
    #: The source incarnation the caller derived the config from.
    source_incarnation: str


def create_args(
    prefix: str,
    path: str,
    *,
    effective: StreamConfig,
    requested: StreamConfig,
    closed: bool,
    fork: ForkPoint | None,
    incarnation: str,
    initial: Sequence[bytes],
    now: float,
) -> list[Any]:
    """The create script's ARGV (``incarnation``: a new random id for this incarnation)."""
    cfg = _CONFIG_ENCODER.encode(msgspec.structs.replace(effective, fork_offset=None))
    req = _CONFIG_ENCODER.encode(msgspec.structs.replace(requested, fork_offset=None))
    return [
        prefix,
        path,
        time_text(now),
        effective.content_type,
        media_type(effective.content_type),
        str(effective.ttl_seconds) if effective.ttl_seconds is not None else "",
        time_text(effective.expires_at) if effective.expires_at is not None else "",
        cfg,
        req,
        "1" if closed else "0",
        effective.forked_from or "",
        fork.kind if fork is not None else "",
        str(fork.fork_index if fork is not None else 0),
        str(fork.fork_byte if fork is not None else 0),
        fork.source_incarnation if fork is not None else "",
        incarnation,
        *initial,
    ]


def parse_meta(path: str, flat: Sequence[bytes]) -> StreamMeta:
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


def flat(h: dict[bytes, bytes]) -> list[bytes]:
    """A HASH as ``HGETALL``'s flat list, from redis-py's dict."""
    return [x for kv in h.items() for x in kv]


# --------------------------------------------------------------------------
# The tail message (Lua ``publish``)
# --------------------------------------------------------------------------


#: A tail message's header, as :func:`parse_tail_message` reads it: (path, tail
#: index, flag, lengths, first index, first byte, where the content type starts,
#: its length). The flag is ``-`` (append), ``c`` (close) or ``g`` (re-check:
#: delete, create, trim); lengths are the carried messages' sizes, or ``-``.
#: A plain tuple: one is read per append on every node.
TailHeader = tuple[str, int, str, bytes, bytes, bytes, int, int]


def parse_tail_message(data: bytes) -> TailHeader:
    """The header of one message of the tail channel (its data is left in place).

    Raises:
        ValueError, UnicodeDecodeError: not a tail message (someone else
        publishes on the channel).
    """
    nl = data.index(b"\n")
    first_index, first_byte, tail_index, flag, lens, path_len, ct_len = data[:nl].split(b" ")
    start = nl + 1 + int(path_len)
    path = data[nl + 1 : start].decode()
    return path, int(tail_index), flag.decode(), lens, first_index, first_byte, start, int(ct_len)


def carried_messages(data: bytes, header: TailHeader) -> tuple[int, int, str, list[bytes]] | None:
    """(first index, first byte, content type, messages) a tail message carried, or None."""
    _, _, _, lens, first_index, first_byte, start, ct_len = header
    if lens == b"-":
        return None
    try:
        content_type = data[start : start + ct_len].decode()
        pos = start + ct_len
        messages: list[bytes] = []
        for length in lens.split(b","):
            end = pos + int(length)
            messages.append(data[pos:end])
            pos = end
        if pos != len(data):
            return None
        return int(first_index), int(first_byte), content_type, messages
    except (ValueError, UnicodeDecodeError):
        return None
