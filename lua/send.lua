-- send.lua: post a new message to a channel (idempotent per sender + client_msg_id).
--
-- KEYS[1] ch:{cid}:meta      hash   (channel exists iff present)
-- KEYS[2] ch:{cid}:members   set
-- KEYS[3] ch:{cid}:seq       string (last seq)
-- KEYS[4] ch:{cid}:log       stream (entry id <seq>-0, field e = event JSON)
-- KEYS[5] ch:{cid}:msgs      hash   (message_id -> sender_id, or '!'..sender_id once deleted)
-- KEYS[6] ch:{cid}:dedup     hash   (<sender_id>:<client_msg_id> -> seq of the first event)
-- KEYS[7] ch:{cid}:dedupx    zset   (<sender_id>:<client_msg_id> by when it expires, ms)
-- ARGV[1] sender_id
-- ARGV[2] message_id (new, e.g. a ULID)
-- ARGV[3] BODY: escaped JSON fragment without braces, e.g.
--         "type":"message","message_id":"01J..","sender_id":"alice","text":"hi","client_msg_id":"c1"
-- ARGV[4] channel_id
-- ARGV[5] topic, ch:{cid}:live
-- ARGV[6] <sender_id>:<client_msg_id> (ids hold no ':', so the sender ends at the first)
-- ARGV[7] dedup TTL in seconds (optional; empty or absent = 86400)
--
-- The dedup entries of a channel live in two keys of its own, not a key each: a script that
-- made a new key could not run while the channel's slot migrates (Redis answers TRYAGAIN until
-- the whole slot has moved). Each call forgets up to 8 expired entries; one found expired but
-- not yet forgotten counts as absent.
--
-- Replies:
--   {1, json}   a new event was appended (prelude.lua's append: seq, XADD, SPUBLISH "<seq> <json>", trim)
--   {0, json}   duplicate client_msg_id: the first event, read back from the log; nothing written
--   -NOTFOUND no such channel
--   -NOTMEMBER sender is not a member
--   -CONFLICT message id taken        (message_id already used in this channel)
--   -CONFLICT client_msg_id already used …   (dedup entry present but its log entry is missing: trimmed)
--   -BADREQUEST bad dedup ttl

local sender, message_id, body, cid, topic, dedup = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local ttl = 86400
if ARGV[7] ~= nil and ARGV[7] ~= '' then
  ttl = tonumber(ARGV[7])
  if ttl == nil or ttl < 1 or ttl ~= math.floor(ttl) then
    return redis.error_reply('BADREQUEST bad dedup ttl')
  end
end

-- A member's channel exists (its members set is written with its meta): EXISTS only on a miss.
if redis.call('SISMEMBER', KEYS[2], sender) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return redis.error_reply('NOTFOUND no such channel')
  end
  return redis.error_reply('NOTMEMBER not a member of this channel')
end

local now = now_ms()
local first = redis.call('HGET', KEYS[6], dedup)
if first and tonumber(redis.call('ZSCORE', KEYS[7], dedup) or '0') <= tonumber(now) then
  first = nil
end
if first then
  local id = first .. '-0'
  local entries = redis.call('XRANGE', KEYS[4], id, id)
  local entry = entries[1]
  if entry then
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'e' then
        return {0, fields[i + 1]}
      end
    end
  end
  return redis.error_reply('CONFLICT client_msg_id already used for a message the log no longer holds: send with a new one')
end

-- The message id is taken here, the script's first write: the append cannot fail after it but
-- for a log key of another type, which raises and leaves the id taken.
if redis.call('HSETNX', KEYS[5], message_id, sender) == 0 then
  return redis.error_reply('CONFLICT message id taken')
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, 8)
if #expired > 0 then
  redis.call('HDEL', KEYS[6], unpack(expired))
  redis.call('ZREM', KEYS[7], unpack(expired))
end

local json, seq = append(cid, topic, body, now)
redis.call('HSET', KEYS[6], dedup, seq)
redis.call('ZADD', KEYS[7], string.format('%d', tonumber(now) + ttl * 1000), dedup)
return {1, json}
