-- members_remove.lua: remove a user from a group (leave, or removal by the creator).
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:log
-- KEYS[5] ch:{cid}:msgs      (for retention: a trimmed message's id is forgotten)
-- KEYS[6] ch:{cid}:membership (the member_left seq is noted)
-- ARGV[1] actor (the caller)
-- ARGV[2] channel_id
-- ARGV[3] topic, ch:{cid}:live
-- ARGV[4] user_id to remove
--
-- Who may: a member removes itself; the channel's creator (meta.creator) removes anyone while
-- a member itself (one who left acts on the channel no more than any other outsider).
--
-- Replies (checks in this order; an error writes nothing):
--   json                      the member_left event {"type":"member_left","user_id":<u>,"sender_id":<actor>}
--   -NOTFOUND no such channel
--   -NOTMEMBER ...            actor is not a member (the creator included)
--   -BADREQUEST a dm's members cannot leave it or be removed
--   -FORBIDDEN ...            actor is a member removing someone else, and not the creator
--   -NOTFOUND not a member    user_id is not a member

local actor, cid, topic, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local meta = redis.call('HMGET', KEYS[1], 'type', 'creator')
local ctype, creator = meta[1], meta[2]
if not ctype then
  return redis.error_reply('NOTFOUND no such channel')
end
-- Membership before the type: a DM's non-member must not learn that it exists.
local is_creator = (actor == creator)
if redis.call('SISMEMBER', KEYS[2], actor) == 0 then
  return redis.error_reply('NOTMEMBER not a member of this channel')
end
if ctype == 'dm' then
  return redis.error_reply("BADREQUEST a dm's members cannot leave it or be removed")
end
if actor ~= user and not is_creator then
  return redis.error_reply('FORBIDDEN only the creator may remove others')
end
if redis.call('SREM', KEYS[2], user) == 0 then
  return redis.error_reply('NOTFOUND not a member')
end

local json, seq = append(cid, topic, '"type":"member_left","user_id":"' .. user .. '","sender_id":"' .. actor .. '"', now_ms())
note_membership(KEYS[6], user, 'l', seq)
return json
