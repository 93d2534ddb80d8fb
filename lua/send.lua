-- send.lua: post a new message to a channel (idempotent per sender + client_msg_id).
--
-- KEYS[1] ch:{cid}:meta      hash   (channel exists iff present)
-- KEYS[2] ch:{cid}:members   set
-- KEYS[3] ch:{cid}:seq       string (last seq)
-- KEYS[4] ch:{cid}:log       stream (entry id <seq>-0, field e = event JSON)
-- KEYS[5] ch:{cid}:msgs      hash   (message_id -> sender_id, or '!'..sender_id once deleted)
-- KEYS[6] ch:{cid}:dedup:<sender_id>:<client_msg_id>   string (seq of the first event)
-- ARGV[1] sender_id
-- ARGV[2] message_id (new, e.g. a ULID)
-- ARGV[3] BODY: escaped JSON fragment without braces, e.g.
--         "type":"message","message_id":"01J..","sender_id":"alice","text":"hi","client_msg_id":"c1"
-- ARGV[4] channel_id
-- ARGV[5] topic, ch:{cid}:live
-- ARGV[6] dedup TTL in seconds (optional; empty or absent = 86400)
--
-- Replies:
--   {1, json}   a new event was appended (prelude.lua's append: seq, XADD, SPUBLISH "<seq> <json>", trim)
--   {0, json}   duplicate client_msg_id: the first event, read back from the log; nothing written
--   -NOTFOUND no such channel
--   -NOTMEMBER sender is not a member
--   -CONFLICT message id taken        (message_id already used in this channel)
--   -CONFLICT client_msg_id already used …   (dedup key present but its log entry is missing: trimmed)
--   -BADREQUEST bad dedup ttl

local sender, message_id, body, cid, topic = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local ttl = 86400
if ARGV[6] ~= nil and ARGV[6] ~= '' then
  ttl = tonumber(ARGV[6])
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

local first = redis.call('GET', KEYS[6])
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

local json, seq = append(cid, topic, body, now_ms())
redis.call('SET', KEYS[6], seq, 'EX', ttl)
return {1, json}
