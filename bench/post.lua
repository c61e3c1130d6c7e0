-- wrk script: POST a typical contact form to /f/default, asking for JSON.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
wrk.headers["Origin"] = "https://www.example.com"
wrk.body = "name=Ada+Lovelace&email=ada%40example.net&subject=Benchmark&" ..
  "message=Hello%2C+this+is+a+benchmark+message+with+a+few+lines.%0D%0A" ..
  "It+has+more+than+one+line%2C+and+some+%3Cb%3Emarkup%3C%2Fb%3E+to+escape.&" ..
  "_gotcha="

-- wrk counts answers of 400 and above in errors.status: a refused run fails.
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, " ..
    "\"errors\": %d, \"non2xx\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status, summary.errors.status))
end
