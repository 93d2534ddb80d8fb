-- commit.lua: with --redis-wait, publish events whose replicas hold them, and record that.
--
-- KEYS[1] ch:{cid}:meta      hash; field replicated_seq: the highest seq known held by replicas
-- ARGV[1] ch:{cid}:live      the channel's shard Pub/Sub topic
-- ARGV[2..] payloads         "<seq> <event json>", as the appending script kept them
--
-- Reply: integer, replicated_seq after the call (0 for no channel).
--
-- Runs without the prelude, after WAIT answered that the replicas hold the write that made the
-- payloads. Replication keeps the primary's order, so they hold every earlier write too:
-- replicated_seq moves up to the highest seq given, never down. Readers of the log (a socket's
-- gap fill and resume, history) stop there, so none reads an event that a failover could still
-- lose and whose seq the promoted replica would give to another. The field is written after
-- the events, so a replica that has it has the events below it. A channel that does not exist
-- gets nothing (HSET would make its meta).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'replicated_seq') or '0')
local high = stored
for i = 2, #ARGV do
  redis.call('SPUBLISH', ARGV[1], ARGV[i])
  local seq = tonumber(string.match(ARGV[i], '^(%d+) '))
  if seq and seq > high then high = seq end
end
if high > stored then
  redis.call('HSET', KEYS[1], 'replicated_seq', string.format('%d', high))
end
return high
