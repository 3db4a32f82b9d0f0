-- wrk script of the PXE benchmark (bench/pxe/run.ts). It sends exactly COUNT GET requests,
-- request i to line (i mod N) of PATHS (N lines), split evenly over wrk's THREADS threads,
-- then stops each thread. It reports one JSON line on stdout, prefixed "bench-pxe-result ".
--
--   wrk -t THREADS -c CONNS -d LIMIT -s storm.lua URL -- PATHS COUNT THREADS
--
-- How it stays exact with wrk 4: a connection that finished a response asks delay() before
-- sending again; delay() lets it go at once while the thread still has requests to hand out and
-- parks it (an hour) after that, so no request beyond COUNT is ever sent. A thread stops itself
-- at its last response and prints "bench-pxe-thread-done"; wrk's main thread sleeps for the whole
-- -d LIMIT, so the harness sends it SIGINT once every thread is done (sleep returns early, done()
-- runs). wrk calls request() once on its first thread to check the request before any connection
-- exists: that call is answered without using up a path.
--
-- wrk's own duration is the -d LIMIT, not the run, so the run's wall time is measured here: from
-- the first request sent to the last response received, on CLOCK_MONOTONIC.

local ffi = require('ffi')
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_pxe_timespec;
int clock_gettime(int clock_id, bench_pxe_timespec *ts);
]])
local CLOCK_MONOTONIC = 1
local PARKED_MS = 3600 * 1000
local clock = ffi.new('bench_pxe_timespec')

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end

-- Setup phase (wrk's main Lua state): number the threads and keep them for done().
local threads = {}

function setup(thread)
  thread:set('bench_thread_id', #threads)
  threads[#threads + 1] = thread
end

-- Running phase (one Lua state per thread). Globals, so that done() can read them.
sent = 0
received = 0
non2xx = 0
statuses = {}
first_sent_us = 0
last_received_us = 0

local requests = {}
local quota = 0
local next_index = 0
local released = 0
local checking = false

function init(args)
  local file, count, nthreads = args[1], tonumber(args[2]), tonumber(args[3])
  for line in io.lines(file) do
    if line ~= '' then
      requests[#requests + 1] = wrk.format('GET', line)
    end
  end
  local id = bench_thread_id
  local first = math.floor(id * count / nthreads)
  quota = math.floor((id + 1) * count / nthreads) - first
  next_index = first
  checking = id == 0
end

function delay()
  if released < quota then
    released = released + 1
    return 0
  end
  return PARKED_MS
end

function request()
  if checking then
    checking = false
    return requests[1]
  end
  if sent == 0 then
    first_sent_us = now_us()
  end
  local i = next_index
  next_index = i + 1
  sent = sent + 1
  return requests[(i % #requests) + 1]
end

function response(status, headers, body)
  received = received + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  last_received_us = now_us()
  if received == quota then
    io.write('bench-pxe-thread-done\n')
    io.flush()
    wrk.thread:stop()
  end
end

-- Done phase (main Lua state again): one JSON line with everything the harness reports.
function done(summary, latency, _)
  local total = { sent = 0, received = 0, non2xx = 0 }
  local first, last = math.huge, 0
  local by_status = {}
  for _, thread in ipairs(threads) do
    total.sent = total.sent + thread:get('sent')
    total.received = total.received + thread:get('received')
    total.non2xx = total.non2xx + thread:get('non2xx')
    local t0, t1 = thread:get('first_sent_us'), thread:get('last_received_us')
    if t0 > 0 and t0 < first then
      first = t0
    end
    if t1 > last then
      last = t1
    end
    for code, n in pairs(thread:get('statuses')) do
      by_status[code] = (by_status[code] or 0) + n
    end
  end
  local codes = {}
  for code, n in pairs(by_status) do
    codes[#codes + 1] = string.format('"%s":%d', code, n)
  end
  local e = summary.errors
  local json = string.format(
    '{"threads":%d,"sent":%d,"received":%d,"non2xx":%d,"statuses":{%s},'
      .. '"wallUs":%.0f,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},'
      .. '"latencyUs":{"p50":%.0f,"p90":%.0f,"p99":%.0f,"p999":%.0f,"max":%.0f,"mean":%.1f}}',
    #threads,
    total.sent,
    total.received,
    total.non2xx,
    table.concat(codes, ','),
    (last > 0 and first < math.huge) and (last - first) or 0,
    e.connect,
    e.read,
    e.write,
    e.timeout,
    e.status,
    latency:percentile(50),
    latency:percentile(90),
    latency:percentile(99),
    latency:percentile(99.9),
    latency.max,
    latency.mean
  )
  io.write('bench-pxe-result ' .. json .. '\n')
end
