-- wrk script of bench/redirect.py: cycles through the request paths listed in a file
-- (one per line) and counts the responses by status, so that the driver can compare
-- the 302s the load generator received with the clicks the database holds.
--
--   wrk ... -s bench/redirect.lua http://127.0.0.1:PORT/ -- PATHS_FILE [START_INDEX]
--
-- Latency at a steady rate is bench/paced.py's job (open loop, as wrk2 measures).
--
-- done() prints one line "BENCH {json}" for the driver; wrk's own report stays as it is.

local threads = {}

function setup(thread)
  thread:set("thread_number", #threads)
  table.insert(threads, thread)
end

local paths = {}
local index = 0

n302 = 0
n3xx = 0
n2xx = 0
n4xx = 0
n5xx = 0
nother = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  -- Start where the previous run (the warm-up) stopped: args[2]. Each wrk thread starts
  -- at its own place in the list, so they don't send the same pairs at the same moment.
  index = ((tonumber(args[2]) or 0) + (thread_number or 0) * 7919) % #paths
end

function request()
  index = index + 1
  if index > #paths then
    index = 1
  end
  return wrk.format(nil, paths[index])
end

function response(status, headers, body)
  if status == 302 then
    n302 = n302 + 1
  elseif status >= 300 and status < 400 then
    n3xx = n3xx + 1
  elseif status >= 200 and status < 300 then
    n2xx = n2xx + 1
  elseif status >= 400 and status < 500 then
    n4xx = n4xx + 1
  elseif status >= 500 and status < 600 then
    n5xx = n5xx + 1
  else
    nother = nother + 1
  end
end

function done(summary, latency, requests)
  local c = {n302 = 0, n3xx = 0, n2xx = 0, n4xx = 0, n5xx = 0, nother = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(c) do
      c[name] = c[name] + (thread:get(name) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "status_302": %d, "status_3xx_other": %d, '
      .. '"status_2xx": %d, "status_4xx": %d, "status_5xx": %d, "status_other": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, '
      .. '"mean_us": %.1f, "errors_connect": %d, "errors_read": %d, "errors_write": %d, '
      .. '"errors_timeout": %d, "errors_status": %d}\n',
    summary.requests, summary.duration, c.n302, c.n3xx, c.n2xx, c.n4xx, c.n5xx, c.nother,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status))
end
