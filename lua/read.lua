-- read.lua: advance a session's read marker in a channel; it never moves back.
--
-- KEYS[1] ch:{cid}:meta
-- KEYS[2] ch:{cid}:members
-- KEYS[3] ch:{cid}:seq
-- KEYS[4] ch:{cid}:reads     hash: "<user_id>/<session_id>" -> last_read_seq
-- ARGV[1] user_id
-- ARGV[2] session_id
-- ARGV[3] seq (non-negative decimal integer)
--
-- Replies (checks in this order; an error writes nothing):
--   integer                   the resulting last_read_seq = max(stored, seq)
--   -BADREQUEST bad seq       ARGV[3] is not a non-negative decimal integer
--   -NOTFOUND no such channel
--   -NOTMEMBER ...            user is not a member
--   -BADSEQ ...               seq is above the channel's last seq
-- Writes nothing and publishes nothing besides the HSET when the marker grows.

local user, session, arg = ARGV[1], ARGV[2], ARGV[3]

if arg == nil or not string.match(arg, '^%d+$') or #arg > 15 then
  return redis.error_reply('BADREQUEST bad seq')
end
local seq = tonumber(arg)

if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOTFOUND no such channel')
end
if redis.call('SISMEMBER', KEYS[2], user) == 0 then
  return redis.error_reply('NOTMEMBER not a member of this channel')
end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if seq > last then
  return redis.error_reply('BADSEQ seq ' .. arg .. ' is above last seq ' .. string.format('%d', last))
end

local field = user .. '/' .. session
local stored = tonumber(redis.call('HGET', KEYS[4], field) or '0')
if seq > stored then
  redis.call('HSET', KEYS[4], field, string.format('%d', seq))
  return seq
end
return stored
