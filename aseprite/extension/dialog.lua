-- The "PixelAI: Generate sprite…" dialog: UI glue between the Dialog widgets,
-- the client (client.lua), validation (request.lua) and the canvas
-- (canvas.lua). Non-blocking: show{wait=false}; results arrive through the
-- client's events while the artist keeps drawing.

local Client = require("client")
local request = require("request")
local prefs = require("prefs")
local canvas = require("canvas")
local errors = require("errors")

local protocol = require("protocol")

local M = {}

local BAR_WIDTH = 20
-- On-screen size of the step preview; previews are 8–128 px, scaled to fit.
M.PREVIEW_SIZE = 96

-- ASCII on purpose: Aseprite's default UI font has no block glyphs.
function M.progressBar(step, total)
  if not total or total <= 0 then return "" end
  step = math.max(0, math.min(step or 0, total))
  local filled = (step * BAR_WIDTH) // total
  return ("[%s%s] %d/%d"):format(("#"):rep(filled), ("-"):rep(BAR_WIDTH - filled), step, total)
end

local Controller = {}
Controller.__index = Controller

-- session: table kept by main.lua across dialog openings (holds the client,
-- so a job started before the dialog was closed still lands in the canvas).
-- api: Aseprite globals (Dialog, app, Image, Sprite, Point, ColorMode,
-- WebSocket, WebSocketMessageType, Timer, json). store: plugin.preferences.
function M.open(session, api, store)
  local self = setmetatable({ session = session, api = api, store = store }, Controller)
  self.settings = prefs.load(store)
  self.serverUrl = prefs.serverUrl(store)
  self:_build()
  self:_ensureClient()
  self.engines = self.client.engines
  self:_applyEngineView()
  self:_applySizeEnabling()
  self:_setBusy(self.client:activeRequest() ~= nil)
  self.dlg:show{ wait = false }
  self.client:requestEngines()
  return self
end

function Controller:_build()
  local s = self.settings
  local dlg = self.api.Dialog{ title = "PixelAI", onclose = function() self:_onClose() end }
  self.dlg = dlg

  dlg:entry{ id = "serverUrl", label = "Server", text = self.serverUrl }
  dlg:entry{ id = "prompt", label = "Prompt", text = s.prompt, focus = true }
  dlg:entry{ id = "negativePrompt", label = "Negative", text = s.negativePrompt }

  dlg:separator{ text = "Engine" }
  dlg:combobox{ id = "engine", label = "Engine", option = request.SERVER_DEFAULT,
    options = { request.SERVER_DEFAULT }, onchange = function() self:_applyEngineView() end }
  dlg:label{ id = "engineHint", label = "", text = "" }
  dlg:combobox{ id = "model", label = "Model", option = request.SERVER_DEFAULT, options = { request.SERVER_DEFAULT } }
  dlg:combobox{ id = "lora", label = "LoRA", option = request.NO_LORA, options = { request.NO_LORA } }
  dlg:slider{ id = "loraStrength", label = "LoRA strength %", min = request.LIMITS.loraStrength.min,
    max = request.LIMITS.loraStrength.max, value = s.loraStrength }
  dlg:label{ id = "loraHint", label = "", text = "" }

  dlg:separator{ text = "Generation" }
  dlg:combobox{ id = "sizePreset", label = "Base size", option = s.sizePreset, options = request.sizeOptions(),
    onchange = function() self:_applySizeEnabling() end }
  dlg:number{ id = "width", label = "Width", text = s.width, decimals = 0 }
  dlg:number{ id = "height", label = "Height", text = s.height, decimals = 0 }
  dlg:number{ id = "steps", label = "Steps", text = s.steps, decimals = 0 }
  dlg:number{ id = "guidanceScale", label = "Guidance", text = s.guidanceScale, decimals = 1 }
  dlg:entry{ id = "seed", label = "Seed (empty = random)", text = s.seed }

  dlg:separator{ text = "Pixel art" }
  dlg:combobox{ id = "pixelPreset", label = "Sprite size", option = s.pixelPreset, options = request.pixelOptions(),
    onchange = function() self:_applySizeEnabling() end }
  dlg:number{ id = "pixelWidth", label = "Sprite width", text = s.pixelWidth, decimals = 0 }
  dlg:number{ id = "pixelHeight", label = "Sprite height", text = s.pixelHeight, decimals = 0 }
  dlg:number{ id = "colors", label = "Colors (0 = all)", text = s.colors, decimals = 0 }
  dlg:combobox{ id = "fitMode", label = "Fit", option = s.fitMode, options = request.FIT_MODES }
  dlg:combobox{ id = "removeBackground", label = "Background", option = s.removeBackground,
    options = { request.BACKGROUND[1].label } }
  dlg:check{ id = "centre", label = "Placement", text = "Centre on canvas", selected = s.centre }

  dlg:separator{}
  dlg:label{ id = "status", label = "Status", text = "" }
  dlg:label{ id = "progress", label = "", text = "" }
  -- Step previews need a canvas widget (Aseprite 1.3); without one jobs are
  -- submitted without `preview` and only the text bar shows.
  if dlg.canvas then
    dlg:canvas{ id = "preview", width = M.PREVIEW_SIZE, height = M.PREVIEW_SIZE,
      onpaint = function(ev) self:_paintPreview(ev.context) end }
    self.canPreview = true
  end
  dlg:button{ id = "generate", text = "Generate", focus = false, onclick = function() self:generate() end }
  dlg:button{ id = "cancel", text = "Cancel", enabled = false, onclick = function() self:cancel() end }
  dlg:button{ id = "close", text = "Close", onclick = function() dlg:close() end }
