-- Move deliveries whose retry time has come back onto the outbox stream, atomically.
-- KEYS: pairs of (retries, outbox), each pair in one hash slot: one pair on a Cluster, every
-- shard's pair on a standalone Redis. ARGV: now_ms, limit per pair. Returns how many moved.
local moved = 0
for i = 1, #KEYS, 2 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  for _, m in ipairs(due) do
    redis.call('ZREM', KEYS[i], m)
    redis.call('XADD', KEYS[i + 1], '*', 'm', m)
  end
  moved = moved + #due
end
return moved
