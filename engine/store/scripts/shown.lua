-- An incident's record with a few of its alerts, for a message: the work does not grow with the
-- incident (a fleet-wide outage's holds thousands). KEYS: the incident hash. ARGV: how many alerts
-- to return at most, and how many alert fields to look at at most. The firing ones seen come
-- first (AlertState.to_json writes {"status":"firing", exactly so, status first).
-- Returns {version, record, duplicates, field, value, ...}, or {} when the incident is gone.
local row = redis.call('HMGET', KEYS[1], 'v', 'd', 'n')
if not row[2] then return {} end
local want, budget = 2 * tonumber(ARGV[1]), tonumber(ARGV[2])  -- want: field and value each
local firing, other = {}, {}
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'MATCH', 'f:*', 'COUNT', 100)
  cursor = page[1]
  local kv = page[2]
  for i = 1, #kv, 2 do
    budget = budget - 1
    local into = string.sub(kv[i + 1], 1, 18) == '{"status":"firing"' and firing or other
    if #into < want then
      into[#into + 1] = kv[i]
      into[#into + 1] = kv[i + 1]
    end
  end
until cursor == '0' or budget <= 0 or #firing >= want
local out = {row[1] or false, row[2], row[3] or false}
for _, list in ipairs({firing, other}) do
  for i = 1, #list do
    if #out >= 3 + want then return out end
    out[#out + 1] = list[i]
  end
end
return out
