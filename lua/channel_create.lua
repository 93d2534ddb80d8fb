-- channel_create.lua: create a channel and log one member_joined per initial member.
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:log
-- KEYS[5] ch:{cid}:msgs      (for retention: a trimmed message's id is forgotten)
-- KEYS[6] ch:{cid}:membership (each member's member_joined seq is noted)
-- ARGV[1] channel_id
-- ARGV[2] type: 'dm' or 'group'
-- ARGV[3] name (may be empty)
-- ARGV[4] creator user id
-- ARGV[5] topic, ch:{cid}:live
-- ARGV[6..] member user ids (the caller includes the creator and has de-duplicated;
--           a duplicate is still joined/logged only once)
--
-- Replies:
--   {1, n_events}   created; meta = type, name, creator, created_at (ms, from TIME);
--                   events seq 1..n, each {"type":"member_joined","user_id":<m>,"sender_id":<creator>}
--                   in ARGV order
--   {0}             a dm with this id already exists (idempotent; the caller reads it back)
--   -CONFLICT channel id taken    the id exists (a group, or a dm requested over a group id)
--   -BADREQUEST ...               bad type; a dm without exactly two distinct members;
--                                 the creator missing from the members

local cid, ctype, name, creator, topic = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

if ctype ~= 'dm' and ctype ~= 'group' then
  return redis.error_reply('BADREQUEST bad channel type')
end

local existing = redis.call('HGET', KEYS[1], 'type')
if existing then
  if ctype == 'dm' and existing == 'dm' then
    return {0}
  end
  return redis.error_reply('CONFLICT channel id taken')
end

-- Distinct members, in ARGV order.
local members, seen, has_creator = {}, {}, false
for i = 6, #ARGV do
  local m = ARGV[i]
  if not seen[m] then
    seen[m] = true
    members[#members + 1] = m
    if m == creator then has_creator = true end
  end
end
if not has_creator then
  return redis.error_reply('BADREQUEST creator must be a member')
end
if ctype == 'dm' and #members ~= 2 then
  return redis.error_reply('BADREQUEST a dm has exactly two distinct members')
end

local now = now_ms()
redis.call('HSET', KEYS[1], 'type', ctype, 'name', name, 'creator', creator, 'created_at', now)
for _, m in ipairs(members) do
  redis.call('SADD', KEYS[2], m)
  local _, seq = append(cid, topic, '"type":"member_joined","user_id":"' .. m .. '","sender_id":"' .. creator .. '"', now)
  note_membership(KEYS[6], m, 'j', seq)
end
return {1, #members}
