-- change.lua: log an edit or a deletion of an existing message; only its sender may, and a
-- deleted message takes neither.
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:log
-- KEYS[5] ch:{cid}:msgs
-- ARGV[1] sender_id (the caller)
-- ARGV[2] message_id (the edited or deleted message's)
-- ARGV[3] BODY: escaped JSON fragment without braces, e.g.
--         "type":"edit","message_id":"01J..","sender_id":"alice","text":"new text"
--         "type":"delete","message_id":"01J..","sender_id":"alice"
-- ARGV[4] channel_id
-- ARGV[5] topic, ch:{cid}:live
-- ARGV[6] 'edit' or 'delete'; a delete also marks the message '!'..sender in msgs
--
-- Replies (checks in this order; an error writes nothing):
--   json                     the appended edit or delete event (bulk string)
--   -BADREQUEST bad kind     ARGV[6] is neither
--   -NOTFOUND no such channel
--   -NOTMEMBER ...           caller is not a member
--   -NOTFOUND no such message
--   -CONFLICT message deleted
--   -FORBIDDEN not the sender

local sender, message_id, body, cid, topic, kind = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if kind ~= 'edit' and kind ~= 'delete' then
  return redis.error_reply('BADREQUEST bad kind')
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
  return redis.error_reply('CONFLICT message deleted')
end
if owner ~= sender then
  return redis.error_reply('FORBIDDEN not the sender')
end

local json = append(cid, topic, body, now_ms())
if kind == 'delete' then
  redis.call('HSET', KEYS[5], message_id, '!' .. sender)
end
return json
