-- Fakes of the Aseprite API used by the extension. Each keeps the behaviour
-- the extension must cope with in real Aseprite; the comment next to each
-- names the Aseprite source file it comes from (repository aseprite/aseprite
-- unless said otherwise), so a spec fails where the editor would misbehave:
--  * json.decode returns proxies: fields via __index, objects iterate via
--    __pairs, arrays do NOT iterate with pairs, numbers are floats.
--  * WebSocket: the constructor asks the artist for permission unless they
--    ticked "don't show again"; a refusal raises; sendText raises unless open;
--    onreceive(type, data, error) carries connection errors in `error`.
--  * app.transaction can fail with "cannot lock document for transaction".
--  * Image.bytes must be exactly rowStride * height bytes.
--  * Dialog: modify on an unknown id raises; option=X not among the options
--    is ignored; replacing options selects item 1 and fires onchange;
--    number fields with decimals=0 (the default) give the integer part.
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

-- Permission to open a socket (src/app/script/security.cpp, ask_access, called
-- from WebSocket_new in src/app/script/websocket_class.cpp): unless the
-- script's key already has OpenSocket access ("don't show again" ticked on an
-- earlier Allow, or full trust), every construction opens a MODAL prompt.
-- Allow without the tick is not remembered, and a refusal is never
-- remembered: the constructor raises
--   the script doesn't have access to create a WebSocket for '<url>'
-- and the next construction asks again. The prompt runs a nested UI loop, so
-- Timer ticks and socket callbacks can run while it is open: `duringPrompt`
-- lets a spec run them there (a second construction from such a tick would
-- stack a second prompt; `maxDepth` records it).
function F.newSecurity()
  return {
    remembered = false, -- "don't show again" was ticked on Allow
    answer = "allow",   -- what the artist presses: "allow", "allowRemember", "deny"
    prompts = 0, depth = 0, maxDepth = 0,
    duringPrompt = nil,
  }
end

local function askAccess(security, url)
  if security.remembered then return true end
  security.prompts = security.prompts + 1
  security.depth = security.depth + 1
  security.maxDepth = math.max(security.maxDepth, security.depth)
  if security.duringPrompt then
    local hook = security.duringPrompt
    hook(security, url)
  end
  security.depth = security.depth - 1
  local answer = type(security.answer) == "function" and security.answer(security.prompts) or security.answer
  if answer == "allowRemember" then security.remembered = true end
  return answer == "allow" or answer == "allowRemember"
end

