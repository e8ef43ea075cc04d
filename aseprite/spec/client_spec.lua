local Client = require("client")
local base64 = require("base64")
local fakes = require("fakes")

local URL = "ws://127.0.0.1:5000/ws"

local function setup(opts)
  local env = { WebSocket = fakes.newWebSocketClass(), Timer = fakes.newTimerClass(), events = {} }
  local ids = 0
  local o = {
    url = URL, WebSocket = env.WebSocket, MessageType = fakes.WebSocketMessageType, Timer = env.Timer,
    json = fakes.json, onEvent = function(e) env.events[#env.events + 1] = e end,
    newId = function() ids = ids + 1; return "r" .. ids end,
    log = function(text) env.logged = text end,
  }
  for k, v in pairs(opts or {}) do o[k] = v end
  env.client = Client.new(o)
  return env
end

local function kinds(events, filter)
  local out = {}
  for _, e in ipairs(events) do
    if not filter or filter[e.kind] then out[#out + 1] = e.kind end
  end
  return out
end

local function lastOf(events, kind)
  for i = #events, 1, -1 do
    if events[i].kind == kind then return events[i] end
  end
end

local REQUEST_EVENTS = { submitted = true, accepted = true, progress = true, completed = true, failed = true, cancelled = true }

describe("client", function()
  it("queues a submit until OPEN, then sends it (sending earlier would raise)", function()
    local env = setup()
    local rid = env.client:submit({ prompt = "a knight" })
    assert.equals("r1", rid)
    local ws = env.WebSocket.last()
    assert.equals(URL, ws.url)
    assert.is_false(ws.deflate)
    assert.equals(1, ws.connectCalls)
    assert.equals(0, #ws.sent)
    assert.equals("connecting", env.client.state)
    assert.equals("queued", env.client:request(rid).state)
    assert.has_error(function() ws:sendText("x") end) -- the fake keeps the real quirk

    ws:serverOpen()
    assert.equals("ready", env.client.state)
    assert.same({ { type = "submit", requestId = "r1",
      job = { prompt = "a knight", idempotencyKey = "r1" } } }, ws:sentFrames())
    assert.equals("submitted", env.client:request(rid).state)
    assert.is_false(env.Timer.running())
  end)

  it("walks a request through accepted, progress and completed", function()
    local env = setup()
    local rid = env.client:submit({ prompt = "a knight" })
    local ws = env.WebSocket.last()
    ws:serverOpen()
    ws:serverSend({ type = "accepted", requestId = rid, id = "job-1" })
    assert.equals("accepted", env.client:request(rid).state)
    ws:serverSend({ type = "progress", id = "job-1", step = 5, totalSteps = 20 })
    local req = env.client:request(rid)
    assert.equals("progress", req.state)
    assert.equals(5, req.step)
    local pixels = string.rep("\1\2\3\4", 8 * 8)
    ws:serverSend({ type = "completed", id = "job-1", width = 8, height = 8, rgbaBase64 = base64.encode(pixels) })
    assert.equals("completed", req.state)
    assert.same({ "submitted", "accepted", "progress", "completed" }, kinds(env.events, REQUEST_EVENTS))
    local done = lastOf(env.events, "completed")
    assert.equals(pixels, done.rgba)
    assert.equals(8, done.width)
    assert.equals("integer", math.type(done.width))
    assert.equals("job-1", done.id)
    assert.is_nil(env.client:activeRequest())
  end)

  it("reports a failed job in plain words", function()
    local env = setup()
    local rid = env.client:submit({ prompt = "x", model = "tiny-sd", engine = "mlx" })
    local ws = env.WebSocket.last()
    ws:serverOpen()
    ws:serverSend({ type = "accepted", requestId = rid, id = "job-1" })
    ws:serverSend({ type = "failed", id = "job-1", code = "MODEL_NOT_CONVERTED", message = "no MLX weights" })
    local failed = lastOf(env.events, "failed")
    assert.equals("MODEL_NOT_CONVERTED", failed.code)
    assert.matches("convert it first: POST /models/tiny%-sd/conversions", failed.message)
    assert.matches("%(no MLX weights%)", failed.message)
    assert.equals("failed", env.client:request(rid).state)
  end)

  it("fails the request an error frame answers", function()
    local env = setup()
    local rid = env.client:submit({ prompt = "x" })
    local ws = env.WebSocket.last()
    ws:serverOpen()
    ws:serverSend({ type = "error", requestId = rid, code = "INVALID_REQUEST", message = "width must be <= 2048" })
    assert.equals("failed", env.client:request(rid).state)
    assert.matches("width must be", lastOf(env.events, "failed").message)

    -- without requestId, a lone submit awaiting `accepted` is the one answered
    local rid2 = env.client:submit({ prompt = "y" })
    ws:serverSend({ type = "error", code = "LORA_NOT_FOUND", message = "nope" })
    assert.equals("failed", env.client:request(rid2).state)
  end)

  it("cancels: before acceptance, after acceptance, and while still queued", function()
    local env = setup()
    -- queued, never sent: cancelled locally, nothing goes out
    local r1 = env.client:submit({ prompt = "a" })
    assert.is_true(env.client:cancel(r1))
    assert.equals("cancelled", env.client:request(r1).state)
    local ws = env.WebSocket.last()
    ws:serverOpen()
    assert.same({}, ws:sentFrames())

    -- submitted, not yet accepted: cancel goes out as soon as the id is known
    local r2 = env.client:submit({ prompt = "b" })
    env.client:cancel(r2)
    ws:serverSend({ type = "accepted", requestId = r2, id = "job-2" })
    assert.same({ type = "cancel", id = "job-2" }, ws:lastSent())
    assert.equals("accepted", env.client:request(r2).state) -- only the server's word finishes it
    ws:serverSend({ type = "cancelled", id = "job-2" })
    assert.equals("cancelled", env.client:request(r2).state)

    -- accepted: cancel sent at once
    local r3 = env.client:submit({ prompt = "c" })
    ws:serverSend({ type = "accepted", requestId = r3, id = "job-3" })
    env.client:cancel(r3)
    assert.same({ type = "cancel", id = "job-3" }, ws:lastSent())
    assert.is_false(env.client:cancel("unknown"))
  end)

  it("requests the engine list and reports it", function()
    local env = setup()
    env.client:requestEngines()
    local ws = env.WebSocket.last()
    ws:serverOpen()
    assert.same({ { type = "engines" } }, ws:sentFrames())
    ws:serverSend({ type = "engines", default = "torch", engines = { torch = { available = true, features = { lora = true } } } })
    local e = lastOf(env.events, "engines")
    assert.equals("torch", e.engines.default)
    assert.is_true(env.client.engines.engines.torch.features.lora)
  end)

  it("reconnects with backoff after the server closes, resubscribing and resubmitting", function()
    local env = setup()
    local accepted = env.client:submit({ prompt = "a" })
    local ws1 = env.WebSocket.last()
    ws1:serverOpen()
    ws1:serverSend({ type = "accepted", requestId = accepted, id = "job-1" })
    local pending = env.client:submit({ prompt = "b" }) -- sent, not yet accepted
    ws1:serverClose()

    assert.equals("waiting", env.client.state)
    assert.equals(1, ws1.closeCalls) -- stops IXWebSocket's own reconnect loop
    assert.is_true(env.Timer.running())
    env.Timer.advance(0.25)
    assert.equals(1, ws1.connectCalls) -- backoff not over yet
    env.Timer.advance(0.25)
    assert.equals(2, ws1.connectCalls) -- the same object connects again
    assert.equals("connecting", env.client.state)

    ws1:serverError("Connection refused") -- still restarting
    env.Timer.advance(0.5)
    assert.equals(2, ws1.connectCalls) -- second wait is longer (1 s)
    env.Timer.advance(0.5)
    assert.equals(3, ws1.connectCalls)
    assert.equals(1, #env.WebSocket.sockets)

    ws1.sent = {}
    ws1:serverOpen()
    assert.equals("ready", env.client.state)
    assert.same({
      { type = "subscribe", id = "job-1" },
      { type = "submit", requestId = pending, job = { prompt = "b", idempotencyKey = pending } },
    }, ws1:sentFrames())
    ws1:serverSend({ type = "progress", id = "job-1", step = 2, totalSteps = 4 })
    assert.equals("progress", env.client:request(accepted).state)
    assert.is_false(env.Timer.running())
  end)

  it("ignores an OPEN that arrives after it stopped the socket", function()
    local env = setup()
    env.client:submit({ prompt = "a" })
    local ws1 = env.WebSocket.last()
    ws1:serverError("Connection refused")
    ws1:serverOpen() -- a late callback from the stopped attempt
    assert.equals("waiting", env.client.state)
  end)

  it("gives a clear message, never a hang, when the server is down", function()
    local env = setup()
    local rid = env.client:submit({ prompt = "a" })
    -- every attempt is refused
    for _ = 1, 200 do
      local ws = env.WebSocket.last()
      if ws.status == "connecting" then ws:serverError() end
      if env.client.state == "offline" then break end
      env.Timer.advance(0.25)
    end
    assert.equals("offline", env.client.state)
    assert.is_true(env.Timer.clock <= 15.5, "gave up after " .. env.Timer.clock .. " s")
    local unreachable = lastOf(env.events, "unreachable")
    assert.equals("PixelAI server not reachable at ws://127.0.0.1:5000/ws — start it with `make start` "
      .. "(Unable to connect to 127.0.0.1 on port 5000, error: Connection refused)", unreachable.message)
    assert.equals("failed", env.client:request(rid).state)
    assert.equals("SERVER_UNREACHABLE", env.client:request(rid).code)
    assert.is_false(env.Timer.running())
    local ws = env.WebSocket.last()
    local count = ws.connectCalls
    env.Timer.advance(60)
    assert.equals(count, ws.connectCalls) -- no retries once offline

    -- the next submit starts over
    env.client:submit({ prompt = "again" })
    assert.equals(count + 1, ws.connectCalls)
    assert.equals("connecting", env.client.state)
  end)

  it("treats a connection attempt that never answers as failed", function()
    local env = setup({ connectTimeout = 2, giveUpAfter = 6 })
    env.client:requestEngines()
    env.Timer.advance(2)
    assert.equals("waiting", env.client.state) -- timed out, backing off
    env.Timer.advance(4)
    assert.equals("offline", env.client.state)
    assert.is_not_nil(lastOf(env.events, "unreachable"))
  end)

  it("fails accepted jobs with a lost-connection message after the bound", function()
    local env = setup({ giveUpAfter = 3 })
    local rid = env.client:submit({ prompt = "a" })
    local ws = env.WebSocket.last()
    ws:serverOpen()
    ws:serverSend({ type = "accepted", requestId = rid, id = "job-1" })
    ws:serverClose()
    env.Timer.advance(10)
    local req = env.client:request(rid)
    assert.equals("failed", req.state)
    assert.equals("CONNECTION_LOST", req.code)
  end)

  it("treats a failing sendText as a lost connection", function()
    local env = setup()
    env.client:requestEngines()
    local ws = env.WebSocket.last()
    ws:serverOpen()
    ws.status = "closed" -- dropped, CLOSE not delivered yet
    env.client:submit({ prompt = "a" })
    assert.equals("waiting", env.client.state)
  end)

  it("reports frames it cannot read without dropping the connection", function()
    local env = setup()
    env.client:requestEngines()
    local ws = env.WebSocket.last()
    ws:serverOpen()
    ws:serverSend("{garbage")
    assert.equals("BAD_FRAME", lastOf(env.events, "error").code)
    ws:serverSend({ type = "completed", id = "nobody", width = 1, height = 1, rgbaBase64 = "AAAAAA==" })
    assert.equals("ready", env.client.state)
  end)

  it("fails a completed frame whose pixels do not match", function()
    local env = setup()
    local rid = env.client:submit({ prompt = "a" })
    local ws = env.WebSocket.last()
    ws:serverOpen()
    ws:serverSend({ type = "accepted", requestId = rid, id = "j" })
    ws:serverSend({ type = "completed", id = "j", width = 2, height = 2, rgbaBase64 = base64.encode("short") })
    assert.equals("BAD_IMAGE", env.client:request(rid).code)
  end)

  it("keeps the socket alive when the UI handler raises", function()
    local env = setup()
    env.client.onEvent = function() error("UI bug") end
    env.client:requestEngines()
    local ws = env.WebSocket.last()
    ws:serverOpen()
    assert.equals("ready", env.client.state)
    assert.matches("UI bug", env.logged)
  end)

  it("fails at once when the socket cannot be created", function()
    local env = setup({ WebSocket = function() error("out of memory") end })
    local rid = env.client:submit({ prompt = "a" })
    assert.equals("offline", env.client.state)
    assert.equals("failed", env.client:request(rid).state)
    assert.matches("out of memory", lastOf(env.events, "unreachable").detail)
  end)

  it("reconnects on ONE WebSocket object: the server down costs at most one permission prompt", function()
    local env = setup()
    local security = env.WebSocket.security -- Allow pressed, "don't show again" not ticked
    env.client:submit({ prompt = "a" })
    for _ = 1, 200 do
      local ws = env.WebSocket.last()
      if ws.status == "connecting" then ws:serverError("Connection refused") end
      if env.client.state == "offline" then break end
      env.Timer.advance(0.25)
    end
    assert.equals("offline", env.client.state)
    assert.equals(1, security.prompts)
    assert.equals(1, #env.WebSocket.sockets)
    assert.is_true(env.WebSocket.last().connectCalls >= 4, "retried on the same object")
    -- the next submit starts over, still on the same object: no new prompt
    env.client:submit({ prompt = "again" })
    assert.equals("connecting", env.client.state)
    assert.equals(1, security.prompts)
  end)

  it("keeps at most one permission prompt in flight", function()
    local env = setup()
    local security = env.WebSocket.security
    -- while the modal prompt is open, the UI loop still runs timers and the
    -- artist's earlier clicks: none of them may open a second prompt
    security.duringPrompt = function()
      env.client:submit({ prompt = "second click" })
      env.client:requestEngines()
      env.Timer.advance(30)
    end
    env.client:submit({ prompt = "a" })
    assert.equals(1, security.prompts)
    assert.equals(1, security.maxDepth)
    assert.equals("connecting", env.client.state) -- not given up while the artist was deciding
    local ws = env.WebSocket.last()
    ws:serverOpen()
    assert.equals(2, #ws:sentFrames() - 1) -- both submits went out (plus engines)
  end)

  it("says clearly when the artist refuses network access, and does not ask again by itself", function()
    local env = setup()
    env.WebSocket.security.answer = "deny"
    local rid = env.client:submit({ prompt = "a" })
    assert.equals("offline", env.client.state)
    local req = env.client:request(rid)
    assert.equals("failed", req.state)
    assert.equals("PERMISSION_DENIED", req.code)
    local msg = lastOf(env.events, "unreachable").message
    assert.matches("not allowed to connect to ws://127%.0%.0%.1:5000/ws", msg)
    assert.matches("Generate", msg)
    env.Timer.advance(60)
    assert.equals(1, env.WebSocket.security.prompts)
    -- the next Generate asks again (Aseprite never remembers a refusal)
    env.WebSocket.security.answer = "allow"
    env.client:submit({ prompt = "b" })
    assert.equals(2, env.WebSocket.security.prompts)
    assert.equals("connecting", env.client.state)
  end)

  it("shows the connection error's reason from onreceive's third argument", function()
    local env = setup({ giveUpAfter = 2 })
    local rid = env.client:submit({ prompt = "a" })
    env.WebSocket.last():serverError("Unable to connect to 127.0.0.1 on port 5000, error: Connection refused")
    local state = lastOf(env.events, "state")
    assert.equals("waiting", state.state)
    assert.matches("Connection refused", state.message)
    env.Timer.advance(5)
    local unreachable = lastOf(env.events, "unreachable")
    assert.matches("Connection refused", unreachable.message)
    assert.matches("Connection refused", env.client:request(rid).message)
  end)

  it("ignores a CLOSE that arrives after it stopped the socket", function()
    local env = setup()
    env.client:submit({ prompt = "a" })
    local ws = env.WebSocket.last()
    ws:serverError("Connection refused")
    local retryAt = env.client.retryAt
    ws.onreceive(fakes.WebSocketMessageType.CLOSE, "", "") -- queued before close() took effect
    assert.equals(retryAt, env.client.retryAt)
    assert.equals(1, env.client.failures)
  end)

  it("makes request ids that also serve as idempotency keys", function()
    local env = setup({ newId = false })
    env.client.newId = nil
    local a = env.client:submit({ prompt = "a" })
    local b = env.client:submit({ prompt = "b" })
    assert.are_not.equal(a, b)
    assert.matches("^ase%-%d+%-%d+%-%x+$", a)
    assert.equals(a, env.client:request(a).job.idempotencyKey)
  end)
end)
