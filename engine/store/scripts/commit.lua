-- Commit one decision atomically: incident + timeline + timer + outbox + indexes,
-- only if the incident's version (and, when opening, the key's pointer) is what was read.
-- KEYS: incident, timeline, pointer, timers, outbox, index, counts, urgent outbox (one hash slot)
-- ARGV: expected_version, expected_pointer, id, json, timer_ms, created_ms,
--       old_count_field, new_count_field, retention_ms, duplicates, n_notes, notes..., n_out, out...,
--       n_alerts, (alert field, alert state)... -- only the alerts this decision changed
local expected = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if current ~= expected then return 0 end
if ARGV[2] ~= '' then
  local ptr = redis.call('GET', KEYS[3]) or '-'
  if ptr ~= ARGV[2] then return -1 end
  redis.call('SET', KEYS[3], ARGV[3])
end
redis.call('HSET', KEYS[1], 'v', expected + 1, 'd', ARGV[4])
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[4], ARGV[3])
else
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
end
if expected == 0 then redis.call('ZADD', KEYS[6], ARGV[6], ARGV[3]) end
if ARGV[7] ~= ARGV[8] then
  if ARGV[7] ~= '' then redis.call('HINCRBY', KEYS[7], ARGV[7], -1) end
  if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[7], ARGV[8], 1) end
end
if tonumber(ARGV[10]) > 0 then redis.call('HINCRBY', KEYS[1], 'n', ARGV[10]) end
local i = 11
local n = tonumber(ARGV[i])
for j = 1, n do redis.call('RPUSH', KEYS[2], ARGV[i + j]) end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do
  -- a message marked urgent (compact JSON, keys sorted) rides the outbox's urgent lane
  local lane = KEYS[5]
  if KEYS[8] and string.find(ARGV[i + j], '"urgent":true', 1, true) then lane = KEYS[8] end
  redis.call('XADD', lane, '*', 'm', ARGV[i + j])
end
i = i + n + 1
n = tonumber(ARGV[i])
for first = i + 1, i + 2 * n, 1000 do  -- in chunks: unpack() refuses a few thousand values
  redis.call('HSET', KEYS[1], unpack(ARGV, first, math.min(first + 999, i + 2 * n)))
end
local retention = tonumber(ARGV[9])
if ARGV[8] == '' and retention > 0 then
  -- resolved: keep it (and its key pointer, for late duplicates) for the retention period
  redis.call('PEXPIRE', KEYS[1], retention)
  redis.call('PEXPIRE', KEYS[2], retention)
  if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('PEXPIRE', KEYS[3], retention) end
end
return 1
