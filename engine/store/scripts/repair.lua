-- Compare-and-repair for state left inconsistent by data lost outside the engine (eviction, DEL).
-- KEYS: timers, pointer. ARGV: incident_id, seen_due_ms, new_due_ms ('' = remove), pointer_value.
-- A timer still at the score we saw is moved (or removed); a pointer still naming the missing
-- incident is deleted. Anything another replica changed meanwhile is left alone.
if ARGV[2] ~= '' and redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  if ARGV[3] == '' then
    redis.call('ZREM', KEYS[1], ARGV[1])
  else
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  end
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('DEL', KEYS[2])
end
return 1
