-- Connection and request state machine over Aseprite's WebSocket.
--
-- Connection: idle -> connecting -> ready; on CLOSE/ERROR -> waiting (backoff)
-- -> connecting … ; after `giveUpAfter` seconds without a connection while
-- work is pending -> offline (every pending request fails with a clear
-- message; the next submit or engines request starts over). close() -> closed.
--
-- Request: queued (not sent) -> submitted -> accepted -> progress ->
-- completed | failed | cancelled.
--
-- Everything Aseprite-specific is injected (WebSocket, WebSocketMessageType,
-- Timer, json), so specs drive it with fakes that keep the real quirks.

local protocol = require("protocol")
local errors = require("errors")

local Client = {}
Client.__index = Client

local DEFAULTS = {
  tickInterval = 0.25,   -- seconds per Timer tick; also the client's clock
  connectTimeout = 5,    -- an attempt with neither OPEN nor ERROR counts as failed
  giveUpAfter = 15,      -- bound on "trying to reach the server" with work pending
  backoff = { 0.5, 1, 2, 4 }, -- waits between attempts; the last one repeats
}

local FINISHED = { completed = true, failed = true, cancelled = true }

-- opts: url, WebSocket, MessageType, Timer, json, onEvent(event) and
-- optionally newId(), log(text) and any DEFAULTS key.
function Client.new(opts)
  assert(opts.url and opts.WebSocket and opts.MessageType and opts.Timer and opts.json,
    "client needs url, WebSocket, MessageType, Timer and json")
  local self = setmetatable({}, Client)
  for k, v in pairs(DEFAULTS) do self[k] = v end
  for k, v in pairs(opts) do self[k] = v end
  self.onEvent = self.onEvent or function() end
  self.log = self.log or print
  self.state = "idle"
  self.now = 0
  self.failures = 0 -- consecutive failed attempts; picks the backoff step
  self.requests, self.order, self.byJobId = {}, {}, {}
  self.wantEngines = false   -- an engines frame should be (re)requested on OPEN
  self.enginesPending = false
  self.seq = 0
  return self
end

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

-- onEvent runs UI code. An error escaping an onreceive callback makes
-- Aseprite print it and stop() the socket, which would look like a silent
-- disconnect, so UI errors are caught and logged here.
function Client:_emit(event)
  local ok, err = pcall(self.onEvent, event)
  if not ok then
    self.log("PixelAI: " .. tostring(err))
  end
end

function Client:_setState(state, message)
  self.state = state
  self:_emit({ kind = "state", state = state, message = message })
end

function Client:_newId()
  if self.newId then return self.newId() end
  self.seq = self.seq + 1
  -- requestId doubles as the job's idempotencyKey, so it must not repeat
  -- across Aseprite sessions either: time + counter + random.
  return ("ase-%d-%d-%04x"):format(os.time(), self.seq, math.random(0, 0xFFFF))
end

function Client:_context(req)
  local job = req and req.job or {}
  return { url = self.url, model = job.model, lora = job.lora and job.lora.name, engine = job.engine }
end

function Client:_pendingWork()
  if self.enginesPending then return true end
  for _, req in ipairs(self.order) do
    if not FINISHED[req.state] then return true end
  end
  return false
end

function Client:_startTimer()
  if not self.timer then
    self.timer = self.Timer{ interval = self.tickInterval, ontick = function() self:_tick() end }
  end
  if not self.timer.isRunning then self.timer:start() end
end

function Client:_stopTimer()
  if self.timer and self.timer.isRunning then self.timer:stop() end
end

-- Sends a frame if the socket is open. Aseprite's sendText raises an error
-- when the socket is not open, so a failure here means the connection is
-- gone even if CLOSE has not been delivered yet.
function Client:_send(frame)
  if self.state ~= "ready" or not self.ws then
    return false
  end
  local ok, err = pcall(self.ws.sendText, self.ws, protocol.encode(self.json, frame))
  if not ok then
    self:_lost(tostring(err))
    return false
  end
  return true
end

---------------------------------------------------------------------------
-- connection
---------------------------------------------------------------------------

function Client:connect()
  if self.state == "connecting" or self.state == "ready" or self.state == "waiting" then
    return
  end
  self.failures = 0
  self.downSince = self.now
  self:_open()
end

