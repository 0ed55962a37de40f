-- Ack (and delete) a stream entry and put what follows from it on other streams and retry
-- sets, in one step: a dispatch split by channel, a retry parked, a failover queued.
-- Only the replica still holding the entry acts: if another claimed and finished it (this
-- one was slow, not dead), XACK finds nothing and nothing is queued twice. Returns 1 or 0.
-- KEYS: the source stream, then destinations (one hash slot).
-- ARGV: group, entry_id, then triples of key index (into KEYS), due_ms ('' = XADD), message.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
for i = 3, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  if ARGV[i + 1] == '' then
    redis.call('XADD', key, '*', 'm', ARGV[i + 2])
  else
    redis.call('ZADD', key, ARGV[i + 1], ARGV[i + 2])
  end
end
return 1
