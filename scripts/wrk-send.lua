-- wrk script for `make bench`: POST /channels/{id}/messages with a fresh client_msg_id per request.
-- Environment: RELAY_TOKEN (a token of a member of the channel), RELAY_CHANNEL (the channel id).
local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  sent = 0
  wrk.method = "POST"
  wrk.path = "/channels/" .. os.getenv("RELAY_CHANNEL") .. "/messages"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("RELAY_TOKEN")
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  sent = sent + 1
  local body = string.format('{"client_msg_id":"wrk-%d-%d-%d","text":"hello from the benchmark"}',
    thread_id, sent, math.random(1, 1000000000))
  return wrk.format(nil, nil, nil, body)
end
