-- An archived incident is written out: remove it, its timeline, thread references, index entry
-- and (when it still names it) its key pointer, but only while our claim holds. A claim taken
-- over meanwhile (our lease ran out) means the other archiver writes it too: return 0.
-- KEYS: incident, timeline, threads, index[, pointer] (one hash slot). ARGV: claim, incident id.
if redis.call('HGET', KEYS[1], 'a') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
if KEYS[5] and redis.call('GET', KEYS[5]) == ARGV[2] then redis.call('DEL', KEYS[5]) end
return 1