-- Aseprite asks the artist before every WebSocket construction (a modal
-- prompt, unless "don't show again" was ticked on Allow) and raises this when
-- they refuse; the prompt is in the constructor only, connect() never asks.
local function isPermissionRefusal(err)
  return tostring(err):find("doesn't have access to create a WebSocket", 1, true) ~= nil
end

-- One WebSocket object per client (per URL), built once and reused: a
-- reconnect is ws:connect() again after ws:close() (IXWebSocket start() after
-- stop()), so a server that stays down costs at most one permission prompt.
function Client:_createSocket()
  local ws
  -- The prompt is modal but runs a nested UI loop: timer ticks and clicks
  -- can call back in here while it is open, and must not stack a second one.
  self.constructing = true
  local ok, err = pcall(function()
    ws = self.WebSocket{
      url = self.url,
      deflate = false, -- same machine: compression costs more than it saves
      onreceive = function(messageType, data, errorReason)
        self:_onReceive(ws, messageType, data, errorReason)
      end,
    }
  end)
  self.constructing = false
  if not ok then return nil, err end
  return ws
end

function Client:_open()
  if self.constructing then return end -- the open prompt's answer decides
  if self.state == "closed" then return end
  if not self.ws then
    local ws, err = self:_createSocket()
    if self.state == "closed" then
      if ws then pcall(ws.close, ws) end
      return
    end
    if not ws then
      if isPermissionRefusal(err) then
        self:_giveUp(tostring(err), errors.CLIENT.PERMISSION_DENIED)
      else
        self:_giveUp(tostring(err))
      end
      return
    end
    self.ws = ws
    -- the artist may have taken a while to answer: that time is not the
    -- server's fault, so the give-up clock starts now
    self.downSince = self.now
  end
  self.connectStartedAt = self.now
  self:_setState("connecting", ("Connecting to %s…"):format(self.url))
  self:_startTimer()
  local connected, connectErr = pcall(self.ws.connect, self.ws)
  if not connected then
    self:_lost(tostring(connectErr))
  end
end

-- onreceive(type, data, error): Aseprite passes IXWebSocket's errorInfo.reason
-- as the third argument; data is empty for OPEN, CLOSE and ERROR.
local function reasonOf(data, errorReason)
  if type(errorReason) == "string" and errorReason ~= "" then return errorReason end
  if type(data) == "string" and data ~= "" then return data end
  return nil
end

function Client:_onReceive(ws, messageType, data, errorReason)
  if ws ~= self.ws then return end -- a client closed for a URL change
  -- Callbacks are queued onto the UI thread, so the socket can still deliver
  -- an OPEN, CLOSE or ERROR from an attempt this client already stopped
  -- (one object serves every attempt): only a live attempt's count.
  local MT = self.MessageType
  if messageType == MT.OPEN then
    if self.state == "connecting" then self:_opened() end
  elseif messageType == MT.TEXT then
    if self.state ~= "closed" then self:_onText(data) end
  elseif messageType == MT.CLOSE or messageType == MT.ERROR then
    if self.state == "connecting" or self.state == "ready" then
      self:_lost(reasonOf(data, errorReason))
    end
  end
  -- BINARY, PING, PONG, FRAGMENT: not part of this protocol.
end

