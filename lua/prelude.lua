-- prelude.lua: the one append shared by every script that logs events. It is not a script of
-- its own: the relay puts it in front of each script (and Tests/lua/check.sh does the same),
-- so the log invariant (next seq, XADD <seq>-0, SPUBLISH, trim) is written once.
--
-- Every appending script passes KEYS[1] = ch:{cid}:meta, KEYS[3] = ch:{cid}:seq,
-- KEYS[4] = ch:{cid}:log and KEYS[5] = ch:{cid}:msgs.
--
-- Retention: the relay rewrites the next line with its --retention-events and
-- --retention-days (in ms); 0 means no limit.
local RETAIN_EVENTS, RETAIN_MS = 0, 0

-- Live events are published at once (SPUBLISH). With --redis-wait the relay rewrites the next
-- line to DEFERRED = {} and wraps the script so that it answers {reply, DEFERRED}: the events'
-- payloads come back instead, and the relay publishes them once replicas hold the write, so
-- that no socket sees an event that a failover could still lose.
local DEFERRED = nil

-- Publishes "<seq> <json>" on the channel's live topic, or keeps it for the relay. Published at
-- once, the event is as final as this relay makes any: should a relay that waits for replicas
-- have given the channel a replicated_seq (commit.lua), where readers of the log stop, it moves
-- up to this seq, so that they do not stop short of it.
local function publish(topic, payload, seq)
  if DEFERRED then
    DEFERRED[#DEFERRED + 1] = payload
  else
    redis.call('SPUBLISH', topic, payload)
    if redis.call('HEXISTS', KEYS[1], 'replicated_seq') == 1 then
      redis.call('HSET', KEYS[1], 'replicated_seq', seq)
    end
  end
end

-- created_at in integer ms, built from TIME's two strings (no float formatting).
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

-- The seq of a stream entry id '<seq>-0'.
local function id_seq(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- The log's last seq, 0 when empty.
local function log_top()
  local top = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)[1]
  if top then return id_seq(top[1]) end
  return 0
end

-- Forgets the message ids of the first n entries (the ones about to be trimmed) in msgs: a
-- trimmed message can no longer be edited or deleted (NOTFOUND), and msgs stays as bounded as
-- the log.
local function forget(entries, n)
  for i = 1, math.min(n, #entries) do
    local mid = string.match(entries[i][2][2], '^{"channel_id":"[^"]*","seq":%d+,"type":"message","message_id":"([^"]+)"')
    if mid then redis.call('HDEL', KEYS[5], mid) end
  end
end

-- Drops the oldest events beyond the retention limits. The seq counter is never touched, so
-- seqs never move back. The count limit is exact. The age limit reads created_at of the oldest
-- entries (entry ids carry seqs, not times): one XRANGE of one entry when nothing is due, and at
-- most 100 entries dropped per append, so a backlog is worked off over the next appends.
local function trim(created_at)
  if RETAIN_EVENTS > 0 then
    local excess = redis.call('XLEN', KEYS[4]) - RETAIN_EVENTS
    if excess > 0 then
      -- Normally one entry. A backlog (retention just turned on) is trimmed at once, and its
      -- message ids beyond the first 1,000 stay in msgs.
      forget(redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', math.min(excess, 1000)), excess)
      redis.call('XTRIM', KEYS[4], 'MAXLEN', RETAIN_EVENTS)
    end
  end
  if RETAIN_MS > 0 then
    local cutoff = tonumber(created_at) - RETAIN_MS
    local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
    if not oldest or tonumber(string.match(oldest[2][2], '"created_at":(%d+)}$') or '0') >= cutoff then
      return
    end
    local batch = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 101)
    for i = 1, #batch do
      local at = tonumber(string.match(batch[i][2][2], '"created_at":(%d+)}$') or '0')
      if at >= cutoff or i == 101 then
        forget(batch, i - 1)
        redis.call('XTRIM', KEYS[4], 'MINID', batch[i][1])
        return
      end
    end
  end
end

-- A user's membership changes in a channel, for replays that must skip what the user was out
-- for: ch:{cid}:membership (key) maps the user to the seqs of its member_joined ('j') and
-- member_left ('l') events, oldest first ('j1 l9 j12'). At most MEMBERSHIP_ENTRIES changes are
-- kept: the oldest two go first (so the first kept is of the same kind as before), and a
-- leading '-' then says that older ones are gone.
local MEMBERSHIP_ENTRIES = 64
local function note_membership(key, user, kind, seq)
  local record = redis.call('HGET', key, user)
  if not record then
    redis.call('HSET', key, user, kind .. seq)
    return
  end
  local changes, trimmed = string.gsub(record, '^%- ', '')
  changes = changes .. ' ' .. kind .. seq
  local _, spaces = string.gsub(changes, ' ', ' ')
  if spaces + 1 > MEMBERSHIP_ENTRIES then
    changes = string.gsub(changes, '^%S+ %S+ ', '', 1)
    trimmed = 1
  end
  if trimmed > 0 then changes = '- ' .. changes end
  redis.call('HSET', key, user, changes)
end

-- Appends one event to channel cid and publishes it on topic: seq = INCR seq, XADD <seq>-0 e
-- json, publish "<seq> <json>" (SPUBLISH, or kept), then trims. If the seq key is missing (an
-- evicted key) or behind the log, the XADD is refused as not above the log's last id, and the
-- next seq comes from the log's last entry instead: a seq is never reused, and the log never
-- refuses the id. Any other refusal (a log key of another type) takes the INCR back and raises.
-- Out of memory, Redis refuses a script's first write and none after it, so a script that
-- writes nothing before its append is refused at the INCR, with nothing written.
-- Returns the event's json and seq (a decimal string).
local function append(cid, topic, ev_body, created_at)
  local n = redis.call('INCR', KEYS[3])
  local seq = string.format('%d', n)
  local json = '{"channel_id":"' .. cid .. '","seq":' .. seq .. ',' .. ev_body ..
               ',"created_at":' .. created_at .. '}'
  local added = redis.pcall('XADD', KEYS[4], seq .. '-0', 'e', json)
  if type(added) == 'table' and added.err then
    if not string.find(added.err, 'equal or smaller', 1, true) then
      redis.call('DECR', KEYS[3])
      error(added)
    end
    n = log_top() + 1
    seq = string.format('%d', n)
    json = '{"channel_id":"' .. cid .. '","seq":' .. seq .. ',' .. ev_body ..
           ',"created_at":' .. created_at .. '}'
    redis.call('XADD', KEYS[4], seq .. '-0', 'e', json)
    redis.call('SET', KEYS[3], seq)
  end
  publish(topic, seq .. ' ' .. json, seq)
  trim(created_at)
  return json, seq
end

-- The script proper follows.
