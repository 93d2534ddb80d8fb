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

local json = append(cid, topic, body, now_ms())
redis.call('HSET', KEYS[5], message_id, '!' .. sender)
return json
