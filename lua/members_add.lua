-- members_add.lua: add users to a group; one member_joined per user not yet a member.
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:log
-- KEYS[5] ch:{cid}:msgs      (for retention: a trimmed message's id is forgotten)
-- KEYS[6] ch:{cid}:membership (each new member's member_joined seq is noted)
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
--   -NOTMEMBER ...            actor is not a member
--   -BADREQUEST cannot add members to a dm
--   -TOOMANY a group has at most <max> members   members after adding would exceed max

local actor, cid, topic = ARGV[1], ARGV[2], ARGV[3]

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
-- Membership before the type: a DM's non-member must not learn that it exists.
if redis.call('SISMEMBER', KEYS[2], actor) == 0 then
  return redis.error_reply('NOTMEMBER not a member of this channel')
end
if ctype == 'dm' then
  return redis.error_reply('BADREQUEST cannot add members to a dm')
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
  return redis.error_reply('TOOMANY a group has at most ' .. max .. ' members')
end

local out = {}
if #new > 0 then
  local now = now_ms()
  for _, u in ipairs(new) do
    redis.call('SADD', KEYS[2], u)
    local json, seq = append(cid, topic, '"type":"member_joined","user_id":"' .. u .. '","sender_id":"' .. actor .. '"', now)
    note_membership(KEYS[6], u, 'j', seq)
    out[#out + 1] = json
  end
end
return out
