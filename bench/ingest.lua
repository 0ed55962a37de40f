-- wrk script for bench/ingest.py: POSTs Alertmanager webhooks built from body templates.
-- Each request is either a NEW group (fresh groupKey and fingerprints) with probability
-- BENCH_NEW_SHARE, or a byte-identical repeat of a group this thread already sent (what
-- Alertmanager does every group_interval). Environment:
--   BENCH_TEMPLATE   one body template per line, with @G@ (the group) and @F0@ @F1@ ... (one
--                    fingerprint per alert); group n is sent with line (n mod lines) + 1
--   BENCH_RUN        integer < 2^24, unique per wrk run, so "new" groups are new to the engine
--   BENCH_NEW_SHARE  0..1 (1 = every request opens new incidents)
-- done() prints one line: BENCH {json}.

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- split a template once at its placeholders: concatenating is much cheaper for wrk than gsub
local function parse(template)
  local t = {parts = {}, names = {}}
  local pos = 1
  while true do
    local s, e, name = template:find("@([GF]%d*)@", pos)
    if not s then break end
    t.parts[#t.parts + 1] = template:sub(pos, s - 1)
    t.names[#t.names + 1] = name
    pos = e + 1
  end
  t.tail = template:sub(pos)
  return t
end

function init(args)
  templates = {}
  for line in io.lines(os.getenv("BENCH_TEMPLATE")) do
    if #line > 0 then templates[#templates + 1] = parse(line) end
  end
  run = tonumber(os.getenv("BENCH_RUN"))
  new_share = tonumber(os.getenv("BENCH_NEW_SHARE"))
  math.randomseed(run * 64 + tid)
  created = 0 -- groups sent by this thread: 0 .. created-1
  news = 0
  repeats = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function value(name, n)
  if name == "G" then
    return string.format("%06x-%x-%x", run, tid, n)
  end
  -- 16 lowercase hex digits, as the payload schema requires: run(6) tid(1) alert(2) group(7)
  return string.format("%06x%x%02x%07x", run, tid % 16, tonumber(name:sub(2)), n % 268435456)
end

local function body(n)
  local t = templates[(n % #templates) + 1]
  local out = {}
  for k = 1, #t.parts do
    out[#out + 1] = t.parts[k]
    out[#out + 1] = value(t.names[k], n)
  end
  out[#out + 1] = t.tail
  return table.concat(out)
end

function request()
  local n
  if created == 0 or math.random() < new_share then
    n = created
    created = created + 1
    news = news + 1
  else
    n = math.random(0, created - 1)
    repeats = repeats + 1
  end
  return wrk.format(nil, nil, nil, body(n))
end

function done(summary, latency, requests)
  local news_total, repeats_total = 0, 0
  for _, t in ipairs(threads) do
    news_total = news_total + t:get("news")
    repeats_total = repeats_total + t:get("repeats")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"generated":{"new":%d,"repeat":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    news_total, repeats_total))
end
