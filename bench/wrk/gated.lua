-- Gated-path load for bench/harness/gated.py. Env:
--   BENCH_MODE   first | dedup | consume
--   BENCH_TOKEN  bearer token of a gated caller (never printed)
--   BENCH_PREFIX unique prefix of this run's workspace ids
--   BENCH_IDS    (consume) file of workspace ids with an approved approval, one a line
--   BENCH_THREADS number of wrk threads (to split the ids file between them)
-- first:   DELETE /workspaces/<prefix>-<thread>-<n>, a new identity each time -> 202 (new pending)
-- dedup:   DELETE /workspaces/<prefix>-dedup, the same identity each time -> 202 (same pending)
-- consume: DELETE /workspaces/<id> for each approved id once -> upstream's 200; a thread that
--          runs out of ids stops itself (reported as "exhausted").
-- done() prints BENCH_JSON with latency, status counts, and (first) the created scope/id pairs.
--
-- Latency: wrk's own percentiles (`lat_us`) are corrected for coordinated omission (wrk adds
-- synthetic samples for every answer slower than the mean interval between requests), so one
-- 70 ms stall at 1 connection adds ~100 samples to the tail. pgbench's per-transaction log is
-- not corrected. To compare like with like, `raw_us` holds the plain percentiles of the measured
-- answers, timed here with CLOCK_MONOTONIC from request() to response(). That pairing is only
-- exact with one connection per wrk thread, so raw_us is recorded only when BENCH_CONNS equals
-- BENCH_THREADS (the harness runs the gated path that way).

local mode = os.getenv("BENCH_MODE") or "first"
local token = os.getenv("BENCH_TOKEN") or ""
local prefix = os.getenv("BENCH_PREFIX") or "bench"
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local timed = tonumber(os.getenv("BENCH_CONNS") or "0") == nthreads

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local headers = { ["Authorization"] = "Bearer " .. token }
local n = 0
local ids = {}
statuses = {}
pairs_out = {}
exhausted = 0
samples = {}
local started = nil

function init(args)
  if mode == "consume" then
    local i = 0
    for line in io.lines(os.getenv("BENCH_IDS")) do
      if i % nthreads == tid then
        table.insert(ids, line)
      end
      i = i + 1
    end
  end
end

function request()
  n = n + 1
  started = timed and now_us() or nil
  local path
  if mode == "first" then
    path = string.format("/workspaces/%s-%d-%d", prefix, tid, n)
  elseif mode == "dedup" then
    path = "/workspaces/" .. prefix .. "-dedup"
  else
    if n > #ids then
      exhausted = 1
      path = "/healthz-exhausted"
    else
      path = "/workspaces/" .. ids[n]
    end
  end
  return wrk.format("DELETE", path, headers)
end

function response(status, hdrs, body)
  if started and exhausted == 0 then
    samples[#samples + 1] = now_us() - started
  end
  started = nil
  statuses[status] = (statuses[status] or 0) + 1
  if mode == "first" and status == 202 then
    local id = string.match(body, '"approval_id"%s*:%s*"([^"]+)"')
    local scope = string.match(body, '"scope"%s*:%s*"([^"]+)"')
    if id and scope then
      table.insert(pairs_out, scope .. " " .. id)
    end
  end
  if exhausted == 1 then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local st, parts, ex, all = {}, {}, 0, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses") or {}) do
      st[k] = (st[k] or 0) + v
    end
    for _, p in ipairs(t:get("pairs_out") or {}) do
      table.insert(parts, '"' .. p .. '"')
    end
    ex = ex + (t:get("exhausted") or 0)
    for _, v in ipairs(t:get("samples") or {}) do
      all[#all + 1] = v
    end
  end
  table.sort(all)
  -- Nearest rank, with p in thousandths so that 99.9 % stays integer arithmetic.
  local function pct(permille)
    if #all == 0 then return -1 end
    return math.floor(all[math.max(1, math.ceil(#all * permille / 1000))])
  end
  local raw = timed and #all > 0 and string.format(
    '{"n":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}',
    #all, pct(500), pct(900), pct(990), pct(999), pct(1000)) or "null"
  local sts = {}
  for k, v in pairs(st) do
    table.insert(sts, string.format('"%d":%d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"exhausted_threads":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},' ..
    '"raw_us":%s,"statuses":{%s},"pairs":[%s]}\n',
    summary.requests, summary.duration, ex,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    raw, table.concat(sts, ","), table.concat(parts, ",")))
end
