-- log_page.lua: with --redis-wait, a page of a channel's log that replicas are known to hold.
--
-- KEYS[1] ch:{cid}:log
-- KEYS[2] ch:{cid}:meta      field replicated_seq (commit.lua)
-- ARGV[1] first seq of the page (decimal)
-- ARGV[2] most entries (decimal)
--
-- Reply: XRANGE's, entries <first>-0 up to replicated_seq; up to the log's end when the field
-- is absent (a channel that has had no event since the relay started waiting for replicas).
-- Writes nothing.

local stop = '+'
local replicated = redis.call('HGET', KEYS[2], 'replicated_seq')
if replicated then
  stop = replicated .. '-0'
end
return redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', stop, 'COUNT', ARGV[2])
