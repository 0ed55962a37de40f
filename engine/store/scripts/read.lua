-- Read the incident a key points at, in one round trip.
-- KEYS: pointer. The incident hash shares the pointer's hash tag (so its slot); its name is
-- derived here because it depends on the pointer's value.
-- Returns {id, version, json, duplicates} or {}.
local id = redis.call('GET', KEYS[1])
if not id then return {} end
local tag = string.match(KEYS[1], '^(.*):key:')
local row = redis.call('HMGET', tag .. ':inc:' .. id, 'v', 'd', 'n')
return {id, row[1] or false, row[2] or false, row[3] or false}
