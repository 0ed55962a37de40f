-- The duplicate fast path: a webhook's alerts for one incident key, when every one is a repeat
-- of what the key's open incident holds, counted in one step without reading the incident out.
-- KEYS: pointer. ARGV: per alert, four values: its field (`f:<fingerprint>`), status (firing or
-- resolved), startsAt ms, endsAt ms ('' when none).
-- Returns the incident's id after counting the repeats; false, having written nothing, when
-- any alert is not a repeat or the incident is not open (the caller then decides it in full).
-- "A repeat" is escalation._is_duplicate's rule; tests/integration/test_repeat_fast_path.py
-- holds the two to the same answers.
local id = redis.call('GET', KEYS[1])
if not id then return false end
local inc = string.match(KEYS[1], '^(.*):key:') .. ':inc:' .. id
local data = redis.call('HGET', inc, 'd')
if not data then return false end
local ok, record = pcall(cjson.decode, data)
-- a record of before per-alert fields holds its alerts inline: the full path rewrites it
if not ok or type(record) ~= 'table' or record.status == 'resolved' or record.alerts ~= nil then
  return false
end
local n = #ARGV / 4
for i = 0, n - 1 do
  local raw = redis.call('HGET', inc, ARGV[4 * i + 1])
  if not raw then return false end
  local good, known = pcall(cjson.decode, raw)
  if not good or type(known) ~= 'table' or type(known.starts_at_ms) ~= 'number' then return false end
  if ARGV[4 * i + 2] == 'firing' then
    -- the same or an older occurrence
    if tonumber(ARGV[4 * i + 3]) > known.starts_at_ms then return false end
  elseif known.status ~= 'resolved' then
    -- a resolve that ended before the occurrence held began
    local ends = tonumber(ARGV[4 * i + 4])
    if ends == nil or ends >= known.starts_at_ms then return false end
  end
end
redis.call('HINCRBY', inc, 'n', n)
return id
