-- wrk script for bench/ingest.py: POSTs the 3-alert Alertmanager fixture.
-- Each request is either a NEW group (fresh groupKey and fingerprints) with probability
-- BENCH_NEW_SHARE, or a byte-identical repeat of a group this thread already sent (what
-- Alertmanager does every group_interval). Environment:
--   BENCH_TEMPLATE   body with @G@ (groupKey tag) and @F0@ @F1@ @F2@ (fingerprints)
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

function init(args)
  local f = assert(io.open(os.getenv("BENCH_TEMPLATE"), "r"))
  local template = f:read("*a")
  f:close()
  -- split once at the placeholders: concatenating is much cheaper for wrk than gsub per request
  parts, names = {}, {}
  local pos = 1
  while true do
    local s, e, name = template:find("@([GF]%d?)@", pos)
    if not s then break end
    parts[#parts + 1] = template:sub(pos, s - 1)
    names[#names + 1] = name
    pos = e + 1
  end
  tail = template:sub(pos)
  run = tonumber(os.getenv("BENCH_RUN"))
  new_share = tonumber(os.getenv("BENCH_NEW_SHARE"))
  math.randomseed(run * 64 + tid)
  created = 0 -- groups sent by this thread: 0 .. created-1
  news = 0
  repeats = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local function body(n)
  local values = {G = string.format("%06x-%x-%x", run, tid, n)}
  for i = 0, 2 do
    -- 16 lowercase hex digits, as the payload schema requires: run(6) tid(1) alert(1) group(8)
    values["F" .. i] = string.format("%06x%x%x%08x", run, tid % 16, i, n)
  end
  local out = {}
  for k = 1, #parts do
    out[#out + 1] = parts[k]
    out[#out + 1] = values[names[k]]
  end
  out[#out + 1] = tail
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
