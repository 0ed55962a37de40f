-- Move deliveries whose retry time has come back onto the outbox stream, atomically.
-- KEYS: retries, outbox (one hash slot). ARGV: now_ms, limit. Returns how many moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('XADD', KEYS[2], '*', 'm', m)
end
return #due
