-- Read keys for an export in one atomic step, so a shard is saved as one consistent state.
-- KEYS: keys of one hash slot. ARGV[1]: the shard's tag (`esc:{s3}`), or '' for lone keys: then
-- the incidents its index and timers name (hash, timeline, threads, key pointer) are read too,
-- even those opened after the caller listed the keys.
-- Returns {now_ms, rows}: Redis's time after the reads (an expiry is now_ms + pttl, at most
-- this step's duration late), and per key that exists {key, type, pttl, value}; value by type:
-- string, flat hash, list, flat zset with scores, set members, or a stream's {entries, groups}.
local order, seen = {}, {}
local function add(key)
  if not seen[key] then seen[key] = true; order[#order + 1] = key end
end
for _, key in ipairs(KEYS) do add(key) end
local tag = ARGV[1]
if tag ~= '' then
  local ids = redis.call('ZRANGE', tag .. ':index', 0, -1)
  for _, id in ipairs(redis.call('ZRANGE', tag .. ':timers', 0, -1)) do ids[#ids + 1] = id end
  for _, id in ipairs(ids) do
    local inc = tag .. ':inc:' .. id
    add(inc); add(tag .. ':tl:' .. id); add(tag .. ':th:' .. id)
    local d = redis.call('HGET', inc, 'd')
    if d then
      local ok, record = pcall(cjson.decode, d)
      if ok and type(record) == 'table' and type(record['key']) == 'string' then
        add(tag .. ':key:' .. string.sub(redis.sha1hex(record['key']), 1, 20))
      end
    end
  end
end
local out = {}
for _, key in ipairs(order) do
  local kind = redis.call('TYPE', key)['ok']
  local value
  if kind == 'string' then value = redis.call('GET', key)
  elseif kind == 'hash' then value = redis.call('HGETALL', key)
  elseif kind == 'list' then value = redis.call('LRANGE', key, 0, -1)
  elseif kind == 'zset' then value = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  elseif kind == 'set' then value = redis.call('SMEMBERS', key)
  elseif kind == 'stream' then
    local groups = {}
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      for i = 1, #g, 2 do if g[i] == 'name' then groups[#groups + 1] = g[i + 1] end end
    end
    value = {redis.call('XRANGE', key, '-', '+'), groups}
  end
  if value then out[#out + 1] = {key, kind, redis.call('PTTL', key), value} end
end
local t = redis.call('TIME')
return {tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)), out}
