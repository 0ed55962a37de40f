-- One shard's due timers, each with its incident's record, in one round trip: a storm's timers
-- are then decided as a batch instead of one read each.
-- KEYS: the shard's timers. The incident hashes share its hash tag (so its slot); their names
-- are derived here from the members. ARGV: now (epoch ms), limit.
-- Returns {member, due, version, record, repeats, ...}, each false where absent (a heartbeat's
-- timer, or an incident that is gone).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local prefix = string.match(KEYS[1], '^(.*):timers$') .. ':inc:'
local out = {}
for i = 1, #due, 2 do
  local row = redis.call('HMGET', prefix .. due[i], 'v', 'd', 'n')
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = row[1] or false
  out[#out + 1] = row[2] or false
  out[#out + 1] = row[3] or false
end
return out
