-- Ack (and delete) an outbox entry and park its retries in one step.
-- KEYS: outbox, retries (one hash slot). ARGV: group, entry_id, then pairs of due_ms, message.
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
for i = 3, #ARGV, 2 do redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
