-- Append to an incident's timeline only while the incident exists: a late delivery outcome for
-- an incident that already expired must not leave a timeline behind with no expiry.
-- KEYS: incident, timeline. ARGV: entry.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('RPUSH', KEYS[2], ARGV[1])
