-- Pass-through load: plain GET, no per-response Lua (keeps wrk's own cost low).
-- done() prints one JSON line prefixed with BENCH_JSON for bench/harness/loadgen.py.
-- Optional env BENCH_PATH overrides the path of the URL given to wrk.
local path = os.getenv("BENCH_PATH")
if path and path ~= "" then
  wrk.path = path
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
