-- wrk script: POST a typical contact form to /f/default, asking for JSON.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
wrk.headers["Origin"] = "https://www.example.com"
local body = "name=Ada+Lovelace&email=ada%40example.net&subject=Benchmark&" ..
  "message=Hello%2C+this+is+a+benchmark+message+with+a+few+lines.%0D%0A" ..
  "It+has+more+than+one+line%2C+and+some+%3Cb%3Emarkup%3C%2Fb%3E+to+escape.&" ..
  "_gotcha="

-- Every post says something different (an order number per run, thread and
-- request), so Formpost's content dedupe stores each one, as real traffic.
-- The run's id is the script's argument: wrk ... -s post.lua URL -- RUN_ID
local threads = 0
function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

local run_id = ""
function init(args)
  run_id = args[1] or ""
end

local sent = 0
function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, body .. "&order=" .. run_id .. "-" ..
    tostring(thread_id) .. "-" .. tostring(sent))
end

-- wrk counts answers of 400 and above in errors.status: a refused run fails.
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, " ..
    "\"errors\": %d, \"non2xx\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status, summary.errors.status))
end
