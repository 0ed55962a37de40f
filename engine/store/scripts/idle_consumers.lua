-- Forget the delivery consumers of replicas long gone: those idle for ARGV[2] ms that hold no
-- pending entry (checked here, in the same step: deleting a consumer drops its pending list).
-- A live consumer removed by mistake is re-created by its next read. Returns how many went.
-- KEYS: stream. ARGV: group, idle_ms.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers.err then return 0 end  -- no such group
local dropped = 0
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    dropped = dropped + 1
  end
end
return dropped
