-- Read the incident a key points at, with only the alerts a webhook names, in one round trip.
-- KEYS: pointer. The incident hash shares the pointer's hash tag (so its slot); its name is
-- derived here because it depends on the pointer's value. ARGV: alert fields (`f:<fingerprint>`).
-- Returns {id, version, record, duplicates, alert..., [field, alert]} (false where absent) or {}.
-- The optional last pair: an incident of one alert comes with it, named or not, so that the
-- labels shared by it and the next to join are known (Incident.common is kept from the second).
local id = redis.call('GET', KEYS[1])
if not id then return {} end
local inc = string.match(KEYS[1], '^(.*):key:') .. ':inc:' .. id
local row = redis.call('HMGET', inc, 'v', 'd', 'n', 'a')
local out = {id, row[1] or false, row[2] or false, row[3] or false}
-- in chunks: Lua's unpack() refuses a few thousand values at once
for first = 1, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local got = redis.call('HMGET', inc, unpack(ARGV, first, last))
  for i = 1, last - first + 1 do out[#out + 1] = got[i] or false end
end
local others = 0  -- the hash's fields that are not alerts: v, d, n and the archive's claim a
for i = 1, 4 do if row[i] then others = others + 1 end end
if row[2] and redis.call('HLEN', inc) == others + 1 then
  local page = redis.call('HSCAN', inc, '0', 'MATCH', 'f:*')
  if #page[2] == 2 then out[#out + 1] = page[2][1]; out[#out + 1] = page[2][2] end
end
return out
