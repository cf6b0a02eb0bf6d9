-- wrk script for bench/run: the request comes from the environment, the summary goes out as one JSON line.
--
--   BENCH_METHOD     GET or POST (default GET)
--   BENCH_BODY_FILE  a file whose bytes are the body of every request (optional)
--   BENCH_HEADERS    "Name: value" lines, separated by newlines (optional)
--   BENCH_KEY_HEADER a header given a value of its own on every request, e.g. Idempotency-Key (optional)
--   BENCH_KEY_PREFIX what those values start with, unique to the run; then the thread and request numbers
--   BENCH_HOSTS      "HOST:PORT,HOST:PORT...": several servers, wrk's threads dealt out to them in turn
--                    (each thread keeps its connections on its server); unset: the URL's server only
--
-- wrk loads this file once per thread and once more for `done`, so every state sets the request itself.

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
end

for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
  if name then
    wrk.headers[name] = value
  end
end

-- Numbered threads, for keys unique across them: setup runs in the main state, each thread gets its `id`.
-- With BENCH_HOSTS, thread n connects to the ((n - 1) mod hosts + 1)th server instead of the URL's.
local threads_made = 0
local addrs = nil
function setup(thread)
  threads_made = threads_made + 1
  thread:set("id", threads_made)
  local hosts = os.getenv("BENCH_HOSTS")
  if hosts and hosts ~= "" then
    if not addrs then
      addrs = {}
      for host, port in string.gmatch(hosts, "([^,]+):(%d+)") do
        local found = wrk.lookup(host, port)
        assert(found and #found > 0, "BENCH_HOSTS: cannot resolve " .. host .. ":" .. port)
        table.insert(addrs, found[1])
      end
    end
    thread.addr = addrs[(threads_made - 1) % #addrs + 1]
  end
end

local key_header = os.getenv("BENCH_KEY_HEADER")
if key_header and key_header ~= "" then
  local prefix = os.getenv("BENCH_KEY_PREFIX") or "bench"
  local made = 0
  function request()
    made = made + 1
    wrk.headers[key_header] = string.format("%s-%s-%d", prefix, tostring(id), made)
    return wrk.format()
  end
end

-- wrk counts a status above 399 in errors.status ("Non-2xx or 3xx responses").
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