end

-- One client per session and server URL; a changed URL replaces it.
function Controller:_ensureClient()
  local session, api = self.session, self.api
  local url, err = prefs.wsUrl(self.serverUrl)
  if not url then
    self:_status(err)
    url = prefs.wsUrl(prefs.DEFAULT_SERVER_URL)
  end
  if session.client and session.client.url ~= url then
    session.client:close()
    session.client = nil
  end
  if not session.client then
    session.client = Client.new{
      url = url, WebSocket = api.WebSocket, MessageType = api.WebSocketMessageType,
      Timer = api.Timer, json = api.json,
    }
  end
  self.client = session.client
  self.client.onEvent = function(event) self:_onEvent(event) end
end

---------------------------------------------------------------------------
-- enabling
---------------------------------------------------------------------------

function Controller:_modify(props)
  if self.closed then return end
  self.dlg:modify(props)
end

function Controller:_status(text)
  self:_modify{ id = "status", text = text or "" }
end

-- Setting a combobox's options or option from code can fire its onchange in
-- Aseprite, which calls back in here; the guard stops that loop, and options
-- are only replaced when they changed (replacing them resets the selection).
function Controller:_applyEngineView()
  if self.applying then return end
  self.applying = true
  local ok, err = pcall(self._applyEngineViewNow, self)
  self.applying = false
  if not ok then error(err, 0) end
end

function Controller:_setOptions(id, options)
  self.appliedOptions = self.appliedOptions or {}
  local key = table.concat(options, "\0")
  if self.appliedOptions[id] ~= key then
    self.appliedOptions[id] = key
    self:_modify{ id = id, options = options }
  end
end

function Controller:_applyEngineViewNow()
  local data = self.dlg.data
  local values = {
    engine = data.engine, model = data.model ~= request.SERVER_DEFAULT and data.model or self.settings.model,
    lora = data.lora ~= request.NO_LORA and data.lora or self.settings.lora,
    removeBackground = data.removeBackground ~= request.BACKGROUND[1].label and data.removeBackground
      or self.settings.removeBackground,
  }
  if values.engine == request.SERVER_DEFAULT and self.settings.engine ~= "" then
    values.engine = self.settings.engine
  end
  local view = request.engineView(self.engines, values)
  self.view = view
  self:_setOptions("engine", view.engineOptions)
  self:_modify{ id = "engine", option = view.engine }
  self:_modify{ id = "engineHint", text = view.engineHint }
  self:_setOptions("model", view.modelOptions)
  self:_modify{ id = "model", option = view.model }
  self:_setOptions("lora", view.loraOptions)
  self:_modify{ id = "lora", option = view.lora, enabled = view.loraEnabled }
  self:_modify{ id = "loraStrength", enabled = view.loraEnabled }
  self:_modify{ id = "loraHint", text = view.loraHint }
  self:_setOptions("removeBackground", view.backgroundOptions)
  self:_modify{ id = "removeBackground", option = view.removeBackground }
  self:_modify{ id = "generate", enabled = view.generateEnabled and not self.busy }
end

function Controller:_applySizeEnabling()
  local data = self.dlg.data
  local customSize = data.sizePreset == request.CUSTOM
  self:_modify{ id = "width", enabled = customSize }
  self:_modify{ id = "height", enabled = customSize }
  local pixelOn = data.pixelPreset ~= request.PIXEL_OFF
  local customPixel = data.pixelPreset == request.CUSTOM
  self:_modify{ id = "pixelWidth", enabled = customPixel }
  self:_modify{ id = "pixelHeight", enabled = customPixel }
  self:_modify{ id = "colors", enabled = pixelOn }
  self:_modify{ id = "fitMode", enabled = pixelOn }
end

function Controller:_setBusy(busy)
  self.busy = busy
  local canGenerate = not busy and (self.view == nil or self.view.generateEnabled)
  self:_modify{ id = "generate", enabled = canGenerate }
  self:_modify{ id = "cancel", enabled = busy }
end

---------------------------------------------------------------------------
-- actions
---------------------------------------------------------------------------

-- Dialog values in the shape prefs.save expects (engine by name, not label).
function Controller:_settingsFromData(data)
  local s = {}
  for key in pairs(prefs.DEFAULTS) do s[key] = data[key] end
  s.engine = request.engineNameFromLabel(data.engine) or ""
  if data.model == request.SERVER_DEFAULT then s.model = "" end
  return s
