-- Move an outbox entry to the dead letters in one step: ack and delete it, keep it for people
-- (kept for the retention: they are the record of pages not delivered), and queue its failover (a
-- person's next contact method) when there is one. Only the replica still holding the entry
-- acts. Returns the dead letter's id, or false when another replica finished the entry.
-- KEYS: outbox, dead letters[, failover stream] (one hash slot).
-- ARGV: group, entry_id, message, reason, at_ms, channel[, failover message].
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
redis.call('XDEL', KEYS[1], ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[3], 'reason', ARGV[4], 'at_ms', ARGV[5],
  'channel', ARGV[6])
if KEYS[3] then redis.call('XADD', KEYS[3], '*', 'm', ARGV[7]) end
return id
