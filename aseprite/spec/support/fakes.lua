-- Fakes of the Aseprite API used by the extension. Each keeps the quirk the
-- extension must cope with in real Aseprite (see aseprite/README.md):
--  * json.decode returns proxies: fields via __index, objects iterate via
--    __pairs, arrays do NOT iterate with pairs, numbers are floats.
--  * WebSocket:sendText raises unless the socket is open; IX-style enum values.
--  * Image.bytes must be exactly rowStride * height bytes.
--  * Dialog:modify on an unknown id raises (catches typos in the glue).
local dkjson = require("dkjson")

local F = {}

---------------------------------------------------------------------------
-- json
---------------------------------------------------------------------------

local proxy -- forward declaration

local function wrap(value)
  if type(value) == "number" then
    return value + 0.0 -- json11 pushes every number with lua_pushnumber
  end
  if type(value) == "table" then
    return proxy(value)
  end
  return value
end

function proxy(plain)
  local mt0 = getmetatable(plain)
  local array = mt0 ~= nil and mt0.__jsontype == "array"
  local mt = {
    __index = function(_, key)
      if array then
        return wrap(plain[math.tointeger(key) or key])
      end
      return wrap(plain[tostring(key)])
    end,
    __newindex = function() error("fake json proxy is read-only in these tests") end,
    __len = function()
      if array then return #plain end
      local n = 0
      for _ in pairs(plain) do n = n + 1 end
      return n
    end,
    __pairs = function()
      if array then
        -- Aseprite's array iterator returns no values: the loop ends at once.
        return function() return nil end, nil, nil
      end
      local key
      return function()
        local v
        key, v = next(plain, key)
        if key == nil then return nil end
        return key, wrap(v)
      end, nil, nil
    end,
    __tostring = function() return dkjson.encode(plain) end,
  }
  return setmetatable({}, mt)
end

