-- wrk script for bench.embedded_ingest's "wrk" phase: each request posts the next line of
-- this thread's body file (one JSON array of one event per line, ids unique), with a bearer
-- token. Arguments after `--`: the bodies' folder and the token.
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  bodies = {}
  local f = assert(io.open(args[1] .. "/events-" .. id .. ".ndjson", "r"))
  for line in f:lines() do bodies[#bodies + 1] = line end
  f:close()
  sent = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[2]
end

function request()
  sent = sent % #bodies + 1
  return wrk.format(nil, "/v1/events", nil, bodies[sent])
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. " " .. body:sub(1, 200) .. "\n")
  end
end
