-- Move an outbox entry to the dead letters in one step: ack and delete it, keep it for people,
-- and queue its failover (a person's next contact method) when there is one.
-- KEYS: outbox, dead letters[, failover stream] (one hash slot).
-- ARGV: group, entry_id, message, reason, at_ms, channel[, failover message]. Returns its id.
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'm', ARGV[3], 'reason', ARGV[4], 'at_ms', ARGV[5],
  'channel', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if KEYS[3] then redis.call('XADD', KEYS[3], '*', 'm', ARGV[7]) end
return id
