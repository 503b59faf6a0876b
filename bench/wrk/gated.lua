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

local mode = os.getenv("BENCH_MODE") or "first"
local token = os.getenv("BENCH_TOKEN") or ""
local prefix = os.getenv("BENCH_PREFIX") or "bench"
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")

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
  local st, parts, ex = {}, {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses") or {}) do
      st[k] = (st[k] or 0) + v
    end
    for _, p in ipairs(t:get("pairs_out") or {}) do
      table.insert(parts, '"' .. p .. '"')
    end
    ex = ex + (t:get("exhausted") or 0)
  end
  local sts = {}
  for k, v in pairs(st) do
    table.insert(sts, string.format('"%d":%d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"exhausted_threads":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d},' ..
    '"statuses":{%s},"pairs":[%s]}\n',
    summary.requests, summary.duration, ex,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max,
    table.concat(sts, ","), table.concat(parts, ",")))
end
