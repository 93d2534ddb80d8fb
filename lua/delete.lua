-- delete.lua: log the removal of a message; only its sender may delete, and only once.
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:log
-- KEYS[5] ch:{cid}:msgs
-- ARGV[1] sender_id (the caller)
-- ARGV[2] message_id (the deleted message's)
-- ARGV[3] BODY: escaped JSON fragment without braces, e.g.
--         "type":"delete","message_id":"01J..","sender_id":"alice"
-- ARGV[4] channel_id
-- ARGV[5] topic, ch:{cid}:live
--
-- Replies (checks in this order; an error writes nothing):
--   json                     the appended delete event (bulk string); msgs[message_id] becomes '!'..sender
--   -NOTFOUND no such channel
--   -NOTMEMBER ...           caller is not a member
--   -NOTFOUND no such message
--   -CONFLICT message already deleted
--   -FORBIDDEN not the sender

local sender, message_id, body, cid, topic = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end

local function append(ev_body, created_at)
  local seq = string.format('%d', redis.call('INCR', KEYS[3]))
  local json = '{"channel_id":"' .. cid .. '","seq":' .. seq .. ',' .. ev_body ..
               ',"created_at":' .. created_at .. '}'
  redis.call('XADD', KEYS[4], seq .. '-0', 'e', json)
  redis.call('SPUBLISH', topic, seq .. ' ' .. json)
  return json, seq
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOTFOUND no such channel')
end
if redis.call('SISMEMBER', KEYS[2], sender) == 0 then
  return redis.error_reply('NOTMEMBER not a member of this channel')
end
local owner = redis.call('HGET', KEYS[5], message_id)
if not owner then
  return redis.error_reply('NOTFOUND no such message')
end
if string.sub(owner, 1, 1) == '!' then
  return redis.error_reply('CONFLICT message already deleted')
end
if owner ~= sender then
  return redis.error_reply('FORBIDDEN not the sender')
end

local json = append(body, now_ms())
redis.call('HSET', KEYS[5], message_id, '!' .. sender)
return json
