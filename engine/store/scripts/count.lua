-- Count repeats of alerts an incident already has: a counter beside the record, so a
-- duplicate-only webhook neither rewrites the incident nor bumps its version (no conflicts).
-- KEYS: incident. ARGV: n. An incident that is gone is not recreated.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])
return 1
