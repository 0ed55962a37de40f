-- Put a dead letter back on a stream, once: the XDEL that succeeds is the one redrive.
-- KEYS: dead letters, destination stream (one hash slot). ARGV: dead letter entry id, message.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
  return 1
end
return 0
