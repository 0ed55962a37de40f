-- A send succeeded: keep its thread reference (Slack ts, Telegram message id) and ack the entry
-- in one step, so a crash cannot leave a page posted but its reference lost (a redelivery would
-- then post a second page instead of editing the first).
-- KEYS: stream, threads hash (one hash slot). ARGV: group, entry_id, field, ref, retention_ms.
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