function F.newWebSocketClass(security)
  local class = { sockets = {}, security = security or F.newSecurity() }
  local Socket = {}
  Socket.__index = Socket

  -- connect() is ix::WebSocket::start() (websocket_class.cpp, WebSocket_connect):
  -- it also works again after close() (stop()), on the same object, with no
  -- new permission prompt.
  function Socket:connect()
    self.connectCalls = self.connectCalls + 1
    if self.status == "new" or self.status == "closed" then self.status = "connecting" end
  end

  -- websocket_class.cpp, WebSocket_sendText: raises unless ReadyState::Open.
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

  -- test side: what the server and IXWebSocket deliver. websocket_class.cpp
  -- calls onreceive(type, msg->str, msg->errorInfo.reason): OPEN and CLOSE
  -- carry empty data and error (a server's close reason is in closeInfo,
  -- which Aseprite does not pass on); a failed connection attempt is ERROR
  -- with empty data and the reason in the THIRD argument
  -- (IXWebSocket's reconnectPerpetuallyIfDisconnected).
  function Socket:serverOpen()
    self.status = "open"
    self.onreceive(F.WebSocketMessageType.OPEN, "", "")
  end

  function Socket:serverSend(frame)
    local text = type(frame) == "string" and frame or dkjson.encode(frame)
    self.onreceive(F.WebSocketMessageType.TEXT, text, "")
  end

  function Socket:serverClose()
    self.status = "closed"
    self.onreceive(F.WebSocketMessageType.CLOSE, "", "")
  end

  function Socket:serverError(reason)
    self.status = "closed"
    self.onreceive(F.WebSocketMessageType.ERROR, "",
      reason or "Unable to connect to 127.0.0.1 on port 5000, error: Connection refused")
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
      if not askAccess(class.security, opts.url) then
        -- luaL_error from a C function: no position prefix
        error(("the script doesn't have access to create a WebSocket for '%s'"):format(opts.url), 0)
      end
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
-- bytes per pixel by colour mode; a tilemap image holds 32-bit tile references
local BYTES_PER_PIXEL = { [0] = 4, [1] = 2, [2] = 1, [4] = 4 }

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

-- Selection (src/app/script/selection_class.cpp): bounds is an empty
-- rectangle when nothing is selected; contains(x, y) tests the mask.
-- `pixels` is a set of "x,y" keys (nil = the whole rectangle).
function F.newSelection(bounds, pixels)
  local sel = { bounds = bounds or F.Rectangle(0, 0, 0, 0) }
  sel.isEmpty = sel.bounds.width == 0 or sel.bounds.height == 0
  function sel:contains(x, y)
    local b = self.bounds
    if self.isEmpty or x < b.x or y < b.y or x >= b.x + b.width or y >= b.y + b.height then return false end
    return pixels == nil or pixels[x .. "," .. y] == true
  end
  return sel
end

-- Palette (src/app/script/palette_class.cpp): #palette is its size,
-- getColor(i) is 0-based and raises out of range; a Color has red, green,
-- blue, alpha.
function F.newPalette(colors)
  local pal = {}
  function pal:getColor(i)
    local c = colors[i + 1]
    if math.type(i) ~= "integer" or c == nil then error(("index out of bounds %s"):format(tostring(i)), 2) end
    return { red = c[1], green = c[2], blue = c[3], alpha = c[4] or 255 }
  end
  return setmetatable(pal, { __len = function() return #colors end })
end

function F.newApp()
  local app = { transactions = {}, inTransaction = false, refreshes = 0, alerts = {}, sprites = {},
    lockFailures = 0 }
  app.frame = { frameNumber = 1 }

  local function snapshot()
    local saved = {}
    for _, sp in ipairs(app.sprites) do
      saved[sp] = { layers = table.move(sp.layers, 1, #sp.layers, 1, {}), cels = table.move(sp.cels, 1, #sp.cels, 1, {}) }
    end
    return saved
  end

  -- src/app/script/app_object.cpp, App_transaction: the document is locked
  -- (ContextWriter) BEFORE the function runs; when another part of the editor
  -- holds it, it raises "cannot lock document for transaction\n<why>" and the
  -- function never runs. An error inside the function leaves the Tx
  -- uncommitted, so its changes are rolled back. `lockFailures` = how many of
  -- the next transactions find the document busy.
  function app.transaction(a, b)
    local label, fn = a, b
    if type(a) == "function" then label, fn = nil, a end
    if app.lockFailures > 0 then
      app.lockFailures = app.lockFailures - 1
      app.lockedAttempts = (app.lockedAttempts or 0) + 1
      error("cannot lock document for transaction\ncannot lock the document for writing", 0)
    end
    local saved = snapshot()
    app.inTransaction = true
    local ok, err = pcall(fn)
    app.inTransaction = false
    if not ok then
      for sp, st in pairs(saved) do sp.layers, sp.cels = st.layers, st.cels end
      error(err, 0)
    end
    app.transactions[#app.transactions + 1] = label or ""
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
    position = position or F.Point(0, 0)
    local cel = { layer = layer, frameNumber = frame, image = image, position = position, sprite = self,
      createdInTransaction = app.inTransaction }
    if image then cel.bounds = F.Rectangle(position.x, position.y, image.width, image.height) end
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
  -- A new sprite has an empty selection and a palette (black, white here).
  app.Sprite = function(width, height, colorMode)
    local sprite = setmetatable({ width = width, height = height, colorMode = colorMode or F.ColorMode.RGB,
      layers = {}, cels = {}, selection = F.newSelection(),
      palettes = { F.newPalette({ { 0, 0, 0, 255 }, { 255, 255, 255, 255 } }) } }, Sprite)
    sprite:newLayer().name = "Layer 1"
    app.sprites[#app.sprites + 1] = sprite
    app.sprite = sprite
    app.frame = { frameNumber = 1 }
    app.cel = nil
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

local function indexOf(list, value)
  for i, v in ipairs(list) do if v == value then return i end end
  return nil
end

-- ExprEntry (src/app/ui/expr_entry.cpp): the text is evaluated as an
-- expression; with decimals == 0 (ExprEntry's default, also when `decimals`
-- is not given) Dialog.data gives int(value), the integer part; otherwise
-- the double. Text that is not a number reads like strtol/strtod (leading
-- digits, else 0) (src/ui/widget.cpp).
local function numberValue(w)
  local text = tostring(w.text or "")
  local v = tonumber(text)
  if (w.decimals or 0) == 0 then
    if v == nil then v = tonumber(text:match("^%s*([+-]?%d+)")) or 0 end
    if v ~= v or v == math.huge or v == -math.huge then return 0 end
    return math.tointeger(v >= 0 and math.floor(v) or math.ceil(v))
  end
  if v == nil then v = tonumber(text:match("^%s*([+-]?%d*%.?%d+)")) or 0.0 end
  return v + 0.0
end

-- src/app/script/dialog_class.cpp, Dialog_get_data.
Dialog.__index = function(self, key)
  if key == "data" then
    local data = {}
    for _, w in ipairs(rawget(self, "widgets")) do
      if w.id then
        if w.kind == "entry" or w.kind == "label" then data[w.id] = w.text or ""
        elseif w.kind == "number" then data[w.id] = numberValue(w)
        elseif w.kind == "combobox" then data[w.id] = w.option -- nil when nothing is selected
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
      -- Dialog_combobox: addItem selects the first item; `option` is only
      -- applied when it is one of the options. No onchange while building.
      w.options = w.options or {}
      if not indexOf(w.options, w.option) then w.option = w.options[1] end
    end
    if kind == "slider" then
      w.min, w.max = w.min or 0, w.max or 100
      w.value = math.tointeger(w.value or 100) or math.floor(w.value)
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

-- A mouse button pressed on a canvas: onmousedown gets {x, y, button} in
-- the canvas's own (autoscaled) coordinates (dialog_class.cpp,
-- fill_mousemessage_values; src/app/script/canvas_widget.cpp).
function Dialog:mouseDown(id, x, y)
  local w = assert(self.byId[id], "no widget " .. tostring(id))
  if w.onmousedown then w.onmousedown({ x = x, y = y, button = 1 }) end
end

-- src/app/script/dialog_class.cpp, Dialog_modify, in its order: simple
-- fields, then `options` (ComboBox::deleteAllItems + addItem: the first
-- item gets selected and, the selection having been reset to none, Change
-- fires every time the new list is not empty — src/ui/combobox.cpp), then
-- `option` (setSelectedItemIndex: only when it is among the options, and
-- Change only when the index differs; an unknown option is ignored).
function Dialog:modify(props)
  local w = self.byId[props.id]
  if not w then error(('Given id="%s" in Dialog:modify{} not found in dialog'):format(tostring(props.id)), 2) end
  self.modifications[#self.modifications + 1] = props
  for k, v in pairs(props) do
    if k ~= "id" and k ~= "option" and k ~= "options" then
      if w.kind == "slider" and (k == "value" or k == "min" or k == "max") then v = math.tointeger(v) or math.floor(v) end
      w[k] = v
    end
  end
  if w.kind ~= "combobox" then return end
  if type(props.options) == "table" then
    local list = {}
    for _, o in ipairs(props.options) do list[#list + 1] = tostring(o) end
    w.options = list
    w.option = list[1]
    if list[1] ~= nil and w.onchange then w.onchange() end
  end
  if props.option ~= nil then
    local i = indexOf(w.options, props.option)
    if i and w.option ~= w.options[i] then
      w.option = w.options[i]
      if w.onchange then w.onchange() end
    end
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
  assert(w.enabled ~= false, "widget " .. id .. " is disabled")
  if w.kind == "combobox" then
    -- the artist can only pick one of the items
    assert(indexOf(w.options, value), ("%s has no option %s"):format(id, tostring(value)))
    if w.option == value then return end
    w.option = value
  elseif w.kind == "slider" then w.value = math.max(w.min, math.min(w.max, value))
  elseif w.kind == "check" then w.selected = value
  else w.text = tostring(value) end
  if w.onchange then w.onchange() end
  if w.kind == "check" and w.onclick then w.onclick() end
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
