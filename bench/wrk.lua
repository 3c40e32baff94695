-- make bench's requests for wrk (bench/wrk.py runs it):
--   `wrk -s bench/wrk.lua URL -- MODE RUN TOKEN RATE THREADS [SOURCE]`.
--   MODE    charge: POST /api/v1/charges, each with a unique Idempotency-Key (RUN-thread-number)
--           get:    GET of wrk's URL path with the Authorization header (a charge, /health/live)
--   RATE    0: closed loop (each connection sends its next request when the answer comes);
--           N > 0: open loop, N requests per second in all, on a schedule (see delay()).
--   SOURCE  the charges' card token (default tok_visa; tok_timeout hangs at the fake provider).
-- done() prints one line "WRK_JSON {...}": requests, duration, latency percentiles (µs),
-- wrk's own errors, the count per HTTP status, and for an open loop the late sends; the count
-- per error code of the answers >= 400 (the body's first "code") and, per code, how long after
-- the start its first answer came (ms, the earliest over the threads).

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local timespec = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  thread:set("thread_number", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode, run, token = args[1], args[2], args[3]
  local rate = tonumber(args[4] or "0")
  local thread_count = tonumber(args[5] or "1")
  local source = args[6] or "tok_visa"
  body = '{"amount": 1999, "currency": "USD", "source": "' .. source .. '", "description": "bench"}'
  counter = 0
  statuses = {}
  codes, first_code_ms = {}, {}
  started_ms = now_ms()
  late, late_max_ms = 0, 0
  headers = { ["Authorization"] = "Token " .. token }
  if mode == "charge" then
    headers["Content-Type"] = "application/json"
  end
  if rate > 0 then
    -- Open loop: this thread's share of the rate, slots spaced `interval` apart, the threads'
    -- slots interleaved. A connection that is free asks delay() for the next slot and waits
    -- for it; a slot that has already passed when claimed is a late send (every connection
    -- was busy): its count and worst lateness are reported, so that a run with no late sends
    -- has percentiles free of coordinated omission.
    local interval = 1000 * thread_count / rate
    local next_slot = nil
    delay = function()
      local now = now_ms()
      if next_slot == nil then
        next_slot = now + 50 + thread_number * interval / thread_count
      end
      local slot = next_slot
      next_slot = next_slot + interval
      if slot < now - 2 then
        late = late + 1
        late_max_ms = math.max(late_max_ms, now - slot)
      end
      return math.max(0, math.floor(slot - now + 0.5))
    end
  end
end

function request()
  if mode == "charge" then
    counter = counter + 1
    headers["Idempotency-Key"] = run .. "-" .. thread_number .. "-" .. counter
    return wrk.format("POST", "/api/v1/charges", headers, body)
  end
  return wrk.format("GET", nil, headers, nil)
end

function response(status, response_headers, response_body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 400 then
    local code = string.match(response_body or "", '"code"%s*:%s*"([%w_]+)"') or "none"
    codes[code] = (codes[code] or 0) + 1
    if first_code_ms[code] == nil then
      first_code_ms[code] = now_ms() - started_ms
    end
  end
end

local function json_object(entries)
  local parts = {}
  for key, value in pairs(entries) do
    table.insert(parts, string.format('"%s": %s', tostring(key), tostring(value)))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local by_status, late_sends, worst_late_ms = {}, 0, 0
  local by_code, first_ms = {}, {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
    for code, count in pairs(thread:get("codes")) do
      by_code[code] = (by_code[code] or 0) + count
    end
    for code, ms in pairs(thread:get("first_code_ms")) do
      first_ms[code] = math.min(first_ms[code] or ms, ms)
    end
    late_sends = late_sends + thread:get("late")
    worst_late_ms = math.max(worst_late_ms, thread:get("late_max_ms"))
  end
  local errors = summary.errors
  io.write("WRK_JSON ", json_object({
    requests = summary.requests,
    duration_us = summary.duration,
    p50_us = latency:percentile(50),
    p90_us = latency:percentile(90),
    p99_us = latency:percentile(99),
    max_us = latency.max,
    mean_us = latency.mean,
    connect_errors = errors.connect,
    read_errors = errors.read,
    write_errors = errors.write,
    timeouts = errors.timeout,
    late_sends = late_sends,
    late_max_ms = worst_late_ms,
    statuses = json_object(by_status),
    codes = json_object(by_code),
    first_code_ms = json_object(first_ms),
  }), "\n")
end
