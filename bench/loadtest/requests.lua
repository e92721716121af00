-- The request stream every target receives: GET /items/{id} with an `x-api-key` header that
-- rotates over CLIENTS distinct clients, each asking for at most 16 different ids (so the
-- guards' distinct-object limits never trigger and every answer comes from the upstream).
--
-- wrk -s requests.lua URL -- CLIENTS OFFSET THREADS [close]
--   CLIENTS  distinct x-api-key values (default 1000)
--   OFFSET   index of the first request, so a series of runs can walk through every client
--   THREADS  the -t given to wrk; each thread takes every THREADS-th request of the stream
--   close    ask for `Connection: close`: every request on a new connection (over TLS, a new
--            full handshake: wrk does not resume sessions)
--
-- done() prints one JSON line, prefixed with "result:", that the driver reads.

local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  clients = tonumber(args[1] or "1000")
  offset = tonumber(args[2] or "0")
  step = tonumber(args[3] or "1")
  close = args[4] == "close"
  counter = 0
end

function request()
  local i = offset + counter * step + id
  counter = counter + 1
  local client = i % clients
  local item = math.floor(i / clients) % 16
  local headers = { ["x-api-key"] = "client-" .. client }
  if close then
    headers["Connection"] = "close"
  end
  return wrk.format("GET", "/items/" .. item, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'result:{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d,"p99.9":%d,"max":%d}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
