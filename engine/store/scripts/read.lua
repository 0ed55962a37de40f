-- Read the incident a key points at, with only the alerts a webhook names, in one round trip.
-- KEYS: pointer. The incident hash shares the pointer's hash tag (so its slot); its name is
-- derived here because it depends on the pointer's value. ARGV: alert fields (`f:<fingerprint>`).
-- Returns {id, version, record, duplicates, alert...} (false where absent) or {}.
local id = redis.call('GET', KEYS[1])
if not id then return {} end
local inc = string.match(KEYS[1], '^(.*):key:') .. ':inc:' .. id
local row = redis.call('HMGET', inc, 'v', 'd', 'n')
local out = {id, row[1] or false, row[2] or false, row[3] or false}
-- in chunks: Lua's unpack() refuses a few thousand values at once
for first = 1, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local got = redis.call('HMGET', inc, unpack(ARGV, first, last))
  for i = 1, last - first + 1 do out[#out + 1] = got[i] or false end
end
return out
