-- A heartbeat was seen: record when, and move its silence timer to the new deadline.
-- KEYS: heartbeats, timers (one hash slot). ARGV: rule, now_ms, due_ms, timer member.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
