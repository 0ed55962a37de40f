-- Claim a resolved incident for the archive, once across replicas: the claim is a field `a` on
-- the incident's hash, `token@until_ms`; a claim whose lease ran out (its archiver died) is taken
-- over. The claimed keys are kept alive at least two leases, so they outlive a slow write.
-- KEYS: incident, timeline, threads (one hash slot). ARGV: token, now_ms, lease_ms.
-- Returns {claim, version, record, duplicates, {timeline...}, {thread field, ref, ...},
-- {alert field, state, ...}} or false.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local now, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HGET', KEYS[1], 'a')
if held then
  local until_ms = tonumber(string.match(held, '@(%d+)$'))
  if until_ms and until_ms > now then return false end
end
local claim = ARGV[1] .. '@' .. (now + lease)
redis.call('HSET', KEYS[1], 'a', claim)
for _, key in ipairs(KEYS) do
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < 2 * lease then redis.call('PEXPIRE', key, 2 * lease) end
end
local row = redis.call('HMGET', KEYS[1], 'v', 'd', 'n')
local alerts = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  -- alert fields: keys.ALERT_FIELD (`f:<fingerprint>`)
  if string.sub(all[i], 1, 2) == 'f:' then alerts[#alerts + 1] = all[i]; alerts[#alerts + 1] = all[i + 1] end
end
return {claim, row[1] or '0', row[2] or '', row[3] or '0',
  redis.call('LRANGE', KEYS[2], 0, -1), redis.call('HGETALL', KEYS[3]), alerts}