F.json = {
  encode = function(value) return dkjson.encode(value) end,
  decode = function(text)
    local value, _, err = dkjson.decode(text, 1, dkjson.null)
    if err then error(err) end
    -- dkjson marks arrays and objects with a metatable; keep that knowledge
    -- but hand back proxies like Aseprite does.
    local function strip(v)
      if v == dkjson.null then return nil end
      if type(v) ~= "table" then return v end
      local mt = getmetatable(v)
      local out = setmetatable({}, { __jsontype = mt and mt.__jsontype or (#v > 0 and "array" or "object") })
      for k, x in pairs(v) do out[k] = strip(x) end
      return out
    end
    return wrap(strip(value))
  end,
}

-- Plain decode for assertions on what the extension sent.
function F.plainDecode(text)
  local value, _, err = dkjson.decode(text)
  assert(not err, err)
  return value
end

---------------------------------------------------------------------------
-- WebSocket
---------------------------------------------------------------------------

-- Same numbers as Aseprite (IXWebSocket's enum; BINARY = FRAGMENT + 10).
F.WebSocketMessageType = { TEXT = 0, OPEN = 1, CLOSE = 2, ERROR = 3, PING = 4, PONG = 5, FRAGMENT = 6, BINARY = 16 }

function F.newWebSocketClass()
  local class = { sockets = {} }
  local Socket = {}
  Socket.__index = Socket

  function Socket:connect()
    self.connectCalls = self.connectCalls + 1
    if self.status == "new" or self.status == "closed" then self.status = "connecting" end
  end

  function Socket:sendText(...)
    if self.status ~= "open" then
      error("WebSocket is not connected, can't send text", 2)
    end
    self.sent[#self.sent + 1] = table.concat({ ... })
  end

  function Socket:close()
    self.status = "closed"
    self.closeCalls = self.closeCalls + 1
  end

  -- test side: what the server does
  function Socket:serverOpen()
    self.status = "open"
    self.onreceive(F.WebSocketMessageType.OPEN, "")
  end

  function Socket:serverSend(frame)
    local text = type(frame) == "string" and frame or dkjson.encode(frame)
    self.onreceive(F.WebSocketMessageType.TEXT, text)
  end

  function Socket:serverClose(reason)
    self.status = "closed"
    self.onreceive(F.WebSocketMessageType.CLOSE, reason or "")
  end

  function Socket:serverError(reason)
    self.status = "closed"
    self.onreceive(F.WebSocketMessageType.ERROR, reason or "Connection refused")
  end

  function Socket:sentFrames()
    local out = {}
    for i, text in ipairs(self.sent) do out[i] = F.plainDecode(text) end
    return out
  end

  function Socket:lastSent()
    return F.plainDecode(self.sent[#self.sent])
  end

  setmetatable(class, {
    __call = function(_, opts)
      local ws = setmetatable({
        url = opts.url, onreceive = opts.onreceive or function() end, deflate = opts.deflate,
        status = "new", sent = {}, connectCalls = 0, closeCalls = 0,
      }, Socket)
      class.sockets[#class.sockets + 1] = ws
      return ws
    end,
  })

  function class.last() return class.sockets[#class.sockets] end
  return class
end

---------------------------------------------------------------------------
-- Timer (virtual clock)
---------------------------------------------------------------------------

function F.newTimerClass()
  local class = { timers = {}, clock = 0 }
  local T = {}
  T.__index = T

  function T:start()
    self.isRunning = true
    self.nextAt = class.clock + self.interval
  end

  function T:stop()
    self.isRunning = false
  end

  setmetatable(class, {
    __call = function(_, opts)
      assert(type(opts.interval) == "number" and opts.interval > 0, "Timer needs interval")
      assert(type(opts.ontick) == "function", "Timer needs ontick")
      local t = setmetatable({ interval = opts.interval, ontick = opts.ontick, isRunning = false }, T)
      class.timers[#class.timers + 1] = t
      return t
    end,
  })

  -- Runs every tick due in the next `seconds`, in time order.
  function class.advance(seconds)
    local target = class.clock + seconds + 1e-9
    while true do
      local due
      for _, t in ipairs(class.timers) do
        if t.isRunning and t.nextAt <= target and (not due or t.nextAt < due.nextAt) then due = t end
      end
      if not due then break end
      class.clock = due.nextAt
      due.nextAt = due.nextAt + due.interval
      due.ontick()
    end
    class.clock = target
  end

  function class.running()
    for _, t in ipairs(class.timers) do
      if t.isRunning then return true end
    end
    return false
  end

  return class
end

---------------------------------------------------------------------------
-- Image, Sprite, Point, ColorMode, app
---------------------------------------------------------------------------

F.ColorMode = { RGB = 0, GRAYSCALE = 1, INDEXED = 2, TILEMAP = 4 }
local BYTES_PER_PIXEL = { [0] = 4, [1] = 2, [2] = 1 }

function F.Image(width, height, colorMode)
  local store = {
    width = width, height = height, colorMode = colorMode or F.ColorMode.RGB,
    rowStride = width * BYTES_PER_PIXEL[colorMode or F.ColorMode.RGB], bytesValue = nil,
  }
  return setmetatable({}, {
    __index = function(_, k)
      if k == "bytes" then return store.bytesValue end
      return store[k]
    end,
    __newindex = function(_, k, v)
      if k == "bytes" then
        if #v ~= store.rowStride * store.height then
          error(("Invalid number of bytes: %d, expected %d"):format(#v, store.rowStride * store.height), 2)
        end
        store.bytesValue = v
      else
        error("fake Image: read-only field " .. tostring(k), 2)
      end
    end,
  })
end

function F.Point(x, y) return { x = x, y = y } end
function F.Rectangle(x, y, width, height) return { x = x, y = y, width = width, height = height } end

-- A canvas's GraphicsContext: records what the onpaint handler draws.
function F.newGraphicsContext()
  local gc = { antialias = true, draws = {} }
  function gc:drawImage(image, src, dst)
    self.draws[#self.draws + 1] = { image = image, src = src, dst = dst, antialias = self.antialias }
  end
  return gc
end

function F.newApp()
  local app = { transactions = {}, inTransaction = false, refreshes = 0, alerts = {}, sprites = {} }
  app.frame = { frameNumber = 1 }

  function app.transaction(a, b)
    local label, fn = a, b
    if type(a) == "function" then label, fn = nil, a end
    app.transactions[#app.transactions + 1] = label or ""
    app.inTransaction = true
    local ok, err = pcall(fn)
    app.inTransaction = false
    if not ok then error(err, 0) end
  end

  function app.refresh() app.refreshes = app.refreshes + 1 end
  function app.alert(x) app.alerts[#app.alerts + 1] = x end

  local Sprite = {}
  Sprite.__index = Sprite

  function Sprite:newLayer()
    local layer = { name = "Layer " .. (#self.layers + 1), sprite = self, createdInTransaction = app.inTransaction }
    self.layers[#self.layers + 1] = layer
    return layer
  end

  function Sprite:newCel(layer, frame, image, position)
    local cel = { layer = layer, frameNumber = frame, image = image, position = position,
      createdInTransaction = app.inTransaction }
    self.cels[#self.cels + 1] = cel
    return cel
  end

  function Sprite:deleteLayer(layer)
    assert(#self.layers > 1, "Aseprite cannot delete a sprite's only layer")
    for i, l in ipairs(self.layers) do
      if l == layer then
        table.remove(self.layers, i)
        return
      end
    end
    error("layer not in sprite")
  end

  -- Sprite(w, h, mode) makes the new sprite the active one, like Aseprite.
  app.Sprite = function(width, height, colorMode)
    local sprite = setmetatable({ width = width, height = height, colorMode = colorMode or F.ColorMode.RGB,
      layers = {}, cels = {} }, Sprite)
    sprite:newLayer().name = "Layer 1"
    app.sprites[#app.sprites + 1] = sprite
    app.sprite = sprite
    app.frame = { frameNumber = 1 }
    return sprite
  end

  return app
end

-- Everything canvas.place / dialog.open expect in `api`.
function F.newApi()
  local app = F.newApp()
  return {
    app = app, Image = F.Image, Sprite = app.Sprite, Point = F.Point, Rectangle = F.Rectangle, ColorMode = F.ColorMode,
    Dialog = F.Dialog, WebSocket = F.newWebSocketClass(), WebSocketMessageType = F.WebSocketMessageType,
    Timer = F.newTimerClass(), json = F.json,
  }
end

---------------------------------------------------------------------------
-- Dialog
---------------------------------------------------------------------------

local Dialog = {}
Dialog.__index = function(self, key)
  if key == "data" then
    local data = {}
    for _, w in ipairs(rawget(self, "widgets")) do
      if w.id then
        if w.kind == "entry" or w.kind == "label" then data[w.id] = w.text or ""
        elseif w.kind == "number" then data[w.id] = tonumber(w.text) or 0
        elseif w.kind == "combobox" then data[w.id] = w.option
        elseif w.kind == "slider" then data[w.id] = w.value
        elseif w.kind == "check" then data[w.id] = w.selected == true
        elseif w.kind == "button" then data[w.id] = false
        end
      end
    end
    return data
  end
  return Dialog[key]
end

local function addWidget(kind)
  return function(self, props)
    props = props or {}
    local w = { kind = kind, enabled = true }
    for k, v in pairs(props) do w[k] = v end
    if kind == "combobox" then
      w.options = w.options or {}
      if w.option == nil then w.option = w.options[1] end
    end
    if w.id then
      assert(self.byId[w.id] == nil, "duplicate dialog id " .. w.id)
      self.byId[w.id] = w
    end
    self.widgets[#self.widgets + 1] = w
    return self
  end
end

for _, kind in ipairs({ "entry", "number", "combobox", "slider", "check", "button", "label", "separator", "newrow",
  "canvas" }) do
  Dialog[kind] = addWidget(kind)
end

-- Aseprite calls a canvas's onpaint after repaint(); the fake counts the
-- requests and the test paints with paint(id).
function Dialog:repaint()
  self.repaints = (rawget(self, "repaints") or 0) + 1
end

function Dialog:paint(id)
  local w = assert(self.byId[id], "no widget " .. tostring(id))
  local gc = F.newGraphicsContext()
  w.onpaint({ context = gc })
  return gc
end

function Dialog:modify(props)
  local w = self.byId[props.id]
  if not w then error("Dialog:modify: unknown id " .. tostring(props.id), 2) end
  self.modifications[#self.modifications + 1] = props
  local before = w.option
  for k, v in pairs(props) do
    if k ~= "id" then w[k] = v end
  end
  -- Setting options without a valid option selects the first one.
  if props.options and w.kind == "combobox" then
    local found = false
    for _, o in ipairs(w.options) do if o == w.option then found = true end end
    if not found then w.option = w.options[1] end
  end
  -- A selection changed from code fires onchange, as a laf ComboBox may:
  -- the glue must survive being re-entered.
  if w.kind == "combobox" and w.onchange and w.option ~= before then
    w.onchange()
  end
end

function Dialog:show(opts)
  self.shown = true
  self.showOptions = opts
  assert(opts and opts.wait == false, "the PixelAI dialog must be non-blocking (wait=false)")
end

function Dialog:close()
  if self.closedFlag then return end
  self.closedFlag = true
  if self.onclose then self.onclose() end
end

-- test side: the artist's actions
function Dialog:widget(id) return self.byId[id] end

function Dialog:set(id, value)
  local w = assert(self.byId[id], "no widget " .. tostring(id))
  if w.kind == "combobox" then w.option = value
  elseif w.kind == "slider" then w.value = value
  elseif w.kind == "check" then w.selected = value
  else w.text = tostring(value) end
  if w.onchange then w.onchange() end
end

function Dialog:click(id)
  local w = assert(self.byId[id], "no widget " .. tostring(id))
  assert(w.enabled ~= false, "button " .. id .. " is disabled")
  w.onclick()
end

F.Dialog = setmetatable({ instances = {} }, {
  __call = function(class, opts)
    opts = opts or {}
    local dlg = setmetatable({ widgets = {}, byId = {}, modifications = {}, title = opts.title,
      onclose = opts.onclose }, Dialog)
    class.instances[#class.instances + 1] = dlg
    return dlg
  end,
})

return F
