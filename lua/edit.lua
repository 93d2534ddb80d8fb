-- edit.lua: log a new text for an existing message; only its sender may edit.
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:log
-- KEYS[5] ch:{cid}:msgs
-- ARGV[1] sender_id (the caller)
-- ARGV[2] message_id (the edited message's)
-- ARGV[3] BODY: escaped JSON fragment without braces, e.g.
--         "type":"edit","message_id":"01J..","sender_id":"alice","text":"new text"
-- ARGV[4] channel_id
-- ARGV[5] topic, ch:{cid}:live
--
-- Replies (checks in this order; an error writes nothing):
--   json                     the appended edit event (bulk string)
--   -NOTFOUND no such channel
--   -NOTMEMBER ...           caller is not a member
--   -NOTFOUND no such message
--   -CONFLICT message deleted
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
  return redis.error_reply('CONFLICT message deleted')
end
if owner ~= sender then
  return redis.error_reply('FORBIDDEN not the sender')
end

local json = append(body, now_ms())
return json