function Client:_opened()
  self.failures = 0
  self.downSince = nil
  self.retryAt = nil
  self.lastError = nil
  self:_stopTimer()
  self:_setState("ready", "Connected")
  -- Replay what the connection owes: first-time and interrupted submits
  -- (safe to repeat: requestId is also the job's idempotencyKey), and a
  -- subscribe for jobs the server already accepted, so their progress and
  -- result reach this new connection.
  for _, req in ipairs(self.order) do
    if self.state ~= "ready" then return end
    if req.state == "queued" or req.state == "submitted" then
      if self:_send(protocol.submit(req.requestId, req.job)) then
        req.state = "submitted"
        self:_emit({ kind = "submitted", requestId = req.requestId })
      end
    elseif req.state == "accepted" or req.state == "progress" then
      self:_send(protocol.subscribe(req.id))
      if req.cancelRequested then self:_send(protocol.cancel(req.id)) end
    end
  end
  if self.wantEngines and self.state == "ready" then
    self:_send(protocol.engines())
  end
end

local function withReason(text, reason)
  if reason and reason ~= "" then return text .. " (" .. reason .. ")" end
  return text
end

function Client:_lost(reason)
  if self.state == "closed" or self.state == "offline" then return end
  local wasReady = self.state == "ready"
  -- IXWebSocket reconnects on its own by default; stopping the socket leaves
  -- exactly one retry loop (ours, with a bounded give-up). The object stays
  -- for the next attempt.
  if self.ws then pcall(self.ws.close, self.ws) end
  if wasReady then self.downSince = self.now end
  self.downSince = self.downSince or self.now
  self.lastError = reason
  self.failures = self.failures + 1
  local delay = self.backoff[math.min(self.failures, #self.backoff)]
  self.retryAt = self.now + delay
  self:_setState("waiting", withReason(wasReady and "Connection lost, reconnecting…"
    or "Server not answering, retrying…", reason))
  self:_startTimer()
  self:_checkGiveUp()
end

function Client:_checkGiveUp()
  if self.downSince and self.now - self.downSince >= self.giveUpAfter then
    self:_giveUp(self.lastError)
  end
end

-- code: SERVER_UNREACHABLE (default) or PERMISSION_DENIED.
function Client:_giveUp(reason, code)
  code = code or errors.CLIENT.SERVER_UNREACHABLE
  if self.ws then pcall(self.ws.close, self.ws) end
  self:_stopTimer()
  self.downSince, self.retryAt = nil, nil
  local denied = code == errors.CLIENT.PERMISSION_DENIED
  local message = errors.describe(code, nil, { url = self.url })
  if not denied then message = withReason(message, reason) end
  self.state = "offline"
  for _, req in ipairs(self.order) do
    if not FINISHED[req.state] then
      -- An accepted job keeps running on the server; say so.
      local reqCode = (req.id and not denied) and errors.CLIENT.CONNECTION_LOST or code
      local text = errors.describe(reqCode, nil, self:_context(req))
      self:_finish(req, "failed", { code = reqCode, message = denied and text or withReason(text, reason) })
    end
  end
  self.enginesPending = false
  self:_emit({ kind = "unreachable", code = code, message = message, detail = reason })
  self:_setState("offline", message)
end

function Client:_tick()
  -- While the permission prompt is open the clock stands still: the artist
  -- deciding is not the server being down.
  if self.constructing then return end
  self.now = self.now + self.tickInterval
  if self.state == "connecting" and self.now - self.connectStartedAt >= self.connectTimeout then
    self:_lost("connection attempt timed out")
  elseif self.state == "waiting" and self.retryAt and self.now >= self.retryAt then
    self:_open()
  end
  if self.state == "connecting" or self.state == "waiting" then
    self:_checkGiveUp()
  end
  if self.state ~= "connecting" and self.state ~= "waiting" then
    self:_stopTimer()
  end
end

function Client:close()
  self.state = "closed"
  local ws = self.ws
  self.ws = nil
  if ws then pcall(ws.close, ws) end
  self:_stopTimer()
end

---------------------------------------------------------------------------
-- frames from the server
---------------------------------------------------------------------------

function Client:_finish(req, state, fields)
  req.state = state
  local event = { kind = state, requestId = req.requestId, id = req.id }
  for k, v in pairs(fields or {}) do event[k] = v end
  req.code, req.message = event.code, event.message
  self:_emit(event)
end

local handlers = {}

function handlers.accepted(self, frame)
  local req = self.requests[frame.requestId]
  if not req or FINISHED[req.state] then return end
  req.id = frame.id
  self.byJobId[frame.id] = req
  if req.state == "queued" or req.state == "submitted" then
    req.state = "accepted"
  end
  self:_emit({ kind = "accepted", requestId = req.requestId, id = req.id })
  if req.cancelRequested then
    self:_send(protocol.cancel(req.id))
  end
end

function handlers.progress(self, frame)
  local req = self.byJobId[frame.id]
  if not req or FINISHED[req.state] then return end
  req.state = "progress"
  req.step, req.totalSteps = frame.step, frame.totalSteps
  self:_emit({ kind = "progress", requestId = req.requestId, id = req.id,
    step = frame.step, totalSteps = frame.totalSteps, preview = frame.preview, previews = frame.previews })
end

function handlers.completed(self, frame)
  local req = self.byJobId[frame.id]
  if not req or FINISHED[req.state] then return end
  local rgba, err = protocol.decodeImage(frame)
  if not rgba then
    self:_finish(req, "failed", { code = errors.CLIENT.BAD_IMAGE,
      message = errors.describe(errors.CLIENT.BAD_IMAGE, err) })
    return
  end
  req.width, req.height = frame.width, frame.height
  local candidates = protocol.decodeCandidates(frame)
  self:_finish(req, "completed", { width = frame.width, height = frame.height, rgba = rgba,
    seed = frame.seed or (req.job and req.job.seed),
    candidates = (candidates and #candidates > 1) and candidates or nil })
end

function handlers.failed(self, frame)
  local req = self.byJobId[frame.id]
  if not req or FINISHED[req.state] then return end
  self:_finish(req, "failed", { code = frame.code,
    message = errors.describe(frame.code, frame.message, self:_context(req)) })
end

function handlers.cancelled(self, frame)
  local req = self.byJobId[frame.id]
  if not req or FINISHED[req.state] then return end
  self:_finish(req, "cancelled", { message = errors.describe("CANCELLED") })
end

function handlers.engines(self, frame)
  self.engines = frame
  self.enginesPending = false
  self:_emit({ kind = "engines", engines = frame })
end

-- `error` answers a frame the server could not take. When it names the
-- request (requestId) or job (id) it is routed there; a submit rejected
-- before a job exists fails that request.
function handlers.error(self, frame)
  local req = frame.requestId and self.requests[frame.requestId]
  if not req then
    -- Without a requestId, a lone submit still waiting for `accepted` is the
    -- only frame the error can answer.
    local waiting = {}
    for _, r in ipairs(self.order) do
      if r.state == "submitted" then waiting[#waiting + 1] = r end
    end
    if frame.id == nil and #waiting == 1 then req = waiting[1] end
  end
  if req and not FINISHED[req.state] and req.id == nil then
    self:_finish(req, "failed", { code = frame.code,
      message = errors.describe(frame.code, frame.message, self:_context(req)) })
    return
  end
  local about = (frame.id ~= nil and self.byJobId[frame.id]) or req
  self:_emit({ kind = "error", code = frame.code, requestId = about and about.requestId or nil,
    message = errors.describe(frame.code, frame.message, self:_context(about)) })
end

function Client:_onText(data)
  local frame, err = protocol.parse(self.json, data)
  if not frame then
    self:_emit({ kind = "error", code = errors.CLIENT.BAD_FRAME,
      message = errors.describe(errors.CLIENT.BAD_FRAME, err) })
    return
  end
  local handler = handlers[frame.type]
  if handler then handler(self, frame) end
end

---------------------------------------------------------------------------
-- public API
---------------------------------------------------------------------------

-- Queues or sends a job; returns its requestId at once (never blocks).
function Client:submit(job)
  local requestId = self:_newId()
  job.idempotencyKey = job.idempotencyKey or requestId
  local req = { requestId = requestId, job = job, state = "queued" }
  self.requests[requestId] = req
  self.order[#self.order + 1] = req
  if self.state == "ready" then
    if self:_send(protocol.submit(requestId, job)) then
      req.state = "submitted"
      self:_emit({ kind = "submitted", requestId = requestId })
    end
  else
    self:connect()
  end
  return requestId
end

-- Asks the server to cancel. The request only becomes `cancelled` when the
-- server says so, except when it never left this client.
function Client:cancel(requestId)
  local req = self.requests[requestId]
  if not req or FINISHED[req.state] then return false end
  if req.state == "queued" then
    self:_finish(req, "cancelled", { message = errors.describe("CANCELLED") })
    return true
  end
  req.cancelRequested = true
  if req.id then
    self:_send(protocol.cancel(req.id)) -- if not open, _opened() sends it
  end
  return true
end

function Client:requestEngines()
  self.wantEngines = true
  self.enginesPending = true
  if self.state == "ready" then
    self:_send(protocol.engines())
  else
    self:connect()
  end
end

function Client:request(requestId)
  return self.requests[requestId]
end

-- The request the UI tracks: the newest one not finished, if any.
function Client:activeRequest()
  for i = #self.order, 1, -1 do
    local req = self.order[i]
    if not FINISHED[req.state] then return req end
  end
  return nil
end

return Client
