-- members_add.lua: add users to a group; one member_joined per user not yet a member.
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:log
-- ARGV[1] actor (the caller)
-- ARGV[2] channel_id
-- ARGV[3] topic, ch:{cid}:live
-- ARGV[4] max members (the group limit; empty = 100000; not a number >= 0: -BADREQUEST bad max members)
-- ARGV[5..] user ids to add (duplicates in the list count once)
--
-- Replies (checks in this order, after the max argument; an error writes nothing):
--   array of the new events' JSON, in ARGV order ({"type":"member_joined","user_id":<u>,
--   "sender_id":<actor>}); empty when every user was already a member (idempotent)
--   -NOTFOUND no such channel
--   -BADREQUEST cannot add members to a dm
--   -NOTMEMBER ...            actor is not a member
--   -TOOMANY member limit     members after adding would exceed max

local actor, cid, topic = ARGV[1], ARGV[2], ARGV[3]

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

local max = 100000
if ARGV[4] ~= nil and ARGV[4] ~= '' then
  max = tonumber(ARGV[4])
  if max == nil or max < 0 then
    return redis.error_reply('BADREQUEST bad max members')
  end
end

local ctype = redis.call('HGET', KEYS[1], 'type')
if not ctype then
  return redis.error_reply('NOTFOUND no such channel')
end
if ctype == 'dm' then
  return redis.error_reply('BADREQUEST cannot add members to a dm')
end
if redis.call('SISMEMBER', KEYS[2], actor) == 0 then
  return redis.error_reply('NOTMEMBER not a member of this channel')
end

-- The users not yet members, distinct, in ARGV order.
local new, seen = {}, {}
for i = 5, #ARGV do
  local u = ARGV[i]
  if not seen[u] then
    seen[u] = true
    if redis.call('SISMEMBER', KEYS[2], u) == 0 then
      new[#new + 1] = u
    end
  end
end

if #new > 0 and redis.call('SCARD', KEYS[2]) + #new > max then
  return redis.error_reply('TOOMANY member limit')
end

local out = {}
if #new > 0 then
  local now = now_ms()
  for _, u in ipairs(new) do
    redis.call('SADD', KEYS[2], u)
    out[#out + 1] = append('"type":"member_joined","user_id":"' .. u .. '","sender_id":"' .. actor .. '"', now)
  end
end
return out
