-- wrk script: requests rotate through the paths listed one per line in the file named by $PATHS (or the URL's
-- own path when unset), with $AUTH as the Authorization header when set; at the end one JSON line reports throughput, latency percentiles and errors.
local paths = {}
local file = os.getenv("PATHS")
if file then
  for line in io.lines(file) do paths[#paths + 1] = line end
end
-- $AUTH, when set, is sent as the Authorization header of every request (the API's key check is measured too).
local auth = os.getenv("AUTH")
if auth then wrk.headers["Authorization"] = auth end
local i = 0
request = function()
  if #paths == 0 then return wrk.format("GET") end
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
