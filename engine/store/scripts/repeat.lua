-- The duplicate fast path: a webhook's alerts, key by key, counted where every alert of a key
-- repeats what the key's open incident holds, without reading the incident out.
-- KEYS: pointers (one slot on Cluster: the caller sends one key per call there).
-- ARGV: for each key, how many alerts it has; then, per alert in key order, four values: its
-- field (`f:<fingerprint>`), status (firing or resolved), startsAt ms, endsAt ms ('' if none).
-- Returns, per key, the incident's id after counting its repeats; or false, having written
-- nothing for that key, when any of its alerts is not a repeat or its incident is not open
-- (the caller then decides that key in full).
-- "A repeat" is escalation._is_duplicate's rule; tests/integration/test_repeat_fast_path.py
-- holds the two to the same answers.
local function repeats(pointer, first, n)
  local id = redis.call('GET', pointer)
  if not id then return false end
  local inc = string.match(pointer, '^(.*):key:') .. ':inc:' .. id
  local data = redis.call('HGET', inc, 'd')
  if not data then return false end
  local ok, record = pcall(cjson.decode, data)
  -- a record of before per-alert fields holds its alerts inline: the full path rewrites it
  if not ok or type(record) ~= 'table' or record.status == 'resolved' or record.alerts ~= nil then
    return false
  end
  for at = first, first + 4 * (n - 1), 4 do
    local raw = redis.call('HGET', inc, ARGV[at])
    if not raw then return false end
    local good, known = pcall(cjson.decode, raw)
    if not good or type(known) ~= 'table' or type(known.starts_at_ms) ~= 'number' then return false end
    if ARGV[at + 1] == 'firing' then
      -- the same or an older occurrence
      if tonumber(ARGV[at + 2]) > known.starts_at_ms then return false end
    elseif known.status ~= 'resolved' then
      -- a resolve that ended before the occurrence held began
      local ends = tonumber(ARGV[at + 3])
      if ends == nil or ends >= known.starts_at_ms then return false end
    end
  end
  redis.call('HINCRBY', inc, 'n', n)
  return id
end

local out = {}
local at = #KEYS + 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[i])
  out[i] = repeats(KEYS[i], at, n)
  at = at + 4 * n
end
return out