end

function Controller:generate()
  local data = self.dlg.data
  prefs.save(self.store, self:_settingsFromData(data))
  self.settings = prefs.load(self.store)
  if data.serverUrl ~= self.serverUrl then
    self.serverUrl = data.serverUrl
    prefs.setServerUrl(self.store, data.serverUrl)
    self:_ensureClient()
    self.engines = nil
    self.client:requestEngines()
  end

  local job, problems = request.buildJob(data, self.engines)
  if not job then
    self:_status("Check: " .. table.concat(problems, "; "))
    return nil
  end
  if self.canPreview then job.preview = true end
  self.job = job
  self:_setPreview(nil)
  self:_setBusy(true)
  self:_modify{ id = "progress", text = "" }
  self:_status("Sending…")
  self.requestId = self.client:submit(job)
  return self.requestId
end

function Controller:cancel()
  local req = self.client:activeRequest()
  if req and self.client:cancel(req.requestId) then
    self:_status("Cancelling…")
  end
end

function Controller:_onClose()
  if self.closed then return end
  local ok, data = pcall(function() return self.dlg.data end)
  if ok and data then
    local s = self:_settingsFromData(data)
    prefs.save(self.store, s)
  end
  self.closed = true
end

---------------------------------------------------------------------------
-- client events
---------------------------------------------------------------------------

local STATE_TEXT = {
  connecting = "Connecting…",
  ready = "Connected",
  waiting = "Reconnecting…",
}

function Controller:_place(event)
  local req = self.client:request(event.requestId)
  local job = req and req.job or self.job or {}
  local data = (not self.closed) and self.dlg.data or {}
  local placed, err = canvas.place(self.api, {
    rgba = event.rgba, width = event.width, height = event.height,
    prompt = job.prompt, colors = job.pixel and job.pixel.colors, seed = event.seed,
    centre = data.centre == true,
  })
  if not placed then
    self:_status("Could not place the image: " .. err)
  elseif placed.newSprite then
    self:_status("Done — new sprite: " .. placed.layer.name)
  else
    self:_status("Done — layer: " .. placed.layer.name)
  end
end

function Controller:_setPreview(image)
  if not self.canPreview or self.closed then return end
  self.previewImage = image
  self.dlg:repaint()
end

-- A progress frame's preview (raw RGBA, see protocol.decodePreview) becomes
-- the image the canvas paints; a bad one is skipped, the job goes on.
function Controller:_showPreview(preview)
  if not self.canPreview then return end
  local rgba = protocol.decodePreview(preview)
  local image = rgba and canvas.makeImage(self.api, rgba, preview.width, preview.height)
  if image then self:_setPreview(image) end
end

-- Whole-number upscaling (crisp pixels, like the sprite it turns into),
-- shrinking only what is larger than the widget; centred.
function Controller:_paintPreview(gc)
  local image = self.previewImage
  if not image then return end
  local scale = math.min(M.PREVIEW_SIZE / image.width, M.PREVIEW_SIZE / image.height)
  if scale >= 1 then scale = math.floor(scale) end
  local w = math.max(1, math.floor(image.width * scale))
  local h = math.max(1, math.floor(image.height * scale))
  local Rectangle = self.api.Rectangle
  gc.antialias = false
  gc:drawImage(image, Rectangle(0, 0, image.width, image.height),
    Rectangle((M.PREVIEW_SIZE - w) // 2, (M.PREVIEW_SIZE - h) // 2, w, h))
end

function Controller:_onEvent(event)
  local kind = event.kind
  if kind == "state" then
    if event.state == "offline" then
      self:_status(event.message)
    elseif not self.busy or event.state ~= "ready" then
      self:_status(event.message or STATE_TEXT[event.state])
    end
  elseif kind == "engines" then
    self.engines = event.engines
    self:_applyEngineView()
  elseif kind == "submitted" then
    self:_status("Sent, waiting for the server…")
  elseif kind == "accepted" then
    self:_status("Queued (job " .. tostring(event.id) .. ")")
  elseif kind == "progress" then
    self:_status("Generating…")
    self:_modify{ id = "progress", text = M.progressBar(event.step, event.totalSteps) }
    if event.preview then self:_showPreview(event.preview) end
  elseif kind == "completed" then
    self:_setBusy(self.client:activeRequest() ~= nil)
    self:_modify{ id = "progress", text = "" }
    self:_place(event)
  elseif kind == "failed" or kind == "cancelled" then
    self:_setBusy(self.client:activeRequest() ~= nil)
    self:_modify{ id = "progress", text = "" }
    self:_status(event.message or errors.describe(event.code))
  elseif kind == "unreachable" then
    self:_setBusy(false)
    self:_status(event.message)
  elseif kind == "error" then
    self:_status(event.message)
  end
end

return M
