-- Move an outbox entry to the dead letters in one step: ack and delete it, keep it for people.
-- KEYS: outbox, dead letters (one hash slot). ARGV: group, entry_id, message, reason, at_ms.
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'm', ARGV[3], 'reason', ARGV[4], 'at_ms', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
